"""The fast training-free core (``samir.optimize.fast``) and its descriptor (``samir.optimize.mind``).

Pairs with known answers: a label phantom warped by a known smooth field; Dice must rise and the
folding stay low, also when the moving image's contrast is inverted (MIND carries it).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from samir.metrics import dice_per_label, folding_fraction
from samir.optimize.fast import (
    CosineAdam,
    MindCost,
    coupled_convex_search,
    fast_optimize_pair,
    feature_stack,
    mind_cost,
    reduced_grid,
)
from samir.optimize.mind import box_filter, mind_ssc
from samir.optimize.pair import pca_projector
from samir.spatial import warp, warp_label


def _phantom(shape=(32, 32, 24), seed=0):
    """Label map of overlapping ellipsoids (1..4) on a background, and a textured image of it."""
    g = torch.Generator().manual_seed(seed)
    axes = [torch.linspace(-1, 1, s) for s in shape]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    label = torch.zeros(shape, dtype=torch.long)
    for k in range(1, 5):
        c = (torch.rand(3, generator=g) - 0.5) * 0.8
        r = 0.25 + 0.25 * torch.rand(3, generator=g)
        inside = ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1
        label[inside] = k
    levels = torch.tensor([0.1, 0.35, 0.55, 0.75, 0.95])
    image = levels[label] + 0.03 * torch.randn(shape, generator=g)
    return image[None, None], label[None, None]


def _smooth_field(shape, amplitude, seed):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 3, 4, 4, 4, generator=g)
    u = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=False)
    return u / u.abs().max() * amplitude


def _dice(ml, fl, ddf=None):
    w = ml if ddf is None else warp_label(ml, ddf)
    d = dice_per_label(w, fl, {k: str(k) for k in range(1, 5)})
    return sum(d.values()) / len(d)


@pytest.fixture(scope="module")
def pair():
    fixed, fl = _phantom()
    u = _smooth_field(fixed.shape[2:], 4.0, seed=1)  # up to 4 voxels
    moving = warp(fixed, u)
    ml = warp_label(fl, u)
    # the moving image sampled at x + u(x): registering it back needs about the inverse of u
    return moving, fixed, ml, fl


def test_box_filter_is_a_mean_with_replicated_edges():
    x = torch.rand(1, 2, 9, 8, 7)
    ref = F.avg_pool3d(F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert torch.allclose(box_filter(x, 1), ref, atol=1e-6)


@pytest.mark.parametrize("shape, passes", [((1, 3, 56, 63, 12), 2), ((1, 3, 7, 5, 3), 3), ((1, 3, 1, 4, 9), 2)])
def test_matrix_smoothing_equals_repeated_box_passes(shape, passes):
    """The small-grid smoothing of the Adam stages (one matrix per axis) gives the numbers and gradients of
    repeated box passes; above the size limit the box passes themselves run."""
    import samir.optimize.fast as fast

    torch.manual_seed(0)
    u = torch.randn(shape, requires_grad=True)
    weights = torch.randn(shape)
    (fast._smooth_field(u, passes) * weights).sum().backward()
    grad_matrix, u.grad = u.grad.clone(), None
    ref = u
    for _ in range(passes):
        ref = box_filter(ref, 1)
    (ref * weights).sum().backward()
    assert torch.allclose(fast._smooth_field(u, passes), ref, atol=1e-5)
    assert torch.allclose(grad_matrix, u.grad, atol=1e-5)
    assert u.numel() * sum(shape[2:]) <= fast.MATRIX_SMOOTHING_MAX_MACS  # these took the matrix path
    big = torch.randn(1, 3, 160, 160, 48)
    assert big.numel() * 368 > fast.MATRIX_SMOOTHING_MAX_MACS
    assert torch.allclose(fast._smooth_field(big, 1), box_filter(big, 1))


@pytest.mark.parametrize("scale, offset", [(2.0, 5.0), (-1.0, 1.0), (0.1, -3.0)])
def test_mind_is_invariant_to_affine_intensity_changes(scale, offset):
    image, _ = _phantom((24, 24, 20))
    ref = mind_ssc(image)
    assert ref.shape == (1, 12, 24, 24, 20)
    assert float(ref.min()) > 0 and float(ref.max()) <= 1.0 + 1e-6
    assert torch.allclose(mind_ssc(image * scale + offset), ref, atol=2e-3)  # float32 rounding of the shift


def test_mind_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match=r"\(B, 1, H, W, D\)"):
        mind_ssc(torch.rand(1, 2, 8, 8, 8))


@pytest.mark.parametrize("size, spacing, max_voxels, expected", [
    ((216, 256, 10), (1.4, 1.4, 10.0), 160_000, (108, 128, 10)),  # thick slices: in-plane only
    ((98, 116, 94), (2.0, 2.0, 2.0), 160_000, (49, 58, 47)),
    ((32, 32, 32), (1.0, 1.0, 1.0), 100_000, (32, 32, 32)),  # already small
])
def test_reduced_grid_halves_the_finest_axes(size, spacing, max_voxels, expected):
    got, sp = reduced_grid(size, spacing, max_voxels)
    assert got == expected
    assert math.prod(got) <= max(max_voxels, math.prod(size) if got == tuple(size) else 0)
    for a, b, s, t in zip(size, got, spacing, sp):
        assert t == pytest.approx(s * a / b)


def test_coupled_convex_search_recovers_a_translation():
    g = torch.Generator().manual_seed(0)
    fixed = box_filter(torch.randn(1, 8, 24, 24, 20, generator=g), 1)
    shift = (2, -1, 1)
    moving = torch.roll(fixed, shifts=shift, dims=(2, 3, 4))  # moving[i] = fixed[i - s]: M(x + s) = F(x)
    u = coupled_convex_search(moving, fixed, radius=(3, 3, 3))
    inner = u[0, :, 5:-5, 5:-5, 5:-5]
    for axis, s in enumerate(shift):
        assert float(inner[axis].median()) == pytest.approx(s, abs=0.05)


def test_fast_core_raises_dice_with_little_folding(pair):
    moving, fixed, ml, fl = pair
    before = _dice(ml, fl)
    ddf, info = fast_optimize_pair(moving, fixed, spacing=(1.5, 1.5, 1.5), iterations=40)
    after = _dice(ml, fl, ddf)
    assert ddf.shape == (1, 3, *fixed.shape[2:])
    assert before < 0.85
    assert after > before + 0.05, (before, after)
    assert folding_fraction(ddf) <= 0.005
    assert info["kept"] == "result" and info["cost_end"] < info["cost_start"]
    assert set(info["seconds"]) >= {"features", "search", "adam", "total"}


def test_fast_core_registers_across_an_inverted_contrast(pair):
    moving, fixed, ml, fl = pair
    before = _dice(ml, fl)
    ddf, _ = fast_optimize_pair(1.0 - moving, fixed, spacing=(1.5, 1.5, 1.5), iterations=40)
    assert _dice(ml, fl, ddf) > before + 0.05


def test_point_sampler_matches_grid_sample_values_and_gradients():
    from samir.optimize.fast import _gather_trilinear, _sample

    g = torch.Generator().manual_seed(0)
    vol = torch.rand(1, 5, 9, 7, 6, generator=g)
    flat = vol[0].permute(1, 2, 3, 0).reshape(-1, 5).contiguous()
    pts = torch.cat([torch.rand(40, 3, generator=g) * torch.tensor([8.0, 6.0, 5.0]),
                     torch.tensor([[0.0, 0.0, 0.0], [8.0, 6.0, 5.0], [-1.0, 3.0, 2.0], [9.5, 7.2, 6.1]])])
    a_pts, b_pts = pts.clone().requires_grad_(True), pts.clone().requires_grad_(True)
    a, b = _sample(vol, a_pts), _gather_trilinear(flat, (9, 7, 6), b_pts)
    assert torch.allclose(a, b, atol=1e-5)
    w = torch.rand(a.shape, generator=g)
    (a * w).sum().backward()
    (b * w).sum().backward()
    inside = (pts > 0.01).all(1) & (pts < torch.tensor([7.99, 5.99, 4.99])).all(1)  # kinks at the edges
    assert torch.allclose(a_pts.grad[inside], b_pts.grad[inside], atol=1e-4)


def test_intensity_features_only_for_one_contrast(pair):
    """Locally normalised intensities join MIND for a same-contrast pair and are left out across contrasts."""
    moving, fixed, ml, fl = pair
    before = _dice(ml, fl)
    ddf, info = fast_optimize_pair(moving, fixed, spacing=(1.5, 1.5, 1.5), iterations=40, intensity_weight=0.5)
    assert info["features"] == ["mind", "intensity"] and _dice(ml, fl, ddf) > before + 0.05
    ddf, info = fast_optimize_pair(1.0 - moving, fixed, spacing=(1.5, 1.5, 1.5), iterations=40, intensity_weight=0.5)
    assert info["features"] == ["mind"] and _dice(ml, fl, ddf) > before + 0.05


def test_orientation_tensor_ignores_the_sign_of_contrast_and_measures_the_angle():
    from samir.optimize.fast import orientation_tensor

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 12, 12, 12, generator=g)
    assert torch.allclose(orientation_tensor(x), orientation_tensor(1.0 - x), atol=1e-6)  # inverted contrast
    # two ramps at an angle θ: SSD of the unsmoothed tensors ≈ 2 − 2 cos²θ (strong edges: eps → 0)
    i, j, _ = torch.meshgrid(*[torch.arange(12.0)] * 3, indexing="ij")
    for theta in (0.0, math.pi / 6, math.pi / 3, math.pi / 2):
        a = orientation_tensor(i[None, None], radius=0, eps=1e-4)
        b = orientation_tensor((math.cos(theta) * i + math.sin(theta) * j)[None, None], radius=0, eps=1e-4)
        ssd = (a - b).pow(2).sum(1)[0, 3:-3, 3:-3, 3:-3].mean()
        assert float(ssd) == pytest.approx(2 - 2 * math.cos(theta) ** 2, abs=1e-3), theta


def test_orientation_features_register_across_an_inverted_contrast(pair):
    moving, fixed, ml, fl = pair
    before = _dice(ml, fl)
    ddf, info = fast_optimize_pair(1.0 - moving, fixed, spacing=(1.5, 1.5, 1.5), iterations=40, orientation_weight=1.0,
                                   intensity_weight=1.0)
    assert info["features"] == ["mind", "orientation"] and _dice(ml, fl, ddf) > before + 0.05
    # one contrast: the intensities instead
    ddf, info = fast_optimize_pair(moving, fixed, spacing=(1.5, 1.5, 1.5), iterations=40, orientation_weight=1.0,
                                   intensity_weight=1.0)
    assert info["features"] == ["mind", "intensity"] and info["orientation"] == "left out: one contrast"


def test_fast_core_uses_sam_embeddings_and_refines_an_init(pair):
    moving, fixed, ml, fl = pair
    # stand-in embeddings: a smooth random projection of the label one-hot (structure, not intensity)
    g = torch.Generator().manual_seed(0)
    proj = torch.randn(16, 5, generator=g)

    def embed(label):
        onehot = F.one_hot(label[0, 0], 5).permute(3, 0, 1, 2).float()
        return F.avg_pool3d(torch.einsum("ck,khwd->chwd", proj, onehot)[None], 4)

    ddf0, _ = fast_optimize_pair(moving, fixed, spacing=(1.5, 1.5, 1.5), iterations=10, discrete_search=False)
    ddf, info = fast_optimize_pair(moving, fixed, spacing=(1.5, 1.5, 1.5), init_ddf=ddf0, iterations=30,
                                   moving_embedding=embed(ml), fixed_embedding=embed(fl))
    assert info["features"] == ["mind", "sam"]
    assert _dice(ml, fl, ddf) >= _dice(ml, fl, ddf0) - 0.005


def test_fast_core_keeps_the_start_when_nothing_is_to_gain():
    fixed, _ = _phantom((32, 32, 24))
    ddf, info = fast_optimize_pair(fixed.clone(), fixed, iterations=10)
    assert float(ddf.abs().max()) < 0.5
    assert info["cost_end"] <= info["cost_start"] * 1.02 + 1e-9 or info["kept"] == "start"


def test_mind_cost_is_lower_for_the_registered_image(pair):
    moving, fixed, _, _ = pair
    assert mind_cost(fixed, fixed, (24, 24, 20), (1, 1, 1)) == pytest.approx(0.0, abs=1e-9)
    assert mind_cost(moving, fixed, (24, 24, 20), (1, 1, 1)) > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"moving": torch.rand(1, 1, 8, 8, 8), "fixed": torch.rand(1, 1, 8, 8, 9)}, "same grid"),
    ({"moving": torch.rand(1, 1, 8, 8, 8), "fixed": torch.rand(1, 1, 8, 8, 8), "spacing": (1, 0, 1)}, "spacing"),
    ({"moving": torch.rand(1, 1, 8, 8, 8), "fixed": torch.rand(1, 1, 8, 8, 8),
      "init_ddf": torch.zeros(1, 3, 4, 4, 4)}, "init_ddf"),
    ({"moving": torch.full((1, 1, 8, 8, 8), float("nan")), "fixed": torch.rand(1, 1, 8, 8, 8)}, "moving: expected finite"),
])
def test_fast_core_bad_input_names_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fast_optimize_pair(**kwargs)


def test_cosine_adam_matches_torch_adam_with_cosine_annealing():
    """The core's own Adam takes the steps of torch.optim.Adam under CosineAnnealingLR (same maths, no
    torch._dynamo import), on a badly scaled quadratic, step by step."""
    torch.manual_seed(0)
    target = torch.randn(2, 3, 4)
    scale = torch.rand(2, 3, 4) * 10

    def loss_of(p):
        return (scale * (p - target) ** 2).sum() + p.abs().sum()

    ours = torch.zeros(2, 3, 4, requires_grad=True)
    ref = torch.zeros(2, 3, 4, requires_grad=True)
    opt = CosineAdam(ours, lr=0.3, iterations=25, eta_min=0.006)
    topt = torch.optim.Adam([ref], lr=0.3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=25, eta_min=0.006)
    for _ in range(25):
        loss_of(ours).backward()
        opt.step()
        assert ours.grad is None
        topt.zero_grad()
        loss_of(ref).backward()
        topt.step()
        sched.step()
        assert torch.allclose(ours, ref, atol=1e-6), float((ours - ref).abs().max())
    assert float(loss_of(ours.detach())) < 0.2 * float(loss_of(torch.zeros(2, 3, 4)))
    with pytest.raises(RuntimeError, match="no gradient"):
        opt.step()


def test_joint_components_keep_distances_and_still_register(pair):
    """All components: the SSD between the two projected stacks equals the original one; fewer: never
    more. The core on 4 joint components of its 13 feature channels still raises Dice, and says so."""
    torch.manual_seed(0)
    fm, ff = torch.randn(1, 6, 8, 9, 5), torch.randn(1, 6, 8, 9, 5)
    full = pca_projector(fm, ff, 6)
    assert torch.allclose((full(fm) - full(ff)).pow(2).sum(), (fm - ff).pow(2).sum(), rtol=1e-4)
    three = pca_projector(fm, ff, 3)
    assert three(fm).shape == (1, 3, 8, 9, 5)
    assert float((three(fm) - three(ff)).pow(2).sum()) <= float((fm - ff).pow(2).sum())
    moving, fixed, ml, fl = pair
    ddf, info = fast_optimize_pair(moving, fixed, intensity_weight=1.0, joint_channels=4, fine_iterations=10)
    assert info["joint_channels"] == 4 and info["kept"] == "result"
    assert _dice(ml, fl, ddf) > _dice(ml, fl) + 0.05
    assert folding_fraction(ddf) <= 0.005


def _permuted_contrast(image, label):
    """The phantom in another contrast: its tissue levels in another, non-monotonic order (as CSF, grey
    and white matter swap order between T1 and T2), same texture."""
    levels = torch.tensor([0.1, 0.35, 0.55, 0.75, 0.95])
    other = torch.tensor([0.05, 0.9, 0.3, 0.6, 0.45])
    return image - levels[label] + other[label]


def test_sampled_mutual_information_alone_registers_a_non_monotonic_contrast(pair):
    """With feature channels that carry nothing (zeros), the sampled refinement moves only by the MI term
    on the intensities: Dice rises on a pair whose tissue levels are permuted (no sign or scale maps one
    onto the other), and without the term nothing moves."""
    from samir.optimize.fast import _smooth_field, sampled_refinement

    moving, fixed, ml, fl = pair
    moving_other = _permuted_contrast(moving, ml[0, 0])
    shape = fixed.shape[2:]
    zeros = torch.zeros(1, 2, *shape)
    coarse = torch.zeros(1, 3, *(s // 2 for s in shape))
    kw = dict(iterations=60, n_points=8000, lr=0.2, smooth_weight=1.0, smooth_passes=2, diffeomorphic=False)
    p = sampled_refinement(coarse, zeros, zeros, moving_image=moving_other.clamp(0, 1), fixed_image=fixed.clamp(0, 1),
                           mi_weight=1.0, mi_points=8000, **kw)
    # the field as the core uses it: box-smoothed on the coarse grid, then upsampled (voxels × 2)
    ddf = F.interpolate(_smooth_field(p, 2) * 2.0, size=shape, mode="trilinear", align_corners=False)
    before, after = _dice(ml, fl), _dice(ml, fl, ddf)
    assert after > before + 0.05, (before, after)
    assert folding_fraction(ddf) <= 0.005
    still = sampled_refinement(coarse, zeros, zeros, **kw)
    assert float(still.abs().max()) < 1e-6


def test_fast_core_adds_mutual_information_across_contrasts_and_where_asked(pair):
    moving, fixed, ml, fl = pair
    before = _dice(ml, fl)
    other = _permuted_contrast(moving, ml[0, 0])
    ddf, info = fast_optimize_pair(other, fixed, spacing=(1.5, 1.5, 1.5), iterations=40, intensity_weight=1.0,
                                   orientation_weight=0.5, cross_mi_weight=1.0, max_work_voxels=4000,
                                   fine_points=4000, mi_points=4000)
    assert info["mutual_information"] == 1.0 and info["intensity"] == "left out: different contrasts"
    assert _dice(ml, fl, ddf) > before + 0.05 and folding_fraction(ddf) <= 0.005
    _, info = fast_optimize_pair(moving, fixed, spacing=(1.5, 1.5, 1.5), iterations=10, intensity_weight=1.0,
                                 cross_mi_weight=1.0, max_work_voxels=4000, fine_points=4000)
    assert "mutual_information" not in info
    # mi_weight: every pair (the cardiac preset's same-contrast term)
    ddf, info = fast_optimize_pair(moving, fixed, spacing=(1.5, 1.5, 1.5), iterations=10, intensity_weight=1.0,
                                   mi_weight=0.5, cross_mi_weight=1.0, max_work_voxels=4000, fine_points=4000,
                                   mi_points=4000, mi_bins=16)
    assert info["mutual_information"] == 0.5 and _dice(ml, fl, ddf) > before + 0.05


def test_mind_descriptors_of_the_feature_stack_serve_the_guards():
    """The guards reuse the MIND-SSC that the feature stack computed: the same costs as computing them anew."""
    fixed, _ = _phantom(seed=3)
    moving, _ = _phantom(seed=4)
    size = (16, 16, 12)
    kept: dict = {}
    feature_stack(moving, fixed, size, (2.0, 2.0, 2.0), descriptors=kept)
    assert kept["mind_fixed"].shape == (1, 12, *size) and kept["mind_moving"].shape == (1, 12, *size)
    fresh, reused = MindCost(fixed, size), MindCost(fixed, size, kept["mind_fixed"])
    assert reused(moving) == pytest.approx(fresh(moving), rel=1e-6)
    assert reused.of_descriptor(kept["mind_moving"]) == pytest.approx(mind_cost(moving, fixed, size, (2.0,) * 3), rel=1e-6)
    assert fresh(fixed) == pytest.approx(0.0, abs=1e-12) and fresh(moving) > 0.01
    with pytest.raises(ValueError, match="grid"):
        MindCost(fixed, (8, 8, 6), kept["mind_fixed"])


def test_fine_stage_check_can_be_left_to_the_caller(pair):
    """With a working grid coarser than the image the fine stage runs; its keep-or-drop check reports
    both costs, and ``fine_check=False`` skips it (the caller's own guard decides) with the same field."""
    moving, fixed, ml, fl = pair
    kw = dict(spacing=(1.5, 1.5, 1.5), iterations=20, fine_iterations=10, max_work_voxels=4000)
    ddf, info = fast_optimize_pair(moving, fixed, **kw)
    assert info["fine_grid"] == list(fixed.shape[2:]) and len(info["fine_cost"]) == 2
    ddf2, info2 = fast_optimize_pair(moving, fixed, fine_check=False, **kw)
    assert "fine_cost" not in info2 and info2["fine_grid"] == info["fine_grid"]
    if info.get("fine_kept", True):  # the check kept the fine stage: skipping it changes nothing
        assert torch.allclose(ddf, ddf2, atol=1e-5)
    assert _dice(ml, fl, ddf2) > _dice(ml, fl) + 0.05
