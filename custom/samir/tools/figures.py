"""Figures of one registered pair for the model card: checkerboard, deformed grid, Jacobian map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from samir.metrics import jacobian_determinant

__all__ = ["checkerboard", "write_pair_figure"]


def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    """Interleave two 2D slices (H, W) in ``tiles``×``tiles`` squares: misalignment shows as broken edges."""
    h, w = a.shape
    yy, xx = np.meshgrid(np.arange(h) * tiles // h, np.arange(w) * tiles // w, indexing="ij")
    return np.where((yy + xx) % 2 == 0, a, b)


def write_pair_figure(fixed: torch.Tensor, moving: torch.Tensor, warped: torch.Tensor, ddf: torch.Tensor,
                      out_png: str | Path, slice_index: int | None = None, title: str = "") -> Path:
    """One PNG: checkerboards before/after, the deformed grid and the Jacobian determinant.

    Inputs (1, 1, H, W, D) images in [0, 1] and a DDF (1, 3, H, W, D) in voxels (``samir.spatial``);
    the figure shows the in-plane slice ``slice_index`` (default: the middle one along D).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = fixed.shape[-1] // 2 if slice_index is None else int(slice_index)
    f = fixed[0, 0, :, :, k].numpy()
    m = moving[0, 0, :, :, k].numpy()
    w = warped[0, 0, :, :, k].numpy()
    u = ddf[0, :, :, :, k].numpy()
    jac = jacobian_determinant(ddf)[0, :, :, k].numpy()

    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    axes[0].imshow(checkerboard(f, m).T, cmap="gray", origin="lower")
    axes[0].set_title("checkerboard fixed / moving (before)")
    axes[1].imshow(checkerboard(f, w).T, cmap="gray", origin="lower")
    axes[1].set_title("checkerboard fixed / warped (after)")
    axes[2].imshow(f.T, cmap="gray", origin="lower", alpha=0.6)
    step = max(1, f.shape[0] // 24)
    gy, gx = np.meshgrid(np.arange(f.shape[0]), np.arange(f.shape[1]), indexing="ij")
    py, px = gy + u[0], gx + u[1]  # where each fixed voxel samples the moving image
    for i in range(0, f.shape[0], step):
        axes[2].plot(py[i, :], px[i, :], color="tab:red", linewidth=0.6)
    for j in range(0, f.shape[1], step):
        axes[2].plot(py[:, j], px[:, j], color="tab:red", linewidth=0.6)
    axes[2].set_title("deformed grid (x + u(x))")
    im = axes[3].imshow(jac.T, cmap="RdBu_r", vmin=0.0, vmax=2.0, origin="lower")
    axes[3].set_title(f"Jacobian determinant (≤0: {100 * float((jac <= 0).mean()):.2f} %)")
    fig.colorbar(im, ax=axes[3], fraction=0.046)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


def figure_for_dataset(dataset: str = "acdc", out_png: str | Path = "bundle/docs/figures/acdc_pair.png",
                       weights: str | None = None, root: str | None = None, split: str = "test",
                       index: int = 0, synthetic_options: dict | None = None, half_resolution: bool = True) -> Path:
    """Register pair ``index`` of ``dataset``'s ``split`` with the shipped (or given) weights and draw it."""
    from samir.bundle import preprocessing
    from samir.data.registry import dataset_pairs, resolve_data_root
    from samir.data.transforms import load_pair
    from samir.model_files import load_model
    from samir.presets import preset_weights
    from samir.spatial import warp_image

    if weights is None:
        preset = "abdomen" if dataset == "abdomen" else "cardiac"
        weights = str(preset_weights(preset))
    data_root = resolve_data_root(dataset, root, **(synthetic_options or {}))
    item = dataset_pairs(dataset, data_root, split)[index]
    pair = load_pair(preprocessing(dataset, half_resolution=half_resolution), item)
    moving, fixed = pair["moving"][None].float(), pair["fixed"][None].float()
    net = load_model(weights).eval()
    with torch.no_grad():
        ddf = net(torch.cat([moving, fixed], 1))
    warped = warp_image(moving, ddf)
    return write_pair_figure(fixed.as_tensor(), moving.as_tensor(), warped.as_tensor(), ddf.as_tensor()
                             if hasattr(ddf, "as_tensor") else ddf, out_png,
                             title=f"{dataset}: {item.get('pair_id', '')} (SAMIR, {Path(weights).name})")
