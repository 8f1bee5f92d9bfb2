"""Input validation: every bad input names the file and the problem."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from samir.data.acdc import acdc_pairs
from samir.data.checks import (
    CheckFilesd,
    CheckPaird,
    check_label_values,
    check_pair_files,
    load_array,
    read_header,
)
from samir.data.transforms import abdomen_transforms, acdc_transforms, load_pair


def _save(path, arr, affine=None):
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture
def acdc_pair(acdc_root, tmp_path):
    """A copy of patient001 and its ED->ES pair dict."""
    src = acdc_root / "training" / "patient001"
    shutil.copytree(src, tmp_path / "training" / "patient001")
    return acdc_pairs(tmp_path, "train", directions=("ED->ES",))[0]


def test_truncated_nifti(acdc_pair):
    path = acdc_pair["moving"]
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"patient001_frame01\.nii\.gz: unreadable or truncated"):
        load_array(path)
    with pytest.raises(ValueError, match=r"patient001_frame01\.nii\.gz: unreadable or truncated"):
        load_pair(acdc_transforms(), acdc_pair)
    with open(path, "wb") as f:
        f.write(data[:100])  # not even a header
    with pytest.raises(ValueError, match=r"patient001_frame01\.nii\.gz: unreadable image"):
        read_header(path, "image")
    with pytest.raises(ValueError, match=r"patient001_frame01\.nii\.gz: unreadable"):
        load_pair(acdc_transforms(), acdc_pair)


def test_not_a_nifti(tmp_path):
    p = tmp_path / "x.nii.gz"
    p.write_text("hello")
    with pytest.raises(ValueError, match=r"x\.nii\.gz: unreadable"):
        read_header(p)
    with pytest.raises(FileNotFoundError, match=r"y\.nii\.gz: expected image file, found nothing"):
        read_header(tmp_path / "y.nii.gz", "image")


def test_nan_voxels(acdc_pair):
    path = acdc_pair["fixed"]
    img = nib.load(path)
    arr = np.asarray(img.dataobj).astype(np.float32)
    arr[3, 4, 1] = np.nan
    _save(path, arr, img.affine)
    msg = r"_frame\d\d\.nii\.gz: expected finite voxel values, got 1 NaN/inf voxels"
    with pytest.raises(ValueError, match=msg):
        load_pair(acdc_transforms(), acdc_pair)


def test_label_out_of_set(acdc_pair):
    path = acdc_pair["moving_label"]
    img = nib.load(path)
    arr = np.asarray(img.dataobj).copy()
    arr[0, 0, 0] = 7
    _save(path, arr, img.affine)
    with pytest.raises(ValueError, match=r"frame01_gt\.nii\.gz: label values outside the data set's set, "
                                         r"expected a subset of \[0, 1, 2, 3\], got \[7\]"):
        load_pair(acdc_transforms(), acdc_pair)
    with pytest.raises(ValueError, match=r"lab\.nii: expected integer label values, got \[0\.5\]"):
        check_label_values(np.array([0.0, 0.5, 1.0]), "lab.nii", None)


def test_shape_and_affine_mismatch(acdc_pair):
    path = acdc_pair["fixed_label"]
    img = nib.load(path)
    arr = np.asarray(img.dataobj)
    _save(path, arr[:, :-2], img.affine)
    with pytest.raises(ValueError, match=r"_gt\.nii\.gz: shape mismatch, expected \(\d+, \d+, \d+\)"):
        check_pair_files(acdc_pair)
    with pytest.raises(ValueError, match=r"_gt\.nii\.gz: shape mismatch"):
        load_pair(acdc_transforms(), acdc_pair)
    affine = img.affine.copy()
    affine[:3, :3] *= -1
    _save(path, arr, affine)
    with pytest.raises(ValueError, match=r"_gt\.nii\.gz: affine mismatch with patient001_frame\d\d\.nii\.gz"):
        load_pair(acdc_transforms(), acdc_pair)
    # a moving image on another grid than the fixed one (the ACDC chain needs one grid per pair)
    _save(path, arr, img.affine)
    mov = nib.load(acdc_pair["moving"])
    _save(acdc_pair["moving"], np.asarray(mov.dataobj)[:-4], mov.affine)
    lab = nib.load(acdc_pair["moving_label"])
    _save(acdc_pair["moving_label"], np.asarray(lab.dataobj)[:-4], lab.affine)
    with pytest.raises(ValueError, match=r"frame01\.nii\.gz: shape mismatch"):
        load_pair(acdc_transforms(), acdc_pair)


def test_abdomen_label_set(abdomen_root, tmp_path):
    lab = tmp_path / "lab.nii.gz"
    arr = np.asarray(nib.load(str(abdomen_root / "labelsTr" / "AbdomenCTCT_0001_0000.nii.gz")).dataobj).copy()
    arr[0, 0, 0] = 14
    _save(lab, arr, nib.load(str(abdomen_root / "imagesTr" / "AbdomenCTCT_0001_0000.nii.gz")).affine)
    item = {"fixed": str(abdomen_root / "imagesTr" / "AbdomenCTCT_0001_0000.nii.gz"), "fixed_label": str(lab),
            "moving": str(abdomen_root / "imagesTr" / "AbdomenCTCT_0002_0000.nii.gz")}
    with pytest.raises(ValueError, match=r"lab\.nii\.gz: label values outside the data set's set.*got \[14\]"):
        load_pair(abdomen_transforms(), item)


def test_dictionary_transforms_on_arrays(tmp_path):
    img = torch.zeros(1, 4, 4, 4)
    lab = torch.zeros(1, 4, 4, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="fixed_label: shape mismatch, expected"):
        CheckPaird(allowed_labels=[0, 1])({"fixed": img, "fixed_label": lab, "moving": img})
    out = CheckPaird(allowed_labels=[0, 1])({"fixed": img, "moving": img, "fixed_label": torch.zeros(1, 4, 4, 4)})
    assert set(out) == {"fixed", "moving", "fixed_label"}
    a = _save(tmp_path / "a.nii.gz", np.zeros((4, 4, 4), np.float32))
    b = _save(tmp_path / "b.nii.gz", np.zeros((4, 5, 4), np.float32))
    with pytest.raises(ValueError, match=r"b\.nii\.gz: shape mismatch, expected \(4, 4, 4\) \(as a\.nii\.gz\)"):
        CheckFilesd(same_shape=("fixed", "moving"))({"fixed": str(a), "moving": str(b)})
    with pytest.raises(FileNotFoundError, match=r"c\.nii\.gz: expected label file"):
        CheckFilesd()({"fixed": str(a), "fixed_label": str(tmp_path / "c.nii.gz")})
    with pytest.raises(ValueError, match=r"d\.nii\.gz: expected a single 3D image volume, got shape \(4, 4, 4, 2\)"):
        read_header(_save(tmp_path / "d.nii.gz", np.zeros((4, 4, 4, 2), np.float32)), "image")
