"""AbdomenCTCT reader: json, splits of the literature, errors."""

from __future__ import annotations

import json
import shutil

import pytest
from samir.data.abdomen import ABDOMEN_LABELS, abdomen_pairs, read_abdomen_json


def test_labels():
    assert len(ABDOMEN_LABELS) == 13
    assert ABDOMEN_LABELS[1] == "spleen" and ABDOMEN_LABELS[6] == "liver" and ABDOMEN_LABELS[13] == "right adrenal gland"


def test_split_counts(abdomen_root):
    train = abdomen_pairs(abdomen_root, "train")
    val = abdomen_pairs(abdomen_root, "val")
    test = abdomen_pairs(abdomen_root, "test")
    assert len(train) == 20 * 19
    assert len(test) == 42
    assert len(val) == len(read_abdomen_json(abdomen_root)["registration_val"]) == 6
    ids = lambda pairs: {p["fixed_id"] for p in pairs} | {p["moving_id"] for p in pairs}  # noqa: E731
    assert ids(train) == set(range(1, 21)) and ids(val) == {21, 22, 23} and ids(test) == set(range(24, 31))
    assert all(p["fixed_id"] != p["moving_id"] for p in train + val + test)
    assert len(abdomen_pairs(abdomen_root, "train", train_ids=range(1, 4))) == 6


def test_pair_fields(abdomen_root):
    p = abdomen_pairs(abdomen_root, "test")[0]
    assert p["pair_id"] == f"{p['fixed_id']:04d}_{p['moving_id']:04d}"
    assert p["fixed"].endswith(f"imagesTr/AbdomenCTCT_{p['fixed_id']:04d}_0000.nii.gz")
    assert p["moving_label"].endswith(f"labelsTr/AbdomenCTCT_{p['moving_id']:04d}_0000.nii.gz")
    entry = read_abdomen_json(abdomen_root)["registration_val"][0]
    v = abdomen_pairs(abdomen_root, "val")[0]
    assert v["fixed"].endswith(entry["fixed"][2:]) and v["moving"].endswith(entry["moving"][2:])
    assert "/./" not in v["fixed"]


def test_errors(abdomen_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"AbdomenCTCT_dataset\.json: expected AbdomenCTCT dataset json"):
        abdomen_pairs(tmp_path)
    with pytest.raises(ValueError, match="split: expected"):
        abdomen_pairs(abdomen_root, "validation")
    root = tmp_path / "abd"
    shutil.copytree(abdomen_root, root)
    (root / "labelsTr" / "AbdomenCTCT_0025_0000.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"labelsTr/AbdomenCTCT_0025_0000\.nii\.gz: expected the label file"):
        abdomen_pairs(root, "test")
    assert len(abdomen_pairs(root, "test", require_labels=False)) == 42
    (root / "imagesTr" / "AbdomenCTCT_0002_0000.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"imagesTr/AbdomenCTCT_0002_0000\.nii\.gz: expected (fixed|moving) image file"):
        abdomen_pairs(root, "train")
    (root / "AbdomenCTCT_dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"AbdomenCTCT_dataset\.json: expected valid JSON"):
        abdomen_pairs(root, "train")
    (root / "AbdomenCTCT_dataset.json").write_text(json.dumps({"training": [{"image": "./imagesTr/x.nii.gz"}]}))
    with pytest.raises(ValueError, match=r"expected entries like"):
        abdomen_pairs(root, "train")
