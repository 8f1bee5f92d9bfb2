"""MONAI dictionary transform chains, one per data set, following the published protocol.

Keys: ``fixed``, ``moving`` (images) and, when present, ``fixed_label``, ``moving_label`` (integer label
maps). Outputs are MetaTensors (C=1, H, W, D) that keep the affine of the grid they are on, so
results can be written back in physical space. Images are float32, labels uint8 (int32 for the
generic chain).

* ACDC: load, validate, crop/pad in-plane to 128x128 around the heart and to 16 slices (one box per
  pair), per-volume min-max to [0, 1].
* AbdomenCTCT: load, validate, HU clipped to [-500, 800] and scaled to [0, 1], optional resize to
  half resolution 96x80x128 (images trilinear, labels nearest).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    CastToTyped,
    Compose,
    EnsureChannelFirstd,
    LoadImage,
    MapTransform,
    Resized,
    ScaleIntensityd,
    ScaleIntensityRanged,
    SpatialCrop,
    SpatialPadd,
)

from samir.data.abdomen import ABDOMEN_ALLOWED_LABELS, ABDOMEN_HU_RANGE
from samir.data.acdc import ACDC_ALLOWED_LABELS
from samir.data.checks import CheckFilesd, CheckPaird, check_exists, unwrap_transform_error

__all__ = [
    "IMAGE_KEYS",
    "LABEL_KEYS",
    "LoadCheckedd",
    "ForegroundCropd",
    "acdc_transforms",
    "abdomen_transforms",
    "generic_transforms",
    "load_pair",
]

IMAGE_KEYS: tuple[str, str] = ("fixed", "moving")
LABEL_KEYS: tuple[str, str] = ("fixed_label", "moving_label")
ABDOMEN_HALF_SIZE: tuple[int, int, int] = (96, 80, 128)


class LoadCheckedd(MapTransform):
    """``LoadImage`` per key (images float32, labels in their stored dtype); a file that cannot be read
    (truncated, corrupt, unknown format) raises ``ValueError`` naming it instead of a bare reader error.
    """

    def __init__(
        self,
        keys: KeysCollection = IMAGE_KEYS + LABEL_KEYS,
        label_keys: KeysCollection = LABEL_KEYS,
        allow_missing_keys: bool = True,
    ):
        super().__init__(keys, allow_missing_keys)
        self.label_keys = {label_keys} if isinstance(label_keys, str) else set(label_keys)
        self._image_loader = LoadImage(image_only=True, dtype=np.float32)
        self._label_loader = LoadImage(image_only=True, dtype=None)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if not isinstance(value, (str, bytes)) and not hasattr(value, "__fspath__"):
                continue  # already an array
            path = check_exists(value, "label" if key in self.label_keys else "image")
            loader = self._label_loader if key in self.label_keys else self._image_loader
            try:
                d[key] = loader(str(path))
            except Exception as err:  # reader errors come in many types (EOFError, zlib.error, RuntimeError)
                raise ValueError(
                    f"{path}: unreadable or truncated image file, expected a complete NIfTI/ITK volume "
                    f"({type(err).__name__}: {err})"
                ) from err
        return d


def _foreground_box(labels: Sequence) -> tuple[np.ndarray, np.ndarray] | None:
    """Inclusive (min, max) voxel index of the union of label foregrounds (C, H, W, D), None if empty."""
    union = None
    for lab in labels:
        arr = lab.detach().cpu().numpy() if isinstance(lab, torch.Tensor) else np.asarray(lab)
        fg = (arr.reshape(-1, *arr.shape[-3:]) != 0).any(0)
        union = fg if union is None else union | fg
    if union is None or not union.any():
        return None
    lo, hi = [], []
    for axis in range(3):
        hit = np.flatnonzero(union.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(hit[0])
        hi.append(hit[-1])
    return np.asarray(lo), np.asarray(hi)


class ForegroundCropd(MapTransform):
    """Crop all keys with ONE box of at most ``roi_size`` centred on the union of ``center_keys`` label
    foregrounds (their bounding-box centre), or on the image centre when no label is given or all are empty.

    The box is shifted to stay inside the volume; axes smaller than ``roi_size`` are kept whole (pad after).
    Works on (C, H, W, D) MetaTensors; affines follow the crop. Stores the box in ``d["crop_start"]``.
    """

    def __init__(
        self,
        keys: KeysCollection = IMAGE_KEYS + LABEL_KEYS,
        roi_size: Sequence[int] = (128, 128, 16),
        center_keys: KeysCollection = LABEL_KEYS,
        allow_missing_keys: bool = True,
    ):
        super().__init__(keys, allow_missing_keys)
        self.roi_size = tuple(int(s) for s in roi_size)
        self.center_keys = [center_keys] if isinstance(center_keys, str) else list(center_keys)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        present = list(self.key_iterator(d))
        if not present:
            return d
        shape = np.asarray(d[present[0]].shape[-3:])
        box = _foreground_box([d[k] for k in self.center_keys if k in d])
        center = (shape - 1) / 2.0 if box is None else (box[0] + box[1]) / 2.0
        roi = np.asarray(self.roi_size)
        start = np.round(center - (roi - 1) / 2.0).astype(int)
        start = np.clip(start, 0, np.maximum(shape - roi, 0))
        end = np.minimum(start + roi, shape)
        crop = SpatialCrop(roi_start=start.tolist(), roi_end=end.tolist())
        for key in present:
            if tuple(d[key].shape[-3:]) != tuple(shape):
                raise ValueError(
                    f"{key}: shape mismatch, expected {tuple(shape)} like {present[0]} (one crop box per pair), "
                    f"got {tuple(d[key].shape[-3:])}"
                )
            d[key] = crop(d[key])
        d["crop_start"] = start.tolist()
        return d


def _keys(with_labels: bool) -> tuple[list[str], list[str]]:
    return list(IMAGE_KEYS), list(LABEL_KEYS) if with_labels else []


def _load_and_check(labels: list[str], allowed: Iterable[int] | None, same_shape: bool) -> list:
    keys = list(IMAGE_KEYS) + labels
    return [
        CheckFilesd(keys=keys, same_shape=IMAGE_KEYS if same_shape else None),
        LoadCheckedd(keys=keys, label_keys=labels),
        EnsureChannelFirstd(keys=keys, allow_missing_keys=True),
        CheckPaird(IMAGE_KEYS, labels, allowed_labels=allowed, same_shape=same_shape),
    ]


def _resize(images: list[str], labels: list[str], size: Sequence[int]) -> list:
    """Resize images (trilinear) and labels (nearest) to ``size``."""
    size = tuple(int(v) for v in size)
    out = [Resized(keys=images, spatial_size=size, mode="trilinear", align_corners=False)]
    if labels:
        out.append(Resized(keys=labels, spatial_size=size, mode="nearest", allow_missing_keys=True))
    return out


def acdc_transforms(
    spatial_size: Sequence[int] = (128, 128, 16),
    with_labels: bool = True,
    center_on: str = "labels",
) -> Compose:
    """ACDC chain: (1, H, W, D) files -> (1, 128, 128, 16) images in [0, 1] and uint8 labels on one crop box.

    The in-plane/slice box is centred on the union of the pair's label foregrounds (``center_on="labels"``)
    or the image centre (``"image"``, or when labels are absent); the cropped volume is min-max scaled
    per volume, then zero-padded to ``spatial_size``.
    """
    if center_on not in ("labels", "image"):
        raise ValueError(f"center_on: expected 'labels' or 'image', got {center_on!r}")
    images, labels = _keys(with_labels)
    keys = images + labels
    chain = _load_and_check(labels, ACDC_ALLOWED_LABELS, same_shape=True)
    chain += [
        ForegroundCropd(keys=keys, roi_size=spatial_size, center_keys=labels if center_on == "labels" else []),
        ScaleIntensityd(keys=images, minv=0.0, maxv=1.0),
        SpatialPadd(keys=keys, spatial_size=spatial_size, method="symmetric", mode="constant", allow_missing_keys=True),
    ]
    if labels:
        chain.append(CastToTyped(keys=labels, dtype=torch.uint8, allow_missing_keys=True))
    return Compose(chain, log_stats=False)


def abdomen_transforms(
    half_resolution: bool = False,
    half_size: Sequence[int] = ABDOMEN_HALF_SIZE,
    hu_range: Sequence[float] = ABDOMEN_HU_RANGE,
    with_labels: bool = True,
) -> Compose:
    """AbdomenCTCT chain: (1, 192, 160, 256) HU -> clip to ``hu_range``, scale to [0, 1]; with
    ``half_resolution`` resize to ``half_size`` (default (96, 80, 128)): images trilinear, labels nearest.
    """
    images, labels = _keys(with_labels)
    chain = _load_and_check(labels, ABDOMEN_ALLOWED_LABELS, same_shape=True)
    chain.append(
        ScaleIntensityRanged(keys=images, a_min=hu_range[0], a_max=hu_range[1], b_min=0.0, b_max=1.0, clip=True)
    )
    if half_resolution:
        chain += _resize(images, labels, half_size)
    if labels:
        chain.append(CastToTyped(keys=labels, dtype=torch.uint8, allow_missing_keys=True))
    return Compose(chain, log_stats=False)


def generic_transforms(
    spatial_size: Sequence[int] | None = None,
    intensity_range: Sequence[float] | None = None,
    allowed_labels: Iterable[int] | None = None,
    with_labels: bool = True,
) -> Compose:
    """Chain for any pair: load, validate, intensity to [0, 1] (min-max per volume, or clip to
    ``intensity_range`` first), and with ``spatial_size`` resize both to it (images trilinear, labels
    nearest); without it the two images must already share a shape. Labels int32.
    """
    images, labels = _keys(with_labels)
    chain = _load_and_check(labels, allowed_labels, same_shape=spatial_size is None)
    if intensity_range is not None:
        lo, hi = (float(v) for v in intensity_range)
        chain.append(ScaleIntensityRanged(keys=images, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    else:
        chain.append(ScaleIntensityd(keys=images, minv=0.0, maxv=1.0))
    if spatial_size is not None:
        chain += _resize(images, labels, spatial_size)
    if labels:
        chain.append(CastToTyped(keys=labels, dtype=torch.int32, allow_missing_keys=True))
    return Compose(chain, log_stats=False)


def load_pair(chain: Compose, item: Mapping[Hashable, object]) -> dict:
    """Run ``chain`` on one pair dict; a user-input error surfaces as its own ``ValueError``/``FileNotFoundError``
    (naming the file) instead of MONAI's ``RuntimeError('applying transform ...')`` wrapper.
    """
    try:
        return chain(dict(item))
    except RuntimeError as err:
        cause = unwrap_transform_error(err)
        if cause is err:
            raise
        raise type(cause)(str(cause)) from err
