"""How close two embeddings of the same slices stay: input-size changes and fast paths.

``embedding_cosine(a, b)``: mean over cells of the cosine similarity (over channels) between two
embeddings ``(N, C, h, w)`` of the same slices, after area-averaging both onto the coarser of
the two grids (grids cover the same field of view, edge to edge).

``resolution_fidelity(...)``: embeddings of the same slices at several encoder input sizes
against the largest one; ``python -m samir.tools.encoder_fidelity`` prints the numbers for a random
ViT-B (pos-embed interpolation 1024 → 512 → 256) and LiteMedSAM (256 → 128).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from samir.encoders.base import SamEncoder
from samir.encoders.slice_encoder import SliceEncoder

__all__ = ["embedding_cosine", "phantom_slices", "random_vit_encoder", "resolution_fidelity"]


def embedding_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-cell channel cosine of (N, C, h, w) embeddings, on the coarser common grid."""
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"embeddings differ in batch/channels: {tuple(a.shape)} vs {tuple(b.shape)}")
    h = min(a.shape[-2], b.shape[-2])
    w = min(a.shape[-1], b.shape[-1])
    a = F.adaptive_avg_pool2d(a.float(), (h, w))
    b = F.adaptive_avg_pool2d(b.float(), (h, w))
    return float(F.cosine_similarity(a, b, dim=1).mean())


def phantom_slices(n: int = 2, size: int = 128, seed: int = 0) -> torch.Tensor:
    """Cardiac-like 2D phantoms (N, size, size): nested ellipses (ring, blood pool), noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        cy, cx = (torch.rand(2, generator=g) - 0.5) * 0.3
        r = 0.35 + 0.1 * float(torch.rand(1, generator=g))
        d = ((yy - cy) / r) ** 2 + ((xx - cx) / (r * 1.2)) ** 2
        img = 0.2 * (((yy / 0.9) ** 2 + (xx / 0.8) ** 2) < 1).float()  # body
        img = img + 0.5 * (d < 1).float() + 0.3 * (d < 0.45).float()  # myocardium ring + blood pool
        img = img + 0.03 * torch.randn(size, size, generator=g)
        out.append(img)
    return torch.stack(out)


def random_vit_encoder(image_size: int, seed: int = 0, pos: str = "smooth") -> SamEncoder:
    """A random-weight SAM ViT-B encoder at ``image_size`` px (shared 1024-px weights per seed).

    ``pos``: "smooth" gives the absolute position embedding a random low-frequency field (like
    trained ones), "white" i.i.d. noise (worst case for interpolation); the relative-position
    tables get N(0, 0.02).
    """
    from samir.encoders.sam_vit import SamViTEncoder, make_vit

    key = (seed, pos)
    if key not in _RANDOM_VITS:
        torch.manual_seed(seed)
        net = make_vit("sam_vit_b").eval()
        with torch.no_grad():
            if pos == "smooth":
                e = net.pos_embed.shape[-1]
                y = torch.linspace(0, 1, 64).view(64, 1, 1)
                x = torch.linspace(0, 1, 64).view(1, 64, 1)
                fy, fx, ph = torch.rand(3, e) * torch.tensor([[4.0], [4.0], [2 * math.pi]])
                net.pos_embed.copy_((0.1 * torch.sin(2 * math.pi * (fy * y + fx * x) + ph))[None])
            else:
                net.pos_embed.normal_(0, 0.1)
            for block in net.blocks:
                block.attn.rel_pos_h.normal_(0, 0.02)
                block.attn.rel_pos_w.normal_(0, 0.02)
        _RANDOM_VITS[key] = net
    return SamViTEncoder("sam_vit_b", _RANDOM_VITS[key], f"random-vit-b-{seed}-{pos}", image_size=image_size)


_RANDOM_VITS: dict = {}


def resolution_fidelity(
    make_encoder, sizes: Sequence[int], slices: torch.Tensor | None = None
) -> dict[int, dict[str, float]]:
    """Embeddings of ``slices`` (N, P, Q) at each input size vs the largest size.

    ``make_encoder(size) -> SamEncoder``. Returns {size: {"cosine": ..., "seconds_per_slice": ...}}.
    """
    slices = phantom_slices() if slices is None else slices
    feats, secs = {}, {}
    for size in sorted(sizes, reverse=True):
        se = SliceEncoder(make_encoder(size), batch_size=len(slices), clip_percentiles=(0.5, 99.5))
        t0 = time.perf_counter()
        feats[size] = se.encode_slices(slices)
        secs[size] = (time.perf_counter() - t0) / len(slices)
    ref = feats[max(sizes)]
    return {s: {"cosine": embedding_cosine(feats[s], ref), "seconds_per_slice": secs[s]} for s in sorted(sizes)}


def main() -> None:  # pragma: no cover - measurement script
    from samir.encoders.registry import build_encoder

    slices = phantom_slices(2, 128)
    print("LiteMedSAM, input size vs 256 px (phantom 128x128 slices):")
    for s, r in resolution_fidelity(lambda s: build_encoder("litemedsam", image_size=s), [256, 128, 64], slices).items():
        print(f"  {s:5d} px  cosine {r['cosine']:.4f}  {r['seconds_per_slice']:.2f} s/slice")
    for pos in ("smooth", "white"):
        print(f"random ViT-B ({pos} position embedding), input size vs 1024 px:")
        res = resolution_fidelity(lambda s, pos=pos: random_vit_encoder(s, pos=pos), [1024, 512, 256], slices)
        for s, r in res.items():
            print(f"  {s:5d} px  cosine {r['cosine']:.4f}  {r['seconds_per_slice']:.2f} s/slice")


if __name__ == "__main__":  # pragma: no cover
    main()
