"""Instance optimisation on frozen SAM features (``samir.optimize``): no trained weights needed.

Fast tests use the random ``tiny`` encoder on small grids; the LiteMedSAM ones are ``slow``.
"""

import time

import pytest
import torch
import torch.nn.functional as F
from samir.data.abdomen import ABDOMEN_LABELS, abdomen_pairs
from samir.data.acdc import ACDC_LABELS, acdc_pairs
from samir.data.synthetic_abdomen import write_synthetic_abdomen
from samir.data.synthetic_acdc import write_synthetic_acdc
from samir.data.transforms import abdomen_transforms, acdc_transforms, load_pair
from samir.encoders import SliceEncoder, build_encoder
from samir.metrics import dice_per_label, folding_fraction
from samir.optimize import coarse_search, optimize_pair, pca_project, pyramid_sizes
from samir.spatial import warp, warp_label

ITERS = (30, 20, 10)  # fast default-run budget per level (coarse → fine); the library default is larger


def _plain(x):
    x = torch.as_tensor(x)
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def _batch(pair, size=None):
    m, f = _plain(pair["moving"])[None].float(), _plain(pair["fixed"])[None].float()
    ml, fl = _plain(pair["moving_label"])[None].long(), _plain(pair["fixed_label"])[None].long()
    if size is not None:
        m = F.interpolate(m, size=size, mode="trilinear", align_corners=False)
        f = F.interpolate(f, size=size, mode="trilinear", align_corners=False)
        ml = F.interpolate(ml.float(), size=size, mode="nearest").long()
        fl = F.interpolate(fl.float(), size=size, mode="nearest").long()
    return m, f, ml, fl


def _mean_dice(ml, fl, labels, ddf=None):
    warped = ml if ddf is None else warp_label(ml, ddf)
    present = {k: v for k, v in labels.items() if bool((fl == k).any()) or bool((ml == k).any())}
    d = [v for v in dice_per_label(warped, fl, present).values() if v == v]
    return sum(d) / len(d)


@pytest.fixture(scope="module")
def acdc_pair(tmp_path_factory):
    root = write_synthetic_acdc(tmp_path_factory.mktemp("acdc"), n=1, seed=3, n_test=0)
    item = next(p for p in acdc_pairs(root, "all") if "ED->ES" in p["pair_id"])
    return load_pair(acdc_transforms(), item)


@pytest.fixture(scope="module")
def abdomen_pair(tmp_path_factory):
    root = write_synthetic_abdomen(tmp_path_factory.mktemp("abdomen"), n=2, seed=0, shape=(48, 40, 64))
    item = abdomen_pairs(root, "train", train_ids=(1, 2))[0]
    return load_pair(abdomen_transforms(), item)


@pytest.fixture(scope="module")
def tiny():
    return SliceEncoder(build_encoder("tiny"), cache=None)


def _run(pair, encoder, labels, size=None, **kwargs):
    m, f, ml, fl = _batch(pair, size)
    before = _mean_dice(ml, fl, labels)
    t = time.perf_counter()
    ddf = optimize_pair(m, f, sam_encoder=encoder, **{"iterations": ITERS, **kwargs})
    seconds = time.perf_counter() - t
    after = _mean_dice(ml, fl, labels, ddf)
    folding = folding_fraction(ddf)
    print(f"Dice {before:.3f} -> {after:.3f}, folding {100 * folding:.4f} %, {seconds:.1f} s")
    return before, after, folding, ddf


def test_pyramid_keeps_thin_axes():
    assert pyramid_sizes((128, 128, 16), 3) == [(32, 32, 16), (64, 64, 16), (128, 128, 16)]
    assert pyramid_sizes((96, 80, 128), 3) == [(24, 20, 32), (48, 40, 64), (96, 80, 128)]


def test_pca_projection_shapes_and_order():
    g = torch.Generator().manual_seed(0)
    e1, e2 = torch.randn(1, 32, 6, 5, 4, generator=g), torch.randn(1, 32, 6, 5, 4, generator=g)
    p1, p2 = pca_project(e1, e2, channels=4)
    assert p1.shape == (1, 4, 6, 5, 4) and p2.shape == (1, 4, 6, 5, 4)
    var = torch.cat([p1, p2]).transpose(0, 1).flatten(1).var(1)
    assert torch.all(var[:-1] >= var[1:] - 1e-5)  # components by decreasing variance


def test_coarse_search_recovers_a_shift():
    g = torch.Generator().manual_seed(1)
    feat = F.avg_pool3d(torch.randn(1, 8, 24, 24, 12, generator=g), 3, stride=1, padding=1)
    shift = torch.tensor([2.0, -1.0, 1.0]).view(1, 3, 1, 1, 1).expand(1, 3, 24, 24, 12).contiguous()
    fixed = warp(feat, shift)  # fixed(x) = moving(x + s)
    ddf = coarse_search(feat, fixed, radius=(3, 3, 2))
    inner = ddf[..., 6:-6, 6:-6, 4:-4].mean((2, 3, 4))[0]
    assert torch.allclose(inner, torch.tensor([2.0, -1.0, 1.0]), atol=0.35), inner


def test_acdc_from_identity_raises_dice(acdc_pair, tiny):
    before, after, folding, _ = _run(acdc_pair, tiny, ACDC_LABELS, size=(64, 64, 16))
    assert after > before + 0.1, (before, after)
    assert folding < 0.01


def test_abdomen_from_identity_raises_dice(abdomen_pair, tiny):
    before, after, folding, _ = _run(abdomen_pair, tiny, ABDOMEN_LABELS)
    assert after > before + 0.05, (before, after)
    assert folding < 0.01


def test_from_a_partial_solution_does_not_lower_dice(acdc_pair, tiny):
    m, f, ml, fl = _batch(acdc_pair, (64, 64, 16))
    full = optimize_pair(m, f, sam_encoder=tiny, iterations=ITERS)
    partial = 0.5 * full
    start = _mean_dice(ml, fl, ACDC_LABELS, partial)
    ddf = optimize_pair(m, f, init_ddf=partial, sam_encoder=tiny, iterations=ITERS)
    after = _mean_dice(ml, fl, ACDC_LABELS, ddf)
    print(f"from a partial solution: Dice {start:.3f} -> {after:.3f}, folding {100 * folding_fraction(ddf):.4f} %")
    assert after >= start - 0.005, (start, after)
    assert folding_fraction(ddf) < 0.01


def test_from_a_good_solution_keeps_it(acdc_pair, tiny):
    m, f, ml, fl = _batch(acdc_pair, (64, 64, 16))
    good = optimize_pair(m, f, sam_encoder=tiny, iterations=ITERS)
    start = _mean_dice(ml, fl, ACDC_LABELS, good)
    after = _mean_dice(ml, fl, ACDC_LABELS, optimize_pair(m, f, init_ddf=good, sam_encoder=tiny, iterations=10))
    assert after >= start - 0.01, (start, after)


def test_image_only_and_displacement_variants(acdc_pair):
    m, f, ml, fl = _batch(acdc_pair, (64, 64, 16))
    before = _mean_dice(ml, fl, ACDC_LABELS)
    ddf = optimize_pair(m, f, diffeomorphic=False, iterations=ITERS)  # no features: LNCC + smoothness
    assert ddf.shape == (1, 3, 64, 64, 16)
    assert _mean_dice(ml, fl, ACDC_LABELS, ddf) > before + 0.05
    assert folding_fraction(ddf) < 0.01


def test_runs_under_no_grad():
    """MONAI's evaluator calls register functions under ``torch.no_grad()``."""
    g = torch.Generator().manual_seed(0)
    fixed = F.avg_pool3d(torch.rand(1, 1, 24, 24, 12, generator=g), 5, stride=1, padding=2)
    moving = warp(fixed, torch.full((1, 3, 24, 24, 12), 1.0))
    with torch.no_grad():
        ddf = optimize_pair(moving, fixed, iterations=(5, 5, 5))
    assert ddf.shape == (1, 3, 24, 24, 12) and ddf.abs().max() > 0


def test_bad_inputs_are_clear_errors():
    x = torch.rand(1, 1, 16, 16, 8)
    with pytest.raises(ValueError, match="moving/fixed"):
        optimize_pair(x, torch.rand(1, 1, 16, 16, 9))
    with pytest.raises(ValueError, match="init_ddf"):
        optimize_pair(x, x, init_ddf=torch.zeros(1, 3, 8, 8, 8))
    with pytest.raises(ValueError, match="iterations"):
        optimize_pair(x, x, iterations=(1, 2))


def test_registrar_from_identity_needs_no_weights(tmp_path):
    from samir.register import Registrar

    root = write_synthetic_acdc(tmp_path / "acdc", n=1, seed=3, n_test=0)
    item = next(p for p in acdc_pairs(root, "all") if "ED->ES" in p["pair_id"])
    registrar = Registrar(preset="cardiac", encoder="tiny", weights=None, from_identity=True, cache_dir=False,
                          device="cpu", iterations=30, verbose=False)
    result = registrar.register_files(item["fixed"], item["moving"], tmp_path / "out",
                                      moving_label=item["moving_label"], fixed_label=item["fixed_label"])
    m = result.metrics
    print(f"register --from_identity: Dice {m['dice_mean_before']:.3f} -> {m['dice_mean']:.3f}, "
          f"folding {m['folding_pct']:.4f} %, {m['register_seconds']:.1f} s")
    assert m["method"] == "fast"  # the training-free core, no network
    assert m["dice_mean"] > m["dice_mean_before"] + 0.05
    assert m["folding_pct"] < 1.0
    assert (tmp_path / "out" / "ddf_voxels.nii.gz").is_file()


@pytest.mark.slow
def test_acdc_from_identity_litemedsam(acdc_pair):
    enc = SliceEncoder(build_encoder("litemedsam", image_size=128), cache=None)  # the shipped cardiac input
    before, after, folding, _ = _run(acdc_pair, enc, ACDC_LABELS, iterations=None)
    assert after > before + 0.1 and folding < 0.01


@pytest.mark.slow
def test_abdomen_from_identity_litemedsam(abdomen_pair):
    enc = SliceEncoder(build_encoder("litemedsam", image_size=64), cache=None)  # the shipped abdominal input
    before, after, folding, _ = _run(abdomen_pair, enc, ABDOMEN_LABELS, iterations=None)
    assert after > before + 0.05 and folding < 0.01
