"""SliceEncoder: a frozen 2D SAM encoder applied slice by slice to a 3D volume.

``SliceEncoder(encoder)(volume)``: ``volume`` ``(B, 1, H, W, D)`` → ``features`` with the same
spatial layout, the two in-plane axes reduced to the embedding grid and the slice axis kept:

* ``axis=-1`` (D: ACDC short-axis, CT axial): ``(B, C, h, w, D)``;
* ``axis=0`` (H): ``(B, C, H, w, d)``; ``axis=1`` (W): ``(B, C, h, W, d)``.

Per slice (in-plane size ``P × Q``, encoder input ``S``, stride ``s``, grid ``g = S / s``):

1. percentile clip to ``clip_percentiles`` of that slice, rescale to [0, 1] (a constant slice
   becomes all zeros);
2. resize (bilinear, antialiased) to ``(p·s, q·s)`` with ``p = round(P·g / max(P, Q))``,
   ``q = round(Q·g / max(P, Q))``: the longer side fills the input, the aspect ratio is kept up
   to half an embedding cell, and the resized slice is a whole number of cells;
3. 3 channels, the encoder's normalisation, zero padding at the bottom/right to ``S × S``;
4. encode (batches of ``batch_size`` slices, ``torch.no_grad()``, eval), crop the embedding to
   ``p × q``: the padding is gone.

**Feature grid.** Embedding cell ``(i, j)`` covers in-plane voxels ``[i·P/p, (i+1)·P/p) ×
[j·Q/q, (j+1)·Q/q)``: the grid spans exactly the volume's field of view, edge to edge (the
``align_corners=False`` convention of MONAI ``Resize`` and ``samir.spatial.resize_ddf``).
Examples for a 128×128 slice: ``litemedsam`` at 256 px (``s = 4``) → 64×64 cells of 2×2 voxels;
at 128 px → 32×32 cells of 4×4 voxels; a 128×96 slice at 256 px → 64×48.

Slices with no signal (constant, e.g. zero padding slices) are not encoded: they get the
embedding of the blank slice, computed once per geometry; that is exactly what encoding them
would give (``skip_blank=False`` encodes them anyway).

The encoder is deliberately **not** a registered sub-module: its weights stay out of the
parent's ``state_dict`` and ``parameters()`` (a trained model stores only its own weights; the
encoder is identified by name and weights hash), it never trains, and it follows the input's
device on first use. ``.encoder`` gives it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import SamEncoder
from .cache import EmbeddingCache, make_key
from .registry import build_encoder

__all__ = ["SliceEncoder", "feature_grid", "normalise_slices"]


def feature_grid(in_plane: Sequence[int], image_size: int, out_stride: int) -> tuple[int, int]:
    """Embedding cells ``(p, q)`` of a ``P × Q`` slice (see the module docstring)."""
    P, Q = (int(v) for v in in_plane)
    g = image_size // out_stride
    longest = max(P, Q)
    return tuple(max(1, min(g, math.floor(n * g / longest + 0.5))) for n in (P, Q))  # type: ignore[return-value]


def normalise_slices(slices: torch.Tensor, clip_percentiles: Sequence[float] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile clip and rescale each slice to [0, 1].

    ``slices`` (N, P, Q) → ``(x, blank)``: ``x`` (N, P, Q) float32 in [0, 1], ``blank`` (N,) bool,
    True where the slice is constant after clipping (it becomes all zeros).
    """
    x = slices.float()
    flat = x.reshape(x.shape[0], -1)
    if clip_percentiles is None:
        lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    else:
        q = torch.tensor([clip_percentiles[0] / 100.0, clip_percentiles[1] / 100.0], dtype=x.dtype, device=x.device)
        lo, hi = torch.quantile(flat, q, dim=1)
    span = hi - lo
    blank = ~(span > 1e-6 * torch.maximum(lo.abs(), hi.abs()).clamp_min(1e-12))
    span = torch.where(blank, torch.ones_like(span), span)
    x = ((x - lo.view(-1, 1, 1)) / span.view(-1, 1, 1)).clamp_(0.0, 1.0)
    x[blank] = 0.0
    return x, blank


CPU_BATCH = 2  # slices per encoder call on a CPU (see SliceEncoder's batch_size)
RECENT_VOLUMES = 2  # features kept in memory: a pair's two volumes
_COUNT_LOCK = threading.Lock()  # the slice counters, when volumes are encoded in parallel threads


def _runner(encoder: SamEncoder, fast_path, batch_size: int) -> SamEncoder:
    from . import fastpath

    if fast_path is None or fast_path is False or fast_path == "eager":
        return encoder
    if fast_path == "auto":
        return fastpath.auto_fast_encoder(encoder, batch_size)
    if fast_path == "measure":
        return fastpath.choose_fast_path(encoder, batch_size=min(batch_size, 4))[0]
    if isinstance(fast_path, dict):
        return fastpath.make_fast(encoder, **fast_path)
    raise ValueError(f"fast_path={fast_path!r}: use 'auto', 'eager', 'measure' or a dict of flags")


class SliceEncoder(nn.Module):
    """Frozen SAM-family encoder applied slice by slice: (B, 1, H, W, D) → (B, C, h, w, D).

    Parameters
    ----------
    encoder : a :class:`SamEncoder` or a registry name (built with :func:`build_encoder`).
    axis : slice axis among the spatial axes (H, W, D): -1/2 = D (default), 0 = H, 1 = W.
    batch_size : slices per encoder call on a GPU; on a CPU at most ``CPU_BATCH`` (2): small batches
        stay in cache and ran 1.5–2× faster per slice than 8 on a 2-core Xeon (LiteMedSAM, 128 px).
    clip_percentiles : (low, high) percentiles of each slice mapped to 0 and 1, or None (min–max).
    cache : None/False (no cache), True (default place), a folder, or an :class:`EmbeddingCache`;
        used per batch item.
    skip_blank : give constant slices the blank-slice embedding instead of encoding them (exact).
    fast_path : how the encoder runs (see :mod:`samir.encoders.fastpath`): ``"auto"`` (default:
        the decision stored for this machine by ``samir bench``, else the exact BN-folded path),
        ``"eager"``/None (the plain module), ``"measure"`` (measure now and store), or a dict of
        flags (``fuse_bn``, ``channels_last``, ``compile``, ``bf16``).
    slice_stride : encode every ``slice_stride``-th slice (and the last) and interpolate the
        embeddings linearly between them: ``slice_stride``× fewer encoder calls for consumers
        whose feature grid is coarser than the slices (the fast optimisation core). 1 = every slice.
    """

    def __init__(
        self,
        encoder: SamEncoder | str = "litemedsam",
        axis: int = -1,
        batch_size: int = 8,
        clip_percentiles: Sequence[float] | None = (0.5, 99.5),
        cache: EmbeddingCache | str | bool | None = None,
        skip_blank: bool = True,
        fast_path: str | dict | None = "auto",
        slice_stride: int = 1,
    ):
        super().__init__()
        if isinstance(encoder, str):
            encoder = build_encoder(encoder)
        if not isinstance(encoder, SamEncoder):
            raise TypeError(f"encoder: expected a SamEncoder or a registry name, got {type(encoder).__name__}")
        if axis not in (-3, -2, -1, 0, 1, 2):
            raise ValueError(f"axis={axis}: the slice axis is a spatial axis of (H, W, D): 0, 1, 2 or -3, -2, -1")
        if int(slice_stride) < 1:
            raise ValueError(f"slice_stride={slice_stride}: must be >= 1")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        if clip_percentiles is not None:
            lo, hi = (float(v) for v in clip_percentiles)
            if not 0.0 <= lo < hi <= 100.0:
                raise ValueError(f"clip_percentiles={clip_percentiles}: need 0 <= low < high <= 100")
            clip_percentiles = (lo, hi)
        self._holder = [encoder, _runner(encoder, fast_path, int(batch_size))]  # not sub-modules, on purpose
        self.axis = int(axis) % 3
        self.batch_size = int(batch_size)
        self.clip_percentiles = clip_percentiles
        self.cache = EmbeddingCache.resolve(cache)
        self.skip_blank = bool(skip_blank)
        self.slice_stride = int(slice_stride)
        self._blank: dict[tuple, torch.Tensor] = {}
        self._recent: dict[str, torch.Tensor] = {}  # no disk cache: the last RECENT_VOLUMES volumes' features
        self.slices_encoded = 0  # counters, for benchmarks and tests
        self.slices_skipped = 0

    # ------------------------------------------------------------------ properties
    @property
    def encoder(self) -> SamEncoder:
        return self._holder[0]

    @property
    def runner(self) -> SamEncoder:
        """What actually runs the slices: the encoder or its fast path (same input and output)."""
        return self._holder[1]

    @property
    def out_channels(self) -> int:
        return self.encoder.out_channels

    def extra_repr(self) -> str:
        e = self.encoder
        return (
            f"encoder={e.name!r}, image_size={e.image_size}, axis={self.axis}, batch_size={self.batch_size}, "
            f"clip_percentiles={self.clip_percentiles}, slice_stride={self.slice_stride}, cache={self.cache!r}"
        )

    def output_shape(self, spatial: Sequence[int]) -> tuple[int, int, int]:
        """Spatial shape of the features of a volume with spatial shape ``(H, W, D)``."""
        spatial = [int(s) for s in spatial]
        in_plane = [s for i, s in enumerate(spatial) if i != self.axis]
        p, q = feature_grid(in_plane, self.encoder.image_size, self.encoder.out_stride)
        out = [p, q]
        out.insert(self.axis, spatial[self.axis])
        return tuple(out)  # type: ignore[return-value]

    def cache_params(self) -> dict:
        """Every parameter that changes the features (the non-data part of the cache key)."""
        return {
            "encoder": self.encoder.signature(),
            "runtime": self.runner.signature()["runtime"],
            "axis": self.axis,
            "clip_percentiles": list(self.clip_percentiles) if self.clip_percentiles else None,
            "resize": "bilinear-antialias|longest-side|whole-cells|pad-bottom-right",
            "skip_blank": self.skip_blank,
            **({"slice_stride": self.slice_stride} if self.slice_stride > 1 else {}),
            "cache": self.cache.signature(),
        }

    def cache_key(self, volume: torch.Tensor) -> str:
        """Key of one volume ``(1, H, W, D)`` (or ``(H, W, D)``) under the current settings."""
        return make_key(volume, self.cache_params())

    def warm_up(self) -> float:
        """Run one batch through the encoder path (compiles a ``torch.compile`` path now rather than
        on the first request: call it at server start). Returns the seconds it took."""
        runner = self.runner
        if hasattr(runner, "warm_up"):
            return runner.warm_up(self.batch_size)
        import time

        t0 = time.perf_counter()
        with torch.no_grad():
            runner(torch.zeros(self.batch_size, 3, runner.image_size, runner.image_size))
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ encoding
    def _encoder_on(self, device: torch.device) -> SamEncoder:
        runner = self.runner
        p = next(iter(runner.parameters()), None)
        if p is not None and p.device != device:
            runner.to(device)
        return self.encoder

    def _prepare(self, x01: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(N, P, Q) in [0, 1] → (N, 3, S, S): resize to ``size``, 3 channels, normalise, pad."""
        enc = self.encoder
        x = x01[:, None]
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0.0, 1.0)
        x = enc.normalize(x.expand(-1, 3, -1, -1))
        S = enc.image_size
        return F.pad(x, (0, S - size[1], 0, S - size[0]))

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        """Encoder call on a prepared batch (N, 3, S, S) → (N, C, g, g). Fast paths hook here."""
        return self.runner(batch)

    def _blank_features(self, size: tuple[int, int], device: torch.device) -> torch.Tensor:
        memo = (size, str(device))
        if memo not in self._blank:
            zero = torch.zeros((1, *size), device=device)
            self._blank[memo] = self._run(self._prepare(zero, size)).float()
        return self._blank[memo]

    @torch.no_grad()
    def encode_slices(self, slices: torch.Tensor) -> torch.Tensor:
        """Encode 2D slices ``(N, P, Q)`` (raw intensities) → ``(N, C, p, q)`` (padding cropped)."""
        if slices.ndim != 3:
            raise ValueError(f"slices: expected (N, P, Q), got {tuple(slices.shape)}")
        enc = self._encoder_on(slices.device)
        n, P, Q = slices.shape
        p, q = feature_grid((P, Q), enc.image_size, enc.out_stride)
        size = (p * enc.out_stride, q * enc.out_stride)
        x01, blank = normalise_slices(slices, self.clip_percentiles)
        todo = torch.nonzero(~blank).flatten() if self.skip_blank else torch.arange(n, device=slices.device)
        g = enc.grid_size
        out = torch.empty((n, enc.out_channels, g, g), dtype=torch.float32, device=slices.device)
        if self.skip_blank and bool(blank.any()):
            out[blank] = self._blank_features(size, slices.device)
        step = self.batch_size if slices.device.type != "cpu" else min(self.batch_size, CPU_BATCH)
        for start in range(0, len(todo), step):
            idx = todo[start : start + step]
            out[idx] = self._run(self._prepare(x01[idx], size)).float()
        with _COUNT_LOCK:  # volumes may be encoded in parallel threads
            self.slices_encoded += len(todo)
            self.slices_skipped += n - len(todo)
        return out[:, :, :p, :q]

    @torch.no_grad()
    def encode_volume(self, volume: torch.Tensor) -> torch.Tensor:
        """One volume ``(H, W, D)`` → features ``(C, *output_shape)`` (no cache)."""
        if volume.ndim != 3:
            raise ValueError(f"volume: expected (H, W, D), got {tuple(volume.shape)}")
        slices = volume.movedim(self.axis, 0)  # (N, P, Q)
        n = slices.shape[0]
        if self.slice_stride > 1 and n > 2:
            # encode slices 0, s, 2s, ... and the last; linear interpolation in between
            kept = list(range(0, n, self.slice_stride))
            if kept[-1] != n - 1:
                kept.append(n - 1)
            sub = self.encode_slices(slices[kept])  # (k, C, p, q)
            at = torch.tensor(kept, dtype=torch.float32, device=sub.device)
            pos = torch.arange(n, dtype=torch.float32, device=sub.device)
            j = (torch.searchsorted(at, pos, right=True) - 1).clamp(0, len(kept) - 2)
            w = ((pos - at[j]) / (at[j + 1] - at[j])).view(-1, 1, 1, 1)
            feats = sub[j] * (1.0 - w) + sub[j + 1] * w
        else:
            feats = self.encode_slices(slices)  # (N, C, p, q)
        return feats.transpose(0, 1).movedim(1, self.axis + 1).contiguous()

    def _encode_volumes(self, volumes: list[torch.Tensor]) -> list[torch.Tensor]:
        """:meth:`encode_volume` of each; on a CPU with ``n ≥ 2`` torch threads, ``n`` volumes side by side,
        one thread each (a pair's two volumes: 8–15 % faster than one after the other on 2 threads, and
        robust when another job takes a core, where two OpenMP threads per op waited on each other up
        to 8× longer). The same numbers either way."""
        threads = torch.get_num_threads()
        if len(volumes) < 2 or threads < 2 or volumes[0].device.type != "cpu":
            return [self.encode_volume(v) for v in volumes]
        from concurrent.futures import ThreadPoolExecutor

        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(max_workers=min(len(volumes), threads)) as pool:
                return list(pool.map(self.encode_volume, volumes))
        finally:
            torch.set_num_threads(threads)

    @torch.no_grad()
    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """``volume`` (B, 1, H, W, D) → features (B, C, *output_shape((H, W, D))), float32, no grad.

        Volumes not in the cache are encoded together (:meth:`_encode_volumes`): pass a pair as one batch.
        """
        if volume.ndim != 5 or volume.shape[1] != 1:
            raise ValueError(f"volume: expected shape (B, 1, H, W, D), got {tuple(volume.shape)}")
        shape = (self.out_channels, *self.output_shape(volume.shape[2:]))
        keys = [self.cache_key(item) for item in volume]
        found: dict[str, torch.Tensor] = {}  # each distinct volume once (a batch may repeat one)
        for key in dict.fromkeys(keys):
            feats = self._recent.get(key) if not self.cache.enabled else self.cache.load(key, shape)
            if feats is not None:
                found[key] = feats.to(volume.device)
        missing = [key for key in dict.fromkeys(keys) if key not in found]
        encoded = self._encode_volumes([volume[keys.index(key), 0] for key in missing])
        for key, feats in zip(missing, encoded):
            if self.cache.enabled:
                self.cache.save(key, feats)
                if self.cache.dtype is not None:  # a miss returns what a hit would
                    feats = feats.to(self.cache.dtype).float()
            found[key] = feats
        if not self.cache.enabled:
            # without a disk cache, the same volumes are often asked for again at once (the network,
            # then the refinement): the last pair stays in memory
            for key in keys:
                self._recent.pop(key, None)
                self._recent[key] = found[key]
                while len(self._recent) > RECENT_VOLUMES:
                    self._recent.pop(next(iter(self._recent)))
        return torch.stack([found[key] for key in keys])
