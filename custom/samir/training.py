"""Ignite iteration steps and handlers that plug SAMIR into MONAI's SupervisedTrainer/Evaluator.

MONAI's engines run the loop, the handlers (stats, TensorBoard, checkpoints, validation) and
the metrics; SAMIR only supplies what a registration iteration does. A batch is a dict with
``moving``, ``fixed`` (B, 1, H, W, D) in [0, 1] and, optionally, ``moving_label``,
``fixed_label`` (B, 1, H, W, D) integer maps, as the ``samir.data`` chains produce them.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.networks.utils import one_hot

from samir.metrics import registration_metrics
from samir.spatial import warp_image, warp_label

__all__ = ["RegistrationTrainStep", "RegistrationEvalStep", "PairTableWriter", "TrainingBudget", "pair_inputs", "spacing_of"]


def pair_inputs(batch: Mapping, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(moving, fixed), each (B, 1, H, W, D) float on ``device``, from a ``samir.data`` batch."""
    for key in ("moving", "fixed"):
        if key not in batch:
            raise KeyError(f"batch: expected keys 'moving' and 'fixed', got {sorted(batch)}")
    return (
        torch.as_tensor(batch["moving"]).float().to(device),
        torch.as_tensor(batch["fixed"]).float().to(device),
    )


def spacing_of(image) -> tuple[float, ...] | None:
    """Voxel spacing in mm of a MetaTensor (B, C, H, W, D) from its affine, else None."""
    affine = getattr(image, "affine", None)
    if affine is None:
        return None
    a = torch.as_tensor(affine)
    a = a[0] if a.ndim == 3 else a
    return tuple(float(v) for v in torch.linalg.norm(a[:3, :3].double(), dim=0))


def _trainable(network: torch.nn.Module):
    return [p for p in network.parameters() if p.requires_grad]


class RegistrationTrainStep:
    """``iteration_update`` for ``monai.engines.SupervisedTrainer``: one unsupervised step.

    Forward ``SAMIR(x, return_all=True)`` with x = [moving, fixed], the ``RegistrationLoss``
    terms, backward, optimiser step. Labels are used only when the loss has ``dice_weight`` > 0.
    Returns ``{"loss": float, <term>: float, ...}`` as ``engine.state.output``.

    ``cascade``: the fraction of steps trained as a later inference pass (``SAMIR``'s ``passes``): a
    first pass without gradient, then the step on the pair it leaves (moving image, embedding and
    labels warped by that field), so the network also learns the smaller deformations that its
    second and third passes see at inference. 0 (the default): every step is a first pass.
    """

    def __init__(self, loss_function: torch.nn.Module, num_classes: int | None = None, grad_clip: float | None = 10.0,
                 cascade: float = 0.0):
        self.loss_function = loss_function
        self.num_classes = num_classes
        self.grad_clip = grad_clip
        if not 0.0 <= float(cascade) <= 1.0:
            raise ValueError(f"cascade: expected a fraction of steps in [0, 1], got {cascade}")
        self.cascade = float(cascade)

    def _uses_labels(self) -> bool:
        weights = getattr(self.loss_function, "weights", None)
        return bool(self.num_classes) and (weights is None or bool(weights.get("dice", 1.0)))

    def __call__(self, engine, batch: Mapping) -> dict:
        network, optimizer = engine.network, engine.optimizer
        network.train()
        moving, fixed = pair_inputs(batch, engine.state.device)
        optimizer.zero_grad(set_to_none=True)
        onehots = {}
        if self._uses_labels() and "moving_label" in batch and "fixed_label" in batch:
            labels = {k: torch.as_tensor(batch[k]).to(engine.state.device).long() for k in ("moving_label", "fixed_label")}
            # mixed training sets (samir.data.mix): a generated pair may hold more labels than the data set
            n = max(int(self.num_classes), 1 + max(int(v.max()) for v in labels.values()))
            onehots = {k: one_hot(v, n) for k, v in labels.items()}
        x, embeddings = torch.cat([moving, fixed], dim=1), {}
        if self.cascade and float(torch.rand(())) < self.cascade:
            core = getattr(network, "module", network)  # SAMIR itself under DistributedDataParallel
            with torch.no_grad():  # the first pass, as inference runs it; the step learns the next one
                if getattr(core, "use_sam", False):
                    m_emb, f_emb = core._embeddings(x, None, None)
                    embeddings = {"moving_embedding": m_emb, "fixed_embedding": f_emb}
                ddf = network(x, **embeddings)
                x, warped_embedding = core.next_pass_inputs(x, ddf, embeddings.get("moving_embedding"))
                if embeddings:
                    embeddings["moving_embedding"] = warped_embedding
                if "moving_label" in onehots:
                    onehots["moving_label"] = warp_image(onehots["moving_label"].float(), ddf)
            moving = x[:, :1]
        outputs = network(x, return_all=True, **embeddings)
        terms = self.loss_function(
            moving, fixed, outputs, onehots.get("moving_label"), onehots.get("fixed_label")
        )
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {float(loss)} (terms: { {k: float(v) for k, v in terms.items()} })")
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(_trainable(network), self.grad_clip)
        optimizer.step()
        return {k: float(v.detach()) for k, v in terms.items()}


class TrainingBudget:
    """Ignite handler: stop a training run within a wall-time and/or iteration budget, at an epoch end.

    * ``max_seconds``: at each epoch end, stop when the next epoch (its length estimated by the mean
      epoch time of this run) would end past the budget; if an epoch overruns the budget anyway, stop
      at once (the last epoch checkpoint stays the resume point).
    * ``max_iterations``: stop at the end of the epoch in which the trainer's total iteration count
      (resumed runs included) reaches it.

    Epoch-end stops leave the epoch-level ``CheckpointSaver`` (``last_checkpoint_*``) of the last finished
    epoch, so ``resume_from`` continues exactly there. ``engine.state.budget`` records what happened
    (seconds, iterations, epochs run, the reason for stopping).
    """

    def __init__(self, max_seconds: float | None = None, max_iterations: int | None = None):
        self.max_seconds = float(max_seconds) if max_seconds not in (None, "", 0) else None
        self.max_iterations = int(max_iterations) if max_iterations not in (None, "", 0) else None
        self.start = None
        self.epoch_seconds: list[float] = []
        self._epoch_start = None
        self._start_iteration = 0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        if self.max_seconds is not None:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self._record)
        engine.add_event_handler(Events.TERMINATE, self._record)

    def elapsed(self) -> float:
        return 0.0 if self.start is None else time.perf_counter() - self.start

    def _started(self, engine) -> None:
        self.start = time.perf_counter()
        self._start_iteration = int(engine.state.iteration)
        engine.state.budget = {"stopped": None}

    def _epoch_started(self, engine) -> None:
        self._epoch_start = time.perf_counter()

    def _stop(self, engine, reason: str) -> None:
        engine.state.budget = {**getattr(engine.state, "budget", {}), "stopped": reason}
        engine.terminate()

    @staticmethod
    def _agree(engine, flag: bool) -> bool:
        """Under torch.distributed, stop when any rank wants to (every rank calls this at the same point)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return flag
        device = engine.state.device if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def _iteration_completed(self, engine) -> None:
        if self._agree(engine, self.elapsed() > self.max_seconds):
            self._stop(engine, f"max_seconds {self.max_seconds:g} passed during epoch {engine.state.epoch}")

    def _epoch_completed(self, engine) -> None:
        self.epoch_seconds.append(time.perf_counter() - (self._epoch_start or self.start))
        reason = None
        if self.max_iterations is not None and engine.state.iteration >= self.max_iterations:
            reason = f"max_iterations {self.max_iterations} reached"
        elif self.max_seconds is not None:
            mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
            if self.elapsed() + mean > self.max_seconds and engine.state.epoch < (engine.state.max_epochs or 0):
                reason = f"max_seconds {self.max_seconds:g}: no time for another epoch (~{mean:.1f} s)"
        budgeted = self.max_seconds is not None or self.max_iterations is not None  # no collective without a budget
        if budgeted and self._agree(engine, reason is not None):
            self._stop(engine, reason or "another rank's budget")
        self._record(engine)

    def _record(self, engine) -> None:
        engine.state.budget = {
            **getattr(engine.state, "budget", {}),
            "seconds": round(self.elapsed(), 1),
            "iterations_this_run": int(engine.state.iteration) - self._start_iteration,
            "iteration": int(engine.state.iteration),
            "epoch": int(engine.state.epoch),
            "mean_epoch_seconds": round(sum(self.epoch_seconds) / len(self.epoch_seconds), 2) if self.epoch_seconds else None,
        }


class RegistrationEvalStep:
    """``iteration_update`` for ``monai.engines.SupervisedEvaluator``: register, warp labels, score.

    ``register_fn(moving, fixed) -> ddf`` defaults to ``engine.network`` on [moving, fixed];
    pass another (identity, instance optimisation, a classical method) to score it the same way.
    Output: ``pred`` (warped moving label, one-hot), ``label`` (fixed label, one-hot) for MONAI's
    MeanDice handler, and ``pairs``: one metrics dict per pair (Dice per label, HD95 mm unless ``hd95=False``,
    folding %, SDlogJ, seconds).
    """

    def __init__(self, labels: Mapping[int, str], register_fn=None, hd95: bool = True):
        self.labels = dict(labels)
        self.num_classes = max(self.labels) + 1
        self.register_fn = register_fn
        self.hd95 = hd95

    def __call__(self, engine, batch: Mapping) -> dict:
        device = engine.state.device
        moving, fixed = pair_inputs(batch, device)
        start = time.perf_counter()
        with torch.no_grad():
            if self.register_fn is not None:
                ddf = self.register_fn(moving, fixed)
            else:
                engine.network.eval()
                ddf = engine.network(torch.cat([moving, fixed], dim=1))
        seconds = (time.perf_counter() - start) / moving.shape[0]
        out: dict = {"ddf": ddf, "pairs": []}
        if "moving_label" not in batch or "fixed_label" not in batch:
            out["pairs"] = [
                {"folding_pct": m["folding_pct"], "sdlogj": m["sdlogj"], "seconds": seconds}
                for m in (registration_metrics(ddf[i : i + 1]) for i in range(ddf.shape[0]))
            ]
            return out
        moving_label = torch.as_tensor(batch["moving_label"]).to(device)
        fixed_label = torch.as_tensor(batch["fixed_label"]).to(device)
        warped = warp_label(moving_label, ddf)
        spacing = spacing_of(batch["fixed"]) if self.hd95 else None
        for i in range(ddf.shape[0]):
            metrics = registration_metrics(
                ddf[i : i + 1], warped[i : i + 1], fixed_label[i : i + 1], self.labels, spacing=spacing, hd95=self.hd95,
            )
            metrics["seconds"] = seconds
            metrics["pair_id"] = _pair_id(batch, i)
            out["pairs"].append(metrics)
        out["pred"] = one_hot(warped.long(), self.num_classes)
        out["label"] = one_hot(fixed_label.long(), self.num_classes)
        out["warped_image"] = warp_image(moving, ddf)
        return out


def _pair_id(batch: Mapping, i: int) -> str:
    ids = batch.get("pair_id")
    if ids is not None:
        return str(ids[i] if isinstance(ids, (list, tuple)) else ids)
    meta = getattr(batch.get("moving"), "meta", {}) or {}
    names = meta.get("filename_or_obj")
    return os.path.basename(str(names[i] if isinstance(names, (list, tuple)) else names)) if names else str(i)


class PairTableWriter:
    """Ignite handler: collect ``output["pairs"]`` each iteration, write a CSV and a summary at the end.

    The CSV has a row per pair and a last row ``mean``; the summary (mean ± std per column) is
    kept in ``engine.state.pair_summary`` and, when ``summary_path`` is given, written as JSON.
    """

    def __init__(self, csv_path: str | None = None, summary_path: str | None = None):
        self.csv_path = csv_path
        self.summary_path = summary_path
        self.rows: list[dict] = []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _collect(self, engine) -> None:
        output = engine.state.output
        outputs = output if isinstance(output, list) else [output]
        for o in outputs:
            self.rows.extend(o.get("pairs", []))

    def summary(self) -> dict:
        return summarise(self.rows)

    def _write(self, engine) -> None:
        engine.state.pair_summary = self.summary()
        if self.csv_path:
            write_pair_csv(self.csv_path, self.rows)
        if self.summary_path:
            import json

            from samir.io import atomic_write

            with atomic_write(self.summary_path) as tmp, open(tmp, "w") as f:
                json.dump(engine.state.pair_summary, f, indent=2)


def summarise(rows: list[dict]) -> dict:
    """Mean and std of every numeric column over pairs (NaN-aware): {column: {"mean", "std", "n"}}."""
    columns = [k for k in (rows[0] if rows else {}) if k != "pair_id"]
    out = {}
    for c in columns:
        values = np.array([r.get(c, math.nan) for r in rows], dtype=float)
        finite = values[np.isfinite(values)]
        out[c] = {
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std()) if finite.size else math.nan,
            "n": int(finite.size),
        }
    return out


def write_pair_csv(path: str, rows: list[dict], group_by: Sequence[str] = ()) -> None:
    """Write one row per pair plus a ``mean`` row, atomically.

    ``group_by``: columns that split ``rows`` into groups (e.g. ``("method", "key")`` for a table of
    several methods): they lead the columns, and each group, in order of appearance, gets its own
    ``mean`` row after its pairs."""
    from samir.io import atomic_write

    if not rows:
        raise ValueError(f"no pairs were evaluated, nothing to write to {path}")
    columns = [*group_by, "pair_id"]
    for r in rows:
        columns += [k for k in r if k not in columns]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(g) for g in group_by), []).append(r)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for key, members in groups.items():
            for r in members:
                writer.writerow({k: _fmt(r.get(k)) for k in columns})
            summary = summarise([{k: v for k, v in r.items() if k not in group_by} for r in members])
            writer.writerow({**dict(zip(group_by, key)), "pair_id": "mean",
                             **{k: _fmt(summary[k]["mean"]) for k in columns if k in summary}})


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v
