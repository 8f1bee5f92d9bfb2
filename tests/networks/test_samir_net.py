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
