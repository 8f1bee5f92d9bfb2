"""Mixing data sets for training: the main data set's pairs plus generated pairs, at a given ratio.

The bundle's ``mix`` key names the extra sources and their share of the training set::

    "mix": {"synthmorph": 0.5}                       # half of the training pairs are SynthMorph-style
    "mix": {"synthmorph": {"ratio": 0.3, "fresh": false, "p_cross": 0.5, "n_labels": [8, 16]}}

``ratio`` is the fraction of the *union*: with ``n`` main pairs and ratios ``r_k`` (sum < 1), source
``k`` adds ``round(n * r_k / (1 - sum r))`` entries (or exactly ``"n"`` when given). Options other
than ``ratio``/``n``/``fresh``/``shape`` go to :func:`samir.data.synthetic_labels.synth_pair`;
``anatomy_files`` (paths or a glob, e.g. ``"data/synthetic_acdc/training/*/*_gt.nii.gz"``) are phantom
label maps pasted into the random maps (with probability ``p_anatomy``, default 0.5).

* :func:`mix_pairs` builds the union datalist: main entries tagged ``source=<dataset>``, then one
  recipe per generated pair (``{"source": "synthmorph", "synth_index": i, "pair_id": ...}``);
* :func:`mix_transform` wraps the main chain: main entries go through it (cached by ``CacheDataset``:
  the dispatcher is deterministic), recipes become pairs in a random transform after the cache, on the
  main data's grid (probed from its first pair) with its label dtype. With ``fresh`` (default) every
  epoch gets new pairs (reproducible under ``set_determinism`` in a single-process loader); with
  ``fresh=False`` recipe ``i`` is always the pair of seed ``(seed, i)``.

Without ``mix`` (``{}``/``None``) both functions return their input unchanged.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.transforms import Compose, MapTransform, Randomizable

__all__ = ["MIX_SOURCES", "parse_mix", "mix_pairs", "mix_transform", "source_counts", "MixDispatchd", "SynthPaird"]

MIX_SOURCES = ("synthmorph",)
_KEPT = ("fixed", "moving", "fixed_label", "moving_label", "pair_id", "source")
_NOT_SYNTH = ("ratio", "n", "fresh", "shape")


def parse_mix(mix) -> dict[str, dict]:
    """``mix`` (None, {}, {name: ratio}, {name: {ratio, ...}}, or their text form from a command line,
    e.g. ``"{'synthmorph': 0.5}"`` or ``"synthmorph:0.5"``) → {name: {"ratio": r, ...options}}."""
    if mix in (None, "", "none", "None", False) or (isinstance(mix, Mapping) and not mix):
        return {}
    if isinstance(mix, str):
        text = mix.strip()
        if text.startswith("{"):
            mix = ast.literal_eval(text)
        else:
            mix = {k.strip(): float(v) for k, v in (part.split(":") for part in text.split(",") if part.strip())}
    if not isinstance(mix, Mapping):
        raise ValueError(f"mix: expected {{source: ratio}} (e.g. {{'synthmorph': 0.5}}), got {mix!r}")
    out: dict[str, dict] = {}
    for name, spec in mix.items():
        name = str(name).lower()
        if name not in MIX_SOURCES:
            raise ValueError(f"mix: unknown source '{name}', expected one of {list(MIX_SOURCES)}")
        spec = dict(spec) if isinstance(spec, Mapping) else {"ratio": spec}
        if "ratio" not in spec and "n" not in spec:
            raise ValueError(f"mix['{name}']: expected a 'ratio' (fraction of the training set) or 'n'")
        if "ratio" in spec:
            spec["ratio"] = float(spec["ratio"])
            if not 0.0 <= spec["ratio"] < 1.0:
                raise ValueError(f"mix['{name}']: expected 0 <= ratio < 1 (fraction of the union), got {spec['ratio']}")
        out[name] = spec
    total = sum(s.get("ratio", 0.0) for s in out.values() if "n" not in s)
    if total >= 1.0:
        raise ValueError(f"mix: the ratios add up to {total:.3g}; expected less than 1 (they are fractions of the union)")
    return out


def mix_pairs(pairs: Sequence[Mapping], mix, seed: int = 0, dataset: str = "main") -> list[dict]:
    """The training datalist: ``pairs`` (tagged ``source=dataset``) plus each mix source's recipes."""
    spec = parse_mix(mix)
    pairs = [dict(p) for p in pairs]
    if not spec:
        return pairs
    n_main = len(pairs)
    total = sum(s.get("ratio", 0.0) for s in spec.values() if "n" not in s)
    out = [{**p, "source": str(dataset)} for p in pairs]
    for name, s in spec.items():
        n = int(s["n"]) if "n" in s else int(round(n_main * s["ratio"] / (1.0 - total)))
        if s.get("ratio", 0) > 0 and "n" not in s:
            n = max(n, 1)
        out += [{"source": name, "synth_index": i, "synth_seed": int(seed), "pair_id": f"{name}_{i:05d}"}
                for i in range(n)]
    return out


def _select(d: Mapping, keep_labels: bool) -> dict:
    keys = _KEPT if keep_labels else tuple(k for k in _KEPT if "label" not in k)
    return {k: d[k] for k in keys if k in d}


class MixDispatchd(MapTransform):
    """Deterministic part of a mixed chain: entries of the main data set go through ``transform`` (and
    keep only fixed, moving, labels, pair_id, source, so that mixed batches collate); recipes of the
    generated sources pass through untouched (they become pairs in :class:`SynthPaird`)."""

    def __init__(self, transform, generated: Sequence[str] = MIX_SOURCES, keep_labels: bool = True):
        super().__init__(keys=("fixed",), allow_missing_keys=True)
        self.transform = transform
        self.generated = set(generated)
        self.keep_labels = keep_labels

    def __call__(self, data: Mapping) -> dict:
        if data.get("source") in self.generated:
            return dict(data)
        out = self.transform(dict(data))
        return _select(out, self.keep_labels)


class SynthPaird(Randomizable, MapTransform):
    """Random part of a mixed chain: a recipe ``{"source": "synthmorph", "synth_index": i, ...}`` becomes
    a pair (MetaTensors (1, *shape), labels in ``label_dtype``) from
    :func:`samir.data.synthetic_labels.synth_pair`; other entries pass through."""

    def __init__(self, options: Mapping[str, Mapping] | None = None, shape: Sequence[int] | None = None,
                 label_dtype: torch.dtype = torch.uint8, keep_labels: bool = True):
        MapTransform.__init__(self, keys=("fixed",), allow_missing_keys=True)
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self.shape = tuple(int(s) for s in shape) if shape is not None else None
        self.label_dtype = label_dtype
        self.keep_labels = keep_labels
        self._anatomy_cache: dict[str, list] = {}

    def _anatomy(self, source: str, files) -> list[np.ndarray]:
        """Label maps to paste (``anatomy_files``: a list of paths or a glob pattern), loaded once."""
        if source not in self._anatomy_cache:
            import glob

            import nibabel as nib

            paths = sorted(glob.glob(files)) if isinstance(files, str) else [str(f) for f in files]
            if not paths:
                raise FileNotFoundError(f"mix['{source}']: anatomy_files {files!r} matches no file")
            self._anatomy_cache[source] = [np.asarray(nib.load(f).dataobj).astype(np.int64) for f in paths]
        return self._anatomy_cache[source]

    def randomize(self, data=None) -> int:
        return int(self.R.randint(0, 2**31 - 1))

    def __call__(self, data: Mapping) -> dict:
        source = data.get("source")
        if source not in self.options:
            return dict(data)
        from samir.data.synthetic_labels import DEFAULT_SHAPE, _to_item, synth_pair

        opts = self.options[source]
        seed = [int(data.get("synth_seed", 0)), int(data["synth_index"])]
        draw = self.randomize()
        if opts.get("fresh", True):
            seed.append(draw)
        shape = opts.get("shape") or self.shape or DEFAULT_SHAPE
        kwargs = {k: v for k, v in opts.items() if k not in _NOT_SYNTH + ("anatomy_files",)}
        if opts.get("anatomy_files"):
            kwargs["anatomy"] = self._anatomy(source, opts["anatomy_files"])
        pair = synth_pair(seed=seed, shape=shape, **kwargs)
        pid = str(data.get("pair_id", f"{source}_{data['synth_index']}"))
        item = _to_item(pair, pid + (f"_{seed[-1]}" if len(seed) > 2 else ""), label_dtype=self.label_dtype)
        item["source"] = source
        return _select(item, self.keep_labels)


def _probe(preprocessing, datalist: Sequence[Mapping], generated) -> tuple[tuple[int, ...] | None, torch.dtype, bool]:
    """Grid, label dtype and whether labels are present, from the main chain's output on its first pair."""
    first = next((d for d in datalist if d.get("source") not in generated), None)
    if first is None:
        return None, torch.uint8, True
    out = preprocessing(dict(first))
    shape = tuple(int(s) for s in out["fixed"].shape[-3:])
    has_labels = "fixed_label" in out and "moving_label" in out
    dtype = torch.as_tensor(out["fixed_label"]).dtype if has_labels else torch.uint8
    return shape, dtype, has_labels


def mix_transform(preprocessing, mix, datalist: Sequence[Mapping] | None = None, seed: int = 0,
                  spatial_size: Sequence[int] | None = None):
    """The training chain of a mixed datalist (``preprocessing`` unchanged without ``mix``).

    ``spatial_size`` of the generated pairs: given, else each source's ``shape`` option, else the
    main chain's output grid on the first main pair of ``datalist``."""
    spec = parse_mix(mix)
    if not spec:
        return preprocessing
    shape, dtype, has_labels = None, torch.uint8, True
    if datalist:
        shape, dtype, has_labels = _probe(preprocessing, datalist, set(spec))
    if spatial_size is not None:
        shape = tuple(int(s) for s in spatial_size)
    synth = SynthPaird(spec, shape=shape, label_dtype=dtype, keep_labels=has_labels)
    synth.set_random_state(seed=int(seed) % (2**32))
    return Compose([MixDispatchd(preprocessing, generated=list(spec), keep_labels=has_labels), synth],
                   log_stats=False)


def source_counts(datalist: Sequence[Mapping]) -> dict[str, int]:
    """How many entries of each source a (mixed) datalist holds."""
    values, counts = np.unique([str(d.get("source", "main")) for d in datalist], return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts)}
