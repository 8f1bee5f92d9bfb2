"""A classical peer: multi-resolution SimpleITK demons, returning a DDF in SAMIR's conventions.

``demons_register(moving, fixed)`` → DDF (1, 3, H, W, D) **in voxels of the fixed grid**, channel
``i`` displacing array axis ``i``; the warped moving image is ``samir.spatial.warp(moving, ddf)``
(conventions: :mod:`samir.spatial`).

Set up as SimpleITK's demons examples and notebook (``66_Registration_Demons``) recommend: a
multi-resolution pyramid (Gaussian smoothing, then ``sitk.Shrink``), ``FastSymmetricForcesDemons``
(or ``DiffeomorphicDemons``) at each level with Gaussian smoothing of the displacement field, the
field of one level resampled as the initial field of the next, and histogram matching of the
moving image onto the fixed one (same modality, as demons assumes).

Axis order: a numpy array (H, W, D) given to ``sitk.GetImageFromArray`` becomes an image of size
(D, W, H) (SimpleITK's x is the array's last axis). We transpose to (D, W, H) first, so the
SimpleITK image has size (H, W, D) and its x, y, z are our axes 0, 1, 2; images get unit
spacing, zero origin and identity direction, so a physical displacement (mm) equals voxels. The
field comes back as an array (D, W, H, 3) with components (x, y, z) = our axes (0, 1, 2), and is
transposed back to (3, H, W, D).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["demons_register", "to_sitk", "field_to_ddf"]


def _array(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        x = x.numpy()
    a = np.asarray(x, dtype=np.float32)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"expected a 3D image (H, W, D) or (1, 1, H, W, D), got shape {np.shape(x)}")
    return a


def to_sitk(array: np.ndarray):
    """(H, W, D) array → SimpleITK image of size (H, W, D), unit spacing, zero origin, identity direction."""
    import SimpleITK as sitk

    return sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))


def field_to_ddf(field) -> torch.Tensor:
    """SimpleITK displacement field on a unit-spacing image of size (H, W, D) → DDF (1, 3, H, W, D) voxels."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(field)  # (D, W, H, 3), components (x, y, z) = our axes (0, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(np.transpose(arr, (3, 2, 1, 0)))).float()[None]


def _level_factors(size: Sequence[int], factor: int, min_size: int) -> list[int]:
    out = []
    for s in size:
        f = int(factor)
        while f > 1 and s / f < min_size:
            f //= 2
        out.append(max(1, f))
    return out


def demons_register(
    moving,
    fixed,
    iterations: Sequence[int] = (60, 40, 20),
    shrink_factors: Sequence[int] = (4, 2, 1),
    smoothing_sigmas: Sequence[float] = (2.0, 1.0, 0.0),
    standard_deviations: float = 1.5,
    diffeomorphic: bool = False,
    histogram_match: bool = True,
    min_size: int = 8,
) -> torch.Tensor:
    """Multi-resolution demons of ``moving`` onto ``fixed`` (same modality, same grid).

    Args:
        moving, fixed: (1, 1, H, W, D) tensors or (H, W, D) arrays (any intensity scale).
        iterations: demons iterations per level, coarse → fine.
        shrink_factors: shrink factor per level (per axis capped so that no axis gets below
            ``min_size`` voxels; thin stacks such as 16 cardiac slices are not shrunk along the slices).
        smoothing_sigmas: Gaussian sigma (voxels of the full grid) applied before shrinking, per level.
        standard_deviations: Gaussian smoothing of the displacement field (level voxels), per iteration.
        diffeomorphic: ``DiffeomorphicDemonsRegistrationFilter`` instead of ``FastSymmetricForcesDemons``.
        histogram_match: match the moving histogram onto the fixed one first.

    Returns:
        DDF (1, 3, H, W, D) in voxels of the fixed grid (moving sampled at x + u(x)), float32, on
        ``fixed``'s device when it is a tensor.
    """
    import SimpleITK as sitk

    if not (len(iterations) == len(shrink_factors) == len(smoothing_sigmas)):
        raise ValueError("iterations, shrink_factors and smoothing_sigmas: expected one value per level each")
    m_arr, f_arr = _array(moving), _array(fixed)
    if m_arr.shape != f_arr.shape:
        raise ValueError(f"moving {m_arr.shape} and fixed {f_arr.shape}: expected the same grid")
    device = fixed.device if isinstance(fixed, torch.Tensor) else torch.device("cpu")
    f_img, m_img = to_sitk(f_arr), to_sitk(m_arr)
    if histogram_match:
        m_img = sitk.HistogramMatching(m_img, f_img, numberOfHistogramLevels=256, numberOfMatchPoints=7,
                                       thresholdAtMeanIntensity=True)
    size = f_img.GetSize()

    if diffeomorphic:
        demons = sitk.DiffeomorphicDemonsRegistrationFilter()
    else:
        demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(float(standard_deviations))

    field = None
    for n_iter, factor, sigma in zip(iterations, shrink_factors, smoothing_sigmas):
        factors = _level_factors(size, factor, min_size)

        def level(img, factors=factors, sigma=sigma):
            if sigma > 0:
                img = sitk.SmoothingRecursiveGaussian(img, [sigma if f > 1 else 0.01 for f in factors])
            return sitk.Shrink(img, factors) if max(factors) > 1 else img

        f_l, m_l = level(f_img), level(m_img)
        demons.SetNumberOfIterations(int(n_iter))
        if field is None:
            field = demons.Execute(f_l, m_l)
        else:
            init = sitk.Resample(field, f_l, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
            field = demons.Execute(f_l, m_l, init)
    if field.GetSize() != size:
        field = sitk.Resample(field, f_img, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
    return field_to_ddf(field).to(device)
