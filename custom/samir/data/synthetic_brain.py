"""Brain pairs from real anatomy: synthetic subjects of the MNI152 2009 template, T1 and T2-like.

The anatomy is the ICBM 2009a symmetric MNI152 template (T1, GM and WM probability maps) that the
``nilearn`` wheel ships (``nilearn/datasets/data/mni_icbm152_*_tal_nlin_sym_09a_converted.nii.gz``;
read straight from the installed package, nothing is downloaded; ``pip install samir[brain]``).
It is block-averaged from 1 mm to 2 mm: a 98 x 116 x 94 grid (1.07 M voxels, RAS, the template's own
field of view, which holds the skull-stripped brain with a 2-5 cm margin). Labels: 1 CSF, 2 GM, 3 WM,
the arg-max of the CSF/GM/WM probabilities inside the template's brain mask (CSF = the mask's
remainder 1 - GM - WM: ventricles, sulci and the outer rim), 0 outside.

Each subject is the template resampled through

* a random smooth **diffeomorphic** deformation: Gaussian noise on a coarse control grid (18-30 mm),
  cubic-upsampled to a 4 mm velocity field and integrated by scaling and squaring (invertible), scaled so
  the largest displacement is 5-10 mm;
* a rigid motion about the brain centre: rotations up to 4 degrees about each axis, translations up to
  4 mm along each axis;

then given scanner nuisances, each drawn per image: gamma 0.7-1.4, a multiplicative smooth bias field
(+-10-25 %), Rician noise (sigma 1-4 % of the brightest tissue), and a skull-stripped background (0).
The T1 image (``_0000``) is the template's T1 intensity; the T2-like image (``_0001``) of the same
subject (same anatomy, its own nuisances) is a per-tissue remap of the warped probabilities with the
tissue order inverted: CSF bright (0.85-1), GM (0.5-0.62), WM dark (0.28-0.4).

Pairs: pair k of a split registers subject 2k+1 (moving) onto subject 2k (fixed), two independent
subjects (neither is the template). Seeds: every subject has its own generator
``numpy.random.default_rng((seed, split_code, k))`` with split_code 0 for dev, 1 for test, k the
subject's index in its split; dev and test subjects can thus never share a seed, whatever ``seed``
and ``n`` are, and subject k of a split is the same whatever ``n`` is. Names: dev subjects
``brain_0000..``, test subjects ``brain_1000..`` (so ``n`` <= 500).
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import numpy as np

from samir.data.brain import BRAIN_LABELS
from samir.io import save_nifti

__all__ = [
    "SPLIT_CODES",
    "TEST_OFFSET",
    "mni152_2mm",
    "subject_entropy",
    "subject_name",
    "brain_subject",
    "write_synthetic_brain",
]

SPLIT_CODES: dict[str, int] = {"dev": 0, "test": 1}
TEST_OFFSET = 1000  # test subject k is brain_{1000 + k}
SPACING_MM = 2.0
_TEMPLATE_FILES = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
_WORK_MM = 4.0  # grid of the velocity field integration


def _nilearn_data_dir() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the brain set needs the MNI152 template of nilearn: pip install 'samir[brain]' (or nilearn)")
    d = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    for name in _TEMPLATE_FILES.values():
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d / name}: expected the MNI152 2009 template file shipped by nilearn, not found")
    return d


def _block2(a: np.ndarray) -> np.ndarray:
    """2 x 2 x 2 block average (trailing odd voxels dropped)."""
    x, y, z = (s // 2 * 2 for s in a.shape)
    a = a[:x, :y, :z]
    return a.reshape(x // 2, 2, y // 2, 2, z // 2, 2).mean(axis=(1, 3, 5))


@functools.lru_cache(maxsize=1)
def mni152_2mm() -> dict:
    """The 2 mm template: t1 (0..1), csf/gm/wm probabilities, brain mask fraction, label, affine, centre (mm)."""
    import nibabel as nib

    d = _nilearn_data_dir()
    raw = {}
    affine1 = None
    for key, name in _TEMPLATE_FILES.items():
        img = nib.load(str(d / name))
        raw[key] = np.asarray(img.dataobj, dtype=np.float32) / 255.0
        affine1 = np.asarray(img.affine, dtype=np.float64)
    mask1 = (raw["t1"] > 0).astype(np.float32)
    t1, gm, wm, mask = (_block2(a) for a in (raw["t1"], raw["gm"], raw["wm"], mask1))
    gm, wm = gm * mask, wm * mask
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    probs = np.stack([csf, gm, wm])
    label = np.where(mask > 0.5, probs.argmax(0) + 1, 0).astype(np.uint8)
    affine = affine1.copy()
    affine[:3, :3] = affine1[:3, :3] * 2.0
    affine[:3, 3] = affine1[:3, 3] + 0.5 * np.diag(affine1)[:3]
    idx = np.argwhere(label > 0).mean(0)
    centre = affine[:3, :3] @ idx + affine[:3, 3]
    return dict(t1=t1.astype(np.float32), csf=csf.astype(np.float32), gm=gm.astype(np.float32),
                wm=wm.astype(np.float32), mask=mask.astype(np.float32), label=label, affine=affine, centre=centre)


def subject_entropy(split: str, k: int, seed: int = 0) -> tuple[int, int, int]:
    """The seed of subject ``k`` of ``split`` (dev/test): (seed, split code, k); dev and test never meet."""
    if split not in SPLIT_CODES:
        raise ValueError(f"split: expected one of {sorted(SPLIT_CODES)}, got {split!r}")
    return int(seed), SPLIT_CODES[split], int(k)


def subject_name(split: str, k: int) -> str:
    """``brain_NNNN``: dev subject k is ``brain_k``, test subject k ``brain_(1000 + k)``."""
    if not 0 <= k < TEST_OFFSET:
        raise ValueError(f"subject index: expected 0 <= k < {TEST_OFFSET}, got {k}")
    return f"brain_{k + (TEST_OFFSET if split == 'test' else 0):04d}"


def _params(rng: np.random.Generator) -> dict:
    def image_nuisance():
        return dict(gamma=float(rng.uniform(0.7, 1.4)), bias_amp=float(rng.uniform(0.1, 0.25)),
                    bias_coef=rng.normal(size=(3, 3, 3)), noise=float(rng.uniform(0.01, 0.04)),
                    scale=float(rng.uniform(500.0, 1500.0)))

    return dict(
        max_disp=float(rng.uniform(5.0, 10.0)),
        cp_mm=float(rng.uniform(18.0, 30.0)),
        rotation_deg=rng.uniform(-4.0, 4.0, size=3),
        translation_mm=rng.uniform(-4.0, 4.0, size=3),
        t1=image_nuisance(),
        t2=image_nuisance(),
        t2_levels=dict(csf=float(rng.uniform(0.85, 1.0)), gm=float(rng.uniform(0.5, 0.62)),
                       wm=float(rng.uniform(0.28, 0.4))),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
        field_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _velocity(shape_work: tuple[int, ...], extent_mm: np.ndarray, cp_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field (3, *shape_work), max |v| = 1: noise on a cp_mm control grid, cubic-upsampled."""
    from scipy.ndimage import map_coordinates

    g = np.maximum(np.ceil(extent_mm / cp_mm).astype(int) + 1, 4)
    noise = rng.normal(size=(3, *g))
    coords = np.meshgrid(*[np.linspace(0.0, gi - 1.0, si) for gi, si in zip(g, shape_work)], indexing="ij")
    v = np.stack([map_coordinates(noise[c], coords, order=3, mode="nearest") for c in range(3)])
    return v / max(float(np.sqrt((v**2).sum(0)).max()), 1e-6)


def _integrate(v_vox: np.ndarray, steps: int = 6) -> np.ndarray:
    """Scaling and squaring of a stationary velocity (3, X, Y, Z) in voxels: the displacement of exp(v)."""
    import torch
    import torch.nn.functional as F

    u = torch.from_numpy(np.asarray(v_vox, dtype=np.float32) / 2.0**steps)[None]
    shape = u.shape[2:]
    idx = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij"))
    size = torch.tensor([s - 1.0 for s in shape])[:, None, None, None]
    for _ in range(steps):
        at = 2.0 * (idx + u[0]) / size - 1.0
        u = u + F.grid_sample(u, at.flip(0).permute(1, 2, 3, 0)[None], mode="bilinear", padding_mode="border",
                              align_corners=True)
    return u[0].numpy()


def _smooth_field(coef: np.ndarray, shape: tuple[int, ...]):
    import torch
    import torch.nn.functional as F

    f = F.interpolate(torch.as_tensor(coef, dtype=torch.float32)[None, None], size=shape, mode="trilinear",
                      align_corners=True)[0, 0]
    return f / f.abs().max().clamp_min(1e-6)


def _rotation(deg: np.ndarray) -> np.ndarray:
    a, b, c = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _finish(clean, nuisance: dict, keep, rng: np.random.Generator) -> np.ndarray:
    """gamma, bias, Rician noise, skull-stripped background; int16."""
    import torch

    shape = tuple(clean.shape)
    img = clean.clamp(0.0, 1.0) ** nuisance["gamma"]
    img = img * torch.exp(nuisance["bias_amp"] * _smooth_field(nuisance["bias_coef"], shape))
    s = nuisance["scale"]
    sigma = nuisance["noise"] * s
    n1 = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)) * sigma
    n2 = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)) * sigma
    img = torch.sqrt((img * s + n1) ** 2 + n2**2) * keep
    return np.clip(np.round(img.numpy()), 0, 32767).astype(np.int16)


def brain_subject(split: str, k: int, seed: int = 0, cross_contrast: bool = True) -> dict:
    """Subject ``k`` of ``split``: {"t1": int16 (X, Y, Z), "t2": int16 or None, "label": uint8, "affine", "info"}."""
    import torch
    import torch.nn.functional as F

    tpl = mni152_2mm()
    entropy = subject_entropy(split, k, seed)
    p = _params(np.random.default_rng(entropy))
    shape = tpl["label"].shape
    affine = tpl["affine"]
    spacing = np.abs(np.diag(affine)[:3])
    # deformation: stationary velocity on a 4 mm grid, integrated, rescaled once to the drawn maximum
    shape_work = tuple(int(np.ceil(s * sp / _WORK_MM)) for s, sp in zip(shape, spacing))
    extent = np.asarray(shape) * spacing
    v = _velocity(shape_work, extent, p["cp_mm"], np.random.default_rng(p["field_seed"])) * p["max_disp"] / _WORK_MM
    u = _integrate(v)
    u = u * (p["max_disp"] / max(float(np.sqrt((u**2).sum(0)).max()) * _WORK_MM, 1e-6))  # a factor near 1
    u_mm = F.interpolate(torch.from_numpy((u * _WORK_MM).astype(np.float32))[None], size=shape, mode="trilinear",
                         align_corners=True)[0]  # (3, X, Y, Z) mm, world axes (the affine is diagonal)
    max_disp = float(u_mm.pow(2).sum(0).sqrt().max())
    # subject voxel -> world p -> template world q = R (p + u - c) + c + t -> template voxel
    idx = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij"))
    a = torch.as_tensor(affine, dtype=torch.float32)
    world = torch.einsum("ij,jxyz->ixyz", a[:3, :3], idx) + a[:3, 3, None, None, None]
    c = torch.as_tensor(tpl["centre"], dtype=torch.float32)[:, None, None, None]
    rot = torch.as_tensor(_rotation(p["rotation_deg"]), dtype=torch.float32)
    q = torch.einsum("ij,jxyz->ixyz", rot, world + u_mm - c) + c
    q = q + torch.as_tensor(p["translation_mm"], dtype=torch.float32)[:, None, None, None]
    ainv = torch.linalg.inv(a.double()).float()
    vox = torch.einsum("ij,jxyz->ixyz", ainv[:3, :3], q) + ainv[:3, 3, None, None, None]
    norm = torch.stack([2.0 * vox[i] / (shape[i] - 1) - 1.0 for i in range(3)])
    grid = norm.flip(0).permute(1, 2, 3, 0)[None]  # grid_sample wants (z, y, x) order for a (X, Y, Z) volume
    vol = torch.from_numpy(np.stack([tpl[key] for key in ("t1", "csf", "gm", "wm", "mask")]))[None]
    w = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    t1, csf, gm, wm, mask = w
    label = torch.where(wm >= gm, torch.where(wm >= csf, 3, 1), torch.where(gm >= csf, 2, 1))
    label = torch.where(mask > 0.5, label, 0).numpy().astype(np.uint8)
    keep = (mask > 0.25).float()
    rng = np.random.default_rng(p["noise_seed"])
    out = dict(t1=_finish(t1, p["t1"], keep, rng), t2=None, label=label, affine=affine)
    if cross_contrast:
        lv = p["t2_levels"]
        t2 = csf * lv["csf"] + gm * lv["gm"] + wm * lv["wm"]
        out["t2"] = _finish(t2, p["t2"], keep, rng)
    out["info"] = dict(
        name=subject_name(split, k), split=split, entropy=list(entropy), max_displacement_mm=round(max_disp, 2),
        control_spacing_mm=round(p["cp_mm"], 1), rotation_deg=[round(float(r), 2) for r in p["rotation_deg"]],
        translation_mm=[round(float(t), 2) for t in p["translation_mm"]],
        gamma=[round(p["t1"]["gamma"], 3), round(p["t2"]["gamma"], 3)],
    )
    return out


def write_synthetic_brain(out: str | Path, n: int = 4, seed: int = 0, cross_contrast: bool = True) -> Path:
    """Write ``n`` dev and ``n`` test pairs (2n subjects each) and ``pairs.json``; returns ``out``.

    ``pairs.json`` keys: ``dev``, ``test`` (T1 -> T1) and, with ``cross_contrast``, ``dev_cross``,
    ``test_cross`` (T2-like moving -> T1 fixed, the same subjects); ``subjects`` records each subject's
    seed and drawn motion.
    """
    if not 1 <= n <= TEST_OFFSET // 2:
        raise ValueError(f"n: expected 1 <= n <= {TEST_OFFSET // 2} pairs per split, got {n}")
    root = Path(out)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    lists: dict[str, list] = {key: [] for key in (("dev", "dev_cross", "test", "test_cross") if cross_contrast
                                                   else ("dev", "test"))}
    subjects = {}
    for split in ("dev", "test"):
        for k in range(2 * n):
            s = brain_subject(split, k, seed, cross_contrast=cross_contrast)
            name = s["info"]["name"]
            save_nifti(root / "imagesTr" / f"{name}_0000.nii.gz", s["t1"], s["affine"])
            if s["t2"] is not None:
                save_nifti(root / "imagesTr" / f"{name}_0001.nii.gz", s["t2"], s["affine"])
            save_nifti(root / "labelsTr" / f"{name}.nii.gz", s["label"], s["affine"])
            subjects[name] = s["info"]
        for i in range(n):
            f, m = subject_name(split, 2 * i), subject_name(split, 2 * i + 1)
            base = dict(fixed=f"imagesTr/{f}_0000.nii.gz", fixed_label=f"labelsTr/{f}.nii.gz",
                        moving_label=f"labelsTr/{m}.nii.gz")
            lists[split].append(dict(base, moving=f"imagesTr/{m}_0000.nii.gz", pair_id=f"{split}_{i:03d}_{f}_{m}"))
            if cross_contrast:
                lists[f"{split}_cross"].append(dict(base, moving=f"imagesTr/{m}_0001.nii.gz",
                                                    pair_id=f"{split}_cross_{i:03d}_{f}_{m}"))
    doc = dict(
        description="SAMIR synthetic brain pairs (MNI152 2009 template, 2 mm); moving -> fixed; tune on dev*, judge on test*",
        labels={str(k): v for k, v in BRAIN_LABELS.items()}, seed=int(seed),
        seed_rule="subject k of split s: numpy default_rng((seed, {'dev': 0, 'test': 1}[s], k))",
        **lists, subjects=subjects,
    )
    (root / "pairs.json").write_text(json.dumps(doc, indent=1) + "\n")
    return root
