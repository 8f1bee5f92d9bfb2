"""Spatial conventions of SAMIR, defined once. Every other module refers here.

Conventions
-----------
* Images and labels: tensors ``(B, C, H, W, D)`` exactly as MONAI loads a NIfTI (array axis i
  is voxel index i of the file; the affine maps voxel indices to RAS millimetres).
* DDF (dense displacement field): ``(B, 3, H, W, D)`` float, **in voxels of the fixed grid**;
  channel ``i`` displaces spatial axis ``i``. The warped moving image is sampled at
  ``x + u(x)``: ``(M∘φ)(x) = M(x + u(x))``, which is MONAI ``Warp``'s convention and the
  Learn2Reg one.
* Velocity field: same layout and units as a DDF; integrated by scaling and squaring
  (MONAI ``DVF2DDF``).
* Composition: ``compose(outer, inner)`` is the DDF of ``x ↦ y + outer(y)`` with
  ``y = x + inner(x)``, i.e. apply ``inner`` first in point space; warping an image by the
  composed field equals warping by ``outer`` and then by ``inner``:
  ``warp(warp(M, outer), inner) ≈ warp(M, compose(outer, inner))``.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import DVF2DDF, Warp

__all__ = ["warp", "warp_image", "warp_label", "compose", "invert_ddf", "velocity_to_ddf", "identity_grid", "resize_ddf",
           "shrink_factor"]

_WARPS: dict[tuple[str, str], Warp] = {}


def _warp_module(mode: str, padding_mode: str) -> Warp:
    key = (mode, padding_mode)
    if key not in _WARPS:
        _WARPS[key] = Warp(mode=mode, padding_mode=padding_mode)
    return _WARPS[key]


def _check_ddf(image: torch.Tensor, ddf: torch.Tensor) -> None:
    if ddf.ndim != 5 or ddf.shape[1] != 3:
        raise ValueError(f"ddf: expected shape (B, 3, H, W, D) in voxels, got {tuple(ddf.shape)}")
    if image.ndim != 5:
        raise ValueError(f"image: expected shape (B, C, H, W, D), got {tuple(image.shape)}")
    if image.shape[2:] != ddf.shape[2:] or image.shape[0] != ddf.shape[0]:
        raise ValueError(
            f"image {tuple(image.shape)} and ddf {tuple(ddf.shape)} must share batch and spatial size"
        )


def warp(image: torch.Tensor, ddf: torch.Tensor, mode: str = "bilinear", padding_mode: str = "border") -> torch.Tensor:
    """Warp ``image`` (B, C, H, W, D) by ``ddf`` (B, 3, H, W, D, voxels): out(x) = image(x + ddf(x)).

    ``mode`` is ``"bilinear"`` (trilinear, for images and features) or ``"nearest"`` (for labels).
    """
    _check_ddf(image, ddf)
    dtype = image.dtype
    # grid_sample needs one floating dtype for image and grid: use the wider of the two, return the image's
    work = torch.promote_types(dtype if dtype.is_floating_point else torch.float32, ddf.dtype)
    out = _warp_module(mode, padding_mode)(image.to(work), ddf.to(device=image.device, dtype=work))
    return out.to(dtype)


def warp_image(image: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """Trilinear warp of an intensity image (B, C, H, W, D) by a voxel DDF (B, 3, H, W, D)."""
    return warp(image, ddf, mode="bilinear", padding_mode="border")


def warp_label(label: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour warp of an integer label map (B, 1, H, W, D) by a voxel DDF; keeps the dtype."""
    return warp(label, ddf, mode="nearest", padding_mode="zeros")


def compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """DDF of applying ``inner`` then ``outer`` in point space: u(x) = inner(x) + outer(x + inner(x)).

    Both (B, 3, H, W, D) in voxels. ``warp(M, compose(outer, inner)) ≈ warp(warp(M, outer), inner)``.
    """
    return inner + warp(outer, inner, mode="bilinear", padding_mode="border")


def invert_ddf(ddf: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """Approximate inverse of a DDF (B, 3, H, W, D, voxels) by fixed-point iteration v = -u(x + v).

    ``compose(invert_ddf(u), u) ≈ 0`` where ``u`` is smooth and does not fold (the iteration
    contracts while the field's Jacobian stays below 1 in norm); errors fall about geometrically.
    """
    if ddf.ndim != 5 or ddf.shape[1] != 3:
        raise ValueError(f"ddf: expected shape (B, 3, H, W, D), got {tuple(ddf.shape)}")
    inverse = -ddf
    for _ in range(int(iterations)):
        inverse = -warp(ddf, inverse)
    return inverse


_INTEGRATORS: dict[int, DVF2DDF] = {}


def velocity_to_ddf(velocity: torch.Tensor, num_steps: int = 7) -> torch.Tensor:
    """Integrate a stationary velocity field (B, 3, H, W, D, voxels) by scaling and squaring (MONAI DVF2DDF)."""
    if velocity.ndim != 5 or velocity.shape[1] != 3:
        raise ValueError(f"velocity: expected shape (B, 3, H, W, D), got {tuple(velocity.shape)}")
    if num_steps not in _INTEGRATORS:
        _INTEGRATORS[num_steps] = DVF2DDF(num_steps=num_steps, mode="bilinear", padding_mode="border")
    return _INTEGRATORS[num_steps](velocity)


def identity_grid(shape: tuple[int, int, int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Voxel coordinates (3, H, W, D) of a grid of ``shape``: the point x at which a DDF u(x) is added."""
    axes = [torch.arange(s, device=device, dtype=dtype) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)


def resize_ddf(ddf: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Resample a voxel DDF (B, 3, h, w, d) to ``size`` (B, 3, *size) and rescale it to the new voxel units.

    Grids are matched at their outer edges (``align_corners=False``, as MONAI ``Resize`` and
    average pooling do): new voxel units are old ones times ``size[i] / h_i``.
    """
    size = tuple(int(s) for s in size)
    if tuple(ddf.shape[2:]) == size:
        return ddf
    out = torch.nn.functional.interpolate(ddf, size=size, mode="trilinear", align_corners=False)
    scale = torch.tensor([t / s for s, t in zip(ddf.shape[2:], size)], dtype=ddf.dtype, device=ddf.device)
    return out * scale.view(1, 3, 1, 1, 1)


def shrink_factor(size: int, factor: int, min_size: int) -> int:
    """``factor`` halved until an axis of ``size`` voxels shrunk by it keeps at least ``min_size`` voxels
    (1 when even a factor of 2 would go below): the step of every coarse-to-fine pyramid here
    (instance optimisation, demons), so thin stacks such as 16 cardiac slices are not over-shrunk."""
    f = int(factor)
    while f > 1 and size / f < min_size:
        f //= 2
    return max(1, f)
