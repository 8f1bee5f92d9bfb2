"""The MONAI bundle's own pieces: what its configs call (so that they stay wiring) and how the
package runs them.

``bundle_dir`` finds the bundle folder whether a config runs from the repository root
(``bundle/``), from inside an unzipped model-zoo bundle (``.``) or from anywhere else with the
package installed from a checkout. ``bundle_workflow`` is a ``ConfigWorkflow`` over its configs
(the demo, ``samir train`` and the MONAI Label trainer run through it);
``PairRegistrationStep`` and ``LogPaird`` are ``inference.json``'s iteration and post-transform.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from samir.model_files import read_state

__all__ = ["bundle_dir", "bundle_workflow", "data_dir", "prepare_data", "datalist", "preprocessing", "limit",
           "attach_resume", "log_summary", "network_arguments", "train_and_export", "PairRegistrationStep", "LogPaird"]

logger = logging.getLogger(__name__)


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


def bundle_workflow(configs: list[str], run_id: str, configure_logging: bool = True, **overrides):
    """A ``monai.bundle.ConfigWorkflow`` over ``bundle/configs/<configs>`` with ``overrides``, initialised.

    ``configure_logging=False`` leaves the process's logging as it is (a server that owns it) instead
    of applying the bundle's ``logging.conf``.
    """
    from monai.bundle import ConfigWorkflow

    root = Path(bundle_dir())
    files = [str(root / "configs" / c) for c in configs]
    wf = ConfigWorkflow(
        config_file=files,
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf") if configure_logging else False,
        run_id=run_id,
        workflow_type="train" if run_id == "training" else "infer",
        **overrides,
    )
    wf.initialize()
    return wf


def data_dir(dataset: str, dataset_dir: str | os.PathLike | None, synthetic_dir: str | os.PathLike | None = None) -> str:
    """Where the configs read ``dataset`` from: ``dataset_dir`` when given, else its synthetic stand-in's
    folder (default ``data/synthetic_<dataset>``). A path only: nothing is checked or written here."""
    if dataset_dir not in (None, "", "none", "None"):
        return str(Path(dataset_dir).expanduser())
    return str(Path(synthetic_dir or Path("data") / f"synthetic_{dataset}").expanduser())


def prepare_data(dataset: str, dataset_dir: str | os.PathLike | None, synthetic_dir: str | os.PathLike | None = None,
                 **synthetic_options) -> str:
    """The configs' explicit data step (first in ``initialize``): check ``dataset_dir`` exists, or write
    the synthetic stand-in into ``synthetic_dir`` on first use (``samir.data.registry.resolve_data_root``)."""
    from samir.data.registry import resolve_data_root

    return str(resolve_data_root(dataset, dataset_dir, data_dir(dataset, None, synthetic_dir), **synthetic_options))


def datalist(dataset: str, root: str | os.PathLike, split: str, split_options: Mapping | None = None,
             max_pairs: int | None = None, sample_seed: int | None = None) -> list[dict]:
    """``max_pairs`` pairs of ``dataset``'s ``split`` at ``root`` (``split_options`` go to its reader):
    the first ones, or with ``sample_seed`` a random draw without replacement (the same for the same
    seed). The draw matters for inter-subject sets, whose pairs come ordered by fixed subject: the
    first 2 000 of a 200-subject pool would hold only 11 fixed subjects."""
    from samir.data.registry import dataset_pairs

    pairs = dataset_pairs(dataset, root, split, **dict(split_options or {}))
    first = limit(pairs, max_pairs)
    if sample_seed is None:
        return first
    order = np.random.default_rng(int(sample_seed)).permutation(len(pairs))[: len(first)]
    return [pairs[i] for i in sorted(order)]


def preprocessing(dataset: str, half_resolution: bool = True, with_labels: bool = True,
                  spatial_size: Sequence[int] | None = None):
    """The data set's MONAI chain as the bundle uses it (abdomen at half resolution by default);
    ``spatial_size`` (H, W, D), when given, replaces the chain's own model grid."""
    from samir.data.registry import dataset_transforms

    options: dict = {"with_labels": with_labels}
    if dataset == "abdomen":
        options["half_resolution"] = half_resolution
    if spatial_size is not None:
        size = tuple(int(v) for v in spatial_size)
        if dataset == "abdomen":  # its chain resizes only in the half-resolution step
            options.update(half_resolution=True, half_size=size)
        else:
            options["spatial_size"] = size
    return dataset_transforms(dataset, **options)


def limit(items: Sequence, n: int | None) -> list:
    """The first ``n`` items (all with ``None``): short demo runs and tests on few pairs."""
    items = list(items)
    if n is None:
        return items
    if int(n) < 1:
        raise ValueError(f"expected a positive number of pairs, got {n}")
    return items[: int(n)]


class ValidationState:
    """The validation's best so far as one entry of the ``last_checkpoint_*.pt`` (train.json's
    ``train#checkpointer``): the evaluator's ``best_metric`` / ``best_metric_epoch`` and the key-metric
    ``CheckpointSaver``'s list of what it kept. Without it a resumed run starts at best -1, so its first
    validation overwrites ``model.pt`` with a worse network and the export names the wrong best epoch.
    """

    def __init__(self, evaluator, saver=None):
        self.evaluator = evaluator
        self.saver = saver

    def _key_checkpoint(self):
        return getattr(self.saver, "_key_metric_checkpoint", None) if self.saver is not None else None

    def state_dict(self) -> dict:
        state = {"best_metric": float(self.evaluator.state.best_metric),
                 "best_metric_epoch": int(self.evaluator.state.best_metric_epoch)}
        checkpoint = self._key_checkpoint()
        if checkpoint is not None:
            state["saved"] = [[float(priority), str(filename)] for priority, filename in checkpoint.state_dict()["_saved"]]
        return state

    def load_state_dict(self, state: Mapping, source_dir: str | os.PathLike | None = None) -> None:
        """Restore the best so far. ``source_dir``: the stopped run's folder (the resumed checkpoint's). A run
        resumed into another ``output_dir`` gets the best weights file copied from there: the saver would
        otherwise try to delete a file its folder does not hold at the first new best (FileNotFoundError,
        the run lost), and an export without a new best would find no weights. An entry whose file is in
        neither folder is dropped, with a warning."""
        self.evaluator.state.best_metric = float(state["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state["best_metric_epoch"])
        if self._key_checkpoint() is None or not state.get("saved"):
            return
        save_dir = Path(self.saver.save_dir)
        # the saver lists ignite's own names; MONAI's handler writes them under its fixed name (model.pt)
        fixed_name = getattr(self._key_checkpoint().save_handler, "filename", None)
        saved = []
        for priority, filename in state["saved"]:
            on_disk = fixed_name or str(filename)
            here = save_dir / on_disk
            there = Path(source_dir) / on_disk if source_dir is not None else None
            if not here.is_file() and there is not None and there.is_file():
                save_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(there, here)
                logger.info(f"resumed into {save_dir}: the best weights so far copied from {there}")
            if here.is_file():
                saved.append((float(priority), str(filename)))
            else:
                logger.warning(f"resume: the best weights so far ({on_disk}, validation {float(priority):.4f}) are "
                               f"in neither {save_dir} nor {source_dir}; the best is counted anew from this run")
        if saved:  # MONAI's own resume of the saver's list
            self.saver.load_state_dict({"_saved": saved})
        else:  # no weights file of that best: what model.pt will hold and what the export reports must agree
            self.evaluator.state.best_metric, self.evaluator.state.best_metric_epoch = -1.0, -1


def attach_resume(trainer, resume_from: str | None, network, optimizer=None, validation: ValidationState | None = None):
    """With ``resume_from`` (a ``last_checkpoint_*.pt`` of this bundle), restore network, optimiser,
    trainer state (epoch, iteration) and, when the checkpoint has it, the validation's best so far
    (``validation``, a :class:`ValidationState`) before the run starts; without it do nothing."""
    if not resume_from:
        return None
    state = read_state(resume_from)
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
    if validation is not None and "validation" in state:
        validation.load_state_dict(state["validation"], source_dir=Path(resume_from).parent)
        logger.info(f"resumed: best validation {validation.evaluator.state.best_metric:.4f} "
                    f"at epoch {validation.evaluator.state.best_metric_epoch}")
    return trainer


def log_summary(evaluator, csv_path: str | None = None) -> dict:
    """Log the mean of every per-pair metric after an evaluation run (and where the CSV is)."""
    summary = getattr(evaluator.state, "pair_summary", {}) or {}
    for key, stats in summary.items():
        logger.info(f"{key:>20s}: {stats['mean']:.4f} ± {stats['std']:.4f} (n={stats['n']})")
    if csv_path:
        logger.info(f"per-pair table: {csv_path}")
    return summary


def network_arguments(parser) -> dict:
    """The resolved arguments of a bundle's ``network_def`` (what a ``model.json`` sidecar records)."""
    from samir.model_files import NOT_RECORDED
    from samir.networks.samir_net import as_flag

    raw = parser.get("network_def")
    args = {k: parser.get_parsed_content(f"network_def#{k}") for k in raw if k not in NOT_RECORDED}
    for flag in ("symmetric", "diffeomorphic"):  # a command line's "false" recorded as the bool it means
        if flag in args:
            args[flag] = as_flag(flag, args[flag])
    return args


def train_and_export(export: str | None = None, models_dir: str | None = None, **overrides) -> dict:
    """Run the bundle's ``training`` workflow with ``overrides``; with ``export``, save the best
    ``model.pt`` as ``<models_dir>/<export>.pt`` with its ``<export>.json`` sidecar (network
    arguments and training facts, :func:`samir.model_files.save_model`) so ``samir register`` and
    the other configs can rebuild it. Returns the facts.
    """
    import time

    from samir.model_files import save_model

    start = time.perf_counter()
    wf = bundle_workflow(["train.json"], "training", **overrides)
    wf.run()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    facts = {
        "network": network_arguments(wf.parser),
        "dataset": wf.parser.get_parsed_content("dataset"),
        "dataset_dir": str(wf.parser.get_parsed_content("data_dir")),
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
        target = Path(models_dir or Path(bundle_dir()) / "models") / f"{export}.pt"
        save_model(target, read_state(output_dir / "model.pt"), **facts)
        logger.info(f"exported {target} and {target.with_suffix('.json').name}")
    return facts


def _pair_id(item: Mapping) -> str:
    from samir.data.pairs import pair_id

    return pair_id(item)


class PairRegistrationStep:
    """``inference.json``'s evaluator iteration: register each datalist item of a batch with a
    ``samir.register.Registrar`` into ``output_dir/<pair_id>/`` (what ``samir register`` writes).

    ``__call__(engine, batch)``: ``batch`` is a list of dicts {fixed, moving, fixed_label?, moving_label?,
    pair_id?} of paths (a ``DataLoader`` with ``collate_fn=no_collation``) or one such dict; returns
    ``{"pairs": [metrics row per item], "results": [RegistrationResult per item]}`` for the handlers.
    """

    def __init__(self, registrar, output_dir: str | os.PathLike):
        self.registrar = registrar
        self.output_dir = Path(output_dir)

    def register(self, item: Mapping):
        """Register one datalist item; returns its ``RegistrationResult``."""
        return self.registrar.register_files(
            item["fixed"], item["moving"], self.output_dir / _pair_id(item),
            moving_label=item.get("moving_label"), fixed_label=item.get("fixed_label"),
        )

    def __call__(self, engine, batch) -> dict:
        items = [batch] if isinstance(batch, Mapping) else list(batch)
        results = [self.register(item) for item in items]
        rows = [{"pair_id": _pair_id(item), **{k: v for k, v in r.metrics.items() if isinstance(v, (int, float))}}
                for item, r in zip(items, results)]
        return {"pairs": rows, "results": results}


class LogPaird:
    """Post-transform of ``inference.json``: log one line per registered pair (where its outputs are,
    Dice, folding, seconds) and pass the output on."""

    def __call__(self, output: dict) -> dict:
        for result in output.get("results") or []:
            m = result.metrics
            dice = f", Dice {m['dice_mean']:.3f}" if m.get("dice_mean") is not None else ""
            logger.info(
                f"registered → {result.out_dir}{dice}, folding {m.get('folding_pct', float('nan')):.3f} %, "
                f"{m.get('seconds', float('nan')):.1f} s"
            )
        return output
