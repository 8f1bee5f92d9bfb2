"""Small pieces the bundle configs call, so that the configs stay wiring.

``bundle_dir`` finds the bundle folder whether a config runs from the repository root
(``bundle/``), from inside an unzipped model-zoo bundle (``.``) or from anywhere else with the
package installed from a checkout.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["bundle_dir", "preprocessing", "limit", "attach_resume", "load_network_weights"]


def bundle_dir() -> str:
    """The bundle folder (holding ``configs/metadata.json``) as a path string."""
    for candidate in (Path("."), Path("bundle")):
        if (candidate / "configs" / "metadata.json").is_file():
            return str(candidate)
    checkout = Path(__file__).resolve().parents[2] / "bundle"
    if (checkout / "configs" / "metadata.json").is_file():
        return str(checkout)
    raise FileNotFoundError(
        "bundle folder not found: run from the repository root or the unzipped bundle, or pass --bundle_root DIR"
    )


def preprocessing(dataset: str, half_resolution: bool = True, with_labels: bool = True):
    """The data set's MONAI chain as the bundle uses it (abdomen at half resolution by default)."""
    from samir.data.registry import dataset_transforms

    if dataset == "abdomen":
        return dataset_transforms(dataset, half_resolution=half_resolution, with_labels=with_labels)
    return dataset_transforms(dataset, with_labels=with_labels)


def limit(items: Sequence, n: int | None) -> list:
    """The first ``n`` items (all with ``None``): short demo runs and tests on few pairs."""
    items = list(items)
    if n is None:
        return items
    if int(n) < 1:
        raise ValueError(f"expected a positive number of pairs, got {n}")
    return items[: int(n)]


def _load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle with code, not a torch file
        raise ValueError(f"checkpoint {path} cannot be read as a torch weights file: {err}") from err


def attach_resume(trainer, resume_from: str | None, network, optimizer=None):
    """With ``resume_from`` (a ``last_checkpoint_*.pt`` of this bundle), restore network, optimiser and
    trainer state (epoch, iteration) before the run starts; without it do nothing."""
    if not resume_from:
        return None
    state = _load_checkpoint(resume_from)
    if "network" not in state:
        raise ValueError(f"checkpoint {resume_from}: expected a training checkpoint with 'network', "
                         f"'optimizer' and 'trainer', got keys {sorted(state)[:5]}")
    network.load_state_dict(state["network"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if "trainer" in state:
        max_epochs = trainer.state.max_epochs  # the run's own budget, not the checkpoint's
        trainer.load_state_dict(state["trainer"])
        trainer.state.max_epochs = max(max_epochs or 0, trainer.state.epoch)
    return trainer


def load_network_weights(network: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """Load a ``model.pt`` (bare state dict or a training checkpoint's 'network') into ``network``.

    A file that does not fit the network (another preset, pyramid or head size) is a clear error
    naming the file and the first mismatches.
    """
    state = _load_checkpoint(path)
    if "network" in state and isinstance(state["network"], dict):
        state = state["network"]
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        lines = str(err).splitlines()
        raise ValueError(f"weights {path} do not fit this network ({' '.join(lines[:3])[:400]})") from err
    return network


def print_summary(evaluator, csv_path: str | None = None) -> dict:
    """Print the mean of every per-pair metric after an evaluation run (and where the CSV is)."""
    summary = getattr(evaluator.state, "pair_summary", {}) or {}
    for key, stats in summary.items():
        print(f"{key:>20s}: {stats['mean']:.4f} ± {stats['std']:.4f} (n={stats['n']})")
    if csv_path:
        print(f"per-pair table: {csv_path}")
    return summary


_NOT_EXPORTED = ("_target_", "cache_dir", "checkpoint")


def network_arguments(parser) -> dict:
    """The resolved arguments of a bundle's ``network_def`` (what a ``model.json`` sidecar records)."""
    raw = parser.get("network_def")
    return {k: parser.get_parsed_content(f"network_def#{k}") for k in raw if k not in _NOT_EXPORTED}


def train_and_export(export: str | None = None, models_dir: str | None = None, **overrides) -> dict:
    """Run the bundle's ``training`` workflow with ``overrides``; with ``export``, copy the best
    ``model.pt`` to ``<models_dir>/<export>.pt`` with its ``<export>.json`` sidecar (network
    arguments and training facts) so ``samir register`` and the other configs can rebuild it.
    """
    import json
    import shutil
    import time

    from samir.tools.demo import bundle_workflow

    start = time.perf_counter()
    wf = bundle_workflow(["train.json"], "training", **overrides)
    wf.run()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    facts = {
        "network": network_arguments(wf.parser),
        "dataset": wf.parser.get_parsed_content("dataset"),
        "data_root": str(wf.parser.get_parsed_content("data_root_resolved")),
        "num_epochs": wf.parser.get_parsed_content("num_epochs"),
        "train_pairs": len(wf.parser.get_parsed_content("train#datalist")),
        "val_pairs": len(wf.parser.get_parsed_content("validate#datalist")),
        "best_val_mean_dice": float(evaluator.state.best_metric),
        "best_epoch": int(evaluator.state.best_metric_epoch),
        "train_seconds": round(time.perf_counter() - start, 1),
        "loss": {k: wf.parser.get_parsed_content(k) for k in ("sim_weight", "smooth_weight", "hfc_weight", "dice_weight")},
        "learning_rate": wf.parser.get_parsed_content("learning_rate"),
    }
    output_dir = Path(wf.parser.get_parsed_content("output_dir"))
    wf.finalize()
    if export:
        target = Path(models_dir or Path(bundle_dir()) / "models")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(output_dir / "model.pt", target / f"{export}.pt")
        (target / f"{export}.json").write_text(json.dumps(facts, indent=2) + "\n")
        print(f"exported {target / export}.pt and .json")
    print(json.dumps(facts, indent=2))
    return facts
