"""Registration metrics: Dice and HD95 per label (MONAI), Jacobian folding and SDlogJ (by hand).

Conventions (see :mod:`samir.spatial`): label maps are integer tensors/arrays ``(B, 1, H, W, D)``
or ``(H, W, D)``; a DDF is ``(B, 3, H, W, D)`` in voxels of the fixed grid and the transform
whose Jacobian is measured is ``x ↦ x + u(x)``.

Empty labels: a label absent from both maps gives ``nan`` for Dice and HD95 (not counted in the
means, which are ``nanmean``); absent from only one map gives Dice ``0`` and HD95 ``inf``.
Folding is reported as a fraction (``folding_fraction``) and as a percentage
(``registration_metrics()["folding_pct"] = 100 × fraction``), over the field with a border of
``crop`` voxels removed (2, as Learn2Reg and this line of work do).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.networks.utils import one_hot

__all__ = [
    "dice_per_label",
    "hd95_per_label",
    "jacobian_determinant",
    "folding_fraction",
    "sdlogj",
    "registration_metrics",
]


def _label_map(x, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.as_tensor() if hasattr(t, "as_tensor") else t  # MetaTensor → Tensor
    if t.ndim == 3:
        t = t[None, None]
    elif t.ndim == 4 and t.shape[0] == 1:
        t = t[None]
    if t.ndim != 5 or t.shape[1] != 1:
        raise ValueError(f"{name}: expected an integer label map (B, 1, H, W, D) or (H, W, D), got shape {tuple(t.shape)}")
    if t.is_floating_point():
        if not torch.equal(t, t.round()):
            raise ValueError(f"{name}: expected integer label values, got non-integer floats")
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name}: expected non-negative label values, got {int(t.min())}")
    return t.long().cpu()


def _labels(labels) -> dict[int, str]:
    if isinstance(labels, Mapping):
        out = {int(k): str(v) for k, v in labels.items()}
    elif isinstance(labels, Sequence) and not isinstance(labels, str):
        out = {int(k): str(int(k)) for k in labels}
    else:
        raise ValueError(f"labels: expected a dict {{value: name}} or a list of values, got {type(labels).__name__}")
    if not out or min(out) < 0:
        raise ValueError(f"labels: expected non-negative label values, got {sorted(out)}")
    return out


def _one_hot_pair(pred, target, labels):
    p, t = _label_map(pred, "pred"), _label_map(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target: expected the same shape, got {tuple(p.shape)} and {tuple(t.shape)}")
    lab = _labels(labels)
    n = max(int(p.max()), int(t.max()), max(lab)) + 1
    idx = list(lab)
    p1 = one_hot(p, num_classes=n)[:, idx]
    t1 = one_hot(t, num_classes=n)[:, idx]
    # absent from both: (B, L) boolean
    both_empty = (p1.flatten(2).sum(-1) == 0) & (t1.flatten(2).sum(-1) == 0)
    return p1, t1, lab, both_empty


def _batch_mean(values: torch.Tensor, lab: dict[int, str]) -> dict[str, float]:
    out = {}
    for j, name in enumerate(lab.values()):
        col = values[:, j].double()
        finite_or_inf = col[~torch.isnan(col)]
        out[name] = float(finite_or_inf.mean()) if finite_or_inf.numel() else math.nan
    return out


def dice_per_label(pred, target, labels) -> dict[str, float]:
    """Dice per label of integer maps (B, 1, H, W, D) or (H, W, D); ``labels`` {value: name} or [values].

    MONAI ``DiceMetric`` on one-hot maps; averaged over the batch. ``nan`` for a label absent from
    both maps, 0 when absent from only one.
    """
    p1, t1, lab, both_empty = _one_hot_pair(pred, target, labels)
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    d = metric(p1.float(), t1.float()).cpu()
    d[both_empty] = math.nan
    return _batch_mean(d, lab)


def hd95_per_label(pred, target, labels, spacing=None) -> dict[str, float]:
    """95th-percentile Hausdorff distance per label in mm (``spacing`` per axis; ``None``: voxels).

    Maps (B, 1, H, W, D) or (H, W, D); MONAI ``HausdorffDistanceMetric(percentile=95)``
    (symmetric). ``nan`` for a label absent from both maps, ``inf`` when absent from only one.
    """
    p1, t1, lab, both_empty = _one_hot_pair(pred, target, labels)
    if spacing is not None:
        spacing = [float(s) for s in np.ravel(np.asarray(spacing, dtype=float))]
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing: expected 3 positive voxel sizes in mm, got {spacing}")
    metric = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on empty masks; handled below
        h = metric(p1.float(), t1.float(), spacing=spacing).cpu().double()
    p_empty = p1.flatten(2).sum(-1) == 0
    t_empty = t1.flatten(2).sum(-1) == 0
    h[p_empty ^ t_empty] = math.inf
    h[both_empty] = math.nan
    return _batch_mean(h, lab)


def _check_ddf(ddf) -> torch.Tensor:
    u = ddf if isinstance(ddf, torch.Tensor) else torch.as_tensor(np.asarray(ddf))
    u = u.as_tensor() if hasattr(u, "as_tensor") else u
    if u.ndim == 4:
        u = u[None]
    if u.ndim != 5 or u.shape[1] != 3:
        raise ValueError(f"ddf: expected shape (B, 3, H, W, D) in voxels, got {tuple(u.shape)}")
    return u.detach().double()


def jacobian_determinant(ddf) -> torch.Tensor:
    """Jacobian determinant (B, H, W, D) of x ↦ x + u(x) for a voxel DDF (B, 3, H, W, D); float64.

    Central differences in the interior, one-sided at the border (crop it before reporting).
    """
    u = _check_ddf(ddf)
    if min(u.shape[2:]) < 2:
        raise ValueError(f"ddf: expected at least 2 voxels along each axis, got {tuple(u.shape[2:])}")
    grads = torch.gradient(u, dim=(2, 3, 4))  # grads[j][:, i] = d u_i / d x_j
    j = [[grads[c][:, r] + (1.0 if r == c else 0.0) for c in range(3)] for r in range(3)]
    return (
        j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
        - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
        + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0])
    )


def _cropped_det(ddf, crop: int) -> torch.Tensor:
    det = jacobian_determinant(ddf)
    crop = int(crop)
    if crop < 0 or any(2 * crop >= s for s in det.shape[1:]):
        raise ValueError(f"crop: expected 0 <= crop < half of each size {tuple(det.shape[1:])}, got {crop}")
    if crop:
        det = det[:, crop:-crop, crop:-crop, crop:-crop]
    return det


def folding_fraction(ddf, crop: int = 2) -> float:
    """Fraction (0–1; percent = 100×) of voxels with det J ≤ 0 for a voxel DDF (B, 3, H, W, D), border ``crop`` removed."""
    det = _cropped_det(ddf, crop)
    return float((det <= 0).double().mean())


def sdlogj(ddf, crop: int = 2) -> float:
    """Learn2Reg SDlogJ of a voxel DDF (B, 3, H, W, D): std of log(clip(det J, 1e-9, 1e9)), border ``crop`` removed.

    Population std (as numpy) per item, averaged over the batch.
    """
    det = _cropped_det(ddf, crop)
    logj = torch.log(det.clamp(1e-9, 1e9)).flatten(1)
    return float(logj.std(dim=1, correction=0).mean())


def _nanmean(values) -> float:
    v = [x for x in values if not math.isnan(x)]
    return float(sum(v) / len(v)) if v else math.nan


def registration_metrics(ddf, warped_label=None, fixed_label=None, labels=None, spacing=None, crop: int = 2,
                         hd95: bool = True) -> dict:
    """Flat dict of metrics for one registration: voxel DDF (B, 3, H, W, D) and label maps (B, 1, H, W, D).

    Keys: ``dice_<name>``, ``dice_mean``, ``hd95_<name>``, ``hd95_mean`` (mm with ``spacing``) when both
    label maps are given (no ``hd95_*`` with ``hd95=False``: the slow part on large volumes); always
    ``folding_pct`` (100 × fraction of det J ≤ 0) and ``sdlogj``. ``labels`` defaults to the non-zero
    values of ``fixed_label``. Means are over labels, ignoring ``nan``.
    """
    out: dict[str, float] = {}
    if (warped_label is None) != (fixed_label is None):
        raise ValueError("labels: expected both warped_label and fixed_label or neither, got one")
    if warped_label is not None:
        if labels is None:
            values = torch.unique(_label_map(fixed_label, "fixed_label")).tolist()
            labels = [v for v in values if v != 0]
            if not labels:
                raise ValueError("fixed_label: expected at least one non-zero label, got none")
        dice = dice_per_label(warped_label, fixed_label, labels)
        out.update({f"dice_{k}": v for k, v in dice.items()})
        out["dice_mean"] = _nanmean(dice.values())
        if hd95:
            hd = hd95_per_label(warped_label, fixed_label, labels, spacing=spacing)
            out.update({f"hd95_{k}": v for k, v in hd.items()})
            out["hd95_mean"] = _nanmean(hd.values())
    out["folding_pct"] = 100.0 * folding_fraction(ddf, crop=crop)
    out["sdlogj"] = sdlogj(ddf, crop=crop)
    return out
