"""``samir bench``: speed and memory of the SAM feature path on this machine.

Prints (and returns) one table, all numbers measured in the same run:

* the CPU model, torch's CPU capability, threads, and the machine's fp32 matmul rate (GFLOP/s,
  2048² GEMM, median of 3);
* per encoder, input size and path (eager, BN-folded, channels-last, ``torch.compile`` with
  ``compile=True``, bf16 only where the CPU has it natively): milliseconds per slice (median of
  ``repeats`` ≥ 3 runs of a ``batch``-slice batch), GFLOP per slice (counted with torch's
  ``FlopCounterMode``; the paths are timed round-robin so that outside load hits all alike),
  the minimum as well, achieved GFLOP/s and its share of the matmul rate, the embedding cosine
  against fp32 eager at the same size, and the speed-up against the **fp32 eager LiteMedSAM
  256-px baseline** of this run;
* encoding one 16-slice 128×128 volume (12 slices of anatomy, 4 blank, like a padded ACDC
  volume) with the SliceEncoder: eager 256 px (baseline), the default fast path at 256 and 128 px;
* optional extra rows (``extra_rows={"network forward": fn}``, each ``fn()`` timed the same way):
  the hook for the registration network's forward pass;
* peak resident memory (RSS) of the process.

``quick=True`` is a smoke run (32-px inputs and volume, batches of 1, 3 repeats).

``store=True`` records, per input size, the fastest path whose cosine is >= 0.99 as this
machine's fast-path decision (``SliceEncoder(fast_path="auto")`` then uses it; see
:mod:`samir.encoders.fastpath`).
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["run_bench", "matmul_gflops", "count_gflop"]


def matmul_gflops(n: int = 2048, repeats: int = 3) -> float:
    """fp32 GEMM rate of this machine (GFLOP/s, median of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


@torch.no_grad()
def count_gflop(module, x: torch.Tensor) -> float:
    """GFLOP of ``module(x)`` per batch item (matmuls and convolutions, torch's counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        module(x)
    return counter.get_total_flops() / 1e9 / x.shape[0]


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _phantom_volume(size: int = 128, slices: int = 16, blank: int = 4):
    from samir.tools.encoder_fidelity import phantom_slices

    vol = torch.zeros(1, 1, size, size, slices)
    vol[0, 0, :, :, : slices - blank] = phantom_slices(slices - blank, size).permute(1, 2, 0)
    return vol


def run_bench(
    quick: bool = False,
    sizes: tuple | list | str | None = None,
    paths: tuple | list | str | None = None,
    compile: bool = False,
    batch: int | None = None,
    repeats: int = 3,
    vit: bool = False,
    vit_checkpoint: str | None = None,
    threads: int | None = None,
    out: str | None = None,
    extra_rows: dict[str, Callable[[], object]] | None = None,
    store: bool = False,
    thread_counts: tuple | list | str | None = None,
    volume_baseline: bool = False,
    encoder: str = "litemedsam",
) -> dict:
    """Measure and print the speed table; returns {"machine": ..., "rows": [...], "volume": [...]}.

    Args:
        quick: smoke run (32 px, batch 1).
        sizes: LiteMedSAM input sizes (default 256,128; quick: 64).
        paths: subset of samir.encoders.fastpath.CANDIDATES (eager, fuse_bn, channels_last, sdpa,
            sdpa_channels_last, compile, compile_channels_last, compile_sdpa_channels_last, bf16).
        compile: also measure the ``torch.compile`` paths (first call compiles: minutes on 2 cores).
        batch: slices per encoder call (default 4; quick: 1).
        repeats: timed runs per row (median; at least 3).
        vit: also measure a SAM ViT-B (random weights unless ``vit_checkpoint``) at 256 and 512 px.
        threads: torch threads (default: torch's own choice).
        out: also write the markdown table to this file.
        extra_rows: name → callable timed like a row (e.g. the network's forward pass).
        store: record the fastest faithful path per size as this machine's decision.
        thread_counts: also time the base-size fp32 eager path at these torch thread counts.
        volume_baseline: also time the volume with fp32 eager at the base size (the ratio column
            always uses 16 × the per-slice eager baseline measured above).
        encoder: the main encoder (default litemedsam; ``tiny`` for plumbing tests).
    """
    from samir.encoders import SliceEncoder, build_encoder
    from samir.encoders.fastpath import CANDIDATES, cpu_info, make_fast, native_bf16

    if threads:
        torch.set_num_threads(int(threads))
    repeats = max(3, int(repeats))
    if isinstance(sizes, str):
        sizes = [int(s) for s in sizes.split(",")]
    if isinstance(sizes, int):
        sizes = [sizes]
    sizes = list(sizes) if sizes else ([32] if quick else [256, 128])
    batch = int(batch or (1 if quick else 4))
    if isinstance(paths, str):
        paths = paths.split(",")
    paths = list(paths) if paths else ["eager", "fuse_bn", "channels_last", "sdpa", "sdpa_channels_last"]
    if compile:
        paths += [p for p in ("compile", "compile_sdpa_channels_last") if p not in paths]
    if native_bf16() and "bf16" not in paths:
        paths.append("bf16")
    base_size = 32 if quick else 256

    info = cpu_info()
    info["load_before"] = os.getloadavg()[0]
    info["matmul_gflops"] = matmul_gflops(1024 if quick else 2048)
    lines = [
        f"CPU: {info['cpu']} | torch {info['torch']} | capability {info['capability']} | "
        f"native bf16: {info['native_bf16']} | threads {info['threads']} of {info['cores']} cores",
        f"fp32 matmul: {info['matmul_gflops']:.1f} GFLOP/s (2048² GEMM, median of 3); "
        f"1-min load average at start: {info['load_before']:.1f}",
        "",
        "| encoder | input px | path | ms/slice (median) | ms/slice (min) | GFLOP/slice | GFLOP/s (median) "
        "| % matmul | cosine vs eager | vs eager 256 px |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows: list[dict] = []
    baseline: float | None = None

    def encoders():
        for s in sorted(set(sizes) | {base_size}, reverse=True):
            yield encoder, s, build_encoder(encoder, image_size=s)
        if vit:
            from samir.tools.encoder_fidelity import random_vit_encoder

            for s in (512, 256) if not quick else (128,):
                enc = (build_encoder("sam_vit_b", checkpoint=vit_checkpoint, image_size=s) if vit_checkpoint
                       else random_vit_encoder(s))
                yield "sam_vit_b" + ("" if vit_checkpoint else " (random)"), s, enc

    from samir.encoders.fastpath import store_decision

    for label, size, enc in encoders():
        g = torch.Generator().manual_seed(0)
        x = enc.normalize(torch.rand(batch, 1, size, size, generator=g).expand(-1, 3, -1, -1))
        gflop = count_gflop(enc, x[:1])
        # every path is warmed up first, then timed round-robin (repeat r of every path, then
        # repeat r+1...), so that load from other processes hits all paths alike
        fasts, outs, firsts = {}, {}, {}
        for path in paths:
            flags = CANDIDATES[path]
            if flags.get("bf16") and not native_bf16():
                continue
            fasts[path] = make_fast(enc, **flags)
            t0 = time.perf_counter()
            with torch.no_grad():
                outs[path] = fasts[path](x)
            firsts[path] = time.perf_counter() - t0
        times: dict[str, list[float]] = {p: [] for p in fasts}
        with torch.no_grad():
            for _ in range(repeats):
                for path, fast in fasts.items():
                    t0 = time.perf_counter()
                    fast(x)
                    times[path].append((time.perf_counter() - t0) / batch)
        ref = outs[next(iter(outs))]
        for path in fasts:
            sec, best = statistics.median(times[path]), min(times[path])
            y, first = outs[path], firsts[path]
            cos = float(torch.nn.functional.cosine_similarity(y.flatten(2), ref.flatten(2), dim=1).mean())
            if label == encoder and size == base_size and path == "eager":
                baseline = sec
            row = {"encoder": label, "size": size, "path": path, "ms_per_slice": sec * 1e3, "min_ms": best * 1e3,
                   "gflop": gflop, "gflops": gflop / sec, "matmul_share": gflop / sec / info["matmul_gflops"],
                   "cosine": cos, "first_call_s": first, "speedup": (baseline / sec) if baseline else None}
            rows.append(row)
            lines.append(
                f"| {label} | {size} | {path} | {row['ms_per_slice']:.0f} | {row['min_ms']:.0f} | {gflop:.1f} | "
                f"{row['gflops']:.1f} | {100 * row['matmul_share']:.0f}% | {cos:.4f} | "
                + (f"{row['speedup']:.2f}×" if row["speedup"] else "–")
                + (f" (first call {first:.0f} s)" if "compile" in path else "")
                + " |"
            )
            print(lines[-1], flush=True)
        size_rows = [r for r in rows if r["encoder"] == label and r["size"] == size and r["cosine"] >= 0.99]
        if store and label == encoder and size_rows:
            best = min(size_rows, key=lambda r: r["ms_per_slice"])
            store_decision(enc, batch, CANDIDATES[best["path"]], size_rows)

    if isinstance(thread_counts, (int, str)):
        thread_counts = [int(t) for t in str(thread_counts).split(",")]
    if thread_counts:
        lines += ["", f"| threads ({encoder} {base_size} px, fp32 eager) | ms/slice |", "|---|---|"]
        before = torch.get_num_threads()
        enc = build_encoder(encoder, image_size=base_size)
        x = torch.rand(batch, 3, base_size, base_size)
        for t in thread_counts:
            torch.set_num_threads(int(t))
            with torch.no_grad():
                sec = _median_time(lambda x=x, enc=enc: enc(x), repeats) / batch
            rows.append({"encoder": encoder, "size": base_size, "path": f"eager, {t} threads",
                         "ms_per_slice": sec * 1e3, "threads": int(t)})
            lines.append(f"| {t} | {sec * 1e3:.0f} |")
            print(lines[-1], flush=True)
        torch.set_num_threads(before)

    # one 16-slice 128×128 volume through the SliceEncoder
    vsize = 32 if quick else 128
    vol = _phantom_volume(vsize, 16, 4)
    lines += ["", f"| 16-slice {vsize}×{vsize} volume (4 blank) | s/volume | vs eager {base_size} px per-slice baseline ×16 |",
              "|---|---|---|"]
    volume_rows = []
    setups = [(f"eager {base_size} px, no blank skipping", base_size, "eager", False)] if volume_baseline or quick else []
    for s in sorted(set(sizes) | {base_size}, reverse=True):
        setups.append((f"default fast path {s} px, blank skipping", s, "auto", True))
    for label, s, fp, skip in setups:
        se = SliceEncoder(build_encoder(encoder, image_size=s), batch_size=batch if quick else 8,
                          fast_path=fp, skip_blank=skip, cache=None)
        sec = _median_time(lambda se=se: se(vol), repeats)
        ratio = (16 * baseline / sec) if baseline else None
        volume_rows.append({"setup": label, "seconds": sec, "speedup": ratio})
        lines.append(f"| {label} | {sec:.2f} | " + (f"{ratio:.2f}×" if ratio else "–") + " |")
        print(lines[-1], flush=True)

    extra = []
    for name, fn in (extra_rows or {}).items():
        sec = _median_time(fn, repeats)
        extra.append({"name": name, "seconds": sec})
        lines.append(f"| {name} | {sec:.3f} s | |")
    rss = _peak_rss_mib()
    lines += ["", f"peak RSS: {rss:.0f} MiB; 1-min load average at end: {os.getloadavg()[0]:.1f}"]
    text = "\n".join(lines)
    print(text)
    if out:
        from pathlib import Path

        Path(out).write_text(text + "\n")
    return {"machine": info, "rows": rows, "volume": volume_rows, "extra": extra, "peak_rss_mib": rss, "table": text}


def network_rows(weights: str | None = None) -> dict[str, Callable[[], object]]:
    """Extra rows for the shipped cardiac network on a 128×128×16 pair: the forward pass with the
    embeddings given (both directions and one, for a symmetric network), and a whole in-process pair
    with the embeddings in the on-disk cache."""
    import shutil
    import tempfile
    import weakref
    from pathlib import Path

    import torch

    from samir.bundle import bundle_dir
    from samir.encoders import EmbeddingCache
    from samir.model_files import load_model

    weights = weights or str(Path(bundle_dir()) / "models" / "model.pt")
    if not Path(weights).is_file():
        return {}
    cache = tempfile.mkdtemp(prefix="samir-bench-cache-")
    net = load_model(weights, cache_dir=cache).eval()
    weakref.finalize(net, shutil.rmtree, cache, ignore_errors=True)  # gone with the network (or at exit)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 128, 128, 16, generator=gen)
    with torch.no_grad():
        me, fe = net.encode(x[:, :1]), net.encode(x[:, 1:])  # fills the cache as a first run would

    def forward():  # as the sidecar says: both directions averaged for the shipped weights
        with torch.no_grad():
            return net(x, me, fe)

    def forward_one_direction():  # as samir register runs it before the refinement
        with torch.no_grad():
            return net(x, me, fe, symmetric=False)

    def cached_pair():
        with torch.no_grad():
            return net(x)  # embeddings come from the on-disk cache

    rows = {"network forward, cardiac 128×128×16 (embeddings given)" + (", both directions" if net.symmetric else ""):
            forward}
    if net.symmetric:
        rows["network forward, one direction (before the refinement)"] = forward_one_direction
    if isinstance(net.sam_encoder.cache, EmbeddingCache):
        rows["cardiac pair in-process, embeddings cached on disk"] = cached_pair
    return rows


def output_rows(shape: tuple[int, int, int] = (226, 211, 14)) -> dict[str, Callable[[], object]]:
    """An extra row: writing one pair's outputs as ``samir register`` does (``write_outputs``: warped image
    and label, the voxel and LPS displacement fields) for a cardiac-size grid (patient102's by default),
    a smooth field of a few voxels."""
    import tempfile

    from samir.cli import lean_import

    with lean_import():
        from samir.register import write_outputs

    gen = torch.Generator().manual_seed(0)
    warped = torch.rand(1, 1, *shape, generator=gen) * 500
    coarse = torch.randn(1, 3, 6, 6, 3, generator=gen) * 3
    ddf = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear", align_corners=False)
    label = (warped > 250).to(torch.int16) + (warped > 400).to(torch.int16)
    affine = torch.diag(torch.tensor([1.6, 1.6, 10.0, 1.0], dtype=torch.float64)).numpy()

    def write():
        with tempfile.TemporaryDirectory(prefix="samir-bench-out-") as folder:
            write_outputs(folder, affine, warped, ddf, label)

    return {f"writing one pair's outputs ({shape[0]}×{shape[1]}×{shape[2]}: image, label, two fields)": write}

