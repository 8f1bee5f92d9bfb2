"""FeatureHead3D: a light trainable head that refines frozen SAM slice embeddings in 3D."""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock3D(nn.Module):
    """Two 3×3×3 convolutions with instance norm and LeakyReLU, plus the identity: (B, C, H, W, D) → same."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(channels, channels, 3, padding=1, bias=False),
            nn.InstanceNorm3d(channels, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv3d(channels, channels, 3, padding=1, bias=False),
            nn.InstanceNorm3d(channels, affine=True),
        )
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class FeatureHead3D(nn.Module):
    """Refine slice embeddings (B, C_in, h, w, D) into (B, C_out, h, w, D) with through-plane context.

    A 1×1×1 channel reduction, then ``num_blocks`` residual 3D convolution blocks. The slice
    encoder sees each slice alone; the 3×3×3 convolutions here mix neighbouring slices.

    Args:
        in_channels: channels of the SAM embedding (256 for every SAM-family encoder).
        out_channels: channels of the refined features.
        num_blocks: residual blocks after the reduction (0 keeps only the reduction).
    """

    def __init__(self, in_channels: int = 256, out_channels: int = 32, num_blocks: int = 2):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}")
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        self.reduce = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 1, bias=False),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.blocks = nn.Sequential(*[ResidualBlock3D(out_channels) for _ in range(num_blocks)])
        self.out_channels = out_channels

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, C_in, h, w, D) embeddings → (B, C_out, h, w, D) features."""
        return self.blocks(self.reduce(embeddings))
