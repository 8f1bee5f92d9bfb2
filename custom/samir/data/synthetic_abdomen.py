"""Synthetic Learn2Reg AbdomenCTCT stand-in, written in the official layout.

A template abdomen is drawn analytically in CT numbers (HU) on the target grid: air outside the body,
subcutaneous fat, abdominal-wall and back muscles, visceral fat and bowel texture with gas pockets,
lung bases, spine (cortical and cancellous bone, discs, canal), ribs, iliac wings, and the 13 labelled
organs of AbdomenCTCT (portal-venous contrast: bright vessels and kidneys) at plausible positions
and sizes. Each subject is the template sampled through its own smooth deformation:
a random affine (body size, pose), a smooth random displacement field (Gaussian radial basis
functions) and per-organ local scalings (organ-size variation); then per-organ HU offsets and noise.

World frame of the affine: x to the patient's left, y anterior, z superior (RAS), mm, centred on the
volume. Default grid 192x160x256 at 2 mm (field of view 384x320x512 mm); ``shape`` changes the grid
and scales the spacing so the field of view stays the same. Subject i uses seed ``(seed, i)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from itertools import permutations
from pathlib import Path

import numpy as np
from scipy.ndimage import map_coordinates

from samir.data.abdomen import (
    ABDOMEN_JSON,
    ABDOMEN_LABELS,
    ABDOMEN_SHAPE,
    ABDOMEN_SPACING,
    ABDOMEN_VAL_IDS,
    abdomen_image_path,
    abdomen_label_path,
)
from samir.io import save_nifti

__all__ = ["write_synthetic_abdomen", "abdomen_template", "abdomen_subject", "FOV_MM"]

FOV_MM: tuple[float, float, float] = tuple(s * d for s, d in zip(ABDOMEN_SHAPE, ABDOMEN_SPACING))

# organ: (label, HU, centre mm (x left+, y anterior+, z superior+), radii mm) for the ellipsoidal organs
_ELLIPSOIDS = {
    "liver": (6, 105.0, (-62.0, 8.0, 62.0), (68.0, 78.0, 72.0)),
    "liver left lobe": (6, 105.0, (-5.0, 38.0, 78.0), (48.0, 26.0, 34.0)),
    "spleen": (1, 115.0, (88.0, -42.0, 78.0), (22.0, 45.0, 52.0)),
    "stomach": (7, 30.0, (48.0, 22.0, 72.0), (45.0, 38.0, 52.0)),
    "gallbladder": (4, 15.0, (-40.0, 52.0, 28.0), (14.0, 15.0, 30.0)),
    "right kidney": (2, 170.0, (-68.0, -45.0, 0.0), (26.0, 24.0, 52.0)),
    "left kidney": (3, 170.0, (68.0, -45.0, 12.0), (26.0, 24.0, 52.0)),
    "pancreas head": (11, 95.0, (-22.0, 2.0, 16.0), (18.0, 14.0, 20.0)),
    "left adrenal gland": (12, 45.0, (36.0, -36.0, 62.0), (5.0, 11.0, 17.0)),
    "right adrenal gland": (13, 45.0, (-38.0, -30.0, 74.0), (5.0, 11.0, 17.0)),
}
# tubular organs: (label, HU, radius mm, polyline of points)
_TUBES = {
    "pancreas body": (11, 95.0, 10.0, [(-22.0, 2.0, 16.0), (20.0, -8.0, 28.0), (72.0, -22.0, 42.0)]),
    "esophagus": (5, 45.0, 8.0, [(8.0, -36.0, 260.0), (12.0, -32.0, 140.0), (25.0, -10.0, 105.0), (40.0, 10.0, 95.0)]),
    "inferior vena cava": (9, 150.0, 11.0, [(-22.0, -28.0, 150.0), (-22.0, -28.0, 40.0), (-20.0, -30.0, -140.0)]),
    "aorta": (8, 185.0, 12.0, [(12.0, -38.0, 260.0), (12.0, -36.0, 40.0), (10.0, -34.0, -135.0)]),
    "portal vein": (10, 170.0, 7.0, [(-12.0, -4.0, 24.0), (-35.0, 2.0, 45.0), (-58.0, 6.0, 62.0)]),
    "splenic vein": (10, 170.0, 5.0, [(-12.0, -4.0, 24.0), (30.0, -18.0, 40.0), (74.0, -34.0, 58.0)]),
}
# organs that get a random local size change per subject (centre, typical radius)
_SCALED = ("liver", "spleen", "stomach", "gallbladder", "right kidney", "left kidney", "pancreas head")


def _axes(shape: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """1D mm coordinates of the three axes (voxel centres, volume-centred), spacing, origin."""
    spacing = np.array([f / s for f, s in zip(FOV_MM, shape)], dtype=np.float64)
    origin = -(np.array(shape) - 1) / 2.0 * spacing
    axes = [(origin[i] + spacing[i] * np.arange(shape[i])).astype(np.float32) for i in range(3)]
    return axes, spacing, origin


class _Painter:
    """Paints shapes into an HU image and a label map, evaluating each only inside its bounding box."""

    def __init__(self, shape: Sequence[int]):
        self.axes, self.spacing, self.origin = _axes(shape)
        self.image = np.full(tuple(shape), -1000.0, dtype=np.float32)
        self.label = np.zeros(tuple(shape), dtype=np.uint8)

    def box(self, lo: Sequence[float], hi: Sequence[float]):
        sl = []
        for a, l_, h in zip(self.axes, lo, hi):
            i0, i1 = np.searchsorted(a, l_), np.searchsorted(a, h, side="right")
            sl.append(slice(int(i0), int(max(i1, i0))))
        grids = (self.axes[0][sl[0], None, None], self.axes[1][None, sl[1], None], self.axes[2][None, None, sl[2]])
        return tuple(sl), grids

    def paint(self, lo, hi, inside: Callable, hu, label: int | None = None, within: np.ndarray | None = None):
        """Set ``hu`` (a number or a function of the grid) and ``label`` (None: keep, 0: clear) where ``inside``."""
        sl, (X, Y, Z) = self.box(lo, hi)
        if any(s.stop <= s.start for s in sl):
            return
        m = np.broadcast_to(inside(X, Y, Z), self.image[sl].shape)
        if within is not None:
            m = m & within[sl]
        value = hu(X, Y, Z) if callable(hu) else hu
        self.image[sl] = np.where(m, value, self.image[sl])
        if label is not None:
            self.label[sl] = np.where(m, np.uint8(label), self.label[sl])


def _ellipsoid(c, r) -> Callable:
    return lambda X, Y, Z: ((X - c[0]) / r[0]) ** 2 + ((Y - c[1]) / r[1]) ** 2 + ((Z - c[2]) / r[2]) ** 2 <= 1.0


def _ebox(c, r, pad: float = 0.0):
    return [ci - ri - pad for ci, ri in zip(c, r)], [ci + ri + pad for ci, ri in zip(c, r)]


def _tube(points, radius) -> list[tuple[Callable, list, list]]:
    """Capsules along a polyline: [(inside, lo, hi)] per segment."""
    out = []
    for a, b in zip(points[:-1], points[1:]):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        ab = b - a
        ll = float(ab @ ab)

        def inside(X, Y, Z, a=a, ab=ab, ll=ll):
            t = np.clip(((X - a[0]) * ab[0] + (Y - a[1]) * ab[1] + (Z - a[2]) * ab[2]) / ll, 0.0, 1.0)
            return (X - a[0] - t * ab[0]) ** 2 + (Y - a[1] - t * ab[1]) ** 2 + (Z - a[2] - t * ab[2]) ** 2 <= radius**2

        out.append((inside, list(np.minimum(a, b) - radius), list(np.maximum(a, b) + radius)))
    return out


def _texture(X, Y, Z, waves) -> np.ndarray:
    acc = 0.0
    for k, ph in waves:
        acc = acc + np.cos(k[0] * X + k[1] * Y + k[2] * Z + ph)
    return acc / np.sqrt(len(waves))


def abdomen_template(shape: Sequence[int] = ABDOMEN_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free template on ``shape``: HU image float32 (X, Y, Z) and uint8 labels 0..13."""
    shape = tuple(int(s) for s in shape)
    P = _Painter(shape)
    fx, fy, fz = (f / 2.0 for f in FOV_MM)
    rng = np.random.default_rng(12345)  # the template is fixed; subjects vary by seed
    waves = [(rng.normal(size=3) * 0.08, rng.uniform(0, 2 * np.pi)) for _ in range(8)]
    waves_fat = [(rng.normal(size=3) * 0.05, rng.uniform(0, 2 * np.pi)) for _ in range(8)]
    bx, by, yc = 150.0, 108.0, -4.0

    def body_r(X, Y, Z):
        rx = bx + 8.0 * np.sin(Z / 90.0)
        return np.sqrt((X / rx) ** 2 + ((Y - yc) / by) ** 2)

    full_lo, full_hi = [-fx, -fy, -fz], [fx, fy, fz]
    P.paint(full_lo, full_hi, lambda X, Y, Z: body_r(X, Y, Z) <= 1.0, -100.0)  # subcutaneous fat
    P.paint(full_lo, full_hi, lambda X, Y, Z: body_r(X, Y, Z) <= 1.0 - 18.0 / by, 50.0)  # muscle wall
    # visceral cavity: bowel-like soft tissue with fat lobules

    def visceral(X, Y, Z):
        t, tf = _texture(X, Y, Z, waves), _texture(X, Y, Z, waves_fat)
        return np.where(tf > 0.35, -95.0 + 10.0 * t, 25.0 + 20.0 * t)

    cavity = np.zeros(shape, dtype=bool)
    sl, (X, Y, Z) = P.box(full_lo, full_hi)
    cavity[sl] = body_r(X, Y, Z) <= 1.0 - 28.0 / by
    P.paint(full_lo, full_hi, lambda X, Y, Z: True, visceral, within=cavity)
    # bowel gas pockets in the lower abdomen
    for c in [(-40.0, 45.0, -60.0), (30.0, 55.0, -90.0), (60.0, 30.0, -30.0), (-70.0, 35.0, -120.0), (0.0, 60.0, -20.0)]:
        r = (12.0, 9.0, 14.0)
        P.paint(*_ebox(c, r), _ellipsoid(c, r), -750.0, within=cavity)
    # lung bases above the diaphragm
    for side in (-1.0, 1.0):
        c, r = (side * 72.0, -15.0, 215.0), (62.0, 80.0, 115.0)
        P.paint(*_ebox(c, r), _ellipsoid(c, r), -850.0, within=cavity)
    # psoas and paraspinal muscles
    for side in (-1.0, 1.0):
        for c, r in (((side * 40.0, -48.0, -70.0), (16.0, 18.0, 110.0)), ((side * 30.0, -88.0, 0.0), (22.0, 17.0, 300.0))):
            P.paint(*_ebox(c, r), _ellipsoid(c, r), 52.0)
    # organs: large first, small and vessels on top
    for name in ("liver", "liver left lobe", "spleen", "stomach", "gallbladder", "right kidney", "left kidney"):
        lab, hu, c, r = _ELLIPSOIDS[name]
        P.paint(*_ebox(c, r), _ellipsoid(c, r), hu, lab, within=cavity)
    # stomach gas cap (still labelled stomach), renal sinus fat (still kidney)
    lab, hu, c, r = _ELLIPSOIDS["stomach"]
    P.paint(*_ebox(c, r), lambda X, Y, Z: _ellipsoid(c, r)(X, Y, Z) & (Y > c[1] + 0.45 * r[1]) & (Z > c[2]), -800.0)
    for name, sign in (("right kidney", 1.0), ("left kidney", -1.0)):
        lab, hu, c, r = _ELLIPSOIDS[name]
        cc, rr = (c[0] + sign * 8.0, c[1] + 4.0, c[2]), (8.0, 8.0, 22.0)
        P.paint(*_ebox(cc, rr), _ellipsoid(cc, rr), -40.0)
    lab, hu, c, r = _ELLIPSOIDS["pancreas head"]
    P.paint(*_ebox(c, r), _ellipsoid(c, r), hu, lab, within=cavity)
    for name in ("pancreas body", "esophagus", "inferior vena cava", "aorta", "portal vein", "splenic vein"):
        lab, hu, radius, pts = _TUBES[name]
        for inside, lo, hi in _tube(pts, radius):
            P.paint(lo, hi, inside, hu, lab)
    for name in ("left adrenal gland", "right adrenal gland"):
        lab, hu, c, r = _ELLIPSOIDS[name]
        P.paint(*_ebox(c, r), _ellipsoid(c, r), hu, lab, within=cavity)
    # iliac arteries (unlabelled), below the aortic bifurcation
    for side in (-1.0, 1.0):
        for inside, lo, hi in _tube([(10.0, -34.0, -135.0), (side * 45.0, -20.0, -260.0)], 7.0):
            P.paint(lo, hi, inside, 185.0, 0)
    # bones last (label 0): vertebrae with discs, canal, spinous processes, ribs, iliac wings
    vc, vr = (0.0, -52.0), 17.0

    def vert_hu(X, Y, Z):
        rr = np.sqrt((X - vc[0]) ** 2 + (Y - vc[1]) ** 2)
        disc = np.mod(Z + 7.0, 34.0) < 8.0
        return np.where(disc, 85.0, np.where(rr > vr - 3.0, 750.0, 230.0))

    P.paint([-vr, vc[1] - vr, -fz], [vr, vc[1] + vr, fz],
            lambda X, Y, Z: (X - vc[0]) ** 2 + (Y - vc[1]) ** 2 <= vr**2, vert_hu, 0)
    P.paint([-20, -90, -fz], [20, -66, fz], lambda X, Y, Z: (X**2 + (Y + 78.0) ** 2 <= 11.0**2), 600.0, 0)
    P.paint([-10, -84, -fz], [10, -72, fz], lambda X, Y, Z: (X**2 + (Y + 78.0) ** 2 <= 7.0**2), 15.0, 0)
    P.paint([-8, -112, -fz], [8, -88, fz],
            lambda X, Y, Z: ((X / 6.0) ** 2 + ((Y + 100.0) / 11.0) ** 2 <= 1.0) & (np.mod(Z, 34.0) > 10.0), 550.0, 0)

    def ribs(X, Y, Z):
        r = body_r(X, Y, Z)
        shell = (r <= 1.0 - 20.0 / by) & (r >= 1.0 - 28.0 / by)
        zz = Z + 0.35 * (Y - yc)  # ribs slope down anteriorly
        return shell & (np.mod(zz, 30.0) < 9.0) & (Z > -30.0) & (Y > -75.0)

    P.paint(full_lo, full_hi, ribs, 650.0, 0)
    for side in (-1.0, 1.0):
        c, r = (side * 100.0, -35.0, -215.0), (22.0, 55.0, 55.0)
        ci, ri = c, (14.0, 47.0, 47.0)
        P.paint(*_ebox(c, r), lambda X, Y, Z, c=c, r=r, ci=ci, ri=ri: _ellipsoid(c, r)(X, Y, Z),
                lambda X, Y, Z, ci=ci, ri=ri: np.where(_ellipsoid(ci, ri)(X, Y, Z), 250.0, 700.0), 0)
    return P.image, P.label


def _rbf_matrix(coords: np.ndarray, n_ctrl: int, sigma: float) -> np.ndarray:
    """(len(coords), n_ctrl) Gaussian radial-basis weights with control points spread over the axis."""
    ctrl = np.linspace(coords[0], coords[-1], n_ctrl)
    return np.exp(-0.5 * ((coords[:, None] - ctrl[None, :]) / sigma) ** 2).astype(np.float32)


def _separable_sum(ax: np.ndarray, ay: np.ndarray, az: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sum_abc ax[i,a] ay[j,b] az[k,c] w[a,b,c] -> (nx, ny, nz), computed axis by axis."""
    t = np.tensordot(ax, w, axes=(1, 0))  # (nx, b, c)
    t = np.tensordot(t, ay, axes=(1, 1))  # (nx, c, ny)
    t = np.tensordot(t, az, axes=(1, 1))  # (nx, ny, nz)
    return t.astype(np.float32)


def subject_displacement(shape: Sequence[int], seed: int, subject: int) -> np.ndarray:
    """Smooth displacement (3, X, Y, Z) in mm: subject point x samples the template at x + u(x)."""
    rng = np.random.default_rng([int(seed), int(subject)])
    (x, y, z), _, _ = _axes(shape)
    X, Y, Z = x[:, None, None], y[None, :, None], z[None, None, :]
    # random affine: per-axis size, a small rotation about the long axis, a shift
    scale = rng.uniform([0.9, 0.9, 0.93], [1.1, 1.1, 1.07])
    ang = np.deg2rad(rng.uniform(-4.0, 4.0))
    shift = rng.uniform(-8.0, 8.0, size=3)
    cos, sin = np.cos(ang), np.sin(ang)
    u = np.empty((3, *shape), dtype=np.float32)
    # template point p = R (x / scale) + shift
    xs, ys, zs = X / scale[0], Y / scale[1], Z / scale[2]
    u[0] = cos * xs - sin * ys + shift[0] - X
    u[1] = sin * xs + cos * ys + shift[1] - Y
    u[2] = zs + shift[2] - Z
    # smooth random field (Gaussian RBFs, control spacing ~70 mm, amplitude ~6 mm)
    n_ctrl = [max(3, int(round(f / 70.0)) + 1) for f in FOV_MM]
    mats = [_rbf_matrix(a, n, 0.6 * f / (n - 1)) for a, n, f in zip((x, y, z), n_ctrl, FOV_MM)]
    for i in range(3):
        u[i] += _separable_sum(*mats, rng.normal(0.0, 6.0, size=n_ctrl).astype(np.float32))
    # organ-size variation: local scaling about each organ centre, Gaussian window
    for name in _SCALED:
        _, _, c, r = _ELLIPSOIDS[name]
        s = rng.uniform(0.85, 1.18)
        sig = np.array(r, dtype=np.float32) * 1.1
        g = [np.exp(-0.5 * ((a - ci) / si) ** 2).astype(np.float32) for a, ci, si in zip((x, y, z), c, sig)]
        w = g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
        for i, a in enumerate((X, Y, Z)):
            u[i] += (1.0 / s - 1.0) * (a - c[i]) * w
    return u


def abdomen_subject(template: tuple[np.ndarray, np.ndarray], seed: int, subject: int) -> tuple[np.ndarray, np.ndarray]:
    """One subject from the template: int16 HU image and uint8 labels, both (X, Y, Z)."""
    image_t, label_t = template
    shape = image_t.shape
    rng = np.random.default_rng([int(seed), int(subject), 1])
    u = subject_displacement(shape, seed, subject)
    (x, y, z), spacing, origin = _axes(shape)
    coords = np.empty_like(u)
    for i, a in enumerate((x, y, z)):
        view = [None, None, None]
        view[i] = slice(None)
        coords[i] = (a[tuple(view)] + u[i] - origin[i]) / spacing[i]
    del u
    image = map_coordinates(image_t, coords, order=1, mode="nearest", prefilter=False)
    label = map_coordinates(label_t, coords, order=0, mode="nearest", prefilter=False).astype(np.uint8)
    # per-organ contrast differences and noise
    offsets = np.zeros(256, dtype=np.float32)
    offsets[1:14] = rng.normal(0.0, 12.0, size=13)
    image = image + offsets[label] + rng.normal(0.0, rng.uniform(6.0, 12.0), size=shape).astype(np.float32)
    return np.clip(np.round(image), -1024, 3071).astype(np.int16), label


def _dataset_json(n: int, shape: Sequence[int]) -> dict:
    rel = lambda kind, i: f"./{kind}/AbdomenCTCT_{i:04d}_0000.nii.gz"  # noqa: E731
    val_ids = [i for i in ABDOMEN_VAL_IDS if i <= n]
    val = [{"fixed": rel("imagesTr", f), "moving": rel("imagesTr", m)} for f, m in permutations(val_ids, 2)]
    return {
        "name": "AbdomenCTCT",
        "description": "SAMIR synthetic stand-in for Learn2Reg AbdomenCTCT (phantoms, not patient data)",
        "licence": "Apache-2.0 (synthetic)",
        "release": "synthetic-1.0",
        "pairings": "unpaired",
        "provided_data": {"0": ["image", "label"]},
        "registration_direction": {"fixed": 0, "moving": 0},
        "modality": {"0": "CT"},
        "labels": {"0": {str(k): v for k, v in ABDOMEN_LABELS.items()}},
        "tensorImageSize": {"0": "3D"},
        "tensorImageShape": {"0": [int(s) for s in shape]},
        "numTraining": n,
        "numTest": 0,
        "training": [{"image": rel("imagesTr", i), "label": rel("labelsTr", i)} for i in range(1, n + 1)],
        "test": [],
        "numPairedTraining": 0,
        "training_paired_images": [],
        "numRegistration_val": len(val),
        "registration_val": val,
        "numRegistration_test": 0,
        "registration_test": [],
    }


def write_synthetic_abdomen(out: str | Path, n: int = 30, seed: int = 0, shape: Sequence[int] | None = None) -> Path:
    """Write ``out/AbdomenCTCT_dataset.json``, ``imagesTr/`` (int16 HU) and ``labelsTr/`` (uint8 0..13); returns ``out``.

    ``shape`` defaults to 192x160x256 (2 mm); another shape keeps the 384x320x512 mm field of view.
    """
    shape = tuple(int(s) for s in (shape or ABDOMEN_SHAPE))
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape: expected three sizes >= 8, got {shape}")
    if not 1 <= n <= 9999:
        raise ValueError(f"n: expected 1..9999 subjects, got {n}")
    root = Path(out)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    _, spacing, origin = _axes(shape)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    template = abdomen_template(shape)
    for i in range(1, n + 1):
        image, label = abdomen_subject(template, seed, i)
        save_nifti(abdomen_image_path(root, i), image, affine)
        save_nifti(abdomen_label_path(root, i), label, affine)
    tmp = root / (ABDOMEN_JSON + ".tmp")
    tmp.write_text(json.dumps(_dataset_json(n, shape), indent=4) + "\n")
    tmp.replace(root / ABDOMEN_JSON)
    return root
