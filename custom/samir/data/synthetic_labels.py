"""Label-driven synthetic pairs in the spirit of SynthMorph (Hoffmann et al., IEEE TMI 2022).

SynthMorph learns contrast-agnostic registration from synthetic label maps alone. Here one pair is:

1. **one label map**: the argmax of ``K`` smoothed noise channels (``K`` in ``n_labels``, 8–26 by
   default, each channel smoothed at its own random scale), optionally with the anatomy labels of a
   phantom (e.g. synthetic ACDC ground truths, ``anatomy``) pasted in at a random place and size;
2. **two deformations** of that map, one per image: a random affine (rotation, scale, shear,
   translation) and a smooth random displacement whose smoothness and amplitude are drawn per pair
   (small and large, local and global), labels warped with nearest neighbour;
3. **two independent intensity draws**: per-label Gaussian mixture (mean, std), per-label texture
   amplitude on a smooth noise field, partial-volume blur, a multiplicative bias field, a gamma,
   random acquisition voxel sizes and slice thickness (the image is blurred through the slice and
   resampled anisotropically down and back up to the grid) and additive noise.
   The label means are shared by fixed and moving (``contrast="same"``, with a small jitter), drawn
   independently (``"cross"``: cross-contrast, a different intensity ordering of the labels) or
   inverted for the moving image (``"inverted"``); the mode is drawn per pair with
   ``p_cross``/``p_invert`` unless forced.

Outputs follow the ``samir.data`` chains: ``fixed``, ``moving`` (1, H, W, D) float32 in [0, 1],
``fixed_label``, ``moving_label`` (1, H, W, D) uint8, as MetaTensors whose affine carries the random
voxel size, plus ``pair_id``. Everything is drawn from ``numpy.random.default_rng(seed)`` (``seed`` an
int or a sequence of ints): the same seed gives the same pair, bit for bit.

* :func:`synth_pair`: one pair (numpy arrays and an ``info`` dict);
* :class:`SynthMorphDataset`: a MONAI ``Dataset`` of ``n`` pairs made on the fly (pair ``i`` from seed
  ``(seed, i)``; with ``fresh=True`` a new pair every time an index is read, for endless data);
* :func:`write_synthmorph_pairs`: pairs written to disk as NIfTI with ``pairs.json`` (keys ``train``,
  ``val``, ``test``, ``pairs``), readable by the generic ``pairs`` dataset and the ``synthmorph`` one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

__all__ = [
    "SYNTHMORPH_LABELS",
    "CONTRASTS",
    "random_label_map",
    "random_deformation",
    "synth_image",
    "synth_pair",
    "SynthMorphDataset",
    "write_synthmorph_pairs",
    "synthmorph_pairs",
]

MAX_LABELS = 26
SYNTHMORPH_LABELS: dict[int, str] = {i: f"label{i:02d}" for i in range(1, MAX_LABELS)}
CONTRASTS = ("same", "cross", "inverted")
DEFAULT_SHAPE = (128, 128, 16)


def _as_rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(list(seed) if isinstance(seed, (list, tuple)) else int(seed))


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], coarse: Sequence[int], channels: int = 1,
                  order: int = 3) -> np.ndarray:
    """(channels, *shape) float32 smooth noise: Gaussian noise on a ``coarse`` grid, upsampled trilinearly
    and smoothed (a Gaussian of half a coarse cell) so no creases remain. ``order`` is kept for API
    compatibility (the upsampling is linear)."""
    import torch

    coarse = [max(2, int(c)) for c in coarse]
    shape = tuple(int(s) for s in shape)
    mid = tuple(min(s, 4 * c) for s, c in zip(shape, coarse))
    base = torch.from_numpy(rng.standard_normal((channels, *coarse)).astype(np.float32))
    up = torch.nn.functional.interpolate(base[None], size=mid, mode="trilinear", align_corners=False)[0].numpy()
    up = gaussian_filter(up, sigma=[0.0] + [0.37 * m / c for m, c in zip(mid, coarse)], mode="nearest", truncate=2.5)
    if mid != shape:
        up = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(up))[None], size=shape,
                                             mode="trilinear", align_corners=False)[0].numpy()
    return up.astype(np.float32, copy=False)


def _resample(img: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Linear resampling of a 3D image to ``size`` (area average when shrinking)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    size = tuple(int(s) for s in size)
    mode = "area" if all(a >= b for a, b in zip(img.shape, size)) else "trilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return torch.nn.functional.interpolate(t, size=size, mode=mode, **kw)[0, 0].numpy()


def _compact(label: np.ndarray) -> np.ndarray:
    """Relabel the values present to 0..n-1 (in increasing order), uint8."""
    values, inverse = np.unique(label, return_inverse=True)
    return inverse.reshape(label.shape).astype(np.uint8)


def _resize_nearest(label: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    idx = [np.minimum((np.arange(s) + 0.5) * (n / s), n - 1).astype(int) for s, n in zip(shape, label.shape)]
    return label[np.ix_(*idx)]


def random_label_map(rng, shape: Sequence[int] = DEFAULT_SHAPE, n_labels: Sequence[int] = (8, 26),
                     anatomy: Sequence[np.ndarray] | None = None, p_anatomy: float = 0.5) -> np.ndarray:
    """A label map (uint8, ``shape``, values 0..K-1, every value present): argmax of ``K`` smooth noise
    channels, each at its own scale; with probability ``p_anatomy`` one of ``anatomy`` (integer maps,
    0 = background) is resized to 40–80 % of the grid and pasted at a random place (its labels on top)."""
    rng = _as_rng(rng)
    shape = tuple(int(s) for s in shape)
    lo, hi = int(n_labels[0]), int(n_labels[-1])
    if not 2 <= lo <= hi <= MAX_LABELS:
        raise ValueError(f"n_labels: expected 2 <= low <= high <= {MAX_LABELS}, got {tuple(n_labels)}")
    k = int(rng.integers(lo, hi + 1))
    paste = None
    if anatomy and rng.random() < p_anatomy:
        paste = np.asarray(anatomy[int(rng.integers(len(anatomy)))])
        paste = _compact(paste)  # 0 background, 1..m structures
        k = max(2, k - int(paste.max()))
    channels = np.empty((k, *shape), dtype=np.float32)
    for c in range(k):
        # each channel's blob size: a coarse grid of 2-6 points in-plane, fewer through thin axes
        n = int(rng.integers(2, 7))
        coarse = [max(2, min(n, s // 2)) for s in shape]
        channels[c] = _smooth_noise(rng, shape, coarse)[0]
    label = np.argmax(channels, axis=0).astype(np.uint8)
    if paste is not None:
        frac = rng.uniform(0.4, 0.8)
        size = [max(2, int(round(s * frac))) for s in shape]
        size[-1] = shape[-1] if shape[-1] < 24 else size[-1]  # thin stacks: all slices
        small = _resize_nearest(paste, size)
        start = [int(rng.integers(0, s - z + 1)) for s, z in zip(shape, size)]
        region = tuple(slice(a, a + z) for a, z in zip(start, size))
        view = label[region]
        label[region] = np.where(small > 0, small.astype(np.int64) + k - 1, view).astype(np.uint8)
    return _compact(label)


def random_deformation(rng, shape: Sequence[int], max_rotation: float = 12.0, max_scale: float = 0.1,
                       max_shear: float = 0.05, max_translation: float = 0.06, max_displacement: float = 0.06,
                       z_factor: float | None = None) -> np.ndarray:
    """Sampling coordinates (3, *shape) in voxels of a random affine ∘ smooth displacement.

    Rotation (degrees, about the slice axis fully, the others at a third of it), scale and shear
    (fractions), translation and displacement (fractions of each axis length). The displacement's
    amplitude and smoothness (3–8 control points per axis) are drawn per call, so deformations of
    varied size come out. ``z_factor`` scales what happens along the last axis (default: its
    length relative to the in-plane size, so thin stacks move less through plane).
    """
    rng = _as_rng(rng)
    shape = tuple(int(s) for s in shape)
    size = np.asarray(shape, dtype=np.float64)
    zf = float(z_factor) if z_factor is not None else min(1.0, size[-1] / size[:-1].mean() * 2.0)
    ang = np.deg2rad(rng.uniform(-max_rotation, max_rotation, size=3) * np.array([zf / 3.0, zf / 3.0, 1.0]))
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rot = (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
           @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))
    scale = np.diag(1.0 + rng.uniform(-max_scale, max_scale, size=3) * np.array([1.0, 1.0, zf]))
    shear = np.eye(3) + np.triu(rng.uniform(-max_shear, max_shear, size=(3, 3)), 1)
    # rotation/shear act in a frame where the axes have their physical proportions (thin z stays thin)
    aspect = np.diag([1.0, 1.0, max(zf, 0.05)])
    mat = np.linalg.inv(aspect) @ rot @ scale @ shear @ aspect
    centre = (size - 1) / 2.0
    shift = rng.uniform(-max_translation, max_translation, size=3) * size * np.array([1.0, 1.0, zf])
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    rel = grid.reshape(3, -1) - centre[:, None]
    coords = (mat @ rel + centre[:, None] + shift[:, None]).reshape(3, *shape).astype(np.float32)
    amp = rng.uniform(0.2, 1.0) * max_displacement
    n = int(rng.integers(3, 9))
    coarse = [max(2, min(n, s // 2)) for s in shape]
    disp = _smooth_noise(rng, shape, coarse, channels=3)
    disp /= max(float(np.abs(disp).max()), 1e-6)
    disp *= (amp * size * np.array([1.0, 1.0, zf]))[:, None, None, None].astype(np.float32)
    return coords + disp


def _warp(volume: np.ndarray, coords: np.ndarray, order: int) -> np.ndarray:
    return map_coordinates(volume, coords, order=order, mode="nearest", prefilter=False)


def synth_image(rng, label: np.ndarray, means: np.ndarray, stds: np.ndarray, texture: np.ndarray | None = None,
                realism: float = 1.0) -> tuple[np.ndarray, dict]:
    """One image (float32 in [0, 1]) from a label map and per-label means/stds (indexed by label value).

    ``realism`` (0–1) scales the texture, bias, blur, anisotropic resampling and noise (0: piecewise
    constant Gaussian mixture only)."""
    rng = _as_rng(rng)
    shape = label.shape
    img = means[label] + stds[label] * rng.standard_normal(shape).astype(np.float32)
    info: dict = {}
    if realism > 0:
        # per-label texture on a fine smooth noise field
        tex_amp = texture if texture is not None else rng.uniform(0.0, 0.15, size=len(means)).astype(np.float32)
        fine = _smooth_noise(rng, shape, [max(2, s // 4) for s in shape])[0]
        img = img + realism * tex_amp[label] * fine
        # partial-volume blur (in-plane and through-plane)
        sigma = rng.uniform(0.0, 1.0) * realism
        if sigma > 0.05:
            img = gaussian_filter(img, sigma=[sigma, sigma, sigma * min(1.0, shape[-1] / 32.0)])
        # random acquisition voxel size and slice thickness: blur through the slice, resample down and up
        factors = np.array([rng.uniform(1.0, 1.0 + 1.0 * realism), 0.0, rng.uniform(1.0, 1.0 + 1.5 * realism)])
        factors[1] = factors[0] * rng.uniform(0.9, 1.1)
        factors = np.maximum(factors, 1.0)
        info["acquisition_factors"] = [round(float(f), 3) for f in factors]
        if factors.max() > 1.05:
            thick = np.maximum(factors - 1.0, 0.0) * 0.5
            img = gaussian_filter(img, sigma=thick)
            low = [max(2, int(round(s / f))) for s, f in zip(shape, factors)]
            img = _resample(_resample(img, low), shape)
        # multiplicative bias field and gamma
        bias = _smooth_noise(rng, shape, [3] * len(shape))[0]
        img = np.clip(img, 0.0, None) * np.exp(realism * rng.uniform(0.0, 0.3) * bias)
        img = np.clip(img, 0.0, None) ** np.exp(realism * rng.normal(0.0, 0.25))
        img = img + realism * rng.uniform(0.0, 0.05) * rng.standard_normal(shape).astype(np.float32)
    img = img.astype(np.float32)
    lo, hi = np.percentile(img, [0.5, 99.5])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    return img, info


def synth_pair(seed=0, shape: Sequence[int] = DEFAULT_SHAPE, n_labels: Sequence[int] = (8, 26),
               contrast: str | None = None, p_cross: float = 0.25, p_invert: float = 0.1,
               max_displacement: float = 0.05, max_rotation: float = 8.0, max_translation: float = 0.04,
               realism: float = 1.0, anatomy: Sequence[np.ndarray] | None = None, p_anatomy: float = 0.5,
               spacing_range: Sequence[float] = (0.8, 2.0), thickness_range: Sequence[float] = (1.0, 10.0)) -> dict:
    """One pair: {"fixed", "moving": float32 (H, W, D) in [0, 1], "fixed_label", "moving_label": uint8,
    "affine": (4, 4) with the random voxel size, "info": {contrast, n_labels, ...}}.

    Both images are deformed versions of one label map, each with its own deformation and its own
    intensity draw (see the module doc). ``contrast`` forces "same", "cross" or "inverted".
    """
    rng = _as_rng(seed)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"shape: expected 3 sizes (H, W, D), got {shape}")
    if contrast is None:
        u = rng.random()
        contrast = "cross" if u < p_cross else "inverted" if u < p_cross + p_invert else "same"
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast: expected one of {CONTRASTS}, got {contrast!r}")
    label = random_label_map(rng, shape, n_labels, anatomy=anatomy, p_anatomy=p_anatomy)
    k = int(label.max()) + 1
    kw = dict(max_rotation=max_rotation, max_displacement=max_displacement, max_translation=max_translation)
    labels = {key: _warp(label, random_deformation(rng, shape, **kw), order=0).astype(np.uint8)
              for key in ("fixed_label", "moving_label")}
    means_f = rng.uniform(0.0, 1.0, size=k).astype(np.float32)
    if contrast == "cross":
        means_m = rng.uniform(0.0, 1.0, size=k).astype(np.float32)
    else:
        means_m = np.clip(means_f + rng.normal(0.0, 0.03, size=k), 0.0, 1.0).astype(np.float32)
    images = {}
    info: dict = {"contrast": contrast, "n_labels": k}
    for key, means, lab in (("fixed", means_f, labels["fixed_label"]), ("moving", means_m, labels["moving_label"])):
        stds = rng.uniform(0.0, 0.08, size=k).astype(np.float32)
        img, extra = synth_image(rng, lab, means, stds, realism=realism)
        if key == "moving" and contrast == "inverted":
            img = 1.0 - img
        images[key] = img
        info[f"{key}_means"] = [round(float(v), 4) for v in means]
        info[f"{key}_acquisition"] = extra.get("acquisition_factors")
    sp = rng.uniform(*spacing_range)
    th = rng.uniform(max(thickness_range[0], sp), max(thickness_range[1], sp)) if shape[-1] < 48 else sp
    affine = np.diag([sp, sp, th, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * np.array([sp, sp, th])
    info["spacing"] = [round(float(sp), 4), round(float(sp), 4), round(float(th), 4)]
    return {**images, **labels, "affine": affine, "info": info}


def _to_item(pair: dict, pair_id: str, label_dtype=None) -> dict:
    """numpy pair -> the dict of MetaTensors (1, H, W, D) the training chain produces."""
    import torch
    from monai.data import MetaTensor

    affine = torch.as_tensor(pair["affine"], dtype=torch.float64)
    out = {}
    for key in ("fixed", "moving"):
        out[key] = MetaTensor(torch.from_numpy(np.ascontiguousarray(pair[key]))[None], affine=affine.clone())
    for key in ("fixed_label", "moving_label"):
        lab = torch.from_numpy(np.ascontiguousarray(pair[key]))[None]
        out[key] = MetaTensor(lab.to(label_dtype) if label_dtype is not None else lab, affine=affine.clone())
    out["pair_id"] = pair_id
    return out


class SynthMorphDataset:
    """MONAI/torch map-style dataset of ``n`` synthetic pairs made on the fly.

    Item ``i`` is ``synth_pair(seed=(seed, i), **options)`` as MetaTensors (keys fixed, moving,
    fixed_label, moving_label, pair_id): deterministic by seed. With ``fresh=True`` the k-th read of
    index ``i`` gives the pair of seed ``(seed, i, k)`` (a new pair each epoch, still reproducible
    in a single-process loader). ``anatomy_files``: label NIfTI files whose maps may be pasted in.
    """

    def __init__(self, n: int = 100, seed: int = 0, fresh: bool = False, anatomy_files: Sequence[str] = (),
                 **options):
        if int(n) < 1:
            raise ValueError(f"n: expected a positive number of pairs, got {n}")
        self.n, self.seed, self.fresh, self.options = int(n), int(seed), bool(fresh), dict(options)
        self.anatomy_files = [str(f) for f in anatomy_files]
        self._anatomy = None
        self._reads = [0] * self.n

    def __len__(self) -> int:
        return self.n

    def anatomy(self) -> list[np.ndarray] | None:
        if self.anatomy_files and self._anatomy is None:
            import nibabel as nib

            self._anatomy = [np.asarray(nib.load(f).dataobj).astype(np.int64) for f in self.anatomy_files]
        return self._anatomy

    def pair_seed(self, index: int) -> list[int]:
        s = [self.seed, int(index)]
        if self.fresh:
            s.append(self._reads[index])
            self._reads[index] += 1
        return s

    def __getitem__(self, index: int) -> dict:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} pairs")
        index = int(index) % self.n
        s = self.pair_seed(index)
        pair = synth_pair(seed=s, anatomy=self.anatomy(), **self.options)
        item = _to_item(pair, f"synthmorph_{index:05d}" + (f"_{s[-1]}" if self.fresh else ""))
        item["source"] = "synthmorph"
        return item


def write_synthmorph_pairs(out: str | Path, n: int = 40, seed: int = 0, n_val: int = 8, n_test: int = 0,
                           anatomy_files: Sequence[str] = (), **options) -> Path:
    """Write ``n`` training, ``n_val`` validation and ``n_test`` test pairs under ``out``:
    ``images/<id>_{fixed,moving}.nii.gz``, ``labels/<id>_{fixed,moving}.nii.gz`` and ``pairs.json``
    with keys ``train``, ``val``, ``test`` and ``pairs`` (= train), paths relative to ``out``.
    Pair ``i`` (numbered over train, val, test) is ``synth_pair(seed=(seed, i), **options)``."""
    from samir.io import save_nifti

    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    ds = SynthMorphDataset(max(1, n + n_val + n_test), seed=seed, anatomy_files=anatomy_files, **options)
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for i in range(n + n_val + n_test):
        split = "train" if i < n else "val" if i < n + n_val else "test"
        pid = f"synth{i:04d}"
        pair = synth_pair(seed=[seed, i], anatomy=ds.anatomy(), **options)
        entry = {"pair_id": pid, "contrast": pair["info"]["contrast"]}
        for key, folder in (("fixed", "images"), ("moving", "images"), ("fixed_label", "labels"),
                            ("moving_label", "labels")):
            name = f"{folder}/{pid}_{key.split('_')[0]}.nii.gz"
            save_nifti(root / name, pair[key], pair["affine"])
            entry[key] = name
        splits[split].append(entry)
    meta = {"description": "SynthMorph-style synthetic pairs (samir.data.synthetic_labels)", "seed": seed,
            "options": {k: v for k, v in options.items() if isinstance(v, (int, float, str, list, tuple))},
            **splits, "pairs": splits["train"]}
    (root / "pairs.json").write_text(json.dumps(meta, indent=1) + "\n")
    return root


def synthmorph_pairs(root: str | Path, split: str = "train") -> list[dict]:
    """The pairs of a :func:`write_synthmorph_pairs` folder (or its ``pairs.json``) for ``split``
    (train, val, test, all)."""
    from samir.data.pairs import datalist_pairs

    path = Path(root)
    path = path / "pairs.json" if path.is_dir() else path
    if split in (None, "all"):
        return [p for s in ("train", "val", "test") for p in datalist_pairs(path, key=s)]
    key = {"validation": "val", "training": "train"}.get(split, split)
    return datalist_pairs(path, key=key)
