"""Brain pair sets (synthetic subjects of the MNI152 template) in a simple Learn2Reg-like layout.

Layout (written by :mod:`samir.data.synthetic_brain`)::

    ROOT/imagesTr/brain_NNNN_0000.nii.gz   T1-weighted image of subject NNNN (2 mm, RAS affine)
    ROOT/imagesTr/brain_NNNN_0001.nii.gz   T2-like image of the same subject (same grid, same anatomy)
    ROOT/labelsTr/brain_NNNN.nii.gz        labels 0 background, 1 CSF, 2 GM, 3 WM
    ROOT/pairs.json                        {"dev": [...], "dev_cross": [...], "test": [...], "test_cross": [...]}

Each list holds ``{fixed, moving, fixed_label, moving_label, pair_id}`` with paths relative to ROOT.
``dev``/``test`` pair two T1 images, ``*_cross`` the same subjects with the T2-like moving image.
Dev subjects and test subjects are drawn from disjoint seeds (see ``synthetic_brain``): tune on
``dev``, judge on ``test``.

Split names of the bundle map as: ``train`` and ``val`` -> ``dev``; ``test`` -> ``test``;
``dev``, ``dev_cross``, ``test_cross`` are read as such; ``all`` is every list the set has.
"""

from __future__ import annotations

import json
from pathlib import Path

from samir.data.checks import check_exists
from samir.data.pairs import datalist_pairs

__all__ = ["BRAIN_LABELS", "BRAIN_ALLOWED_LABELS", "BRAIN_SPLITS", "brain_pairs"]

BRAIN_LABELS: dict[int, str] = {1: "CSF", 2: "GM", 3: "WM"}
BRAIN_ALLOWED_LABELS: tuple[int, ...] = (0, 1, 2, 3)
BRAIN_SPLITS: tuple[str, ...] = ("dev", "dev_cross", "test", "test_cross")
_ALIASES = {"train": "dev", "val": "dev"}


def brain_pairs(root: str | Path, split: str = "test", check_files: bool = True) -> list[dict]:
    """Pairs of a brain set: ``root`` is the folder holding ``pairs.json`` (or that json itself).

    ``split``: ``dev``, ``dev_cross``, ``test``, ``test_cross``, ``train``/``val`` (= ``dev``) or ``all``.
    Each dict carries absolute paths, ``pair_id`` and ``split``.
    """
    path = Path(root)
    if path.is_dir():
        path = path / "pairs.json"
    split = _ALIASES.get(split, split)
    if split not in BRAIN_SPLITS + ("all",):
        raise ValueError(f"split: expected one of {list(BRAIN_SPLITS)}, 'train', 'val' or 'all', got {split!r}")
    if split == "all":  # the lists the set has (*_cross only when written with the T2-like images)
        data = json.loads(check_exists(path, "brain pairs.json").read_text())
        keys = tuple(k for k in BRAIN_SPLITS if k in data)
    else:
        keys = (split,)
    out: list[dict] = []
    for key in keys:
        for item in datalist_pairs(path, key=key, check_files=check_files):
            item.setdefault("split", key)
            out.append(item)
    return out
