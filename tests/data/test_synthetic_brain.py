"""Synthetic brain pairs (MNI152 template subjects): layout, readers, seeds, deformation, contrasts."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("nilearn")

from samir.data.brain import BRAIN_LABELS, brain_pairs  # noqa: E402
from samir.data.synthetic_brain import (  # noqa: E402
    SPLIT_CODES,
    _params,
    brain_subject,
    mni152_2mm,
    subject_entropy,
    subject_name,
    write_synthetic_brain,
)


def _dice(a, b, label):
    a, b = a == label, b == label
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module")
def brain_root(tmp_path_factory):
    """One dev and one test pair (8 images, 4 labels)."""
    return write_synthetic_brain(tmp_path_factory.mktemp("brain"), n=1, seed=0)


def _arr(path):
    return np.asarray(nib.load(str(path)).dataobj)


def test_template_grid_and_labels():
    tpl = mni152_2mm()
    assert tpl["label"].shape == (98, 116, 94)
    np.testing.assert_allclose(np.diag(tpl["affine"])[:3], (2.0, 2.0, 2.0))  # RAS, 2 mm
    counts = np.bincount(tpl["label"].ravel(), minlength=4)
    assert counts.size == 4 and (counts[1:] > 10000).all()
    assert counts[2] > counts[1] and counts[3] > counts[1]  # GM and WM outnumber CSF
    assert tpl["t1"][tpl["label"] == 3].mean() > tpl["t1"][tpl["label"] == 2].mean() > tpl["t1"][tpl["label"] == 1].mean()


def test_layout_and_readers(brain_root):
    doc = json.loads((brain_root / "pairs.json").read_text())
    assert {k: len(doc[k]) for k in ("dev", "dev_cross", "test", "test_cross")} == dict.fromkeys(
        ("dev", "dev_cross", "test", "test_cross"), 1)
    assert doc["labels"] == {str(k): v for k, v in BRAIN_LABELS.items()}
    assert doc["test"][0]["fixed"] == "imagesTr/brain_1000_0000.nii.gz"
    assert doc["test_cross"][0]["moving"] == "imagesTr/brain_1001_0001.nii.gz"
    assert doc["dev"][0]["moving_label"] == "labelsTr/brain_0001.nii.gz"
    for split, expected in (("dev", 1), ("train", 1), ("val", 1), ("test", 1), ("test_cross", 1), ("all", 4)):
        pairs = brain_pairs(brain_root, split)
        assert len(pairs) == expected
    item = brain_pairs(brain_root, "test")[0]
    img = nib.load(item["fixed"])
    assert img.shape == (98, 116, 94) and img.get_data_dtype() == np.int16
    np.testing.assert_allclose(img.header.get_zooms(), (2.0, 2.0, 2.0))
    assert int(img.header["sform_code"]) == 1 and np.all(np.diag(img.affine)[:3] > 0)
    for key in ("fixed_label", "moving_label"):
        assert set(np.unique(_arr(item[key])).tolist()) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="split"):
        brain_pairs(brain_root, "nope")


def test_registry_and_transforms(brain_root):
    from samir.data.registry import dataset_pairs, dataset_transforms, get_dataset, resolve_data_root
    from samir.data.transforms import load_pair

    spec = get_dataset("brain")
    assert spec.labels == {1: "CSF", 2: "GM", 3: "WM"} and spec.synthetic == "brain"
    assert resolve_data_root("brain", brain_root) == brain_root
    pairs = dataset_pairs("brain", brain_root, "test_cross")
    d = load_pair(dataset_transforms("brain"), pairs[0])
    assert tuple(d["fixed"].shape) == (1, 98, 116, 94) == tuple(d["moving"].shape)  # no crop
    assert float(d["moving"].min()) == 0.0 and float(d["moving"].max()) == pytest.approx(1.0)
    assert set(np.unique(d["moving_label"].numpy()).tolist()) == {0, 1, 2, 3}


def test_determinism_by_seed(brain_root):
    a = brain_subject("test", 1, seed=0)  # the fixture's brain_1001, written with seed 0
    moving = brain_pairs(brain_root, "test_cross")[0]
    np.testing.assert_array_equal(a["t2"], _arr(moving["moving"]))
    np.testing.assert_array_equal(a["label"], _arr(moving["moving_label"]))
    draws = [_params(np.random.default_rng(subject_entropy("dev", 3, seed))) for seed in (5, 5, 6)]
    assert draws[0]["field_seed"] == draws[1]["field_seed"] != draws[2]["field_seed"]


def test_dev_and_test_never_share_seeds(brain_root):
    n = 500
    for seed in (0, 1, 100000):
        dev = {subject_entropy("dev", k, seed) for k in range(2 * n)}
        test = {subject_entropy("test", k, seed) for k in range(2 * n)}
        assert not dev & test
    assert SPLIT_CODES["dev"] != SPLIT_CODES["test"]
    assert {subject_name("dev", k) for k in range(2 * n)}.isdisjoint({subject_name("test", k) for k in range(2 * n)})
    doc = json.loads((brain_root / "pairs.json").read_text())
    entropies = {tuple(info["entropy"]) for info in doc["subjects"].values()}
    assert len(entropies) == 4
    dev, test = brain_pairs(brain_root, "dev")[0], brain_pairs(brain_root, "test")[0]
    assert not np.array_equal(_arr(dev["fixed"]), _arr(test["fixed"]))
    with pytest.raises(ValueError):
        subject_entropy("val", 0)


def test_deformation_nonzero_and_bounded(brain_root):
    doc = json.loads((brain_root / "pairs.json").read_text())
    for info in doc["subjects"].values():
        assert 4.5 <= info["max_displacement_mm"] <= 10.5
        assert max(abs(r) for r in info["rotation_deg"]) <= 4.0 and max(abs(t) for t in info["translation_mm"]) <= 4.0
    for split in ("dev", "test"):
        item = brain_pairs(brain_root, split)[0]
        f, m = _arr(item["fixed_label"]), _arr(item["moving_label"])
        for label in (2, 3):  # GM, WM: misaligned, but the same anatomy
            assert 0.45 < _dice(f, m, label) < 0.9, (split, label)
        assert _dice(f, m, 1) < 0.9


def test_cross_contrast_inverts_tissue_order(brain_root):
    item = brain_pairs(brain_root, "test_cross")[0]
    t2, lab = _arr(item["moving"]).astype(float), _arr(item["moving_label"])
    means = [t2[lab == k].mean() for k in (1, 2, 3)]  # CSF, GM, WM
    assert means[2] < means[1] < means[0]
    t1 = _arr(item["moving"].replace("_0001.nii.gz", "_0000.nii.gz")).astype(float)
    means1 = [t1[lab == k].mean() for k in (1, 2, 3)]
    assert means1[0] < means1[1] < means1[2]
    assert (t2[lab == 0] == 0).mean() > 0.9  # skull-stripped background


def test_bad_n(tmp_path):
    with pytest.raises(ValueError, match="n"):
        write_synthetic_brain(tmp_path / "x", n=0)


@pytest.mark.slow
def test_without_cross_contrast(tmp_path):
    root = write_synthetic_brain(tmp_path, n=1, seed=2, cross_contrast=False)
    doc = json.loads((root / "pairs.json").read_text())
    assert "test_cross" not in doc and not list((root / "imagesTr").glob("*_0001.nii.gz"))
    assert len(brain_pairs(root, "all")) == 2
