"""Scoring registrations on a data set's pairs, with MONAI's evaluator, and printing tables.

The bundle's ``evaluating`` workflow, ``samir baseline`` and ``samir evaluate`` all run pairs
through ``RegistrationEvalStep`` in a ``monai.engines.SupervisedEvaluator``; only the
registration function differs (identity, the network, instance optimisation, a classical peer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator

from samir.training import PairTableWriter, RegistrationEvalStep, summarise

__all__ = ["identity_register", "evaluate_pairs", "format_table", "identity_baseline", "direction_of"]


def identity_register(moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """The identity: a zero DDF (B, 3, H, W, D) on the fixed grid."""
    return fixed.new_zeros((fixed.shape[0], 3, *fixed.shape[2:]))


def evaluate_pairs(
    pairs: Sequence[Mapping],
    transform,
    labels: Mapping[int, str],
    register_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    network: torch.nn.Module | None = None,
    device: str | torch.device = "cpu",
    csv_path: str | None = None,
    hd95: bool = True,
) -> list[dict]:
    """Register every pair and score it; returns one metrics dict per pair (and writes ``csv_path``).

    Either ``register_fn(moving, fixed) -> ddf`` (tensors (B, 1, H, W, D) → (B, 3, H, W, D) voxels)
    or ``network`` (called on [moving, fixed]) registers.
    """
    if (register_fn is None) == (network is None):
        raise ValueError("evaluate_pairs: give exactly one of register_fn and network")
    items = []
    for p in pairs:
        item = dict(p)
        item.setdefault("pair_id", _default_pair_id(item))
        items.append(item)
    loader = DataLoader(Dataset(items, transform=transform), batch_size=1, num_workers=0)
    writer = PairTableWriter(csv_path)
    evaluator = SupervisedEvaluator(
        device=torch.device(device),
        val_data_loader=loader,
        network=network if network is not None else torch.nn.Identity(),
        iteration_update=RegistrationEvalStep(labels, register_fn=register_fn, hd95=hd95),
        val_handlers=[writer],
        amp=False,
    )
    evaluator.run()
    return list(writer.rows)


def _default_pair_id(item: Mapping) -> str:
    from pathlib import Path

    name = lambda p: Path(str(p)).name.split(".nii")[0]  # noqa: E731
    return f"{name(item['moving'])}->{name(item['fixed'])}"


def direction_of(pair_id: str) -> str:
    """'ED->ES' / 'ES->ED' for ACDC pair ids, else 'all'."""
    for d in ("ED->ES", "ES->ED"):
        if d in pair_id:
            return d
    return "all"


def format_table(rows: Sequence[Mapping], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    """A plain-text (Markdown) table of ``rows`` over ``columns``; floats to 3 decimals."""
    headers = list(headers or columns)

    def cell(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.3f}"
        return str(v)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def grouped_summary(rows: Sequence[Mapping], key: Callable[[str], str] = direction_of) -> list[dict]:
    """Mean of every metric per group of pair ids (e.g. per ACDC direction), plus ``all``."""
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(key(str(r.get("pair_id", ""))), []).append(r)
    out = []
    for name, members in [*sorted(groups.items()), ("all", list(rows))] if len(groups) > 1 else [("all", list(rows))]:
        s = summarise(members)
        out.append({"group": name, "n": len(members), **{k: v["mean"] for k, v in s.items()}})
    return out


def identity_baseline(dataset: str = "acdc", root: str | None = None, split: str = "test",
                      csv_path: str | None = None) -> tuple[list[dict], str]:
    """The identity baseline (Dice per label, HD95) of ``dataset``'s ``split`` pairs: the per-pair rows
    and the table as text (``samir baseline`` prints it).

    Without ``root`` a synthetic stand-in is written on first use (see ``resolve_data_root``).
    """
    from samir.data.registry import dataset_pairs, dataset_transforms, get_dataset, resolve_data_root

    spec = get_dataset(dataset)
    data_root = resolve_data_root(dataset, root)
    pairs = dataset_pairs(dataset, data_root, split)
    rows = evaluate_pairs(pairs, dataset_transforms(dataset), spec.labels, register_fn=identity_register,
                          csv_path=csv_path)
    summary = grouped_summary(rows)
    names = list(spec.labels.values())
    columns = ["group", "n", *[f"dice_{n}" for n in names], "dice_mean", "hd95_mean", "folding_pct"]
    table = format_table(summary, columns, ["direction", "pairs", *[f"Dice {n}" for n in names], "Dice mean",
                                            "HD95 mm", "folding %"])
    return rows, f"Identity baseline: {spec.name} at {data_root}, split '{split}', {len(rows)} pairs\n{table}"
