"""Generic pair datalists."""

from __future__ import annotations

import json
import shutil

import pytest
from samir.data.pairs import datalist_pairs


@pytest.fixture
def two_images(abdomen_root, tmp_path):
    d = tmp_path / "data"
    (d / "img").mkdir(parents=True)
    for i in (1, 2):
        shutil.copy(abdomen_root / "imagesTr" / f"AbdomenCTCT_{i:04d}_0000.nii.gz", d / "img" / f"a{i}.nii.gz")
        shutil.copy(abdomen_root / "labelsTr" / f"AbdomenCTCT_{i:04d}_0000.nii.gz", d / "img" / f"a{i}_seg.nii.gz")
    return d


def test_relative_and_absolute(two_images):
    d = two_images
    entries = [
        {"fixed": "img/a1.nii.gz", "moving": "./img/a2.nii.gz", "fixed_label": "img/a1_seg.nii.gz",
         "moving_label": "img/a2_seg.nii.gz", "note": "kept"},
        {"fixed": str(d / "img" / "a2.nii.gz"), "moving": "img/a1.nii.gz", "pair_id": "custom"},
    ]
    (d / "list.json").write_text(json.dumps(entries))
    pairs = datalist_pairs(d / "list.json")
    assert len(pairs) == 2
    assert pairs[0]["fixed"] == str(d / "img" / "a1.nii.gz") and pairs[0]["moving_label"].endswith("a2_seg.nii.gz")
    assert pairs[0]["note"] == "kept" and pairs[0]["pair_id"] == "0000_a1_a2"
    assert "fixed_label" not in pairs[1] and pairs[1]["pair_id"] == "custom"
    # the same list under a key of an object
    (d / "obj.json").write_text(json.dumps({"name": "x", "pairs": entries}))
    assert [p["fixed"] for p in datalist_pairs(d / "obj.json")] == [p["fixed"] for p in pairs]
    (d / "l2r.json").write_text(json.dumps({"registration_val": entries[:1], "training": [{"image": "img/a1.nii.gz"}]}))
    assert len(datalist_pairs(d / "l2r.json")) == 1


def test_errors(two_images, tmp_path):
    d = two_images
    with pytest.raises(FileNotFoundError, match=r"nope\.json: expected pair datalist json"):
        datalist_pairs(d / "nope.json")
    (d / "bad.json").write_text("[")
    with pytest.raises(ValueError, match=r"bad\.json: expected valid JSON"):
        datalist_pairs(d / "bad.json")
    (d / "nokey.json").write_text(json.dumps([{"fixed": "img/a1.nii.gz"}]))
    with pytest.raises(ValueError, match=r"nokey\.json: entry 0: expected keys 'fixed' and 'moving', got \['fixed'\]"):
        datalist_pairs(d / "nokey.json")
    (d / "missing.json").write_text(json.dumps([{"fixed": "img/a1.nii.gz", "moving": "img/zz.nii.gz"}]))
    with pytest.raises(FileNotFoundError, match=r"img/zz\.nii\.gz: expected the 'moving' file of entry 0 in .*missing\.json"):
        datalist_pairs(d / "missing.json")
    (d / "obj.json").write_text(json.dumps({"items": []}))
    with pytest.raises(ValueError, match=r"obj\.json: expected a list of \{fixed, moving\} entries"):
        datalist_pairs(d / "obj.json")
    with pytest.raises(ValueError, match=r"obj\.json: expected a 'pairs' entry"):
        datalist_pairs(d / "obj.json", key="pairs")
