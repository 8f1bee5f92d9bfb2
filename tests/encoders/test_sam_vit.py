"""SAM ViT encoders at reduced input sizes: position embeddings and the load path."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from parameterized import parameterized
from samir.encoders import build_encoder
from samir.encoders.sam_vit import SamViTEncoder, resize_pos_embed
from segment_anything.modeling.image_encoder import ImageEncoderViT, get_rel_pos


def small_vit():
    """A ViT with SAM's structure but small (embed 32, depth 2, one global block)."""
    torch.manual_seed(0)
    net = ImageEncoderViT(
        img_size=1024, patch_size=16, embed_dim=32, depth=2, num_heads=2, out_chans=256,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
        global_attn_indexes=(1,), window_size=14,
    )
    with torch.no_grad():
        net.pos_embed.normal_(0, 0.02)
        for block in net.blocks:
            block.attn.rel_pos_h.normal_(0, 0.02)
            block.attn.rel_pos_w.normal_(0, 0.02)
    return net


def test_get_rel_pos_interpolates_when_sizes_differ():
    """segment_anything resizes a relative-position table itself (linear), so the global blocks
    work at any token grid without help."""
    table = torch.randn(127, 8)  # 1024 px: 64 tokens
    out = get_rel_pos(16, 16, table)  # 256 px
    resized = F.interpolate(table.T[None], size=31, mode="linear")[0].T
    expected = resized[(torch.arange(16)[:, None] - torch.arange(16)[None, :] + 15)]
    assert out.shape == (16, 16, 8) and torch.allclose(out, expected)


def test_resize_pos_embed():
    pos = torch.randn(1, 64, 64, 8)
    assert resize_pos_embed(pos, (64, 64)) is pos
    small = resize_pos_embed(pos, (16, 16))
    assert small.shape == (1, 16, 16, 8)
    smooth = torch.linspace(0, 1, 64).view(1, 64, 1, 1).expand(1, 64, 64, 8)
    assert torch.allclose(resize_pos_embed(smooth, (32, 32))[0, :, 0, 0], torch.linspace(0, 1, 64)[1::2] - 1 / 126, atol=0.02)


@parameterized.expand([(512,), (256,), (128,)])
def test_vit_runs_at_size(size):
    enc = SamViTEncoder("sam_vit_b", small_vit(), "hash", image_size=size)
    assert enc.pos_embed.shape == (1, size // 16, size // 16, 32)
    with torch.no_grad():
        out = enc(torch.randn(1, 3, size, size))
    assert out.shape == (1, 256, size // 16, size // 16)


def test_vit_native_size_is_the_original_forward():
    net = small_vit()
    enc = SamViTEncoder("sam_vit_b", net, "hash", image_size=1024)
    assert torch.equal(enc.pos_embed, net.pos_embed)  # nothing resized; same modules in the same order


def test_sam_vit_b_load_path(tmp_path):
    """A full-size ViT-B checkpoint, written with almost no bytes, goes through build_encoder."""
    from samir.encoders.sam_vit import make_vit

    net = make_vit("sam_vit_b")
    state = {f"image_encoder.{k}": torch.full((1,), 0.01).expand(v.shape) for k, v in net.state_dict().items()}
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(state, path)
    enc = build_encoder("sam_vit_b", checkpoint=path, image_size=256)
    assert (enc.name, enc.image_size, enc.out_stride, enc.grid_size) == ("sam_vit_b", 256, 16, 16)
    assert len(enc.weights_hash) == 64 and enc.pixel_mean[0] == 123.675 / 255
    assert enc.pos_embed.shape == (1, 16, 16, 768)
