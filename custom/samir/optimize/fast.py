"""The fast training-free core: discrete search + a short Adam refinement on SAM and MIND features.

``fast_optimize_pair(moving, fixed, spacing=...)`` returns ``(ddf, info)``: a DDF
``(1, 3, H, W, D)`` **in voxels of the fixed grid** (conventions: :mod:`samir.spatial`; the
warped moving image is ``warp(moving, ddf)``) and a dict of what was done and measured.

In the spirit of ConvexAdam (Siebert, Hansen & Heinrich, 2021) and VoxelOpt: never optimise at
full resolution; every step's work scales with its own grid's voxels.

1. **Grids.** A *working* grid (default at most ``max_work_voxels``) and a coarser *search* grid
   (at most ``max_search_voxels``) are made by halving, each time, the axes with the finest
   physical spacing (so a 1.4×1.4×10 mm cardiac stack is shrunk in-plane only).
2. **Features** on the working grid, each group scaled to unit mean squared norm and weighted:
   the frozen SAM slice embeddings (per-pair PCA to ``feature_channels``, resampled) and MIND-SSC
   (:mod:`samir.optimize.mind`: contrast-insensitive local self-similarity); optionally the whole
   stack projected on its first principal components (``joint_channels``).
3. **Discrete search** on the search grid: a dense cost volume of feature SSD for every integer
   displacement in a window of about ``capture_mm`` per axis, then *coupled convex* optimisation:
   alternately smooth the field and re-pick each voxel's displacement with a quadratic coupling to
   the smooth field of increasing weight.
4. **Adam** on a displacement (or a stationary velocity, ``diffeomorphic=True``) on the working
   grid, started from the search result: feature SSD of the warped moving features + MONAI
   DiffusionLoss, the field smoothed by box filters at every step (B-spline-like regularity).
5. **Fine stage** (``fine_iterations``): the field stays on the working grid while the features
   are compared at full resolution, at ``fine_points`` random voxels per step (a stochastic data
   term, as elastix samples its metric), optionally with the mutual information of the intensities
   at those points (``mi_weight``; ``cross_mi_weight`` for pairs of two contrasts); kept only if it
   lowers the MIND dissimilarity.
6. **Full resolution** is only the trilinear upsampling of the result, composed after
   ``init_ddf`` when one is given (e.g. the network's output).
7. **Guards.** The MIND-SSD of the result against the fixed image is compared with that of the
   start (identity or ``init_ddf``) on the working grid; the start is kept if the result is worse
   by more than ``guard_tolerance``; if more than
   ``max_folding`` of the voxels fold (det J ≤ 0), the refinement is smoothed until they do not
   (or dropped). ``info`` says which happened.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiffusionLoss, GlobalMutualInformationLoss

from samir.metrics import folding_fraction
from samir.optimize.mind import box_filter, mind_ssc
from samir.optimize.pair import pca_project, pca_projector
from samir.spatial import compose, resize_ddf, velocity_to_ddf, warp

__all__ = ["CosineAdam", "MindCost", "fast_optimize_pair", "reduced_grid", "feature_stack", "coupled_convex_search",
           "sampled_refinement", "local_normalise", "mind_cost"]

logger = logging.getLogger(__name__)

COUPLING = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def reduced_grid(size: Sequence[int], spacing: Sequence[float], max_voxels: int, min_size: int = 4
                 ) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Halve the finest-spaced axes (ties together) until the grid has at most ``max_voxels`` voxels.

    Returns ``(size, spacing)`` of the reduced grid; an axis never shrinks below ``min_size``
    voxels. Spacings are in mm (any unit), edge-aligned: new spacing = old × old size / new size.
    """
    size = [int(s) for s in size]
    sp = [float(s) for s in spacing]
    cur = list(size)
    while math.prod(cur) > max_voxels:
        eff = [sp[i] * size[i] / cur[i] for i in range(3)]
        shrinkable = [i for i in range(3) if cur[i] // 2 >= min_size]
        if not shrinkable:
            break
        finest = min(eff[i] for i in shrinkable)
        for i in shrinkable:
            if eff[i] <= finest * 1.4:
                cur[i] = max(min_size, int(round(cur[i] / 2)))
    return tuple(cur), tuple(sp[i] * size[i] / cur[i] for i in range(3))


def _resample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resample (B, C, ...) onto ``size`` edge to edge; shrinking is anti-aliased by area averaging."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    if all(t <= s for s, t in zip(x.shape[2:], size)):
        return F.adaptive_avg_pool3d(x, size)
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)


def _unit_scale(x: torch.Tensor, *others: torch.Tensor) -> float:
    """Scale making the mean squared (centred) norm per voxel of ``x`` and ``others`` together equal 1.

    E‖v − E v‖² = Σ_c (E w_c² − (E w_c)²) with w = v − c, c a per-channel mean of a subsample of ``x``
    (so that nothing cancels), from per-channel sums over the voxels of all volumes together: no
    concatenated copy of the volumes (7× faster on a fine-grid feature stack).
    """
    ref = x.flatten(2)[0]
    c = ref[:, :: max(1, ref.shape[1] // 4096)].mean(1, keepdim=True)
    n, s1, s2 = 0, 0.0, 0.0
    for t in (x, *others):
        w = t.flatten(2)[0] - c  # (C, N)
        n += w.shape[1]
        s1 = s1 + w.sum(1).double()
        s2 = s2 + torch.linalg.vector_norm(w, dim=1).double().pow(2)
    var = (s2 / n - (s1 / n).pow(2)).sum()
    return float(1.0 / var.clamp_min(1e-12).sqrt())


def feature_stack(moving: torch.Tensor, fixed: torch.Tensor, size: Sequence[int], spacing: Sequence[float],
                  moving_embedding: torch.Tensor | None = None, fixed_embedding: torch.Tensor | None = None,
                  sam_weight: float = 1.0, mind_weight: float = 1.0, feature_channels: int = 12,
                  mind_radius: int = 1, intensity_weight: float = 0.0, orientation_weight: float = 0.0,
                  descriptors: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Moving and fixed features (1, C, *size) on one grid: weighted groups of MIND-SSC, locally normalised
    intensity, edge orientations (:func:`orientation_tensor`) and SAM-PCA channels.

    ``moving``/``fixed`` (1, 1, H, W, D) on the same grid; embeddings (1, C_e, h, w, d) spanning
    the same field of view (any grid). Each group is scaled to unit mean squared norm per voxel,
    then by √weight, so a group's share of the SSD is its weight. Returns (moving, fixed, groups).
    ``descriptors`` (a dict), if given, receives the unscaled MIND-SSC of both images on ``size``
    (keys ``"mind_moving"``, ``"mind_fixed"``) for :class:`MindCost` to reuse.
    """
    mov_parts, fix_parts, groups = [], [], []
    if mind_weight > 0:
        m = _resample(moving, size)
        f = _resample(fixed, size)
        # neighbours one voxel apart on every axis, thick slices too: through-plane structure places a slice
        mm, mf = mind_ssc(m, radius=mind_radius), mind_ssc(f, radius=mind_radius)
        if descriptors is not None and mind_radius == 1:
            descriptors.update(mind_moving=mm, mind_fixed=mf)
        s = _unit_scale(mm, mf) * math.sqrt(mind_weight)
        mov_parts.append(mm * s)
        fix_parts.append(mf * s)
        groups.append("mind")
    if intensity_weight > 0:
        # locally normalised intensities (an SSD on them behaves like LNCC): for one contrast only
        # (fast_optimize_pair leaves them out across contrasts)
        m = local_normalise(_resample(moving, size), 2)
        f = local_normalise(_resample(fixed, size), 2)
        s = _unit_scale(m, f) * math.sqrt(intensity_weight)
        mov_parts.append(m * s)
        fix_parts.append(f * s)
        groups.append("intensity")
    if orientation_weight > 0:
        m = orientation_tensor(_resample(moving, size))
        f = orientation_tensor(_resample(fixed, size))
        s = _unit_scale(m, f) * math.sqrt(orientation_weight)
        mov_parts.append(m * s)
        fix_parts.append(f * s)
        groups.append("orientation")
    if sam_weight > 0 and moving_embedding is not None and fixed_embedding is not None:
        em, ef = pca_project(moving_embedding.float(), fixed_embedding.float(), feature_channels)
        em, ef = _resample(em, size), _resample(ef, size)
        s = _unit_scale(em, ef) * math.sqrt(sam_weight)
        mov_parts.append(em * s)
        fix_parts.append(ef * s)
        groups.append("sam")
    if not groups:
        raise ValueError("no features: give sam/mind weights > 0 (and embeddings for SAM)")
    return torch.cat(mov_parts, 1), torch.cat(fix_parts, 1), groups


def orientation_tensor(x: torch.Tensor, radius: int = 1, eps: float = 0.2) -> torch.Tensor:
    """Edge orientation that ignores the sign of contrast: (B, 1, ...) → (B, 6, ...).

    The outer product n nᵀ of the normalised gradient n = ∇x / √(|∇x|² + ε²), as its six distinct
    entries (off-diagonals × √2), box-filtered over (2r+1)³. The SSD of two such tensors is
    2 − 2 (n_m · n_f)² for strong edges: the squared normalised-gradient-field distance, which an
    inverted contrast (n → −n) leaves unchanged. ``eps`` is relative to the mean gradient norm
    (edges weaker than that fade towards 0).
    """
    g = [torch.gradient(x.float(), dim=d)[0] for d in (2, 3, 4)]
    norm2 = g[0] ** 2 + g[1] ** 2 + g[2] ** 2
    e2 = (eps * float(norm2.sqrt().mean())) ** 2 + 1e-12
    inv = (norm2 + e2).rsqrt()
    n = [gi * inv for gi in g]
    r2 = math.sqrt(2.0)
    t = torch.cat([n[0] * n[0], n[1] * n[1], n[2] * n[2], r2 * n[0] * n[1], r2 * n[0] * n[2], r2 * n[1] * n[2]], 1)
    return box_filter(t, radius) if radius > 0 else t


def local_normalise(x: torch.Tensor, radius: int = 2, eps: float = 1e-3) -> torch.Tensor:
    """(x − local mean) / local std over (2r+1)³ boxes, (B, 1, ...) → same; flat regions stay near 0."""
    mean = box_filter(x, radius)
    var = (box_filter(x * x, radius) - mean * mean).clamp_min(0)
    return (x - mean) / (var + eps * float(var.mean()) + 1e-12).sqrt()


def _shifts(radius: Sequence[int], device) -> torch.Tensor:
    axes = [torch.arange(-r, r + 1, device=device, dtype=torch.float32) for r in radius]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)  # (S, 3)


def _cost_volume(fm: torch.Tensor, ff: torch.Tensor, radius: Sequence[int]) -> torch.Tensor:
    """SSD (mean over channels) between ``ff(x)`` and ``fm(x + s)`` for every integer shift s: (S, h, w, d)."""
    r = [int(v) for v in radius]
    pad = []
    for v in reversed(r):
        pad += [v, v]
    mp = F.pad(fm, pad, mode="replicate")[0]
    f = ff[0]
    h, w, d = f.shape[1:]
    out = []
    for a in range(-r[0], r[0] + 1):
        for b in range(-r[1], r[1] + 1):
            sl = mp[:, r[0] + a: r[0] + a + h, r[1] + b: r[1] + b + w]
            for c in range(-r[2], r[2] + 1):
                out.append((sl[..., r[2] + c: r[2] + c + d] - f).pow_(2).mean(0))
    return torch.stack(out)


_SMOOTHING: dict[tuple, torch.Tensor] = {}
#: the separable-matrix smoothing runs while ``voxels × (H + W + D)`` stays under this (multiply-adds):
#: on the fields of the Adam stages (cardiac 56×63×12) 3 matrix products replace ~580 small ops per
#: step (forward and backward); on large grids the O(r)-per-voxel box passes are cheaper
MATRIX_SMOOTHING_MAX_MACS = 40_000_000


def _smoothing_matrix(n: int, passes: int, radius: int, dtype, device) -> torch.Tensor:
    """(n, n): ``passes`` box means of width 2·radius+1 along one axis, edges replicated (= ``box_filter``)."""
    key = (n, passes, radius, dtype, device)
    if key not in _SMOOTHING:
        box = torch.zeros(n, n, dtype=torch.float64)
        rows = torch.arange(n)
        for k in range(-radius, radius + 1):
            box.index_put_((rows, (rows + k).clamp(0, n - 1)), torch.full((n,), 1.0 / (2 * radius + 1),
                                                                          dtype=torch.float64), accumulate=True)
        _SMOOTHING[key] = torch.linalg.matrix_power(box, passes).to(dtype=dtype, device=device)
    return _SMOOTHING[key]


def _smooth_field(u: torch.Tensor, passes: int = 3, radius: int = 1) -> torch.Tensor:
    """``passes`` separable (2·radius+1)³ box means of ``u`` (B, C, H, W, D), edges replicated.

    The operator is linear and separable: on small grids it runs as one (n × n) matrix per axis (the
    passes multiplied out, the same numbers as repeated :func:`box_filter` up to rounding), 3 matrix
    products instead of hundreds of slicing ops per optimisation step; on large grids as box passes.
    """
    if passes <= 0 or radius <= 0:
        return u
    b, c, h, w, d = u.shape
    if u.numel() * (h + w + d) > MATRIX_SMOOTHING_MAX_MACS:
        for _ in range(passes):
            u = box_filter(u, radius)
        return u
    mh, mw, md = (_smoothing_matrix(n, passes, radius, u.dtype, u.device) for n in (h, w, d))
    x = torch.matmul(mh, u.reshape(b * c, h, w * d)).view(b * c * h, w, d)
    x = torch.matmul(mw, x)
    return torch.matmul(x, md.T).view(b, c, h, w, d)


def coupled_convex_search(moving_features: torch.Tensor, fixed_features: torch.Tensor, radius: Sequence[int],
                          coupling: Sequence[float] = COUPLING, patch_radius: int = 1) -> torch.Tensor:
    """Discrete displacement (1, 3, h, w, d) in grid voxels from a dense feature-SSD cost volume.

    Features (1, C, h, w, d) on the same grid. The cost of every integer shift within ``radius``
    (per axis) is aggregated over a (2·patch_radius+1)³ box and normalised to mean 1; the
    per-voxel arg-min is then regularised by coupled convex optimisation: for each weight θ in
    ``coupling``, ``ū = smooth(u)`` and ``u(x) = argmin_s cost(x, s) + θ·|s − ū(x)|²``. The result
    is smoothed once more (sub-voxel).
    """
    shifts = _shifts(radius, fixed_features.device)  # (S, 3)
    cost = _cost_volume(moving_features, fixed_features, radius)  # (S, h, w, d)
    if patch_radius > 0:
        cost = box_filter(cost[None], patch_radius)[0]
    cost = cost / cost.mean().clamp_min(1e-12)
    idx = cost.argmin(0)
    u = shifts[idx].permute(3, 0, 1, 2)[None]  # (1, 3, h, w, d)
    sq = shifts.pow(2).sum(1).view(-1, 1, 1, 1)  # |s|²
    for theta in coupling:
        ub = _smooth_field(u)
        # |s − ū|² = |s|² − 2 s·ū + |ū|²; the last term does not change the arg-min
        dot = torch.einsum("sk,khwd->shwd", shifts, ub[0])
        idx = (cost + theta * (sq - 2.0 * dot)).argmin(0)
        u = shifts[idx].permute(3, 0, 1, 2)[None]
    return _smooth_field(u)


class CosineAdam:
    """Adam on one tensor with a cosine-annealed step size: the updates of ``torch.optim.Adam`` (betas
    0.9/0.999, eps 1e-8, no weight decay) under ``CosineAnnealingLR(T_max=iterations, eta_min=eta_min)``.

    Why not ``torch.optim``: an optimizer's first use imports ``torch._dynamo`` (``add_param_group``
    and ``step`` are wrapped for the compiler): 1.5 s on a 2-core CPU, a third of a cardiac pair's
    whole optimisation. A test checks this class against ``torch.optim`` step by step.
    ``step()`` uses ``param.grad`` and clears it.
    """

    def __init__(self, param: torch.Tensor, lr: float, iterations: int, eta_min: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.eta_min = param, float(lr), float(eta_min)
        self.horizon = max(1, int(iterations))
        self.betas, self.eps = betas, float(eps)
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = 0

    def current_lr(self) -> float:
        """The step size of the next step: cosine from ``lr`` to ``eta_min`` over ``iterations`` steps."""
        k = self.steps
        return self.eta_min + (self.lr - self.eta_min) * (1.0 + math.cos(math.pi * k / self.horizon)) / 2.0

    @torch.no_grad()
    def step(self) -> None:
        grad = self.param.grad
        if grad is None:
            raise RuntimeError("CosineAdam.step: the parameter has no gradient (call backward first)")
        lr = self.current_lr()
        b1, b2 = self.betas
        self.steps += 1
        self.exp_avg.lerp_(grad, 1.0 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(1.0 - b2 ** self.steps)).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-lr / (1.0 - b1 ** self.steps))
        self.param.grad = None


def _points_to_grid(points: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Voxel coordinates (N, 3) of a grid of ``size`` → grid_sample's normalised (1, N, 1, 1, 3) (x = last axis)."""
    n = torch.tensor([float(s) for s in size], dtype=points.dtype, device=points.device)
    norm = (2.0 * points + 1.0) / n - 1.0  # align_corners=False: edges of the grid at ±1
    return norm.flip(-1).view(1, -1, 1, 1, 3)


def _sample(volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of ``volume`` (1, C, H, W, D) at voxel coordinates (N, 3) → (C, N); edges replicated."""
    grid = _points_to_grid(points, volume.shape[2:])
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, :, 0, 0]


def _gather_trilinear(flat: torch.Tensor, size: Sequence[int], points: torch.Tensor) -> torch.Tensor:
    """Trilinear samples (C, N) of a channels-last volume ``flat`` (H·W·D, C) at voxel coordinates (N, 3).

    Edges replicated. Differentiable in ``points`` only (the volume is data): the eight corner rows
    (each a contiguous run of C values) are gathered by one ``index_select`` and blended by three
    lerps. On a CPU this was 4× faster than ``grid_sample`` forward + backward for 20 k points of a
    25-channel, 680 k-voxel volume, whose backward fills a gradient buffer of the whole volume it does
    not need (and 1.3× faster than eight separate gathers).
    """
    hi = torch.tensor([float(s - 1) for s in size], dtype=points.dtype, device=points.device)
    p = torch.minimum(points.clamp_min(0.0), hi)
    p0 = torch.minimum(p.detach().floor(), (hi - 1).clamp_min(0))
    f = p - p0
    i0 = p0.long()
    sx, sy = int(size[1]) * int(size[2]), int(size[2])
    base = i0[:, 0] * sx + i0[:, 1] * sy + i0[:, 2]
    offsets = torch.tensor([dx * sx + dy * sy + dz for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)],
                           device=points.device)
    c = flat.index_select(0, (base[None] + offsets[:, None]).reshape(-1)).view(2, 2, 2, -1, flat.shape[1])
    c = torch.lerp(c[0], c[1], f[:, 0:1])  # along x: (2, 2, N, C)
    c = torch.lerp(c[0], c[1], f[:, 1:2])  # along y: (2, N, C)
    return torch.lerp(c[0], c[1], f[:, 2:3]).T  # along z: (C, N)


def sampled_refinement(param: torch.Tensor, moving_features: torch.Tensor, fixed_features: torch.Tensor,
                       iterations: int, n_points: int, lr: float, smooth_weight: float, smooth_passes: int,
                       diffeomorphic: bool, seed: int = 0, moving_image: torch.Tensor | None = None,
                       fixed_image: torch.Tensor | None = None, mi_weight: float = 0.0, mi_points: int = 20_000,
                       mi_bins: int = 32) -> torch.Tensor:
    """Adam on a coarse field ``param`` (1, 3, h, w, d; its own voxels) against fine features (1, C, H, W, D).

    Each step draws ``n_points`` random voxels of the fine grid (a stochastic data term, as elastix
    samples its metric): the field is interpolated there, the moving features sampled at
    ``x + u(x)`` and compared (SSD) with the fixed ones. Cost per step ∝ ``n_points``, whatever the
    image size, while the field stays on the coarse grid. With ``mi_weight`` > 0 the intensities
    ``moving_image``/``fixed_image`` (1, 1, H, W, D in [0, 1], the features' grid) at ``mi_points`` of the
    points add ``mi_weight`` × MONAI's Parzen-window mutual information loss (as elastix samples Mattes MI):
    a term that any intensity relation, monotonic or not, satisfies (pairs of two contrasts too).
    Returns the optimised ``param``.
    """
    fine = tuple(int(s) for s in fixed_features.shape[2:])
    coarse = tuple(int(s) for s in param.shape[2:])
    scale = torch.tensor([f / c for f, c in zip(fine, coarse)], dtype=param.dtype, device=param.device)
    g = torch.Generator(device="cpu").manual_seed(seed)
    smooth = DiffusionLoss()
    c = int(moving_features.shape[1])
    moving_flat = moving_features[0].permute(1, 2, 3, 0).reshape(-1, c).contiguous()  # (H·W·D, C)
    fixed_flat = fixed_features[0].permute(1, 2, 3, 0).reshape(-1, c).contiguous()
    sx, sy = fine[1] * fine[2], fine[2]
    use_mi = mi_weight > 0 and moving_image is not None and fixed_image is not None
    if use_mi:
        mi_loss = GlobalMutualInformationLoss(kernel_type="b-spline", num_bins=int(mi_bins))
        moving_img_flat = moving_image.reshape(-1, 1).float().contiguous()
        fixed_img_flat = fixed_image.reshape(-1).float()
    with torch.enable_grad():
        p = param.detach().clone().requires_grad_(True)
        opt = CosineAdam(p, lr, iterations, eta_min=lr * 0.02)
        hi = torch.tensor(fine, dtype=torch.float32)
        for _ in range(int(iterations)):
            pts = (torch.rand(n_points, 3, generator=g) * hi).floor().to(param.device)
            ps = _smooth_field(p, smooth_passes)
            u = velocity_to_ddf(ps) if diffeomorphic else ps
            # the coarse field at the fine points (same physical point: edge-aligned grids), in fine voxels
            disp = _sample(u, (pts + 0.5) * (torch.tensor(coarse, device=pts.device) / hi.to(pts.device)) - 0.5)
            disp = disp.T * scale  # (N, 3)
            warped = _gather_trilinear(moving_flat, fine, pts + disp)  # (C, N)
            idx = pts.long()
            target = fixed_flat[idx[:, 0] * sx + idx[:, 1] * sy + idx[:, 2]].T
            loss = (warped - target).pow(2).sum(0).mean() + smooth_weight * smooth(ps)
            if use_mi:
                k = min(int(mi_points), n_points)  # the points are random: the first k are a random subset
                wi = _gather_trilinear(moving_img_flat, fine, pts[:k] + disp[:k]).clamp(0, 1)  # (1, k)
                ti = fixed_img_flat[idx[:k, 0] * sx + idx[:k, 1] * sy + idx[:k, 2]][None]
                loss = loss + mi_weight * mi_loss(wi[None], ti[None])
            loss.backward()
            opt.step()
    return p.detach()


class MindCost:
    """The MIND-SSC dissimilarity to one fixed image (1, 1, ...) on the grid ``size``, its descriptor
    computed once: ``MindCost(fixed, size)(moving)`` = :func:`mind_cost` (the guards compare two or
    three candidates against the same fixed image). ``fixed_descriptor``: that descriptor, already
    computed on ``size`` (:func:`feature_stack`'s ``descriptors``); :meth:`of_descriptor` scores a
    moving descriptor likewise."""

    def __init__(self, fixed: torch.Tensor, size: Sequence[int], fixed_descriptor: torch.Tensor | None = None):
        self.size = tuple(int(s) for s in size)
        if fixed_descriptor is not None and tuple(fixed_descriptor.shape[2:]) != self.size:
            raise ValueError(f"fixed_descriptor: expected the grid {self.size}, got {tuple(fixed_descriptor.shape[2:])}")
        self.fixed = fixed_descriptor if fixed_descriptor is not None else mind_ssc(_resample(fixed.float(), self.size))

    def of_descriptor(self, moving_descriptor: torch.Tensor) -> float:
        return float((moving_descriptor - self.fixed).pow(2).mean())

    def __call__(self, moving: torch.Tensor) -> float:
        return self.of_descriptor(mind_ssc(_resample(moving.float(), self.size)))


def mind_cost(moving: torch.Tensor, fixed: torch.Tensor, size: Sequence[int], spacing: Sequence[float]) -> float:
    """Mean squared difference of MIND-SSC descriptors of two images (1, 1, ...) on the grid ``size``: lower is better."""
    return MindCost(fixed, size)(moving)


def _as_plain(x: torch.Tensor, dev) -> torch.Tensor:
    x = torch.as_tensor(x).detach().float().to(dev)
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def fast_optimize_pair(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    init_ddf: torch.Tensor | None = None,
    moving_embedding: torch.Tensor | None = None,
    fixed_embedding: torch.Tensor | None = None,
    sam_weight: float = 1.0,
    mind_weight: float = 1.0,
    intensity_weight: float = 0.0,
    orientation_weight: float = 0.0,
    feature_channels: int = 12,
    joint_channels: int = 0,
    max_work_voxels: int = 160_000,
    max_search_voxels: int = 40_000,
    capture_mm: float = 20.0,
    max_radius: int = 4,
    coupling_scale: float = 1.0,
    discrete_search: bool = True,
    iterations: int = 60,
    lr: float = 1.0,
    smooth_weight: float = 1.0,
    smooth_passes: int = 2,
    diffeomorphic: bool = False,
    fine_iterations: int = 60,
    fine_points: int = 20_000,
    max_fine_voxels: int = 2_000_000,
    fine_check: bool = True,
    max_folding: float = 0.005,
    guard_tolerance: float = 0.02,
    mi_weight: float = 0.0,
    cross_mi_weight: float = 0.0,
    cross_fine_points: int | None = None,
    mi_points: int = 20_000,
    mi_bins: int = 32,
    device: str | torch.device | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[torch.Tensor, dict]:
    """Register ``moving`` onto ``fixed`` with no training: discrete search + Adam on SAM/MIND features.

    Args:
        moving, fixed: (1, 1, H, W, D) intensities (any scale; same grid). ``spacing``: its voxel size in mm.
        init_ddf: start (1, 3, H, W, D) in fixed voxels (e.g. the network's output); None = identity.
            The moving image is warped by it first and the refinement is composed after it.
        moving_embedding, fixed_embedding: frozen SAM embeddings (1, C, h, w, d) of the two images
            as given (not of the pre-warped moving image: it is warped here), spanning their field of
            view; None = MIND-SSC alone.
        sam_weight, mind_weight, intensity_weight, orientation_weight: shares of the feature groups in
            the SSD (SAM PCA, MIND-SSC, locally normalised intensity: only when the two images have one
            contrast, :func:`samir.classical.same_contrast`; edge orientations, :func:`orientation_tensor`:
            only when they do not); feature_channels: SAM PCA channels.
        joint_channels: project the whole feature stack on its first ``joint_channels`` principal
            components (of both images together, fitted on the working grid, applied to the fine
            stage's features too); every Adam and fine step costs in proportion to the channels
            (0 = keep them all).
        max_work_voxels, max_search_voxels: size bounds of the working (Adam) and search grids.
        capture_mm: search window half-width per axis (mm; at most ``max_radius`` search voxels).
        coupling_scale: multiplies the coupled-convex weights (larger = smoother search result).
        discrete_search: run the discrete search (else Adam starts from the start field).
        iterations, lr, smooth_weight, smooth_passes: Adam steps and step size (working voxels),
            DiffusionLoss weight, box-filter passes applied to the field at each step.
        diffeomorphic: optimise a stationary velocity (scaling and squaring) instead of a displacement.
        fine_iterations, fine_points, max_fine_voxels: a last Adam stage keeps the field on the
            working grid but compares features on the finer grid (the image's, at most
            ``max_fine_voxels``) at ``fine_points`` random voxels per step (0 = skip).
        fine_check: drop the fine stage's result for the working-grid one if its MIND cost on the
            fine grid is higher (two warps and descriptors at full resolution; False leaves the
            choice to the caller's own guard, as ``samir register``'s last guard makes it).
        max_folding: largest fraction of folding voxels (det J ≤ 0) allowed in the result.
        guard_tolerance: the result is dropped for the start if its MIND cost is higher than the
            start's by more than this fraction (smaller differences are within the measure's noise).
        mi_weight, cross_mi_weight: the fine stage adds this weight × the Parzen-window mutual
            information of the intensities at ``mi_points`` of its points (``mi_bins`` bins;
            :func:`sampled_refinement`); ``cross_mi_weight`` (when > 0) for a pair of two contrasts
            (:func:`samir.classical.same_contrast`), with ``cross_fine_points`` feature points per
            step there (None = ``fine_points``), ``mi_weight`` otherwise; 0 = off.
        progress: called with a short message after each stage (e.g. a progress bar's ``set_postfix_str``).

    Returns:
        ``(ddf, info)``: the DDF (1, 3, H, W, D) in voxels of the fixed grid on the input's device, and
        a dict (grids, search radius, costs at start/end, seconds per stage, ``kept``: "result" or "start").
    """
    if moving.ndim != 5 or fixed.ndim != 5 or moving.shape != fixed.shape or moving.shape[:2] != (1, 1):
        raise ValueError(f"moving/fixed: expected two (1, 1, H, W, D) images on the same grid, got "
                         f"{tuple(moving.shape)} and {tuple(fixed.shape)}")
    if len(spacing) != 3 or min(float(s) for s in spacing) <= 0:
        raise ValueError(f"spacing: expected three positive voxel sizes (mm), got {tuple(spacing)}")
    t_start = time.perf_counter()
    out_device = moving.device
    dev = torch.device(device) if device is not None else out_device
    size = tuple(int(s) for s in fixed.shape[2:])
    spacing = tuple(float(s) for s in spacing)
    mov, fix = _as_plain(moving, dev), _as_plain(fixed, dev)
    for name, x in (("moving", mov), ("fixed", fix)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: expected finite intensities, got NaN or infinite values")
    if init_ddf is not None:
        init = _as_plain(init_ddf, dev)
        if tuple(init.shape) != (1, 3, *size):
            raise ValueError(f"init_ddf: expected (1, 3, {', '.join(map(str, size))}) in voxels, got {tuple(init.shape)}")
        has_init = bool(init.abs().max() > 0)
    else:
        init, has_init = mov.new_zeros((1, 3, *size)), False
    # intensities to [0, 1] per image (MIND is scale-free, but keep the numbers tame)
    def unit(x):
        lo, hi = x.min(), x.max()
        return (x - lo) / (hi - lo).clamp_min(1e-6)

    mov, fix = unit(mov), unit(fix)
    note = progress or (lambda msg: None)
    info: dict = {"method": "fast"}
    timings: dict[str, float] = {}

    work_size, work_sp = reduced_grid(size, spacing, max_work_voxels)
    search_size, search_sp = reduced_grid(work_size, work_sp, max_search_voxels)
    info.update(work_grid=list(work_size), work_spacing_mm=[round(s, 3) for s in work_sp],
                search_grid=list(search_size), search_spacing_mm=[round(s, 3) for s in search_sp])

    with torch.no_grad():
        t = time.perf_counter()
        mov0 = warp(mov, init) if has_init else mov
        cross = False
        if intensity_weight > 0 or orientation_weight > 0 or cross_mi_weight > 0:
            # across contrasts no sign or scale makes intensities comparable (a T2-like brain onto a T1
            # one fell below identity with them on the dev pairs): MIND and the edge orientations carry
            # those pairs; for one contrast the intensities do better than the orientations (brain dev:
            # cross-contrast 0.792 → 0.800 with orientations, one contrast 0.820 → 0.819 and more folding)
            from samir.classical import same_contrast

            if same_contrast(mov0, fix):
                if orientation_weight > 0:
                    orientation_weight = 0.0
                    info["orientation"] = "left out: one contrast"
            else:
                cross = True
                if intensity_weight > 0:
                    intensity_weight = 0.0
                    info["intensity"] = "left out: different contrasts"
        em = emf = None
        if moving_embedding is not None and fixed_embedding is not None and sam_weight > 0:
            em = _as_plain(moving_embedding, dev)
            emf = _as_plain(fixed_embedding, dev)
            if has_init:  # the start field, on the embedding's own grid, warps the moving embedding
                em = warp(em, resize_ddf(init, em.shape[2:]))
        work_mind: dict = {}  # the MIND descriptors of the working grid, for the last guard
        fm, ff, groups = feature_stack(mov0, fix, work_size, work_sp, em, emf, sam_weight, mind_weight,
                                       feature_channels, intensity_weight=intensity_weight,
                                       orientation_weight=orientation_weight, descriptors=work_mind)
        info["features"] = groups
        project = None
        if 0 < joint_channels < fm.shape[1]:
            project = pca_projector(fm, ff, joint_channels)
            fm, ff = project(fm), project(ff)
            info["joint_channels"] = int(joint_channels)
        timings["features"] = time.perf_counter() - t
        note(f"features {'+'.join(groups)} on {work_size}")

        u0 = fm.new_zeros((1, 3, *work_size))
        if discrete_search:
            t = time.perf_counter()
            radius = [int(min(max_radius, math.ceil(capture_mm / s), max(0, n // 4)))
                      for s, n in zip(search_sp, search_size)]
            fms, ffs = _resample(fm, search_size), _resample(ff, search_size)
            coupling = [c * coupling_scale for c in COUPLING]
            us = coupled_convex_search(fms, ffs, radius, coupling)
            u0 = resize_ddf(us, work_size)
            info["search_radius"] = radius
            timings["search"] = time.perf_counter() - t
            note(f"discrete search ±{radius} on {search_size}")

    t = time.perf_counter()
    smooth = DiffusionLoss()
    with torch.enable_grad():  # callers (MONAI's evaluator) may run us under no_grad
        p = u0.clone().requires_grad_(True)
        # Adam's steps are about lr voxels whatever the gradient: decay it, or the field jitters by that much
        opt = CosineAdam(p, lr, iterations, eta_min=lr * 0.02)
        for _ in range(int(iterations)):
            ps = _smooth_field(p, smooth_passes)
            u = velocity_to_ddf(ps) if diffeomorphic else ps
            loss = (warp(fm, u) - ff).pow(2).sum(1).mean() + smooth_weight * smooth(ps)
            loss.backward()
            opt.step()
    timings["adam"] = time.perf_counter() - t
    note(f"Adam {iterations} steps on {work_size}")
    fine_size, fine_sp = reduced_grid(size, spacing, max_fine_voxels)
    if fine_iterations > 0 and math.prod(fine_size) > math.prod(work_size):
        t = time.perf_counter()
        fine_mind: dict = {}
        with torch.no_grad():
            fmf, fff, _ = feature_stack(mov0, fix, fine_size, fine_sp, em, emf, sam_weight, mind_weight,
                                        feature_channels, intensity_weight=intensity_weight,
                                        orientation_weight=orientation_weight, descriptors=fine_mind)
            if project is not None:
                fmf, fff = project(fmf), project(fff)
        coarse_p = p.detach()
        mi_kw, n_points = {}, fine_points
        w_mi = cross_mi_weight if cross and cross_mi_weight > 0 else mi_weight
        if w_mi > 0:
            mi_kw = dict(moving_image=_resample(mov0, fine_size), fixed_image=_resample(fix, fine_size),
                         mi_weight=w_mi, mi_points=mi_points, mi_bins=mi_bins)
            info["mutual_information"] = w_mi
        if cross and cross_mi_weight > 0 and cross_fine_points is not None:
            n_points = int(cross_fine_points)
        p = sampled_refinement(p, fmf, fff, fine_iterations, n_points, lr * 0.5, smooth_weight, smooth_passes,
                               diffeomorphic, **mi_kw)
        del fmf, fff
        # keep the fine stage only if it lowers the MIND dissimilarity on the fine grid
        if fine_check:
            with torch.no_grad():
                fine_cost = MindCost(fix, fine_size, fine_mind.get("mind_fixed"))

                def stage_cost(q):
                    v = _smooth_field(q, smooth_passes)
                    r = resize_ddf(velocity_to_ddf(v) if diffeomorphic else v, size)
                    return fine_cost(warp(mov0, r))

                before_fine, after_fine = stage_cost(coarse_p), stage_cost(p)
            info["fine_cost"] = [before_fine, after_fine]
            if after_fine > before_fine:
                p = coarse_p
                info["fine_kept"] = False
        del fine_mind
        info["fine_grid"] = list(fine_size)
        timings["fine"] = time.perf_counter() - t
        note(f"Adam {fine_iterations} steps, {fine_points} points of {fine_size}")

    with torch.no_grad():
        t = time.perf_counter()
        field = _smooth_field(p.detach(), smooth_passes)

        def full(extra_passes: int) -> torch.Tensor:
            v = _smooth_field(field, extra_passes) if extra_passes else field
            r = resize_ddf(velocity_to_ddf(v) if diffeomorphic else v, size)
            return compose(init, r) if has_init else r

        ddf = full(0)
        checkable = min(size) >= 5
        info["smoothed_for_folding"] = 0
        if checkable:
            for extra in (1, 2, 4, 8):
                if folding_fraction(ddf) <= max_folding:
                    break
                ddf = full(extra)
                info["smoothed_for_folding"] = extra
            else:
                if folding_fraction(ddf) > max_folding:
                    ddf = init.clone()
                    info["dropped_for_folding"] = True
        work_cost = MindCost(fix, work_size, work_mind.get("mind_fixed"))
        start_mind = work_mind.get("mind_moving")
        cost_start = work_cost.of_descriptor(start_mind) if start_mind is not None else work_cost(mov0)
        cost_end = work_cost(warp(mov, ddf))
        info.update(cost_start=cost_start, cost_end=cost_end)
        if cost_end > cost_start * (1.0 + guard_tolerance):
            ddf = init.clone()
            info["kept"] = "start"
        else:
            info["kept"] = "result"
        timings["guards"] = time.perf_counter() - t
    info["seconds"] = {k: round(v, 3) for k, v in timings.items()}
    info["seconds"]["total"] = round(time.perf_counter() - t_start, 3)
    logger.debug("fast optimisation: %s", info)
    return ddf.to(out_device), info
