"""ACDC (cardiac cine MRI, intra-subject) reader in the official layout.

Layout::

    ROOT/training/patient001/Info.cfg                      ED: 1, ES: 12, Group, Height, NbFrame, Weight
    ROOT/training/patient001/patient001_frame01.nii.gz      image (x, y, slices)
    ROOT/training/patient001/patient001_frame01_gt.nii.gz   labels 0 background, 1 RV, 2 MYO, 3 LV
    ROOT/testing/patient101/...

Split of this line of work (FMIR/EOIR loaders): ``training/`` patients not in ``ACDC_VAL_IDS`` train,
the 15 in ``ACDC_VAL_IDS`` validate (three from each pathology block of 20), ``testing/`` tests.

Direction: ``"ED->ES"`` registers the **moving ED** frame onto the **fixed ES** frame (the DDF lives on
the ES grid); ``"ES->ED"`` is the reverse. Both frames of a patient share one grid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from samir.data.checks import check_exists, check_image_label_files

__all__ = ["ACDC_LABELS", "ACDC_VAL_IDS", "ACDC_GROUPS", "read_info_cfg", "acdc_frame_paths", "acdc_pairs"]

ACDC_LABELS: dict[int, str] = {1: "RV", 2: "MYO", 3: "LV"}
ACDC_VAL_IDS: tuple[int, ...] = (18, 19, 20, 38, 39, 40, 58, 59, 60, 78, 79, 80, 98, 99, 100)
ACDC_GROUPS: tuple[str, ...] = ("DCM", "HCM", "MINF", "NOR", "RV")
ACDC_ALLOWED_LABELS: tuple[int, ...] = (0, 1, 2, 3)

_INFO_KEYS = ("ED", "ES", "Group", "Height", "NbFrame", "Weight")
_DIRECTIONS = {"ED->ES": ("ES", "ED"), "ES->ED": ("ED", "ES")}  # direction -> (fixed phase, moving phase)
_PATIENT_RE = re.compile(r"^patient(\d{3,})$")


def read_info_cfg(path: str | Path) -> dict:
    """Parse an ACDC ``Info.cfg`` (``key: value`` lines) into {ED:int, ES:int, NbFrame:int, Group:str, Height/Weight:float}."""
    p = check_exists(path, "ACDC Info.cfg")
    info: dict = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise ValueError(f"{p}: line {n}: expected 'key: value', got {line!r}")
        key, value = (s.strip() for s in line.split(":", 1))
        info[key] = value
    for key in ("ED", "ES"):
        if key not in info:
            raise ValueError(f"{p}: expected an '{key}: <frame>' line, got keys {sorted(info)}")
    try:
        for key in ("ED", "ES", "NbFrame"):
            if key in info:
                info[key] = int(float(info[key]))
        for key in ("Height", "Weight"):
            if key in info:
                info[key] = float(info[key])
    except ValueError as err:
        raise ValueError(f"{p}: expected numbers for ED, ES, NbFrame, Height, Weight ({err})") from err
    nb = info.get("NbFrame")
    for key in ("ED", "ES"):
        if info[key] < 1 or (nb is not None and info[key] > nb):
            raise ValueError(
                f"{p}: {key} frame {info[key]} does not exist, expected 1..{nb if nb is not None else 'NbFrame'}"
            )
    return info


def acdc_frame_paths(patient_dir: str | Path, frame: int, phase: str = "") -> tuple[Path, Path]:
    """(image, label) paths of one frame of a patient folder; the image must exist, the label may not."""
    d = Path(patient_dir)
    image = d / f"{d.name}_frame{frame:02d}.nii.gz"
    label = d / f"{d.name}_frame{frame:02d}_gt.nii.gz"
    if not image.is_file():
        info = d / "Info.cfg"
        raise FileNotFoundError(
            f"{image}: expected the {phase + ' ' if phase else ''}frame {frame} named in {info}, file not found"
        )
    return image, label


def _patient_dirs(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    out = []
    for d in sorted(folder.iterdir()):
        m = _PATIENT_RE.match(d.name)
        if m and d.is_dir():
            out.append((int(m.group(1)), d))
    return out


def acdc_pairs(
    root: str | Path,
    split: str = "train",
    directions: Sequence[str] = ("ED->ES", "ES->ED"),
    val_ids: Iterable[int] = ACDC_VAL_IDS,
    require_labels: bool = True,
    check_headers: bool = True,
) -> list[dict]:
    """Pairs of an ACDC root as MONAI-style dicts.

    Each dict: ``fixed``, ``moving``, ``fixed_label``, ``moving_label`` (str paths, labels omitted when
    ``require_labels=False`` and absent), ``pair_id`` ("patient101_ED->ES"), ``patient`` ("patient101"),
    ``patient_id`` (101), ``direction``, ``group``, ``spacing`` (mm, of the fixed image when headers are read).
    ``"ED->ES"`` means moving = ED, fixed = ES. ``split`` is ``train``, ``val``, ``test`` or ``all``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: expected an ACDC root folder with training/ and testing/, not found")
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"split: expected 'train', 'val', 'test' or 'all', got {split!r}")
    for direction in directions:
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction: expected one of {sorted(_DIRECTIONS)}, got {direction!r}")
    val = {int(v) for v in val_ids}
    train_dirs = _patient_dirs(root / "training")
    test_dirs = _patient_dirs(root / "testing")
    if not train_dirs and not test_dirs:
        raise FileNotFoundError(
            f"{root}: expected ACDC patient folders in {root / 'training'} or {root / 'testing'}, found none"
        )
    chosen: list[tuple[int, Path]] = []
    if split in ("train", "all"):
        chosen += [(i, d) for i, d in train_dirs if i not in val]
    if split in ("val", "all"):
        chosen += [(i, d) for i, d in train_dirs if i in val]
    if split in ("test", "all"):
        chosen += test_dirs

    pairs: list[dict] = []
    for pid, d in chosen:
        info = read_info_cfg(d / "Info.cfg")
        frames = {}
        for phase in ("ED", "ES"):
            image, label = acdc_frame_paths(d, info[phase], phase)
            if not label.is_file():
                if require_labels:
                    raise FileNotFoundError(
                        f"{label}: expected the {phase} label file (frame {info[phase]}), file not found"
                    )
                label = None
            header = check_image_label_files(image, label) if check_headers else None
            frames[phase] = (image, label, header)
        if check_headers and frames["ED"][2].spatial_shape != frames["ES"][2].spatial_shape:
            raise ValueError(
                f"{frames['ES'][0]}: shape mismatch, expected the ED frame's {frames['ED'][2].spatial_shape}, "
                f"got {frames['ES'][2].spatial_shape}"
            )
        for direction in directions:
            fixed_phase, moving_phase = _DIRECTIONS[direction]
            f_img, f_lab, f_hdr = frames[fixed_phase]
            m_img, m_lab, _ = frames[moving_phase]
            item = {"fixed": str(f_img), "moving": str(m_img)}
            if f_lab is not None:
                item["fixed_label"] = str(f_lab)
            if m_lab is not None:
                item["moving_label"] = str(m_lab)
            item.update(
                pair_id=f"{d.name}_{direction}",
                patient=d.name,
                patient_id=pid,
                direction=direction,
                group=str(info.get("Group", "")),
            )
            if f_hdr is not None:
                item["spacing"] = list(f_hdr.spacing)
            pairs.append(item)
    return pairs
