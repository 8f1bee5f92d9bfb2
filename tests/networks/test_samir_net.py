"""SAMIR network: shapes and conventions, identity on identical inputs, gradient flow, padding."""

import pytest
import torch
from samir.networks import SAMIR, FeatureHead3D, build_samir, resample_embedding


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    return build_samir("tiny", cache_dir=False, levels=3, channels=(4, 8, 8), head_channels=8, head_blocks=1, flow_width=8)


@pytest.mark.parametrize(
    "shape",
    [(32, 32, 8), (30, 27, 7), (48, 40, 12)],  # divisible, odd (padded then cropped), anisotropic
)
def test_forward_shape_and_units(tiny_net, shape):
    x = torch.rand(2, 2, *shape)
    ddf = tiny_net(x)
    assert ddf.shape == (2, 3, *shape)
    assert torch.isfinite(ddf).all()


@pytest.mark.parametrize("levels,channels", [(3, (4, 8, 8)), (4, (4, 8, 8, 16))])
def test_return_all_levels_coarse_to_fine(levels, channels):
    net = build_samir("tiny", cache_dir=False, levels=levels, channels=channels, head_channels=8, head_blocks=1, sam_min_level=1)
    out = net(torch.rand(1, 2, 32, 32, 16), return_all=True)
    sizes = [d.shape[2] for d in out["level_ddfs"]]
    assert sizes == [32 // 2 ** (levels - 1 - i) for i in range(levels)]
    assert len(out["level_embeddings"]) == levels
    for (mov, fix), ddf in zip(out["level_embeddings"], out["level_ddfs"]):  # HFC inputs at every level
        assert mov.shape == fix.shape and mov.shape[2:] == ddf.shape[2:]


def test_baseline_has_no_sam_branch():
    net = build_samir(None, levels=3, channels=(4, 8, 8))
    assert net.sam_encoder is None and net.head is None
    out = net(torch.rand(1, 2, 16, 16, 8), return_all=True)
    assert out["level_embeddings"] is None and out["ddf"].shape == (1, 3, 16, 16, 8)


def test_identical_images_give_near_zero_field(tiny_net):
    img = torch.rand(1, 1, 32, 32, 8)
    ddf = tiny_net(torch.cat([img, img], dim=1))
    assert ddf.abs().max() < 1e-2  # untrained: residual heads start at ~0


def _nonzero_net(finest_level: int = 0, sam: bool = True) -> SAMIR:
    """A tiny network whose flow heads give a non-trivial field (untrained ones start at ~0)."""
    torch.manual_seed(1)
    levels = 3 + finest_level
    net = build_samir("tiny" if sam else None, cache_dir=False, levels=levels, channels=(4, 8, 8, 8)[:levels],
                      head_channels=8, head_blocks=1, flow_width=8, finest_level=finest_level, sam_min_level=2,
                      symmetric=True)
    with torch.no_grad():
        for est in net.estimators:
            est.out.weight.normal_(0.0, 0.2)
    return net.eval()


def _pair(shape=(32, 32, 8)):
    g = torch.Generator().manual_seed(3)
    img = torch.nn.functional.avg_pool3d(torch.rand(1, 1, *shape, generator=g), 3, 1, 1)
    return torch.cat([img, img.roll(2, dims=2)], dim=1)


@pytest.mark.parametrize("sam", [True, False])
def test_symmetric_is_the_mean_of_forward_and_inverted_backward(sam):
    from samir.spatial import invert_ddf
    net = _nonzero_net(sam=sam)
    x = _pair()
    with torch.no_grad():
        fwd = net(x, symmetric=False)
        bwd = net(x.flip(1), symmetric=False)  # fixed → moving
        sym = net(x)  # built with symmetric=True, in eval mode
    assert fwd.abs().max() > 0.2  # a real field, not the untrained ~0
    expected = 0.5 * (fwd + invert_ddf(bwd, net.inverse_iterations))
    torch.testing.assert_close(sym, expected, atol=1e-4, rtol=1e-4)  # one batch = two separate passes
    assert (sym - fwd).abs().max() > 1e-3


def test_symmetric_fields_of_swapped_inputs_are_near_inverses():
    from samir.spatial import compose
    net = _nonzero_net(finest_level=0)
    x = _pair()
    with torch.no_grad():
        ab, ba = net(x), net(x.flip(1))
        one_ab, one_ba = net(x, symmetric=False), net(x.flip(1), symmetric=False)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4), slice(2, -2))
    gap = compose(ba, ab)[inner].abs().mean()  # x ↦ x + ab(x) ↦ back: zero for exact inverses
    one_gap = compose(one_ba, one_ab)[inner].abs().mean()
    assert gap < 0.5 * one_gap


def test_training_and_return_all_run_one_direction():
    net = _nonzero_net(finest_level=1)
    x = _pair()
    with torch.no_grad():
        one = net(x, symmetric=False)
        out = net(x, return_all=True)
        net.train()
        trained = net(x)
        net.eval()
    torch.testing.assert_close(out["ddf"], one)
    torch.testing.assert_close(trained, one)
    assert out["ddf"].shape == (1, 3, 32, 32, 8) and all(d.shape[0] == 1 for d in out["level_ddfs"])
    net.symmetric = False  # switched off (the default), it runs one direction
    with torch.no_grad():
        torch.testing.assert_close(net(x), one)
    assert build_samir(None, levels=3, channels=(4, 8, 8)).symmetric is False


@pytest.mark.parametrize("sam", [True, False])
def test_passes_compose_a_second_pass_on_the_warped_moving_image_and_embedding(sam):
    from samir.spatial import compose, resize_ddf, warp
    net = _nonzero_net(sam=sam)
    x = _pair()
    with torch.no_grad():
        first = net(x)  # built with passes=1
        me, fe = (net.encode(x[:, :1]), net.encode(x[:, 1:])) if sam else (None, None)
        warped_me = warp(me, resize_ddf(first, tuple(me.shape[2:]))) if sam else None
        second = net(torch.cat([warp(x[:, :1], first), x[:, 1:]], dim=1), warped_me, fe)
        net.passes = 2
        two = net(x)
        net.train()
        trained = net(x)  # training mode: one pass whatever ``passes`` says
        net.eval()
        forced = net(x, passes=1)
    torch.testing.assert_close(two, compose(first, second), atol=1e-5, rtol=1e-5)
    assert (two - first).abs().max() > 1e-3  # the second pass moved something
    torch.testing.assert_close(trained, net(x, symmetric=False, passes=1))
    torch.testing.assert_close(forced, first)
    with pytest.raises(ValueError, match="return_all"):
        net(x, return_all=True, passes=2)
    with pytest.raises(ValueError, match="passes: expected at least 1, got 0"):
        net(x, passes=0)
    for bad in (0, "two", 1.5):
        with pytest.raises(ValueError, match="passes: expected a whole number of at least 1"):
            build_samir(None, levels=3, channels=(4, 8, 8), passes=bad)
    assert build_samir(None, levels=3, channels=(4, 8, 8), passes="2").passes == 2  # a command line's text


@pytest.mark.slow
def test_shipped_abdominal_network_passes_raise_dice_on_unseen_subjects(tmp_path):
    """The shipped abdominal network (sidecar passes 3) on subjects of a seed no one trained or tuned on,
    run as ``samir register --no_optimize`` runs it: 4 mm images, the network on its 8 mm model grid,
    the field back on the 4 mm grid, Dice of the 4 mm labels. One pass well above identity, the
    sidecar's passes higher still, and no folding. (On subjects drawn directly at 8 mm, Dice at 8 mm,
    the passes gained nothing for 0.6.0: 0.717 either way on two pairs; the model card's dev and
    held-out pairs are 4 mm images, as here.)"""
    import nibabel as nib
    import numpy as np
    from samir.data.abdomen import abdomen_image_path, abdomen_label_path
    from samir.data.synthetic_abdomen import write_synthetic_abdomen
    from samir.metrics import dice_per_label, folding_fraction
    from samir.model_files import load_model
    from samir.presets import PRESETS, preset_weights
    from samir.register import Registrar
    from samir.spatial import resize_ddf, warp_label

    net = load_model(preset_weights("abdomen")).eval()
    assert net.passes == 3 and net.sam_encoder is None  # as the sidecar says
    root = write_synthetic_abdomen(tmp_path / "abd", n=4, seed=23, shape=(96, 80, 128))

    def load(path):
        return torch.as_tensor(np.asarray(nib.load(path).dataobj), dtype=torch.float32)[None, None]

    def image(i):  # the preset's intensity window, then the 8 mm model grid
        x = Registrar._scale_intensity(load(abdomen_image_path(root, i))[0], PRESETS["abdomen"].intensity)[None]
        return torch.nn.functional.interpolate(x.float(), size=(48, 40, 64), mode="trilinear", align_corners=False)

    names = {v: str(v) for v in range(1, 14)}
    scores = {0: [], 1: [], net.passes: []}
    for moving, fixed in ((1, 2), (3, 4)):
        pair = torch.cat([image(moving), image(fixed)], dim=1)
        ml, fl = load(abdomen_label_path(root, moving)).long(), load(abdomen_label_path(root, fixed)).long()
        scores[0].append(np.nanmean(list(dice_per_label(ml, fl, names).values())))
        with torch.no_grad():
            for k in (1, net.passes):
                ddf = resize_ddf(net(pair, passes=k), (96, 80, 128))
                scores[k].append(np.nanmean(list(dice_per_label(warp_label(ml, ddf), fl, names).values())))
                assert folding_fraction(ddf) < 0.005
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    print("abdominal network alone, identity / one pass / the sidecar's passes:", mean)
    assert mean[1] > mean[0] + 0.15
    assert mean[net.passes] > mean[1] + 0.01


def test_gradients_reach_head_and_pyramid_never_encoder(tiny_net):
    tiny_net.train()
    out = tiny_net(torch.rand(1, 2, 32, 32, 8), return_all=True)
    (out["ddf"] ** 2).sum().backward()
    assert tiny_net.sam_encoder.training is False
    enc = list(tiny_net.sam_encoder.encoder.parameters())
    assert enc and all(not p.requires_grad and p.grad is None for p in enc)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_net.head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_net.pyramid.parameters())
    tiny_net.zero_grad()


def test_precomputed_embeddings_match_encoding(tiny_net):
    tiny_net.eval()
    x = torch.rand(1, 2, 32, 32, 8)
    me, fe = tiny_net.encode(x[:, :1]), tiny_net.encode(x[:, 1:])
    torch.testing.assert_close(tiny_net(x), tiny_net(x, me, fe))


def test_state_dict_excludes_frozen_encoder_and_round_trips(tiny_net):
    state = tiny_net.state_dict()
    assert state and not any("encoder." in k and k.startswith("sam_") for k in state)  # SAMIR weights only
    other = build_samir("tiny", cache_dir=False, levels=3, channels=(4, 8, 8), head_channels=8, head_blocks=1, flow_width=8)
    other.load_state_dict(state)  # strict
    x = torch.rand(1, 2, 16, 16, 8)
    tiny_net.eval(), other.eval()
    torch.testing.assert_close(tiny_net(x), other(x))


def test_diffeomorphic_mode_runs():
    net = build_samir("tiny", cache_dir=False, levels=3, channels=(4, 8, 8), head_channels=8, diffeomorphic=True)
    assert net(torch.rand(1, 2, 16, 16, 8)).shape == (1, 3, 16, 16, 8)


@pytest.mark.parametrize("kwargs,match", [({"levels": 2}, "levels"), ({"channels": (4, 8)}, "channels"),
                                          ({"sam_min_level": 5}, "sam_min_level")])
def test_bad_arguments_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SAMIR(None, **kwargs)


@pytest.mark.parametrize("text,expected", [("false", False), ("False", False), ("0", False), ("no", False),
                                           ("true", True), ("TRUE", True), ("1", True), (True, True), (0, False)])
def test_flags_from_a_command_line_are_read_as_meant(text, expected):
    net = SAMIR(None, levels=3, channels=(4, 8, 8), symmetric=text, diffeomorphic=text)
    assert net.symmetric is expected and net.diffeomorphic is expected  # bool("false") would be True


def test_flag_that_is_not_yes_or_no_is_named():
    with pytest.raises(ValueError, match="symmetric: expected true or false, got 'ture'"):
        SAMIR(None, levels=3, channels=(4, 8, 8), symmetric="ture")


def test_wrong_input_shape_message(tiny_net):
    with pytest.raises(ValueError, match=r"\(B, 2, H, W, D\)"):
        tiny_net(torch.rand(1, 1, 16, 16, 8))


def test_resample_embedding_constant_and_alignment():
    # a linear ramp along H sampled at level centres stays a linear ramp of full-resolution positions
    h = 8
    emb = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1, 1).expand(1, 1, h, 4, 4).contiguous()
    # embedding voxel e covers full-res voxels [4e, 4e+4) of a 32-voxel axis: centre 4e+1.5
    level = resample_embedding(emb, (32, 16, 16), (16, 8, 8), factor=2)
    centres = (torch.arange(16) + 0.5) * 2 - 0.5  # full-res position of each level voxel
    expected = ((centres - 1.5) / 4).clamp(0, h - 1)
    torch.testing.assert_close(level[0, 0, :, 0, 0], expected, atol=1e-5, rtol=0)


def test_feature_head_shapes():
    head = FeatureHead3D(256, 16, 2)
    assert head(torch.rand(2, 256, 8, 8, 4)).shape == (2, 16, 8, 8, 4)


def test_finest_level_upsamples_field():
    net = build_samir("tiny", cache_dir=False, levels=4, channels=(4, 8, 8, 8), head_channels=8, finest_level=1)
    out = net(torch.rand(1, 2, 32, 24, 16), return_all=True)
    assert out["ddf"].shape == (1, 3, 32, 24, 16)
    assert [d.shape[2] for d in out["level_ddfs"]] == [4, 8, 16]  # levels 3, 2, 1
    assert len(out["level_embeddings"]) == 3
    with pytest.raises(ValueError, match="finest_level"):
        SAMIR(None, levels=3, finest_level=1)
