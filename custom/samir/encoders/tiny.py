"""``tiny``: a small random-weight encoder with the SAM encoder interface, for tests only.

Deterministic by ``seed`` (its own ``torch.Generator``; the global RNG is untouched). Purely
local (conv stem of stride 4, a 3×3 conv, a 1×1 projection, per-pixel channel LayerNorm), so
features of a region do not depend on far-away padding. Never used unless asked for by name.

Layouts: input ``(N, 3, S, S)`` in [0, 1] (mean 0, std 1), ``S`` a multiple of 4; output
``(N, out_channels, S/4, S/4)``.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import SamEncoder

__all__ = ["TinyEncoder", "build_tiny"]


class _ChannelNorm(nn.Module):
    """LayerNorm over channels at each pixel of a (N, C, H, W) map (as SAM's LayerNorm2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2]).permute(0, 3, 1, 2)


class TinyEncoder(SamEncoder):
    """Random frozen conv encoder: (N, 3, S, S) → (N, out_channels, S/4, S/4)."""

    name = "tiny"
    out_stride = 4

    def __init__(self, image_size: int = 64, seed: int = 0, out_channels: int = 256, width: int = 32):
        digest = hashlib.sha256(f"tiny:v1:seed={seed}:width={width}:out={out_channels}".encode()).hexdigest()
        super().__init__(image_size, digest)
        self.out_channels = int(out_channels)
        self.seed = int(seed)
        self.check_image_size(4)
        self.body = nn.Sequential(
            nn.Conv2d(3, width, kernel_size=4, stride=4),
            nn.GELU(),
            nn.Conv2d(width, width, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, self.out_channels, kernel_size=1),
            _ChannelNorm(),
        )
        gen = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            for module in self.body:
                if isinstance(module, nn.Conv2d):
                    fan_in = module.weight[0].numel()
                    module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
        self.freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def build_tiny(image_size: int = 64, seed: int = 0, out_channels: int = 256, width: int = 32) -> TinyEncoder:
    """The tests' encoder (random weights from ``seed``)."""
    return TinyEncoder(image_size=image_size, seed=seed, out_channels=out_channels, width=width)
