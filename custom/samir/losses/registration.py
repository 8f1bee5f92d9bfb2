"""SAMIR's unsupervised training objective: LNCC + smoothness + HFC (+ optional Dice)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import BendingEnergyLoss, DiceLoss, DiffusionLoss, LocalNormalizedCrossCorrelationLoss
from monai.networks.layers import GaussianFilter
from torch import nn

from samir.losses.hfc import HierarchicalFeatureConsistencyLoss
from samir.spatial import warp_image

SMOOTHNESS = {"diffusion": DiffusionLoss, "bending": BendingEnergyLoss}


class RegistrationLoss(nn.Module):
    """total = w_sim·LNCC(M∘φ, F) + w_smooth·smooth(φ) + w_hfc·HFC + w_dice·Dice(L_M∘φ, L_F).

    Inputs of ``forward``: moving, fixed (B, 1, H, W, D) in [0, 1]; ``outputs`` the dict of
    ``SAMIR.forward(..., return_all=True)``; optional one-hot labels (B, K, H, W, D) for the weakly
    supervised mode (``dice_weight`` > 0). Returns a dict of the weighted terms and ``loss``.

    Args:
        sim_weight: weight of MONAI's LocalNormalizedCrossCorrelationLoss (``ncc_kernel`` voxels).
        smooth_weight: weight of the smoothness term ``smoothness`` ("diffusion" or "bending").
        hfc_weight: weight of the HFC term; ``hfc_level_weights`` finest first.
        dice_weight: weight of MONAI's DiceLoss on warped one-hot labels (0 = unsupervised).
        sim_sigma: Gaussian sigma (voxels) applied to both images before the similarity term.
    """

    def __init__(
        self,
        sim_weight: float = 1.0,
        smooth_weight: float = 1.0,
        hfc_weight: float = 0.5,
        dice_weight: float = 0.0,
        ncc_kernel: int = 9,
        smoothness: str = "diffusion",
        hfc_level_weights: Sequence[float] = (1.0, 0.5, 0.25, 0.125, 0.0625),
        sim_sigma: float = 1.0,
    ):
        super().__init__()
        for name, value in (("sim_weight", sim_weight), ("smooth_weight", smooth_weight),
                            ("hfc_weight", hfc_weight), ("dice_weight", dice_weight)):
            if value < 0:
                raise ValueError(f"{name}: expected a non-negative weight, got {value}")
        self.weights = {"sim": sim_weight, "smooth": smooth_weight, "hfc": hfc_weight, "dice": dice_weight}
        self.similarity = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=ncc_kernel)
        if smoothness not in SMOOTHNESS:
            raise ValueError(f"smoothness: expected one of {sorted(SMOOTHNESS)}, got {smoothness!r}")
        self.smoothness = SMOOTHNESS[smoothness]()
        self.hfc = HierarchicalFeatureConsistencyLoss(hfc_level_weights)
        self.dice = DiceLoss(include_background=False)
        # Gaussian pre-smoothing of both images for the similarity term: on noisy images a uniform
        # half-voxel shift "wins" LNCC by blurring the noise through interpolation; smoothing first
        # removes that trivial optimum (0 disables it)
        self.blur = GaussianFilter(spatial_dims=3, sigma=sim_sigma) if sim_sigma > 0 else None

    def forward(
        self,
        moving: torch.Tensor,
        fixed: torch.Tensor,
        outputs: dict,
        moving_onehot: torch.Tensor | None = None,
        fixed_onehot: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        ddf = outputs["ddf"]
        if self.blur is not None:
            moving, fixed = self.blur(moving), self.blur(fixed)
        warped = warp_image(moving, ddf)
        terms = {
            "sim": self.similarity(warped, fixed),
            "smooth": self.smoothness(ddf),
        }
        if self.weights["hfc"] and outputs.get("level_embeddings") is not None:
            terms["hfc"] = self.hfc(outputs["level_embeddings"], outputs["level_ddfs"])
        if self.weights["dice"] and moving_onehot is not None and fixed_onehot is not None:
            terms["dice"] = self.dice(warp_image(moving_onehot.float(), ddf), fixed_onehot.float())
        weighted = {k: self.weights[k] * v for k, v in terms.items()}
        weighted["loss"] = sum(weighted.values())
        return weighted
