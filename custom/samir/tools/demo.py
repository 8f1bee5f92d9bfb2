"""The main job (``make demo`` / ``samir demo``): synthetic ACDC → fine-tune → evaluate → table.

It runs the researchers' own bundle workflows (``train.json``, ``evaluate.json``) through
``monai.bundle.ConfigWorkflow``, so the demo exercises exactly what ``python -m monai.bundle run``
does, with a few overrides that keep it short on a CPU:

1. write synthetic ACDC in the official layout on first use (``data/synthetic_acdc``);
2. score the identity and the shipped cardiac model on the held-out test pairs (ED→ES, ES→ED);
3. fine-tune the shipped model for ``epochs`` epochs on ``train_pairs`` training pairs;
4. score the fine-tuned model the same way and print the table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

__all__ = ["run_demo"]


def _evaluate(model_file: str | None, out: Path, name: str, common: dict) -> dict:
    """Run evaluate.json on the test pairs; ``model_file=None`` scores the identity."""
    from samir.bundle import bundle_workflow
    from samir.evaluation import identity_register

    overrides = dict(common, output_dir=str(out / name), eval_split="test")
    if model_file is None:
        overrides["initialize"] = ["$import os", f"$os.makedirs('{out / name}', exist_ok=True)"]
        overrides["validate#iteration#register_fn"] = identity_register
    else:
        overrides["model_file"] = model_file
    wf = bundle_workflow(["train.json", "evaluate.json"], "evaluating", **overrides)
    wf.run()
    summary = json.loads((out / name / "evaluation_summary.json").read_text())
    wf.finalize()
    return summary


def run_demo(epochs: int = 1, train_pairs: int = 8, output_dir: str = "runs/demo", encoder: str | None = None,
             data_root: str | None = None) -> dict:
    """Run the main job and print the table; returns {row name: summary}."""
    from samir.bundle import bundle_dir, bundle_workflow
    from samir.data.acdc import ACDC_LABELS
    from samir.data.registry import resolve_data_root
    from samir.evaluation import format_table
    from samir.model_files import network_arguments_of

    start = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = resolve_data_root("acdc", data_root)
    print(f"[demo] data: {root} (synthetic ACDC, official layout)" if data_root is None else f"[demo] data: {root}")
    shipped = Path(bundle_dir()) / "models" / "model.pt"
    network_args = network_arguments_of(shipped)
    common = {"dataset": "acdc", "dataset_dir": str(root), **{k: v for k, v in network_args.items() if k != "checkpoint"}}
    if encoder:
        common["encoder"] = encoder

    rows = {}
    timings = {}
    t = time.perf_counter()
    rows["identity"] = _evaluate(None, out, "identity", common)
    timings["identity"] = time.perf_counter() - t
    if shipped.is_file():
        t = time.perf_counter()
        rows["SAMIR (shipped weights)"] = _evaluate(str(shipped), out, "shipped", common)
        timings["shipped"] = time.perf_counter() - t

        t = time.perf_counter()
        train_dir = out / "finetune"
        wf = bundle_workflow(
            ["train.json"], "training", **common, output_dir=str(train_dir), num_epochs=epochs,
            max_train_pairs=train_pairs, max_val_pairs=4, val_interval=epochs, init_weights=str(shipped),
        )
        wf.run()
        wf.finalize()
        timings["fine-tune"] = time.perf_counter() - t
        best = train_dir / "model.pt"
        t = time.perf_counter()
        rows[f"SAMIR (fine-tuned {epochs} ep.)"] = _evaluate(str(best), out, "finetuned", common)
        timings["finetuned"] = time.perf_counter() - t
    else:
        print(f"[demo] no shipped weights at {shipped}: only the identity baseline is scored")

    names = list(ACDC_LABELS.values())
    table = []
    for name, summary in rows.items():
        row = {"method": name}
        for key, stats in summary.items():
            row[key] = stats["mean"]
        table.append(row)
    columns = ["method", *[f"dice_{n}" for n in names], "dice_mean", "hd95_mean", "folding_pct", "sdlogj", "seconds"]
    headers = ["method", *[f"Dice {n}" for n in names], "Dice mean", "HD95 mm", "folding %", "SDlogJ", "s/pair"]
    print(f"\nSynthetic ACDC test pairs (ED→ES and ES→ED), {root}")
    print(format_table(table, columns, headers))
    print(f"per-pair CSVs under {out}/*/evaluation.csv; stage times (s): "
          + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
          + f"; total {time.perf_counter() - start:.0f} s")
    return rows
