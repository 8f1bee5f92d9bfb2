"""Hierarchical Feature Consistency (HFC) loss on frozen SAM embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from samir.spatial import warp


class HierarchicalFeatureConsistencyLoss(nn.Module):
    """Σ_l w_l · mean(1 − cos(F_fixed_l, F_moving_l ∘ φ_l)) over pyramid levels.

    ``F_*_l`` are the **frozen** SAM embeddings (optionally under a fixed, non-trainable
    projection) resampled onto level l's grid, and ``φ_l`` is that level's field (B, 3, *grid)
    in the level's voxels. Nothing trainable enters the features, so a head that collapses to
    constants or shrinks its output cannot lower this loss: only a better field can.

    Args:
        level_weights: weight per level, **finest first** (FMIR: 1, 1/2, 1/4, ...); levels beyond
            the list get weight 0, a shorter pyramid uses the first entries.
        eps: guard for the cosine of near-zero feature vectors.
    """

    def __init__(self, level_weights: Sequence[float] = (1.0, 0.5, 0.25, 0.125, 0.0625), eps: float = 1e-6):
        super().__init__()
        if any(w < 0 for w in level_weights):
            raise ValueError(f"level_weights: expected non-negative weights, got {list(level_weights)}")
        self.level_weights = [float(w) for w in level_weights]
        self.eps = eps

    def level_term(self, fixed: torch.Tensor, moving: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
        """1 − cosine between fixed (B, C, ...) and moving (B, C, ...) warped by ddf (B, 3, ...), mean over voxels."""
        warped = warp(moving, ddf)
        cos = F.cosine_similarity(warped, fixed.detach(), dim=1, eps=self.eps)
        return (1.0 - cos).mean()

    def forward(
        self,
        level_embeddings: Sequence[tuple[torch.Tensor, torch.Tensor]],
        level_ddfs: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """``level_embeddings`` [(moving, fixed) or None] and ``level_ddfs``, both ordered coarse → fine."""
        if len(level_embeddings) != len(level_ddfs):
            raise ValueError(
                f"expected one (moving, fixed) embedding pair per level ddf, got {len(level_embeddings)} and {len(level_ddfs)}"
            )
        n = len(level_ddfs)
        total = level_ddfs[-1].new_zeros(())
        for i, (pair, ddf) in enumerate(zip(level_embeddings, level_ddfs)):
            fine_index = n - 1 - i  # 0 = finest
            w = self.level_weights[fine_index] if fine_index < len(self.level_weights) else 0.0
            if w and pair is not None:  # None: a level without SAM embeddings
                mov, fix = pair
                total = total + w * self.level_term(fix, mov.detach(), ddf)
        return total
