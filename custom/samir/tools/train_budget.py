"""Train within a time budget, resumably, and export the weights under a NEW name with a full sidecar.

What ``bundle/scripts/train_gpu.sh`` runs. One call:

1. refuses a name that is shipped (``model``, ``model_abdomen``, ``model_baseline``) or that already
   exists in the models folder (unless ``overwrite``), before any work;
2. resumes from the newest ``last_checkpoint_*.pt`` in ``output_dir`` when there is one (``resume``),
   so the same command continues a stopped run (epoch, iteration, optimiser state);
3. runs the bundle's ``training`` workflow (``train.json`` through ``ConfigWorkflow``) with
   ``max_seconds`` / ``max_iterations`` (``samir.training.TrainingBudget``: stops at an epoch end
   that fits the budget) and any other ``train.json`` key as an override;
4. writes ``<models_dir>/<name>.pt`` (the best validated weights of this run, else the last epoch's)
   and ``<name>.json``: network arguments, the command, data (data set, root, pairs per source, mix),
   iterations, epochs, seconds, why it stopped, device, best validation Dice.

    python -m samir.tools.train_budget --name model_v2 --max_seconds 600 --mix "{'synthmorph': 0.3}"
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

__all__ = ["train_budget", "SHIPPED", "latest_checkpoint"]

SHIPPED = ("model", "model_abdomen", "model_baseline")


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest ``last_checkpoint_*.pt`` (highest epoch/iteration number, then newest file) in ``output_dir``."""
    import re

    files = list(Path(output_dir).glob("last_checkpoint_*.pt"))
    if not files:
        return None

    def order(p: Path):
        numbers = [int(n) for n in re.findall(r"\d+", p.stem)]
        return (numbers[-1] if numbers else -1, p.stat().st_mtime)

    return max(files, key=order)


def _command() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith("train_budget.py"):
        argv[0:1] = ["python", "-m", "samir.tools.train_budget"]
    return " ".join(shlex.quote(a) for a in argv)


def _target(name: str, models_dir: str | Path | None, overwrite: bool) -> Path:
    from samir.bundle import bundle_dir

    name = str(name)
    if not name or Path(name).name != name or name.endswith(".pt"):
        raise ValueError(f"name: expected a plain file stem such as 'model_v2', got {name!r}")
    if name in SHIPPED:
        raise ValueError(f"name: '{name}' is a shipped model; choose a new name (e.g. model_v2)")
    target = Path(models_dir or Path(bundle_dir()) / "models") / f"{name}.pt"
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; choose a new name or pass --overwrite True")
    return target


def train_budget(name: str = "model_v2", max_seconds: float | None = 600, max_iterations: int | None = None,
                 output_dir: str | None = None, models_dir: str | None = None, resume: bool = True,
                 overwrite: bool = False, num_epochs: int | None = None, **overrides) -> dict:
    """Train (resuming when possible) within the budget and export ``<name>.pt`` + ``<name>.json``; returns the sidecar facts."""
    import torch

    from samir.bundle import bundle_workflow, network_arguments
    from samir.data.mix import parse_mix, source_counts
    from samir.model_files import read_state, save_model

    target = _target(name, models_dir, overwrite)
    out = Path(output_dir or f"runs/{name}")
    out.mkdir(parents=True, exist_ok=True)
    resume_from = latest_checkpoint(out) if resume else None
    cfg = dict(overrides, output_dir=str(out), max_seconds=max_seconds, max_iterations=max_iterations,
               num_epochs=int(num_epochs) if num_epochs else 100000)  # the budget decides when to stop
    if resume_from is not None:
        cfg["resume_from"] = str(resume_from)
        print(f"[train_budget] resuming from {resume_from}")
    start = time.perf_counter()
    wf = bundle_workflow(["train.json"], "training", **cfg)
    trainer = wf.parser.get_parsed_content("train#trainer")
    start_epoch, start_iteration = int(trainer.state.epoch), int(trainer.state.iteration)
    wf.run()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    datalist = wf.parser.get_parsed_content("train#datalist")
    best = out / "model.pt"
    if best.is_file() and evaluator.state.best_metric_epoch >= 0:  # validated during this run
        state, source = read_state(best), "best validated (this run)"
    else:
        last = latest_checkpoint(out)
        if last is None:
            raise RuntimeError(f"no checkpoint was written in {out}: the budget ended before the first epoch")
        state, source = read_state(last)["network"], f"last epoch ({last.name})"
    budget = dict(getattr(trainer.state, "budget", {}) or {})
    device = wf.parser.get_parsed_content("device")
    facts = {
        "command": _command(),
        "call": {"name": name, "max_seconds": max_seconds, "max_iterations": max_iterations, **overrides},
        "dataset": wf.parser.get_parsed_content("dataset"),
        "dataset_dir": str(wf.parser.get_parsed_content("data_dir")),
        "synthetic_options": wf.parser.get_parsed_content("synthetic_options"),
        "mix": parse_mix(wf.parser.get_parsed_content("mix")),
        "train_pairs": source_counts(datalist) if any("source" in d for d in datalist) else len(datalist),
        "val_pairs": len(wf.parser.get_parsed_content("validate#datalist")),
        "init_weights": wf.parser.get_parsed_content("init_weights"),
        "resumed_from": str(resume_from) if resume_from else None,
        "epochs": {"start": start_epoch, "end": int(trainer.state.epoch)},
        "iterations": {"start": start_iteration, "end": int(trainer.state.iteration),
                       "this_run": int(trainer.state.iteration) - start_iteration},
        "train_seconds": round(time.perf_counter() - start, 1),
        "budget": budget,
        "weights": source,
        "best_val_mean_dice": float(evaluator.state.best_metric) if evaluator.state.best_metric_epoch >= 0 else None,
        "learning_rate": wf.parser.get_parsed_content("learning_rate"),
        "loss": {k: wf.parser.get_parsed_content(k) for k in ("sim_weight", "smooth_weight", "hfc_weight", "dice_weight")},
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if str(device).startswith("cuda") else ""),
        "torch": torch.__version__,
    }
    network = network_arguments(wf.parser)
    wf.finalize()
    save_model(target, state, network, **facts)
    print(f"[train_budget] wrote {target} and {target.with_suffix('.json').name}")
    print(json.dumps({k: facts[k] for k in ("epochs", "iterations", "train_seconds", "budget", "weights",
                                            "best_val_mean_dice")}, indent=1))
    return facts


def main(**kwargs) -> None:
    """Command line: ``python -m samir.tools.train_budget --name NAME --max_seconds S [--key value ...]``."""
    train_budget(**kwargs)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
