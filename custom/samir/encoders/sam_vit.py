"""SAM ViT image encoders (``sam_vit_b``, ``sam_vit_l``, ``sam_vit_h``, ``medsam_vit_b``).

The network is ``segment_anything``'s ``ImageEncoderViT`` with the registry's hyper-parameters
(patch 16, window 14, relative positions, global attention every quarter of the depth), built
at its native 1024 px and loaded from the user's checkpoint (a full SAM checkpoint with
``image_encoder.*`` keys, or a bare encoder state dict).

Smaller inputs (512, 256 px, any multiple of 16): the absolute position embedding
(1, 64, 64, E) is resized once, bicubically, to the token grid (S/16, S/16) and kept as a
buffer. The relative-position tables need nothing from us: ``segment_anything``'s
``get_rel_pos`` already resizes a table (linear interpolation) whenever its length differs from
``2 * tokens - 1``, which is the case for the global-attention blocks at S < 1024; the windowed
blocks keep their 14×14 windows (27-entry tables) at any size, the token grid being zero-padded
to whole windows. ``tests/encoders`` checks both facts.

Layouts: input ``(N, 3, S, S)`` normalised with SAM's mean/std (0–1 scale here: 0–255 values
/255), padding 0 *after* normalisation as SAM does; output ``(N, 256, S/16, S/16)``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    SamEncoder,
    cached_network,
    describe_state_dict,
    file_sha256,
    load_encoder_state,
    load_into,
    vit_shape,
    where_to_get,
)

__all__ = ["SamViTEncoder", "VIT_CONFIGS", "build_sam_vit", "make_vit", "resize_pos_embed"]

SAM_PIXEL_MEAN = (123.675 / 255, 116.28 / 255, 103.53 / 255)
SAM_PIXEL_STD = (58.395 / 255, 57.12 / 255, 57.375 / 255)

# name -> (embed dim, depth, heads, global attention blocks, human kind)
VIT_CONFIGS: dict[str, tuple[int, int, int, tuple[int, ...], str]] = {
    "sam_vit_b": (768, 12, 12, (2, 5, 8, 11), "SAM ViT-B"),
    "medsam_vit_b": (768, 12, 12, (2, 5, 8, 11), "SAM ViT-B (MedSAM)"),
    "sam_vit_l": (1024, 24, 16, (5, 11, 17, 23), "SAM ViT-L"),
    "sam_vit_h": (1280, 32, 16, (7, 15, 23, 31), "SAM ViT-H"),
}


def make_vit(name: str) -> nn.Module:
    """Untrained ``segment_anything`` ``ImageEncoderViT`` (1024 px) for registry name ``name``."""
    from segment_anything.modeling import ImageEncoderViT

    embed, depth, heads, global_idx, _ = VIT_CONFIGS[name]
    return ImageEncoderViT(
        depth=depth,
        embed_dim=embed,
        img_size=1024,
        mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_heads=heads,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=global_idx,
        window_size=14,
        out_chans=256,
    )


def resize_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of an absolute position embedding (1, h, w, E) → (1, *grid, E)."""
    if tuple(pos.shape[1:3]) == tuple(grid):
        return pos
    out = F.interpolate(pos.permute(0, 3, 1, 2).float(), size=grid, mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).to(pos.dtype).contiguous()


class SamViTEncoder(SamEncoder):
    """Frozen SAM ViT image encoder at ``image_size`` px: (N, 3, S, S) → (N, 256, S/16, S/16)."""

    out_channels = 256
    out_stride = 16

    def __init__(self, name: str, net: nn.Module, weights_hash: str, image_size: int = 1024):
        super().__init__(image_size, weights_hash, pixel_mean=SAM_PIXEL_MEAN, pixel_std=SAM_PIXEL_STD)
        self.name = name
        self.check_image_size(16)
        self.net = net
        grid = (image_size // 16, image_size // 16)
        if net.pos_embed is not None:
            self.register_buffer("pos_embed", resize_pos_embed(net.pos_embed.detach(), grid), persistent=False)
        else:
            self.pos_embed = None
        self.freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net.patch_embed(x)  # (N, S/16, S/16, E)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in net.blocks:
            x = block(x)
        return net.neck(x.permute(0, 3, 1, 2))


def check_vit_state(state: dict, name: str, path: Path | str) -> None:
    """ValueError naming the file if ``state`` is not the ViT that encoder ``name`` expects."""
    embed, depth, _, _, kind = VIT_CONFIGS[name]
    found = vit_shape(state)
    if found != (embed, depth):
        raise ValueError(
            f"checkpoint {path} holds {describe_state_dict(state)}, but encoder {name!r} expects "
            f"{kind} (embed dim {embed}, {depth} blocks). "
            + (
                f"Use the encoder name for what the file holds, or give the right file. {where_to_get(name)}"
                if found
                else where_to_get(name)
            )
        )


def _load(name: str, path: Path) -> tuple[nn.Module, str]:
    state = load_encoder_state(path, name)
    check_vit_state(state, name, path)
    net = make_vit(name)
    load_into(net, state, path, name)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, file_sha256(path)


def build_sam_vit(name: str, checkpoint, image_size: int = 1024) -> SamViTEncoder:
    """SAM-format ViT encoder ``name`` from the user's ``checkpoint`` at ``image_size`` px."""
    if name not in VIT_CONFIGS:
        raise ValueError(f"unknown ViT encoder {name!r}; valid: {', '.join(VIT_CONFIGS)}")
    path = Path(checkpoint).expanduser()
    net, digest = cached_network(name, path, lambda: _load(name, path))
    return SamViTEncoder(name, net, digest, image_size=image_size)
