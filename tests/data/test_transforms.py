"""Transform chains: the published protocol sizes, ranges, one crop box per pair, grids kept."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from samir.data.abdomen import abdomen_pairs
from samir.data.acdc import acdc_pairs
from samir.data.pairs import datalist_pairs
from samir.data.transforms import abdomen_transforms, acdc_transforms, generic_transforms, load_pair


def _dice(a: torch.Tensor, b: torch.Tensor, labels) -> list[float]:
    return [float(2 * ((a == k) & (b == k)).sum() / max(int((a == k).sum() + (b == k).sum()), 1)) for k in labels]


@pytest.fixture(scope="module")
def acdc_outputs(acdc_root):
    """(pair dict, chain output) of every ED->ES pair of the synthetic root."""
    chain = acdc_transforms()
    return [(item, load_pair(chain, item)) for item in acdc_pairs(acdc_root, "all", directions=("ED->ES",))]


def test_acdc_chain(acdc_outputs):
    for item, out in acdc_outputs:
        for k in ("fixed", "moving"):
            assert tuple(out[k].shape) == (1, 128, 128, 16) and out[k].dtype == torch.float32
            assert float(out[k].min()) == 0.0 and float(out[k].max()) == pytest.approx(1.0)
            assert isinstance(out[k], MetaTensor)
        for k in ("fixed_label", "moving_label"):
            assert tuple(out[k].shape) == (1, 128, 128, 16) and out[k].dtype == torch.uint8
            # the heart is not cut: every label voxel of the file survives the crop (<= 16 slices here)
            raw = np.asarray(nib.load(item[k]).dataobj)
            assert int((out[k] > 0).sum()) == int((raw > 0).sum())
            assert set(torch.unique(out[k]).tolist()) == {0, 1, 2, 3}
        # one box for the pair: the same grid for the four outputs
        for k in ("moving", "fixed_label", "moving_label"):
            np.testing.assert_allclose(np.asarray(out[k].affine), np.asarray(out["fixed"].affine), atol=1e-5)


def test_acdc_crop_keeps_world_coordinates(acdc_root):
    item = acdc_pairs(acdc_root, "test", directions=("ED->ES",))[0]
    out = load_pair(acdc_transforms(), item)
    raw = nib.load(item["fixed_label"])
    raw_lab = np.asarray(raw.dataobj)
    # a labelled voxel's world position maps back onto the same label in the file
    lab = out["fixed_label"][0].numpy()
    inv = np.linalg.inv(raw.affine)
    for idx in np.argwhere(lab == 3)[::97][:20]:
        world = np.asarray(out["fixed_label"].affine, dtype=float) @ np.r_[idx, 1.0]
        src = np.round(inv @ world)[:3].astype(int)
        assert raw_lab[tuple(src)] == 3


def test_acdc_image_centre_without_labels(acdc_root):
    item = acdc_pairs(acdc_root, "test", directions=("ED->ES",))[0]
    out = load_pair(acdc_transforms(with_labels=False), item)
    assert tuple(out["fixed"].shape) == (1, 128, 128, 16) and "fixed_label" in out
    assert isinstance(out["fixed_label"], str)  # untouched path
    out = load_pair(acdc_transforms(center_on="image"), item)
    assert tuple(out["moving_label"].shape) == (1, 128, 128, 16)


def test_identity_dice_acdc(acdc_outputs):
    """Motion exists (identity Dice clearly below 1) and is recoverable (well above 0)."""
    scores = []
    for _, out in acdc_outputs:
        scores.append(_dice(out["moving_label"], out["fixed_label"], (1, 2, 3)))
    mean = float(np.mean(scores))
    assert 0.3 < mean < 0.9, scores


def test_abdomen_chain(abdomen_root):
    item = abdomen_pairs(abdomen_root, "test")[0]
    out = load_pair(abdomen_transforms(), item)
    assert tuple(out["fixed"].shape) == (1, 48, 40, 64)
    raw = np.asarray(nib.load(item["fixed"]).dataobj).astype(np.float32)
    expected = np.clip((raw + 500.0) / 1300.0, 0.0, 1.0)
    np.testing.assert_allclose(out["fixed"][0].numpy(), expected, atol=1e-5)
    assert out["fixed_label"].dtype == torch.uint8 and int(out["fixed_label"].max()) == 13


def test_abdomen_half_resolution(abdomen_root):
    item = abdomen_pairs(abdomen_root, "val")[0]
    out = load_pair(abdomen_transforms(half_resolution=True, half_size=(24, 20, 32)), item)
    for k in ("fixed", "moving"):
        assert tuple(out[k].shape) == (1, 24, 20, 32)
        assert 0.0 <= float(out[k].min()) and float(out[k].max()) <= 1.0
    for k in ("fixed_label", "moving_label"):
        assert out[k].dtype == torch.uint8 and set(torch.unique(out[k]).tolist()) <= set(range(14))
    # spacing doubled, field of view kept
    spacing = np.linalg.norm(np.asarray(out["fixed"].affine)[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, 2 * np.asarray(nib.load(item["fixed"]).header.get_zooms()[:3]), rtol=1e-5)


def test_abdomen_half_resolution_default_size():
    chain = abdomen_transforms(half_resolution=True)
    sizes = [t.resizer.spatial_size for t in chain.transforms if hasattr(t, "resizer")]
    assert sizes and all(tuple(s) == (96, 80, 128) for s in sizes)


def test_generic_chain(abdomen_root, tmp_path):
    a = abdomen_root / "imagesTr" / "AbdomenCTCT_0001_0000.nii.gz"
    la = abdomen_root / "labelsTr" / "AbdomenCTCT_0001_0000.nii.gz"
    b = tmp_path / "b.nii.gz"
    img = nib.load(str(a))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:40], img.affine), str(b))  # another grid
    (tmp_path / "l.json").write_text(json.dumps([{"fixed": str(a), "fixed_label": str(la), "moving": "b.nii.gz"}]))
    item = datalist_pairs(tmp_path / "l.json")[0]
    out = load_pair(generic_transforms(spatial_size=(32, 32, 32)), item)
    assert tuple(out["fixed"].shape) == tuple(out["moving"].shape) == (1, 32, 32, 32)
    assert out["fixed_label"].dtype == torch.int32 and 0.5 < float(out["moving"].max()) <= 1.0
    with pytest.raises(ValueError, match=r"b\.nii\.gz: shape mismatch"):
        load_pair(generic_transforms(), item)
    out = load_pair(generic_transforms(intensity_range=(-500, 800)), {"fixed": str(a), "moving": str(a)})
    assert float(out["fixed"].min()) == 0.0
