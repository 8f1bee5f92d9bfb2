"""Instance optimisation of one pair on frozen SAM features: good registrations with no training.

``optimize_pair(moving, fixed)`` returns a DDF (1, 3, H, W, D) **in voxels of the fixed grid**
(conventions: :mod:`samir.spatial`; the warped moving image is ``warp(moving, ddf)``). It needs
no trained weights: it starts from identity or from ``init_ddf`` (e.g. the network's output)
and refines it per pair.

Method (coarse to fine, ``levels`` levels, each axis halved per level while it stays >= 16 voxels):

1. **Features.** The frozen SAM slice embeddings of both images (from ``sam_encoder`` or given)
   are projected on their first ``feature_channels`` principal components (PCA of the fixed and
   moving embeddings together: a per-pair, non-trainable map) and resampled onto every level's
   grid (edge-aligned, as :func:`samir.networks.samir_net.resample_embedding`).
2. **Discrete search** (optional, ConvexAdam-style) at the coarsest level: a cost volume of
   ``1 - cos`` between fixed features and shifted (already initialised) moving features over a
   window of ``search_radius`` voxels per axis, aggregated over a 3×3×3 neighbourhood, soft
   arg-min, then smoothed. It is kept only when it lowers the feature cost.
3. **Adam** per level on a stationary velocity field (``diffeomorphic=True``: scaling and
   squaring, MONAI ``DVF2DDF``) or a displacement field, on a control grid ``grid_spacing``
   times coarser than the level (upsampled trilinearly). Objective:
   ``sim_weight·LNCC(M∘φ, F) + hfc_weight·(1 − cos(E_F, E_M∘φ)) + smooth_weight·Diffusion(v)``
   (MONAI LNCC and DiffusionLoss; the HFC term is
   :meth:`samir.losses.HierarchicalFeatureConsistencyLoss.level_term` on the level's grid).
   The refinement is composed after ``init_ddf``: ``φ = compose(init, exp(v))``, i.e.
   ``warp(M, φ) ≈ warp(warp(M, init), exp(v))``.
4. **Checks.** If the objective at the finest level ends worse than at the start (the
   initialisation), the start is returned. If the fraction of non-positive Jacobian
   determinants exceeds ``max_folding`` (default 1 %), the refinement is smoothed until it does
   not (or dropped).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiffusionLoss, LocalNormalizedCrossCorrelationLoss

from samir.losses.hfc import HierarchicalFeatureConsistencyLoss
from samir.metrics import folding_fraction
from samir.spatial import compose, resize_ddf, shrink_factor, velocity_to_ddf, warp

__all__ = ["optimize_pair", "pca_project", "pca_projector", "pyramid_sizes", "coarse_search", "DEFAULT_ITERATIONS"]

logger = logging.getLogger(__name__)

DEFAULT_ITERATIONS = (80, 50, 30)  # per level, coarse → fine (CPU: seconds for a 128×128×16 pair)


def pyramid_sizes(size: Sequence[int], levels: int, min_size: int = 16) -> list[tuple[int, ...]]:
    """Level grids, coarse → fine: each axis halved per level while it stays >= ``min_size`` (or never, if smaller)."""
    out = []
    for level in reversed(range(levels)):
        out.append(tuple(max(1, int(round(s / shrink_factor(s, 2**level, min_size)))) for s in size))
    return out


def _resample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resample (B, C, ...) onto ``size`` edge to edge; integer shrink factors average (anti-aliased)."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    factors = [a / b for a, b in zip(x.shape[2:], size)]
    if all(f >= 1 and float(f).is_integer() for f in factors):
        return F.avg_pool3d(x, kernel_size=tuple(int(f) for f in factors))
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)


def pca_projector(moving: torch.Tensor, fixed: torch.Tensor, channels: int, max_samples: int = 65536
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map (1, C, ...) → (1, channels, ...) onto the first ``channels`` principal components of two
    feature volumes (1, C, ...) together: fitted (in float64) on a subsample of the voxels of both,
    applied (in the volume's float dtype: float32 for float32) to any volume of the same C channels
    (another grid too), centred, returned in its own dtype."""
    m, f = moving.flatten(2)[0], fixed.flatten(2)[0]  # (C, N) each
    step = max(1, (m.shape[1] + f.shape[1]) // max_samples)
    sample = torch.cat([m[:, ::step], f[:, ::step]], 1).double()  # subsampled before any copy
    mean = sample.mean(1, keepdim=True)
    cov = (sample - mean) @ (sample - mean).T / max(1, sample.shape[1] - 1)
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    basis = vecs[:, -channels:].flip(1).T  # (k, C), largest first

    # applied as B·t − B·μ in the volume's own float dtype: a float64 copy of a whole fine-grid feature
    # stack (25 channels × 0.7 M voxels) cost more than the projection itself
    offsets = {}

    def project(t: torch.Tensor) -> torch.Tensor:
        dtype = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
        if dtype not in offsets:
            offsets[dtype] = (basis.to(dtype), (basis @ mean).to(dtype))
        b, shift = offsets[dtype]
        out = torch.addmm(shift, b, t.flatten(2)[0].to(dtype), beta=-1.0)  # B·t − B·μ
        return out.reshape(1, channels, *t.shape[2:]).to(t.dtype)

    return project


def pca_project(moving_embedding: torch.Tensor, fixed_embedding: torch.Tensor, channels: int = 16,
                max_samples: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Project both embeddings (1, C, h, w, d) on the first ``channels`` principal components of the two together.

    A per-pair linear map fitted on (a subsample of) the voxels of both (:func:`pca_projector`); nothing
    is trained. Returns the centred projections (1, channels, h, w, d) each.
    """
    if channels <= 0 or channels >= moving_embedding.shape[1]:
        return moving_embedding, fixed_embedding
    proj = pca_projector(moving_embedding, fixed_embedding, channels, max_samples)
    return proj(moving_embedding), proj(fixed_embedding)


def _normalise(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


def _box(x: torch.Tensor, k: int = 3) -> torch.Tensor:
    return F.avg_pool3d(x, k, stride=1, padding=k // 2, count_include_pad=False)


def coarse_search(moving_features: torch.Tensor, fixed_features: torch.Tensor, radius: Sequence[int] = (3, 3, 3),
                    temperature: float = 0.05, smooth_passes: int = 3) -> torch.Tensor:
    """ConvexAdam-style coarse displacement from a feature-correlation cost volume.

    ``moving_features``/``fixed_features`` (1, C, h, w, d) on the same grid (L2-normalised per voxel
    for a cosine cost). For every shift ``s`` in the window ``|s_i| <= radius[i]`` the cost
    ``1 − <F(x), M(x + s)>`` is averaged over a 3×3×3 neighbourhood; a soft arg-min (softmax of
    ``−cost / temperature``) gives a sub-voxel displacement, smoothed by ``smooth_passes`` 3×3×3
    box filters. Returns a DDF (1, 3, h, w, d) in voxels of that grid.
    """
    r = [int(v) for v in radius]
    fm = _normalise(moving_features)
    ff = _normalise(fixed_features)
    pad = []
    for v in reversed(r):
        pad += [v, v]
    mp = F.pad(fm, pad, mode="replicate")
    h, w, d = ff.shape[2:]
    shifts, costs = [], []
    for a in range(-r[0], r[0] + 1):
        for b in range(-r[1], r[1] + 1):
            for c in range(-r[2], r[2] + 1):
                shifted = mp[:, :, r[0] + a: r[0] + a + h, r[1] + b: r[1] + b + w, r[2] + c: r[2] + c + d]
                costs.append(1.0 - (shifted * ff).sum(1))
                shifts.append((a, b, c))
    cost = _box(torch.stack(costs, 1))  # (1, S, h, w, d)
    weights = torch.softmax(-cost / temperature, dim=1)
    s = torch.tensor(shifts, dtype=ff.dtype, device=ff.device)  # (S, 3)
    ddf = torch.einsum("bshwd,sk->bkhwd", weights, s)
    for _ in range(smooth_passes):
        ddf = _box(ddf)
    return ddf


class _Field:
    """Control-grid parameter → DDF on the level grid: exp (or identity), upsample, compose after the start."""

    def __init__(self, base, size, diffeomorphic):
        self.base, self.size, self.diffeomorphic = base, size, diffeomorphic

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        r = velocity_to_ddf(p) if self.diffeomorphic else p
        r = resize_ddf(r, self.size)
        return compose(self.base, r) if self.base is not None else r


class _Objective:
    def __init__(self, sim_weight, hfc_weight, ncc_kernel, size):
        k = int(min(ncc_kernel, *[s if s % 2 else s - 1 for s in size]))
        self.lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=max(3, k))
        self.smooth = DiffusionLoss()
        self.hfc = HierarchicalFeatureConsistencyLoss()
        self.w = (sim_weight, hfc_weight)

    def data_term(self, mov, fix, em, ef, ddf):
        sim_w, hfc_w = self.w
        loss = ddf.new_zeros(())
        if sim_w:
            loss = loss + sim_w * self.lncc(warp(mov, ddf), fix)
        if hfc_w and em is not None:
            loss = loss + hfc_w * self.hfc.level_term(ef, em, resize_ddf(ddf, ef.shape[2:]))
        return loss


def _param_size(level_size, grid_spacing: int, min_size: int = 8):
    return tuple(max(2, int(round(s / shrink_factor(s, grid_spacing, min_size)))) for s in level_size)


def _box_smooth(v: torch.Tensor, passes: int) -> torch.Tensor:
    """``passes`` 3×3×3 box filters in a row (each pass brings the kernel closer to a Gaussian)."""
    for _ in range(passes):
        v = _box(v)
    return v


def optimize_pair(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    init_ddf: torch.Tensor | None = None,
    sam_encoder=None,
    moving_embedding: torch.Tensor | None = None,
    fixed_embedding: torch.Tensor | None = None,
    iterations: int | Sequence[int] | None = None,
    levels: int = 3,
    smooth_weight: float = 1.0,
    hfc_weight: float = 1.0,
    sim_weight: float = 1.0,
    grid_spacing: int = 2,
    discrete_search: bool = True,
    diffeomorphic: bool = True,
    device: str | torch.device | None = None,
    feature_channels: int = 16,
    search_radius: int = 3,
    ncc_kernel: int = 7,
    lr: float = 0.1,
    max_folding: float = 0.01,
    verbose: bool = False,
) -> torch.Tensor:
    """Register ``moving`` onto ``fixed`` by per-pair optimisation on frozen SAM features.

    Args:
        moving, fixed: (1, 1, H, W, D) intensities in [0, 1] (same modality, same grid).
        init_ddf: starting DDF (1, 3, H, W, D) in fixed voxels (e.g. the network's output); None = identity.
        sam_encoder: a ``SliceEncoder`` (frozen) to compute the embeddings; or give
            ``moving_embedding``/``fixed_embedding`` (1, C, h, w, d) covering the volume's field of view.
            With neither, only image similarity and smoothness are used.
        iterations: Adam steps per level (one int for every level, or one per level coarse → fine);
            default ``DEFAULT_ITERATIONS`` (80, 50, 30).
        levels: pyramid levels (each axis halved per level while >= 16 voxels).
        smooth_weight / hfc_weight / sim_weight: weights of DiffusionLoss (on the velocity or
            displacement, level voxels), the HFC cosine term and MONAI LNCC.
        grid_spacing: the field is optimised on a control grid this many level voxels apart (1 = dense).
        discrete_search: run the coarse feature-correlation search first (kept only if it helps).
        diffeomorphic: optimise a stationary velocity (scaling and squaring) instead of a displacement.
        device: where to optimise (default: the input's device).
        feature_channels: PCA channels of the embeddings (0 keeps all).
        search_radius: discrete search window (coarsest-level voxels) per axis (capped at size // 4).
        ncc_kernel: LNCC window (voxels, capped by the level size); lr: Adam step size (level voxels).
        max_folding: largest allowed fraction of non-positive Jacobian determinants of the refinement.

    Returns:
        DDF (1, 3, H, W, D) in voxels of the fixed grid, on the input's device.
    """
    if moving.ndim != 5 or fixed.ndim != 5 or moving.shape != fixed.shape or moving.shape[:2] != (1, 1):
        raise ValueError(f"moving/fixed: expected two (1, 1, H, W, D) images on the same grid, got "
                         f"{tuple(moving.shape)} and {tuple(fixed.shape)}")
    out_device = moving.device
    dev = torch.device(device) if device is not None else out_device
    size = tuple(int(s) for s in fixed.shape[2:])
    mov = torch.as_tensor(moving).float().to(dev)
    fix = torch.as_tensor(fixed).float().to(dev)
    mov = mov.as_tensor() if hasattr(mov, "as_tensor") else mov
    fix = fix.as_tensor() if hasattr(fix, "as_tensor") else fix
    if init_ddf is not None:
        init = torch.as_tensor(init_ddf).detach().float().to(dev)
        init = init.as_tensor() if hasattr(init, "as_tensor") else init
        if tuple(init.shape) != (1, 3, *size):
            raise ValueError(f"init_ddf: expected (1, 3, {', '.join(map(str, size))}) in voxels, got {tuple(init.shape)}")
    else:
        init = mov.new_zeros((1, 3, *size))
    if levels < 1:
        raise ValueError(f"levels: expected >= 1, got {levels}")
    if iterations is None:
        iters = list(DEFAULT_ITERATIONS[-levels:]) if levels <= len(DEFAULT_ITERATIONS) else (
            [DEFAULT_ITERATIONS[0]] * (levels - len(DEFAULT_ITERATIONS)) + list(DEFAULT_ITERATIONS))
    elif isinstance(iterations, int):
        iters = [int(iterations)] * levels
    else:
        iters = [int(i) for i in iterations]
        if len(iters) != levels:
            raise ValueError(f"iterations: expected one int or {levels} values (coarse → fine), got {iterations}")

    # frozen embeddings → per-pair PCA → normalised features on every level
    with torch.no_grad():
        if (moving_embedding is None or fixed_embedding is None) and sam_encoder is not None and hfc_weight:
            moving_embedding = sam_encoder(mov) if moving_embedding is None else moving_embedding
            fixed_embedding = sam_encoder(fix) if fixed_embedding is None else fixed_embedding
        use_feat = moving_embedding is not None and fixed_embedding is not None and hfc_weight > 0
        if use_feat:
            em, ef = pca_project(torch.as_tensor(moving_embedding).float().to(dev),
                                 torch.as_tensor(fixed_embedding).float().to(dev), feature_channels)
            em, ef = _normalise(em), _normalise(ef)

    sizes = pyramid_sizes(size, levels)
    has_init = bool(init.abs().max() > 0)
    v = None  # refinement parameter on the current control grid (control-grid voxels)
    start_value = final_value = None
    for li, (lsize, n_iter) in enumerate(zip(sizes, iters)):
        m_l, f_l = _resample(mov, lsize), _resample(fix, lsize)
        em_l = ef_l = None
        if use_feat:  # features on the level grid, never finer than the embedding grid
            hsize = tuple(min(a, b) for a, b in zip(lsize, em.shape[2:]))
            em_l = _normalise(F.interpolate(em, size=hsize, mode="trilinear", align_corners=False))
            ef_l = _normalise(F.interpolate(ef, size=hsize, mode="trilinear", align_corners=False))
        base = resize_ddf(init, lsize)
        obj = _Objective(sim_weight, hfc_weight if use_feat else 0.0, ncc_kernel, lsize)
        psize = _param_size(lsize, grid_spacing)
        field = _Field(base if has_init else None, lsize, diffeomorphic)

        if v is None:
            v = mov.new_zeros((1, 3, *psize))
            if discrete_search and use_feat:
                with torch.no_grad():
                    base_h = resize_ddf(base, em_l.shape[2:])
                    em_w = warp(em_l, base_h)
                    radius = [min(int(search_radius), max(0, s // 4)) for s in em_l.shape[2:]]
                    d = coarse_search(em_w, ef_l, radius)
                    before = float(obj.hfc.level_term(ef_l, em_l, base_h))
                    after = float(obj.hfc.level_term(ef_l, em_l, compose(base_h, d)))
                    if verbose:
                        logger.info(f"discrete search radius {radius}: feature cost {before:.4f} -> {after:.4f}")
                    if after < before:
                        v = resize_ddf(d, psize)
        else:
            v = resize_ddf(v.detach(), psize)
        if li == len(sizes) - 1:
            with torch.no_grad():
                start_value = float(obj.data_term(m_l, f_l, em_l, ef_l, base))
        with torch.enable_grad():  # callers (e.g. MONAI's evaluator) may run us under no_grad
            v = v.clone().requires_grad_(True)
            opt = torch.optim.Adam([v], lr=lr)
            for _ in range(n_iter):
                opt.zero_grad()
                loss = obj.data_term(m_l, f_l, em_l, ef_l, field(v)) + smooth_weight * obj.smooth(v)
                loss.backward()
                opt.step()
        if verbose:
            logger.info(f"level {li} {lsize} ({psize} control grid), {n_iter} steps, loss {float(loss.detach()):.4f}")

    with torch.no_grad():
        final_value = float(obj.data_term(m_l, f_l, em_l, ef_l, field(v.detach())))
        if start_value is not None and final_value > start_value:
            if verbose:
                logger.info(f"objective {start_value:.4f} -> {final_value:.4f} is worse: keeping the start")
            return init.to(out_device)
        # folding guard on the refinement (the start's own folding is not ours to fix)
        checkable = min(size) >= 5
        for passes in (0, 1, 2, 4, 8):
            vv = _box_smooth(v.detach(), passes)
            res = resize_ddf(velocity_to_ddf(vv) if diffeomorphic else vv, size)
            if not checkable or folding_fraction(res) <= max_folding:
                break
        else:
            res = torch.zeros_like(init)
        ddf = compose(init, res) if has_init else res
        if checkable and folding_fraction(ddf) > max(max_folding, folding_fraction(init)):
            ddf = init
    if verbose:
        logger.info(f"objective {start_value:.4f} -> {final_value:.4f}")
    return ddf.to(out_device)

