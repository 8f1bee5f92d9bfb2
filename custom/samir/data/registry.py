"""Data sets by name: pairs, preprocessing chain, labels and synthetic stand-in of each.

One place maps a config's ``dataset`` key ("acdc", "abdomen", "pairs") to its reader and its
MONAI chain, so the bundle switches data sets with one override and no code change.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from monai.utils import look_up_option

from samir.data.abdomen import ABDOMEN_LABELS, abdomen_pairs
from samir.data.acdc import ACDC_LABELS, acdc_pairs
from samir.data.pairs import datalist_pairs
from samir.data.transforms import abdomen_transforms, acdc_transforms, generic_transforms

__all__ = ["DatasetSpec", "DATASETS", "get_dataset", "dataset_pairs", "dataset_transforms", "resolve_data_root"]

_COMPLETE = ".samir-complete"


@dataclass(frozen=True)
class DatasetSpec:
    """What the bundle needs to know of a data set."""

    name: str
    labels: dict[int, str]
    pairs: Callable[..., list[dict]]
    transforms: Callable[..., object]
    synthetic: str | None = None  # "acdc"/"abdomen": the generator used when no root is given


def _acdc_pairs(root, split, **options):
    return acdc_pairs(root, split=split, **options)


def _abdomen_pairs(root, split, **options):
    return abdomen_pairs(root, split=split, **options)


def _datalist(root, split, **options):
    # for "pairs", root is the datalist json; its "split" list when it has one, else its pairs
    return datalist_pairs(root, key=None if split in (None, "all") else split)


DATASETS: dict[str, DatasetSpec] = {
    "acdc": DatasetSpec("acdc", ACDC_LABELS, _acdc_pairs, acdc_transforms, synthetic="acdc"),
    "abdomen": DatasetSpec("abdomen", ABDOMEN_LABELS, _abdomen_pairs, abdomen_transforms, synthetic="abdomen"),
    "pairs": DatasetSpec("pairs", {}, _datalist, generic_transforms),
}


def get_dataset(name: str) -> DatasetSpec:
    """The ``DatasetSpec`` of ``name`` (acdc, abdomen, pairs); unknown names list the valid ones."""
    return look_up_option(str(name).lower(), DATASETS)


def resolve_data_root(dataset: str, root: str | os.PathLike | None, synthetic_dir: str | os.PathLike | None = None,
                      **synth_kwargs) -> Path:
    """The data root to read: ``root`` when given (it must exist), else a synthetic stand-in.

    The synthetic set is written on first use into ``synthetic_dir`` (default
    ``data/synthetic_<dataset>``) through a temporary folder renamed at the end, so an interrupted
    run never leaves a half-written set that later runs would trust.
    """
    spec = get_dataset(dataset)
    if root not in (None, "", "none", "None"):
        path = Path(root).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"data root {path} for dataset '{spec.name}' does not exist")
        return path
    if spec.synthetic is None:
        raise ValueError(f"dataset '{spec.name}' needs a data root (a datalist json); it has no synthetic stand-in")
    target = Path(synthetic_dir or Path("data") / f"synthetic_{spec.name}").expanduser()
    if (target / _COMPLETE).exists():
        return target
    if target.exists():
        shutil.rmtree(target)  # an interrupted earlier write
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        if spec.synthetic == "acdc":
            from samir.data.synthetic_acdc import write_synthetic_acdc

            write_synthetic_acdc(tmp, **synth_kwargs)
        else:
            from samir.data.synthetic_abdomen import write_synthetic_abdomen

            write_synthetic_abdomen(tmp, **synth_kwargs)
        (tmp / _COMPLETE).write_text("written by samir.data.registry.resolve_data_root\n")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def dataset_pairs(dataset: str, root: str | os.PathLike, split: str = "train", **options) -> list[dict]:
    """The pairs (list of dicts: fixed, moving, fixed_label?, moving_label?) of ``dataset`` at ``root``.

    ``options`` go to the reader (e.g. ``val_ids`` for ACDC, ``train_ids``/``test_ids`` for AbdomenCTCT).
    """
    pairs = get_dataset(dataset).pairs(root, split, **options)
    if not pairs:
        raise ValueError(f"dataset '{dataset}' at {root}: split '{split}' has no pairs")
    return pairs


def dataset_transforms(dataset: str, **kwargs):
    """The MONAI preprocessing chain of ``dataset`` (kwargs go to its chain builder)."""
    return get_dataset(dataset).transforms(**kwargs)
