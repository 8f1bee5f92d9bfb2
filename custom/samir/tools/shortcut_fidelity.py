"""Registration fidelity of the encoder's shortcuts (issue 10 §2): Dice within 0.01 of the full path.

The training-free core (:func:`samir.optimize.fast.fast_optimize_pair`, the preset's settings, SAM
features on) registers the same pairs once per encoder setting:

* ``full``: the reference: fp32, every slice encoded;
* ``bf16``: bfloat16 autocast, every slice (only where the CPU computes bf16 natively; the row is
  skipped elsewhere, where ``auto`` never picks it);
* ``stride2`` / ``stride3``: fp32, every 2nd / 3rd slice encoded, the others interpolated;
* ``default``: what ``samir register`` runs on this machine for the preset (bf16 where native, the
  preset's slice stride).

Each row: mean Dice, its difference to ``full`` (mean and the largest per pair), encoding and
total seconds per pair. The embedding cache is off, so every row encodes::

    python -m samir.tools.shortcut_fidelity --dataset acdc --root DIR --split val --n_pairs 6
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch

__all__ = ["SHORTCUTS", "shortcut_fidelity"]

#: name → (bf16, slice stride); None = the preset's own choice on this machine
SHORTCUTS: dict[str, tuple[bool | None, int | None]] = {
    "full": (False, 1),
    "bf16": (True, 1),
    "stride2": (False, 2),
    "stride3": (False, 3),
    "default": (None, None),
}


def _encoder(name: str, image_size: int | None, bf16: bool, stride: int):
    from samir.encoders import SliceEncoder, build_encoder

    kwargs = {"image_size": int(image_size)} if image_size and name == "litemedsam" else {}
    fast_path = "auto" if bf16 is None else {"fuse_bn": True, "sdpa": True, "bf16": bool(bf16)}
    return SliceEncoder(build_encoder(name, **kwargs), cache=False, fast_path=fast_path, slice_stride=int(stride))


def shortcut_fidelity(
    dataset: str = "acdc",
    root: str | None = None,
    split: str = "val",
    n_pairs: int | None = 4,
    shortcuts: Sequence[str] = ("full", "bf16", "stride2", "default"),
    preset: str | None = None,
    encoder: str = "litemedsam",
    out_csv: str | None = None,
) -> list[dict]:
    """Score the training-free core with each encoder shortcut on ``dataset``'s ``split``; print the table.

    ``preset``: whose core settings and encoder input size to use (default: the data set's, as
    ``samir evaluate`` maps it). ``shortcuts``: names of :data:`SHORTCUTS` (``full`` is always run
    first: it is the reference). Returns one summary dict per row (also ``out_csv``).
    """
    import csv
    from pathlib import Path

    from samir.encoders.fastpath import native_bf16
    from samir.evaluation import evaluate_pairs, format_table
    from samir.optimize.fast import fast_optimize_pair
    from samir.presets import PRESETS, check_preset
    from samir.tools.accuracy_table import DATASET_PRESETS, _mean, scored_pairs
    from samir.training import spacing_of

    unknown = [s for s in shortcuts if s not in SHORTCUTS]
    if unknown:
        raise ValueError(f"shortcuts: unknown {unknown}; valid: {', '.join(SHORTCUTS)}")
    preset = preset or DATASET_PRESETS.get(dataset, "generic")
    check_preset(preset)
    settings = dict(PRESETS[preset].fast)
    image_size = settings.pop("encoder_size", None)
    preset_stride = int(settings.pop("slice_stride", 1))
    settings["sam_weight"] = 1.0  # the shortcuts change the SAM features: score the core that uses them
    spec, data_root, pairs, labels, transform = scored_pairs(dataset, root, split, n_pairs)
    print(f"Shortcut fidelity: {spec.name} at {data_root}, split '{split}', {len(pairs)} pairs, preset '{preset}' "
          f"(encoder {encoder} at {image_size or 'its'} px), native bf16: {native_bf16()}")

    names = ["full", *[s for s in shortcuts if s != "full"]]
    per_pair: dict[str, dict[str, float]] = {}
    summaries = []
    for name in names:
        bf16, stride = SHORTCUTS[name]
        if bf16 and not native_bf16():
            print(f"note: skipping '{name}': this CPU has no native bf16 (the default path never uses it here)")
            continue
        stride = preset_stride if stride is None else stride
        enc = _encoder(encoder, image_size, bf16, stride)
        encode_seconds: list[float] = []

        def fn(moving, fixed, enc=enc, encode_seconds=encode_seconds):
            t = time.perf_counter()
            with torch.no_grad():
                em, ef = enc(moving.float()), enc(fixed.float())
            encode_seconds.append(time.perf_counter() - t)
            ddf, _ = fast_optimize_pair(moving.float(), fixed.float(), spacing=spacing_of(fixed) or (1.0, 1.0, 1.0),
                                        moving_embedding=em, fixed_embedding=ef, **settings)
            return ddf

        rows = evaluate_pairs(pairs, transform, labels, register_fn=fn, hd95=False)
        per_pair[name] = {r["pair_id"]: float(r["dice_mean"]) for r in rows}
        deltas = [per_pair[name][k] - per_pair["full"][k] for k in per_pair[name] if k in per_pair.get("full", {})]
        summary = {
            "shortcut": name, "bf16": "auto" if bf16 is None else bool(bf16), "slice_stride": stride,
            "pairs": len(rows), "dice_mean": _mean(r["dice_mean"] for r in rows),
            "delta_mean": _mean(deltas), "delta_max_abs": max((abs(d) for d in deltas), default=math.nan),
            "encode_seconds": _mean(encode_seconds), "seconds": _mean(r.get("seconds") for r in rows),
        }
        summaries.append(summary)
        print(f"  {name}: Dice {summary['dice_mean']:.4f} (Δ {summary['delta_mean']:+.4f}), "
              f"encoding {summary['encode_seconds']:.1f} s/pair", flush=True)

    columns = ("shortcut", "bf16", "slice_stride", "pairs", "dice_mean", "delta_mean", "delta_max_abs",
               "encode_seconds", "seconds")
    print()
    print(format_table(summaries, columns, ("shortcut", "bf16", "slice stride", "pairs", "Dice", "Δ Dice vs full",
                                            "max |Δ| of a pair", "encode s / pair", "s / pair")))
    if out_csv:
        Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
        with open(out_csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(summaries)
    return summaries


if __name__ == "__main__":
    import fire

    fire.Fire(shortcut_fidelity)
