"""Benchmark table: identity, the classical peer, the no-SAM baseline, SAMIR, SAMIR + optimisation.

``run_benchmark(dataset="acdc")`` scores each method on the held-out pairs with
:func:`samir.evaluation.evaluate_pairs` (MONAI's evaluator, the same scoring for every method)
and prints a Markdown table (Dice, HD95, folding %, SDlogJ, seconds per pair) with a ratio line
against the classical peer. Every DDF is (B, 3, H, W, D) in voxels of the fixed grid
(:mod:`samir.spatial`).

Methods:

* ``identity``: zero field;
* ``demons``: SimpleITK multi-resolution fast symmetric forces demons (:mod:`samir.classical`);
* ``ants``: ANTs affine + SyN (``antspyx``, the ``peers`` extra; :func:`samir.classical.ants_syn_register`);
* ``elastix``: elastix affine + B-spline (``itk-elastix``, the ``peers`` extra;
  :func:`samir.classical.elastix_bspline_register`);
* ``baseline``: the no-SAM network (``bundle/models/model_baseline.pt``);
* ``samir``: the SAMIR network (``bundle/models/model.pt`` + ``model.json``);
* ``samir+opt``: the SAMIR network's output refined by :func:`samir.optimize.optimize_pair`;
  without SAMIR weights it runs from identity (no network) and the row says so;
* ``opt``: :func:`samir.optimize.optimize_pair` from identity on the frozen ``encoder``.

Rows whose weights (or, for ``ants``/``elastix``, whose wheels) do not exist are skipped with a
printed note. The peers get the fixed image's voxel spacing (mm) and ``peer_metric`` ("auto": a
same-contrast metric, CC/NCC, when :func:`samir.classical.same_contrast` says so, else mutual
information); their one-off library import is done before the clock starts. Seconds per pair include
encoding with the frozen SAM encoder where the embedding cache is cold (each volume is encoded
once; ACDC's ED→ES and ES→ED pairs share their volumes).

Run: ``python -m samir.tools.accuracy_table --dataset acdc --n_pairs 4``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["run_benchmark", "METHOD_NAMES"]

METHOD_NAMES = {
    "identity": "identity",
    "demons": "SimpleITK demons (classical peer)",
    "ants": "ANTs SyN (classical peer)",
    "elastix": "elastix B-spline (classical peer)",
    "baseline": "no-SAM baseline network",
    "samir": "SAMIR network",
    "samir+opt": "SAMIR + optimisation",
    "opt": "optimisation from identity (SAM features, no weights)",
    "fast": "SAMIR training-free core (preset defaults)",
    "fast-mind": "SAMIR training-free core, MIND only",
    "fast-sam": "SAMIR training-free core, SAM + MIND",
    "samir+fast": "SAMIR network + fast refinement (the cardiac default)",
}
#: the registration preset whose network and training-free options suit each data set
DATASET_PRESETS = {"acdc": "cardiac", "acdc_alt": "cardiac", "abdomen": "abdomen"}
COLUMNS = ("dice_mean", "hd95_mean", "folding_pct", "sdlogj", "seconds")
HEADERS = ("method", "pairs", "Dice", "HD95 mm", "folding %", "SDlogJ", "s / pair")


def _mean(values) -> float:
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    v = [x for x in v if math.isfinite(x)]
    return sum(v) / len(v) if v else math.nan


def _network(path, what):
    from samir.model_files import load_model

    return load_model(path, what=what).eval()


def _net_fn(net, dataset: str):
    """register_fn of a network alone, run on its preset's model grid (as ``samir register`` runs it: the
    abdominal networks see 8 mm), its DDF resampled to the chain's grid; no guard, the raw network."""
    from samir.presets import PRESETS
    from samir.register import model_grid
    from samir.spatial import resize_ddf
    from samir.training import spacing_of

    preset = PRESETS[DATASET_PRESETS.get(dataset, "generic")]

    def fn(moving, fixed):
        grid = tuple(int(s) for s in fixed.shape[2:])
        size = model_grid(preset, grid, spacing_of(fixed) or (1.0, 1.0, 1.0))
        if size != grid:
            moving, fixed = (torch.nn.functional.interpolate(x, size=size, mode="trilinear", align_corners=False)
                             for x in (moving, fixed))
        with torch.no_grad():
            return resize_ddf(net(torch.cat([moving, fixed], dim=1)), grid)

    return fn


def _peer_fn(method: str, metric: str, kwargs: dict):
    """register_fn of the ``ants`` / ``elastix`` row, its library loaded (outside the timed calls)."""
    from samir.classical import ants_syn_register, elastix_bspline_register
    from samir.training import spacing_of

    if method == "ants":
        import ants  # noqa: F401

        register = ants_syn_register
    else:
        import itk

        itk.ParameterObject.New()  # itk loads its modules lazily: elastix's on first use (tens of seconds)
        _ = itk.elastix_registration_method, itk.transformix_deformation_field
        register = elastix_bspline_register

    # one vocabulary for both rows: cc/ncc (same contrast), mi/mattes (mutual information), auto
    metric = str(metric).lower()
    metric = ({"ncc": "cc", "mattes": "mi"} if method == "ants" else {"cc": "ncc", "mi": "mattes"}).get(metric, metric)

    def fn(moving, fixed):
        return register(moving, fixed, spacing=spacing_of(fixed), metric=metric, **kwargs)

    return fn


def _registrar_fn(dataset: str, method: str, weights, cache_dir, iterations):
    """register_fn for the rows that run :class:`samir.register.Registrar` on the chain's tensors."""
    from samir.presets import PRESETS
    from samir.register import Registrar, model_grid
    from samir.training import spacing_of

    preset = DATASET_PRESETS.get(dataset, "generic")
    options = {"fast-mind": {"sam_weight": 0.0}, "fast-sam": {"sam_weight": 1.0}}.get(method, {})
    reg = Registrar(preset=preset, weights=str(weights) if method == "samir+fast" else None, cache_dir=cache_dir,
                    device="cpu", from_identity=method != "samir+fast", iterations=iterations, verbose=False,
                    fast_options=options)

    def fn(moving, fixed):  # the model grid of samir register (the abdominal network's 8 mm)
        spacing = spacing_of(fixed) or (1.0, 1.0, 1.0)
        size = model_grid(PRESETS[preset], fixed.shape[2:], spacing)
        return reg.predict_ddf(fixed.float(), moving.float(), preset, size, spacing=spacing, scale_intensity=False)

    return fn


def _network_row(method: str) -> tuple[str | None, bool]:
    """``net:NAME`` → (NAME, False), ``net:NAME+fast`` → (NAME, True); any other method → (None, False)."""
    if not method.startswith("net:"):
        return None, False
    name = method[4:]
    return (name[:-5], True) if name.endswith("+fast") else (name, False)


def scored_pairs(dataset: str, root: str | None, split: str, n_pairs: int | None, transform_kwargs: dict | None = None):
    """What a table scores: ``(spec, data root, the first n_pairs pairs of split, labels, MONAI chain)``."""
    from samir.data.registry import dataset_pairs, dataset_transforms, get_dataset, resolve_data_root

    spec = get_dataset(dataset)
    data_root = resolve_data_root(dataset, root)
    pairs = dataset_pairs(dataset, data_root, split)
    if n_pairs:
        pairs = pairs[: int(n_pairs)]
    labels = spec.labels or _labels_of_pairs(pairs)
    return spec, data_root, pairs, labels, dataset_transforms(dataset, **(transform_kwargs or {}))


def _labels_of_pairs(pairs) -> dict[int, str]:
    """Label values (> 0) of the first pair's label maps, for data sets that declare none (``pairs``)."""
    import nibabel as nib
    import numpy as np

    values: set[int] = set()
    for key in ("fixed_label", "moving_label"):
        if pairs and pairs[0].get(key):
            values |= {int(v) for v in np.unique(np.asarray(nib.load(pairs[0][key]).dataobj)) if v > 0}
    # no labels: Dice/HD95 are not computed (the step scores the field only); any one value will do
    return {v: str(v) for v in sorted(values)} or {1: "1"}


def run_benchmark(
    dataset: str = "acdc",
    root: str | None = None,
    n_pairs: int | None = 4,
    methods: Sequence[str] = ("identity", "demons", "baseline", "samir", "samir+opt"),
    encoder: str = "litemedsam",
    weights: str | None = None,
    baseline_weights: str | None = None,
    out_csv: str | None = None,
    split: str = "test",
    iterations=None,
    cache_dir=True,
    hd95: bool = True,
    transform_kwargs: dict | None = None,
    peer_metric: str = "auto",
    peer_kwargs: dict | None = None,
    networks: dict | None = None,
) -> list[dict]:
    """Score ``methods`` on the first ``n_pairs`` of ``dataset``'s ``split`` and print the table.

    ``root`` None: the synthetic stand-in (``samir.data.registry.resolve_data_root``). ``weights`` /
    ``baseline_weights`` default to ``bundle/models/model.pt`` / ``model_baseline.pt``. ``encoder``
    is the frozen encoder of the optimisation from identity; ``cache_dir`` its embedding cache
    (:func:`samir.encoders.cache.parse_cache_option`: True/None: default place, False/"off": off).
    Returns one summary dict per method (``out_csv``: every method's per-pair rows and its mean row). ``peer_metric`` / ``peer_kwargs`` go to the
    ``ants`` and ``elastix`` rows (e.g. ``peer_kwargs={"elastix": {"iterations": 1000}}``). For the
    ``pairs`` data set (a datalist json as ``root``) the labels scored are the values found in the first
    pair's label files. ``networks`` ({NAME: weights file}) adds the ablation rows ``net:NAME`` (that
    network alone) and ``net:NAME+fast`` (that network, then the fast refinement, as ``samir register``
    runs it; a no-SAM network is refined on MIND alone) to the methods one may ask for.
    """
    from samir.bundle import bundle_dir
    from samir.classical import PEER_PACKAGES, demons_register, peer_available
    from samir.evaluation import evaluate_pairs, format_table, identity_register
    from samir.optimize import optimize_pair

    networks = {str(k): Path(v) for k, v in (networks or {}).items()}
    unknown = [m for m in methods if m not in METHOD_NAMES and _network_row(m)[0] not in networks]
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; valid: {', '.join(METHOD_NAMES)}, or net:NAME and "
                         f"net:NAME+fast for a NAME of networks ({', '.join(networks) or 'none given'})")
    missing = {k: str(v) for k, v in networks.items() if not v.is_file()}
    if missing:
        raise FileNotFoundError(f"networks: no weights file for {missing}")
    spec, data_root, pairs, labels, transform = scored_pairs(dataset, root, split, n_pairs, transform_kwargs)
    models = Path(bundle_dir()) / "models"
    weights = Path(weights) if weights else models / "model.pt"
    baseline_weights = Path(baseline_weights) if baseline_weights else models / "model_baseline.pt"

    slice_encoder = None

    def sam_encoder():
        nonlocal slice_encoder
        if slice_encoder is None:
            from samir.encoders import SliceEncoder, build_encoder
            from samir.encoders.cache import parse_cache_option

            slice_encoder = SliceEncoder(build_encoder(encoder), cache=parse_cache_option(cache_dir))
        return slice_encoder

    samir_net = None
    summaries = []
    pair_rows: list[dict] = []  # every method's per-pair rows, for out_csv
    print(f"Benchmark: {spec.name} at {data_root}, split '{split}', {len(pairs)} pairs")
    for method in methods:
        net_name, refine = _network_row(method)
        label = METHOD_NAMES.get(method) or (f"network '{net_name}'" + (" + fast refinement" if refine else ""))
        if net_name is not None and refine:
            fn = _registrar_fn(dataset, "samir+fast", networks[net_name], cache_dir, iterations)
        elif net_name is not None:
            net = _network(networks[net_name], f"network '{net_name}'")
            fn = _net_fn(net, dataset)
            if net.symmetric or net.passes > 1:  # as its sidecar runs it
                label += " (" + ", ".join((["both directions"] if net.symmetric else [])
                                          + ([f"{net.passes} passes"] if net.passes > 1 else [])) + ")"
        elif method == "identity":
            fn = identity_register
        elif method == "demons":
            def fn(moving, fixed):
                return demons_register(moving, fixed)
        elif method in ("ants", "elastix"):
            if not peer_available(method):
                print(f"note: skipping '{label}': the {PEER_PACKAGES[method][1]} wheel is not installed "
                      "(pip install 'samir[peers]')")
                continue
            fn = _peer_fn(method, peer_metric, (peer_kwargs or {}).get(method, {}))
        elif method in ("fast", "fast-mind", "fast-sam", "samir+fast"):
            if method == "samir+fast" and not weights.is_file():
                print(f"note: skipping '{label}': no weights at {weights}")
                continue
            fn = _registrar_fn(dataset, method, weights, cache_dir, iterations)
        elif method == "baseline":
            if not baseline_weights.is_file():
                print(f"note: skipping '{label}': no weights at {baseline_weights}")
                continue
            fn = _net_fn(_network(baseline_weights, "the no-SAM baseline"), dataset)
        elif method in ("samir", "samir+opt"):
            if samir_net is None and weights.is_file():
                samir_net = _network(weights, "SAMIR")
            if samir_net is None:
                if method == "samir":
                    print(f"note: skipping '{label}': no weights at {weights}")
                    continue
                print(f"note: no SAMIR weights at {weights}: '{label}' runs from identity ({encoder} features)")
                label = METHOD_NAMES["opt"] + f" [{encoder}]"

                def fn(moving, fixed):
                    return optimize_pair(moving, fixed, sam_encoder=sam_encoder(), iterations=iterations)
            elif method == "samir":
                fn = _net_fn(samir_net, dataset)
            else:
                net = samir_net

                def fn(moving, fixed, net=net):
                    with torch.no_grad():
                        ddf = net(torch.cat([moving, fixed], dim=1))
                    return optimize_pair(moving, fixed, init_ddf=ddf, sam_encoder=net.sam_encoder,
                                         iterations=iterations)
        else:  # "opt"
            label = METHOD_NAMES["opt"] + f" [{encoder}]"

            def fn(moving, fixed):
                return optimize_pair(moving, fixed, sam_encoder=sam_encoder(), iterations=iterations)

        t0 = time.perf_counter()
        rows = evaluate_pairs(pairs, transform, labels, register_fn=fn, hd95=hd95)
        summary = {"method": label, "key": method, "pairs": len(rows),
                   **{c: _mean(r.get(c) for r in rows) for c in COLUMNS}}
        summaries.append(summary)
        pair_rows.extend({"method": label, "key": method, **r} for r in rows)
        print(f"  {label}: Dice {summary['dice_mean']:.3f}, {summary['seconds']:.1f} s/pair "
              f"({time.perf_counter() - t0:.0f} s in all)", flush=True)

    print()
    print(format_table(summaries, ("method", "pairs", *COLUMNS), HEADERS))
    peer = next((s for s in summaries if s["key"] == "demons"), None)
    best = next((s for s in summaries if s["key"] == "samir+opt"), None) or next(
        (s for s in summaries if s["key"] == "opt"), None)
    if peer and best:
        print(f"\n{best['method']} vs {peer['method']}: Dice {best['dice_mean']:.3f} / {peer['dice_mean']:.3f} "
              f"= ×{best['dice_mean'] / peer['dice_mean']:.3f}; seconds {best['seconds']:.1f} / {peer['seconds']:.1f} "
              f"= ×{best['seconds'] / max(peer['seconds'], 1e-9):.2f}")
    if out_csv and pair_rows:
        from samir.training import write_pair_csv

        write_pair_csv(out_csv, pair_rows, group_by=("method", "key"))
    return summaries


if __name__ == "__main__":
    import fire

    fire.Fire(run_benchmark)
