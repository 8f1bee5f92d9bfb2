"""Learn2Reg AbdomenCTCT (CT, inter-subject) reader in the official layout.

Layout::

    ROOT/AbdomenCTCT_dataset.json                        "training": [{image, label}], "registration_val": [{fixed, moving}]
    ROOT/imagesTr/AbdomenCTCT_0001_0000.nii.gz           int16 HU, 192x160x256 at 2 mm
    ROOT/labelsTr/AbdomenCTCT_0001_0000.nii.gz           13 organs (ABDOMEN_LABELS)

Split of the literature: subjects 1-20 train (all ordered pairs), 21-23 validate (the json's
``registration_val``), 24-30 test (all ordered pairs: 42). ``pair_id`` is ``FFFF_MMMM`` (fixed, moving),
as Learn2Reg numbers its pairs; the moving image is registered onto the fixed one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from itertools import permutations
from pathlib import Path

from samir.data.checks import check_exists

__all__ = [
    "ABDOMEN_LABELS",
    "ABDOMEN_JSON",
    "ABDOMEN_TRAIN_IDS",
    "ABDOMEN_VAL_IDS",
    "ABDOMEN_TEST_IDS",
    "ABDOMEN_SHAPE",
    "ABDOMEN_SPACING",
    "ABDOMEN_HU_RANGE",
    "abdomen_image_path",
    "abdomen_label_path",
    "read_abdomen_json",
    "abdomen_pairs",
]

# the protocol's CT window: HU clipped to [-500, 800], then scaled to [0, 1] (transforms, presets)
ABDOMEN_HU_RANGE: tuple[float, float] = (-500.0, 800.0)

ABDOMEN_LABELS: dict[int, str] = {
    1: "spleen",
    2: "right kidney",
    3: "left kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior vena cava",
    10: "portal and splenic vein",
    11: "pancreas",
    12: "left adrenal gland",
    13: "right adrenal gland",
}
ABDOMEN_ALLOWED_LABELS: tuple[int, ...] = tuple(range(14))
ABDOMEN_JSON = "AbdomenCTCT_dataset.json"
ABDOMEN_TRAIN_IDS = range(1, 21)
ABDOMEN_VAL_IDS = range(21, 24)
ABDOMEN_TEST_IDS = range(24, 31)
ABDOMEN_SHAPE: tuple[int, int, int] = (192, 160, 256)
ABDOMEN_SPACING: tuple[float, float, float] = (2.0, 2.0, 2.0)

_ID_RE = re.compile(r"AbdomenCTCT_(\d{4})_\d{4}\.nii(\.gz)?$")


def abdomen_image_path(root: str | Path, subject: int) -> Path:
    """ROOT/imagesTr/AbdomenCTCT_NNNN_0000.nii.gz."""
    return Path(root) / "imagesTr" / f"AbdomenCTCT_{subject:04d}_0000.nii.gz"


def abdomen_label_path(root: str | Path, subject: int) -> Path:
    """ROOT/labelsTr/AbdomenCTCT_NNNN_0000.nii.gz."""
    return Path(root) / "labelsTr" / f"AbdomenCTCT_{subject:04d}_0000.nii.gz"


def _subject_id(entry: str, json_path: Path) -> int:
    m = _ID_RE.search(str(entry))
    if not m:
        raise ValueError(f"{json_path}: expected entries like './imagesTr/AbdomenCTCT_0001_0000.nii.gz', got {entry!r}")
    return int(m.group(1))


def read_abdomen_json(root: str | Path) -> dict:
    """Load ``ROOT/AbdomenCTCT_dataset.json``; errors name the file."""
    path = check_exists(Path(root) / ABDOMEN_JSON, "AbdomenCTCT dataset json")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: expected valid JSON ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("training"), list):
        raise ValueError(f"{path}: expected an object with a 'training' list of {{image, label}} entries")
    return data


def _label_for(image: Path) -> Path:
    return image.parent.parent / "labelsTr" / image.name


def _pair(root: Path, fixed: int, moving: int, fixed_path: Path | None = None, moving_path: Path | None = None,
          require_labels: bool = True) -> dict:
    f_img = fixed_path or abdomen_image_path(root, fixed)
    m_img = moving_path or abdomen_image_path(root, moving)
    item = {"fixed": str(check_exists(f_img, "fixed image")), "moving": str(check_exists(m_img, "moving image"))}
    for key, img in (("fixed_label", f_img), ("moving_label", m_img)):
        lab = _label_for(img)
        if lab.is_file():
            item[key] = str(lab)
        elif require_labels:
            raise FileNotFoundError(f"{lab}: expected the label file of {img.name}, file not found")
    item.update(pair_id=f"{fixed:04d}_{moving:04d}", fixed_id=fixed, moving_id=moving)
    return item


def abdomen_pairs(
    root: str | Path,
    split: str = "train",
    train_ids: Iterable[int] = ABDOMEN_TRAIN_IDS,
    test_ids: Iterable[int] = ABDOMEN_TEST_IDS,
    require_labels: bool = True,
) -> list[dict]:
    """Pairs of an AbdomenCTCT root as dicts {fixed, moving, fixed_label, moving_label, pair_id, fixed_id, moving_id}.

    ``train``: all ordered pairs of the json's training subjects within ``train_ids``; ``val``: the json's
    ``registration_val``; ``test``: all ordered pairs of subjects within ``test_ids`` (42 for 24-30).
    """
    root = Path(root)
    data = read_abdomen_json(root)
    json_path = root / ABDOMEN_JSON
    listed = sorted({_subject_id(e.get("image", ""), json_path) for e in data["training"] if isinstance(e, dict)})
    if split == "train":
        ids = [i for i in listed if i in set(train_ids)]
        return [_pair(root, f, m, require_labels=require_labels) for f, m in permutations(ids, 2)]
    if split == "test":
        ids = [i for i in listed if i in set(test_ids)]
        return [_pair(root, f, m, require_labels=require_labels) for f, m in permutations(ids, 2)]
    if split == "val":
        pairs = []
        for n, entry in enumerate(data.get("registration_val", [])):
            if not isinstance(entry, dict) or "fixed" not in entry or "moving" not in entry:
                raise ValueError(f"{json_path}: registration_val[{n}]: expected {{fixed, moving}}, got {entry!r}")
            f, m = _subject_id(entry["fixed"], json_path), _subject_id(entry["moving"], json_path)
            pairs.append(
                _pair(root, f, m, root / entry["fixed"], root / entry["moving"], require_labels=require_labels)
            )
        return pairs
    raise ValueError(f"split: expected 'train', 'val' or 'test', got {split!r}")
