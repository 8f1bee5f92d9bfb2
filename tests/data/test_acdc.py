"""ACDC reader: layout, splits, directions and the errors on bad input."""

from __future__ import annotations

import re
import shutil

import nibabel as nib
import numpy as np
import pytest
from samir.data.acdc import ACDC_LABELS, ACDC_VAL_IDS, acdc_pairs, read_info_cfg
from synth_params import ACDC_TEST, ACDC_TRAIN


def test_constants():
    assert ACDC_LABELS == {1: "RV", 2: "MYO", 3: "LV"}
    assert len(ACDC_VAL_IDS) == 15
    assert sorted(ACDC_VAL_IDS) == [18, 19, 20, 38, 39, 40, 58, 59, 60, 78, 79, 80, 98, 99, 100]


def test_read_info_cfg(acdc_root):
    info = read_info_cfg(acdc_root / "training" / "patient001" / "Info.cfg")
    assert set(info) == {"ED", "ES", "Group", "Height", "NbFrame", "Weight"}
    assert info["ED"] == 1 and 1 < info["ES"] <= info["NbFrame"]
    assert info["Group"] in {"NOR", "MINF", "DCM", "HCM", "RV"}
    assert isinstance(info["Height"], float) and isinstance(info["Weight"], float)


def test_split_counts(acdc_root):
    n_val = sum(1 for p in ACDC_TRAIN if p in ACDC_VAL_IDS)
    assert len(acdc_pairs(acdc_root, "train")) == 2 * (len(ACDC_TRAIN) - n_val)
    assert len(acdc_pairs(acdc_root, "val")) == 2 * n_val
    assert len(acdc_pairs(acdc_root, "test")) == 2 * len(ACDC_TEST)
    assert len(acdc_pairs(acdc_root, "all")) == 2 * (len(ACDC_TRAIN) + len(ACDC_TEST))
    assert len(acdc_pairs(acdc_root, "test", directions=("ED->ES",))) == len(ACDC_TEST)
    # a custom validation list moves patients between train and val
    assert len(acdc_pairs(acdc_root, "val", val_ids=[1])) == 2
    assert {p["patient_id"] for p in acdc_pairs(acdc_root, "val")} == {18, 19}
    assert {p["patient_id"] for p in acdc_pairs(acdc_root, "test")} == set(ACDC_TEST)


def test_direction_semantics(acdc_root):
    pairs = {p["pair_id"]: p for p in acdc_pairs(acdc_root, "test")}
    info = read_info_cfg(acdc_root / "testing" / "patient101" / "Info.cfg")
    ed, es = f"frame{info['ED']:02d}", f"frame{info['ES']:02d}"
    fwd, bwd = pairs["patient101_ED->ES"], pairs["patient101_ES->ED"]
    # ED->ES: the ED frame moves onto the fixed ES frame
    assert fwd["moving"].endswith(f"patient101_{ed}.nii.gz") and fwd["fixed"].endswith(f"patient101_{es}.nii.gz")
    assert fwd["moving_label"].endswith(f"patient101_{ed}_gt.nii.gz")
    assert fwd["fixed_label"].endswith(f"patient101_{es}_gt.nii.gz")
    assert bwd["fixed"] == fwd["moving"] and bwd["moving"] == fwd["fixed"]
    assert fwd["patient"] == "patient101" and fwd["direction"] == "ED->ES"
    zooms = nib.load(fwd["fixed"]).header.get_zooms()
    np.testing.assert_allclose(fwd["spacing"], zooms[:3], rtol=1e-6)


def _copy_patient(acdc_root, tmp_path, pid=1):
    src = acdc_root / "training" / f"patient{pid:03d}"
    root = tmp_path / "acdc"
    shutil.copytree(src, root / "training" / src.name)
    return root, root / "training" / src.name


def test_missing_info_cfg(acdc_root, tmp_path):
    root, d = _copy_patient(acdc_root, tmp_path)
    (d / "Info.cfg").unlink()
    with pytest.raises(FileNotFoundError, match=r"patient001/Info\.cfg.*expected ACDC Info\.cfg"):
        acdc_pairs(root, "train")


def test_missing_frame_file(acdc_root, tmp_path):
    root, d = _copy_patient(acdc_root, tmp_path)
    es = read_info_cfg(d / "Info.cfg")["ES"]
    (d / f"patient001_frame{es:02d}.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=rf"patient001_frame{es:02d}\.nii\.gz.*ES frame {es}.*not found"):
        acdc_pairs(root, "train")


def test_missing_label_file(acdc_root, tmp_path):
    root, d = _copy_patient(acdc_root, tmp_path)
    (d / "patient001_frame01_gt.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"patient001_frame01_gt\.nii\.gz.*ED label"):
        acdc_pairs(root, "train")
    pairs = acdc_pairs(root, "train", require_labels=False)
    assert "moving_label" not in pairs[0] and "fixed_label" in pairs[0]  # ED->ES: ED is moving


def test_ed_frame_that_does_not_exist(acdc_root, tmp_path):
    root, d = _copy_patient(acdc_root, tmp_path)
    cfg = d / "Info.cfg"
    text = cfg.read_text()
    nb = read_info_cfg(cfg)["NbFrame"]
    cfg.write_text(re.sub(r"^ED: \d+", f"ED: {nb + 5}", text, flags=re.M))
    with pytest.raises(ValueError, match=rf"Info\.cfg: ED frame {nb + 5} does not exist, expected 1\.\.{nb}"):
        acdc_pairs(root, "train")
    # a frame inside 1..NbFrame whose file is absent
    cfg.write_text(re.sub(r"^ED: \d+", "ED: 2", text, flags=re.M))
    with pytest.raises(FileNotFoundError, match=r"patient001_frame02\.nii\.gz: expected the ED frame 2"):
        acdc_pairs(root, "train")


def test_bad_info_cfg(acdc_root, tmp_path):
    root, d = _copy_patient(acdc_root, tmp_path)
    (d / "Info.cfg").write_text("ES: 10\nGroup: NOR\n")
    with pytest.raises(ValueError, match=r"Info\.cfg: expected an 'ED: <frame>' line"):
        acdc_pairs(root, "train")


def _rewrite(path, data=None, affine=None):
    img = nib.load(str(path))
    arr = np.asarray(img.dataobj) if data is None else data
    nib.save(nib.Nifti1Image(arr, img.affine if affine is None else affine), str(path))


def test_label_shape_mismatch(acdc_root, tmp_path):
    root, d = _copy_patient(acdc_root, tmp_path)
    gt = d / "patient001_frame01_gt.nii.gz"
    arr = np.asarray(nib.load(str(gt)).dataobj)
    _rewrite(gt, data=arr[:-3])
    with pytest.raises(ValueError, match=r"patient001_frame01_gt\.nii\.gz: shape mismatch, expected"):
        acdc_pairs(root, "train")


def test_label_affine_mismatch(acdc_root, tmp_path):
    root, d = _copy_patient(acdc_root, tmp_path)
    gt = d / "patient001_frame01_gt.nii.gz"
    affine = nib.load(str(gt)).affine.copy()
    affine[0, 3] += 5.0
    _rewrite(gt, affine=affine)
    with pytest.raises(ValueError, match=r"patient001_frame01_gt\.nii\.gz: affine mismatch"):
        acdc_pairs(root, "train")


def test_bad_arguments(acdc_root, tmp_path):
    with pytest.raises(ValueError, match="split: expected"):
        acdc_pairs(acdc_root, "validation")
    with pytest.raises(ValueError, match="direction: expected"):
        acdc_pairs(acdc_root, "train", directions=("ED-ES",))
    with pytest.raises(FileNotFoundError, match="expected an ACDC root"):
        acdc_pairs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="found none"):
        acdc_pairs(tmp_path / "empty")
