"""Synthetic ACDC stand-in: short-axis cine-MRI-like phantoms written in the official ACDC layout.

Each patient is drawn analytically (numpy only) at its ED and ES frames:

* a chest with subcutaneous fat, chest-wall muscle, lungs, spine, descending aorta and liver (static);
* a left ventricle: ellipsoidal blood cavity (LV, label 3) inside a myocardial shell (MYO, label 2),
  cut at the base plane, with the left atrium (bright, unlabelled) above the base;
* a crescent right-ventricular cavity (RV, label 1) wrapped around the septum, with a thin free wall;
* from ED to ES the cavities shrink in-plane, the base descends towards the (almost fixed) apex and the
  myocardium thickens (its volume is conserved); infarct patients get a hypokinetic sector;
* bright blood, darker myocardium, a smooth coil bias field, thick-slice partial volume and Rician noise;
* with ``realism`` > 0 (default 1.0, 0 reproduces the plain phantoms exactly): trabeculae and papillary
  muscles (myocardium-dark detail along the endocardium inside both blood pools), a fine tissue and
  myocardial texture, an in-plane partial-volume blur and an anterior surface-coil sensitivity on top of
  the smooth bias, so that image similarity alone no longer lines the cavities up. Its draws come from
  their own seed: geometry and labels do not depend on ``realism``.

Sizes follow real ACDC: in-plane 1.3-1.8 mm on 154-256 voxel matrices, 6-12 slices of 5-10 mm.
Groups cycle DCM, HCM, MINF, NOR, RV by patient number (the real set uses blocks of 20; cycling keeps
small synthetic sets varied). Every patient is drawn from its own seed ``(seed, patient number)``,
so patient k is the same whatever ``n`` is. The 4D cine file of the real set is not written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samir.data.acdc import ACDC_GROUPS
from samir.io import save_nifti

__all__ = ["write_synthetic_acdc", "acdc_phantom", "write_acdc_patient"]

# (R cavity mm, wall T mm, ES radius factor of the LV, ES radius factor of the RV, base descent mm, RV size)
_GROUP_PARAMS = {
    "NOR": dict(R=(22.0, 26.0), T=(8.0, 10.0), f_lv=(0.68, 0.76), f_rv=(0.74, 0.82), descent=(9.0, 13.0), rv=(1.0, 1.1)),
    "DCM": dict(R=(29.0, 34.0), T=(6.0, 7.5), f_lv=(0.86, 0.9), f_rv=(0.84, 0.9), descent=(4.0, 7.0), rv=(1.0, 1.15)),
    "HCM": dict(R=(17.0, 21.0), T=(13.0, 17.0), f_lv=(0.55, 0.65), f_rv=(0.74, 0.8), descent=(8.0, 12.0), rv=(0.9, 1.0)),
    "MINF": dict(R=(26.0, 31.0), T=(7.0, 9.0), f_lv=(0.8, 0.86), f_rv=(0.8, 0.86), descent=(5.0, 9.0), rv=(1.0, 1.1)),
    "RV": dict(R=(21.0, 25.0), T=(8.0, 10.0), f_lv=(0.68, 0.76), f_rv=(0.88, 0.92), descent=(8.0, 12.0), rv=(1.4, 1.6)),
}
_SUBSAMPLES = (-0.4, -0.2, 0.0, 0.2, 0.4)  # through-slice positions (in slice thicknesses) averaged per voxel


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def _soft(dist_mm: np.ndarray, width_mm: float) -> np.ndarray:
    """Partial-volume membership from an (approximate) signed distance, negative inside."""
    return np.clip(0.5 - dist_mm / width_mm, 0.0, 1.0)


def _patient_params(pid: int, seed: int) -> dict:
    """All random draws of one patient (geometry, motion, intensities, grid)."""
    rng = np.random.default_rng([int(seed), int(pid)])
    group = ACDC_GROUPS[(pid - 1) % len(ACDC_GROUPS)]
    g = _GROUP_PARAMS[group]
    s = _u(rng, (1.3, 1.8))
    t = _u(rng, (5.0, 10.0))
    fov_x = _u(rng, (300.0, 400.0))
    fov_y = fov_x * _u(rng, (0.8, 1.0))
    nx = int(np.clip(round(fov_x / s), 154, 256))
    ny = int(np.clip(round(fov_y / s), 154, 256))
    length = _u(rng, (65.0, 90.0)) * (1.12 if group == "DCM" else 1.0)  # LV cavity, base to apex, at ED
    nz = int(np.clip(np.ceil(length / t) + 2, 6, 12))
    p = dict(
        group=group, spacing=(s, s, t), shape=(nx, ny, nz), length=length,
        R=_u(rng, g["R"]), T=_u(rng, g["T"]), f_lv=_u(rng, g["f_lv"]), f_rv=_u(rng, g["f_rv"]),
        descent=_u(rng, g["descent"]), rv_scale=_u(rng, g["rv"]),
        ell=_u(rng, (0.88, 1.12)),  # in-plane ellipticity of the LV
        shape_eps=rng.uniform(-0.05, 0.05, size=2), shape_phase=rng.uniform(0, 2 * np.pi, size=2),
        hypo=(_u(rng, (0.08, 0.14)) if group == "MINF" else _u(rng, (0.0, 0.03))),  # regional ES motion loss
        hypo_phase=_u(rng, (0, 2 * np.pi)),
        peri_phase=_u(rng, (0, 2 * np.pi)),
        theta_rv=np.deg2rad(135.0 + _u(rng, (-20.0, 20.0))),
        body=(_u(rng, (150.0, 180.0)), _u(rng, (100.0, 125.0))),
        body_shift=rng.uniform(-10.0, 10.0, size=2),
        heart_shift=np.array([_u(rng, (10.0, 35.0)), _u(rng, (5.0, 30.0))]),
        es_shift=rng.uniform(-2.0, 2.0, size=2),
        apex_rise=_u(rng, (0.0, 2.0)),
        fat=_u(rng, (8.0, 20.0)),
        # top of the stack above the base: the atrium shows in the top slice(s)
        base_gap=_u(rng, (0.5, 1.3)) * t,
        intensity=dict(
            blood=_u(rng, (0.8, 1.0)), myo=_u(rng, (0.18, 0.3)), fat=_u(rng, (0.6, 0.85)),
            muscle=_u(rng, (0.2, 0.3)), tissue=_u(rng, (0.28, 0.4)), lung=_u(rng, (0.02, 0.06)),
            liver=_u(rng, (0.3, 0.42)), csf=_u(rng, (0.55, 0.75)),
        ),
        scale=_u(rng, (150.0, 600.0)),
        bias=rng.uniform(-0.5, 0.5, size=3) * np.array([1.0, 1.0, 0.4]) + np.array([0.0, 0.35, 0.0]),
        bias_r2=_u(rng, (-0.9, -0.2)),
        texture=[(rng.normal(size=3) * np.array([0.05, 0.05, 0.02]), _u(rng, (0, 2 * np.pi))) for _ in range(6)],
        noise=_u(rng, (0.02, 0.045)),
        es_frame=int(rng.integers(9, 16)),
        nb_frame=int(rng.integers(25, 36)),
        height=round(_u(rng, (150.0, 195.0)), 1),
        weight=round(_u(rng, (50.0, 115.0)), 1),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )
    return p


def _heart_frame(p: dict, phase: str) -> dict:
    """Geometry of the heart at ED or ES (mm, in the stack frame: z = slice index * thickness)."""
    nz, t = p["shape"][2], p["spacing"][2]
    z_base_ed = (nz - 1) * t + 0.5 * t - p["base_gap"]
    z_apex_ed = z_base_ed - p["length"]
    R, T = p["R"], p["T"]
    if phase == "ED":
        z_base, z_apex, f_lv, f_rv, shift = z_base_ed, z_apex_ed, 1.0, 1.0, np.zeros(2)
        hypo = 0.0
    else:
        z_base = z_base_ed - p["descent"]
        z_apex = z_apex_ed + p["apex_rise"]
        f_lv, f_rv, shift, hypo = p["f_lv"], p["f_rv"], p["es_shift"], p["hypo"]
    length = z_base - z_apex
    # myocardial cross-section area conserved, scaled up by the long-axis shortening
    k = p["length"] / length
    return dict(
        z_base=z_base, z_apex=z_apex, length=length, R=R * f_lv, R_ed=R, T_ed=T, k=k, f_lv=f_lv,
        f_rv=f_rv, shift=shift, hypo=hypo, T_apex=0.7 * T * (k if phase == "ES" else 1.0),
    )


def _grid(p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In-plane (X, Y) mm about the FOV centre, (nx, ny, 1); slice-centre z mm, (1, 1, nz)."""
    nx, ny, nz = p["shape"]
    s, _, t = p["spacing"]
    x = (np.arange(nx, dtype=np.float32) - (nx - 1) / 2.0) * s
    y = (np.arange(ny, dtype=np.float32) - (ny - 1) / 2.0) * s
    z = np.arange(nz, dtype=np.float32) * t
    return x[:, None, None], y[None, :, None], z[None, None, :]


def _background(p: dict, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """Static chest (nx, ny, nz) in unit intensities: fat, muscle, tissue, lungs, liver, spine, aorta."""
    it = p["intensity"]
    bx, by = p["body"]
    Xb, Yb = X - p["body_shift"][0], Y - p["body_shift"][1]
    s = p["spacing"][0]
    rb = np.sqrt((Xb / bx) ** 2 + (Yb / by) ** 2)
    mean_r = 0.5 * (bx + by)
    body = _soft((rb - 1.0) * mean_r, s)
    inner_fat = _soft((rb - 1.0) * mean_r + p["fat"], s)
    inner_muscle = _soft((rb - 1.0) * mean_r + p["fat"] + 10.0, s)
    tex = np.zeros(np.broadcast_shapes(X.shape, Y.shape, Z.shape), dtype=np.float32)
    for k, ph in p["texture"]:
        tex += np.cos(k[0] * X + k[1] * Y + k[2] * Z + ph).astype(np.float32)
    tissue = it["tissue"] * (1.0 + 0.08 * tex / len(p["texture"]) ** 0.5)
    img = body * (it["fat"] * (1 - inner_fat) + inner_fat * (it["muscle"] * (1 - inner_muscle) + inner_muscle * tissue))
    # lungs on both sides of the heart, liver dome under the right lung towards the apex
    z_mid = 0.5 * (p["shape"][2] - 1) * p["spacing"][2]
    for side in (-1.0, 1.0):
        cx, cy = side * 0.52 * bx, -0.18 * by
        r = np.sqrt(((Xb - cx) / (0.33 * bx)) ** 2 + ((Yb - cy) / (0.58 * by)) ** 2 + ((Z - z_mid - 30) / 140.0) ** 2)
        lung = _soft((r - 1.0) * 0.45 * by, s)
        img = img * (1 - lung) + lung * it["lung"]
    r = np.sqrt(((Xb + 0.35 * bx) / (0.5 * bx)) ** 2 + ((Yb + 0.05 * by) / (0.7 * by)) ** 2
                + ((Z - (z_mid - 95.0)) / 70.0) ** 2)
    liver = _soft((r - 1.0) * 0.5 * bx, s)
    img = img * (1 - liver) + liver * it["liver"]
    # spine (vertebral body, canal) and descending aorta, posterior
    for cx, cy, rad, val in ((0.0, -by + 38.0, 16.0, it["muscle"] * 1.3), (0.0, -by + 22.0, 6.0, it["csf"]),
                             (18.0, -by + 62.0, 11.0, it["blood"] * 0.9)):
        d = np.sqrt((Xb - cx) ** 2 + (Yb - cy) ** 2) - rad
        m = _soft(d, s) * np.ones_like(Z)
        img = img * (1 - m) + m * val
    return img.astype(np.float32)


def _heart(p: dict, geo: dict, X: np.ndarray, Y: np.ndarray, Z: np.ndarray):
    """Soft memberships (lv, myo, rv, rv_wall, atrium, pericardial fat) and hard labels of the heart at one frame."""
    s = p["spacing"][0]
    c = p["heart_shift"] + p["body_shift"] + geo["shift"]
    Xh, Yh = X - c[0], Y - c[1]
    # LV frame: u along the septum direction (towards the RV), v across
    th = p["theta_rv"]
    u = Xh * np.cos(th) + Yh * np.sin(th)
    v = (-Xh * np.sin(th) + Yh * np.cos(th)) / p["ell"]
    phi = np.arctan2(v, u)
    r = np.sqrt(u**2 + v**2)
    g = 1.0 + sum(e * np.cos((i + 2) * phi + ph) for i, (e, ph) in enumerate(zip(p["shape_eps"], p["shape_phase"])))
    # hypokinetic sector: less in-plane contraction there at ES
    f_phi = geo["f_lv"] + geo["hypo"] * (1.0 + np.cos(phi - p["hypo_phase"])) * 0.5
    f_phi = np.minimum(f_phi, 1.0)
    r_in = p["R"] * g * f_phi
    r_out_ed = (p["R"] + p["T"]) * g
    r_out = np.sqrt(r_in**2 + geo["k"] * (r_out_ed**2 - (p["R"] * g) ** 2))
    zc = geo["z_base"] - 0.2 * geo["length"]
    h_in = 0.8 * geo["length"]
    h_out = h_in + geo["T_apex"]
    below_base = Z <= geo["z_base"]
    q_in = np.sqrt((r / r_in) ** 2 + ((Z - zc) / h_in) ** 2)
    q_out = np.sqrt((r / r_out) ** 2 + ((Z - zc) / h_out) ** 2)
    m_in = _soft((q_in - 1.0) * r_in, s) * below_base
    m_out = _soft((q_out - 1.0) * r_out, s) * below_base
    # RV: ellipsoid beside the LV (tangentially elongated), minus the LV epicardium -> crescent
    r_out_ed_mean = p["R"] + p["T"]
    r_out_now = np.sqrt(geo["R"] ** 2 + geo["k"] * (r_out_ed_mean**2 - p["R"] ** 2))
    rv_c = 0.85 * r_out_now
    rr = 0.8 * r_out_ed_mean * p["rv_scale"] * geo["f_rv"]
    rt = 1.5 * r_out_ed_mean * p["rv_scale"] ** 0.5 * (0.4 + 0.6 * geo["f_rv"])
    h_rv = 0.7 * h_in
    urv, vrv = u - rv_c, v
    q_rv = np.sqrt((urv / rr) ** 2 + (vrv / rt) ** 2 + ((Z - zc) / h_rv) ** 2)
    q_rvw = np.sqrt((urv / (rr + 3.0)) ** 2 + (vrv / (rt + 3.0)) ** 2 + ((Z - zc) / (h_rv + 3.0)) ** 2)
    m_rv_all = _soft((q_rv - 1.0) * rr, s) * below_base
    m_rvw_all = _soft((q_rvw - 1.0) * (rr + 3.0), s) * below_base
    q_peri = np.sqrt((r / (r_out + 3.5)) ** 2 + ((Z - zc) / (h_out + 3.5)) ** 2)
    sector = 0.5 + 0.5 * np.cos(phi - p["peri_phase"])
    m_peri = _soft((q_peri - 1.0) * (r_out + 3.5), s) * below_base * np.clip(sector * 1.6 - 0.2, 0.0, 1.0)
    lv = m_in
    myo = np.clip(m_out - m_in, 0.0, 1.0)
    rv = m_rv_all * (1.0 - m_out)
    rv_wall = np.clip(m_rvw_all - m_rv_all, 0.0, 1.0) * (1.0 - m_out)
    peri = np.clip(m_peri - m_out, 0.0, 1.0) * (1.0 - m_rvw_all)
    # left atrium above the base, posterior to the LV centre
    q_la = np.sqrt(((u + 8.0) / 24.0) ** 2 + ((v + 6.0) / 20.0) ** 2 + ((Z - geo["z_base"] - 22.0) / 24.0) ** 2)
    atrium = _soft((q_la - 1.0) * 22.0, s) * (Z > geo["z_base"]) * (1.0 - m_out)
    return lv, myo, rv, rv_wall, atrium, peri, (q_in, q_out, q_rv, below_base)


def _labels_from(q_in, q_out, q_rv, below_base) -> np.ndarray:
    lab = np.zeros(np.broadcast_shapes(q_in.shape, q_out.shape, q_rv.shape), dtype=np.uint8)
    lab[(q_rv < 1.0) & below_base] = 1
    lab[(q_out < 1.0) & below_base] = 2
    lab[(q_in < 1.0) & below_base] = 3
    return lab


def _realism_fields(p: dict, pid: int, seed: int, window_shape: tuple[int, ...], realism: float) -> dict:
    """Random fields of the appearance realism (own seed: geometry draws are untouched)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng([int(seed), int(pid), 7919])
    s = p["spacing"][0]
    nx, ny, nz = p["shape"]
    # trabeculae: thresholded smooth noise (about 2 mm structures), about a third of the band is muscle
    trab = gaussian_filter(rng.standard_normal(window_shape).astype(np.float32), sigma=(1.6 / s, 1.6 / s, 0.0))
    trab /= max(float(trab.std()), 1e-6)
    thr = float(rng.uniform(0.2, 0.6))
    trab = np.clip((trab - thr) / 0.5, 0.0, 1.0) * realism
    tex = gaussian_filter(rng.standard_normal((nx, ny, nz)).astype(np.float32), sigma=(1.2 / s, 1.2 / s, 0.0))
    tex /= max(float(tex.std()), 1e-6)
    return dict(
        trab=trab, trab_band=float(rng.uniform(0.7, 0.8)), tex=tex, tex_amp=float(rng.uniform(0.05, 0.1)) * realism,
        blur=float(rng.uniform(0.4, 0.9)) * realism / 1.0,  # in-plane sigma, voxels
        coil_gain=float(rng.uniform(0.4, 1.0)) * realism, coil_depth=float(rng.uniform(40.0, 80.0)),
        coil_x=float(rng.uniform(-60.0, 60.0)),
    )


def acdc_phantom(pid: int, seed: int = 0, realism: float = 1.0) -> dict:
    """One patient: {"ED": (image int16 (X, Y, Z), label uint8), "ES": (...), "info": {...}, "affine": (4, 4)}.

    ``realism`` (0–1) adds trabeculae in the blood pools, texture, partial-volume blur and a surface-coil
    field (module doc); labels and geometry are the same for every ``realism``."""
    realism = float(realism)
    if not 0.0 <= realism <= 1.0:
        raise ValueError(f"realism: expected a value in [0, 1], got {realism}")
    p = _patient_params(pid, seed)
    X, Y, Zc = _grid(p)
    t = p["spacing"][2]
    it = p["intensity"]
    nx, ny, nz = p["shape"]
    # static background (thick-slice average) and coil bias, shared by both frames
    bg = np.mean([_background(p, X, Y, Zc + o * t) for o in (-1 / 3, 0.0, 1 / 3)], axis=0)
    fx, fy = X / (nx * p["spacing"][0]), Y / (ny * p["spacing"][1])
    fz = (Zc - 0.5 * nz * t) / max(nz * t, 1.0)
    bias = np.exp(p["bias"][0] * fx + p["bias"][1] * fy + p["bias"][2] * fz + p["bias_r2"] * (fx**2 + fy**2))
    rng = np.random.default_rng(p["noise_seed"])
    # the heart (RV, atrium and pericardium included) lies within this window about its centre
    c = p["heart_shift"] + p["body_shift"]
    half = 2.8 * (p["R"] + p["T"]) * max(1.0, p["rv_scale"]) + 12.0
    sub = tuple(
        slice(int(np.searchsorted(a.ravel(), ci - half)), int(np.searchsorted(a.ravel(), ci + half)))
        for a, ci in ((X, c[0]), (Y, c[1]))
    )
    Xs, Ys = X[sub[0]], Y[:, sub[1]]
    window = (Xs.shape[0], Ys.shape[1], nz)
    real = _realism_fields(p, pid, seed, window, realism) if realism > 0 else None
    if real is not None:
        # surface coil on the anterior chest wall: sensitivity falls off with depth from it
        depth = np.clip(p["body"][1] + p["body_shift"][1] - Y, 0.0, None)
        lateral = np.exp(-(((X - p["body_shift"][0] - real["coil_x"]) / 150.0) ** 2))
        bias = bias * (1.0 + real["coil_gain"] * lateral * np.exp(-depth / real["coil_depth"]))
    out: dict = {}
    for phase in ("ED", "ES"):
        geo = _heart_frame(p, phase)
        acc = np.zeros((nx, ny, nz), dtype=np.float32)
        cover = np.zeros_like(acc)
        label = np.zeros((nx, ny, nz), dtype=np.uint8)
        for o in _SUBSAMPLES:
            lv, myo, rv, rvw, la, peri, qs = _heart(p, geo, Xs, Ys, Zc + o * t)
            blood_lv = blood_rv = it["blood"]
            if real is not None:
                # trabeculae / papillary muscles: myocardium-dark detail in a band along the endocardium
                q_in, _, q_rv, _ = qs
                b = real["trab_band"]
                band_lv = np.clip((q_in - b) / (1.0 - b), 0.0, 1.0) * (q_in < 1.0)
                band_rv = np.clip((q_rv - b) / (1.0 - b), 0.0, 1.0) * (q_rv < 1.0)
                blood_lv = it["blood"] + (it["myo"] - it["blood"]) * real["trab"] * band_lv
                blood_rv = it["blood"] + (it["myo"] - it["blood"]) * real["trab"] * band_rv
            acc[sub] += (lv * blood_lv + myo * it["myo"] + rv * blood_rv * 0.95 + rvw * it["myo"]
                    + la * it["blood"] * 0.92 + peri * it["fat"] * 0.85)
            cover[sub] += lv + myo + rv + rvw + la + peri
            if o == 0.0:
                label[sub] = _labels_from(*qs)
        n = float(len(_SUBSAMPLES))
        clean = (acc + np.clip(n - cover, 0.0, n) * bg) / n
        if real is not None:
            from scipy.ndimage import gaussian_filter

            clean = clean * (1.0 + real["tex_amp"] * real["tex"])
            if real["blur"] > 0.05:
                clean = gaussian_filter(clean, sigma=(real["blur"], real["blur"], 0.0))
        clean = clean * bias * p["scale"]
        sigma = p["noise"] * p["scale"]
        noisy = np.sqrt((clean + rng.normal(0.0, sigma, clean.shape)) ** 2 + rng.normal(0.0, sigma, clean.shape) ** 2)
        frame = 1 if phase == "ED" else p["es_frame"]
        out[phase] = (np.clip(np.round(noisy), 0, 32767).astype(np.int16), label, frame)
    s, _, t = p["spacing"]
    affine = np.diag([s, s, t, 1.0])
    affine[:3, 3] = [-(nx - 1) * s / 2.0, -(ny - 1) * s / 2.0, -(nz - 1) * t / 2.0]
    out["affine"] = affine
    out["info"] = dict(ED=1, ES=p["es_frame"], Group=p["group"], Height=p["height"], NbFrame=p["nb_frame"],
                       Weight=p["weight"])
    return out


def write_acdc_patient(folder: str | Path, pid: int, seed: int = 0, realism: float = 1.0) -> Path:
    """Write ``folder/patientNNN/`` (Info.cfg, ED/ES frames and their ``_gt`` labels); returns that folder.

    ``realism``: see :func:`acdc_phantom` (default 1.0 for newly written data; 0.0 gives the plain
    phantoms the shipped models were trained on)."""
    name = f"patient{pid:03d}"
    d = Path(folder) / name
    d.mkdir(parents=True, exist_ok=True)
    ph = acdc_phantom(pid, seed, realism=realism)
    info = ph["info"]
    lines = [f"ED: {info['ED']}", f"ES: {info['ES']}", f"Group: {info['Group']}", f"Height: {info['Height']:.1f}",
             f"NbFrame: {info['NbFrame']}", f"Weight: {info['Weight']:.1f}"]
    (d / "Info.cfg").write_text("\n".join(lines) + "\n")
    for phase in ("ED", "ES"):
        image, label, frame = ph[phase]
        save_nifti(d / f"{name}_frame{frame:02d}.nii.gz", image, ph["affine"])
        save_nifti(d / f"{name}_frame{frame:02d}_gt.nii.gz", label, ph["affine"])
    return d


def write_synthetic_acdc(out: str | Path, n: int = 24, seed: int = 0, n_test: int = 6, realism: float = 1.0) -> Path:
    """Write ``out/training/patient001..n`` and ``out/testing/patient101..100+n_test``; returns ``out``.

    ``realism`` (0–1, default 1.0): appearance detail of :func:`acdc_phantom`; 0.0 writes the plain phantoms."""
    if n < 0 or n_test < 0 or n > 100 or n_test > 50:
        raise ValueError(f"expected 0 <= n <= 100 and 0 <= n_test <= 50 (the ACDC numbering), got n={n}, n_test={n_test}")
    root = Path(out)
    for pid in range(1, n + 1):
        write_acdc_patient(root / "training", pid, seed, realism=realism)
    for pid in range(101, 101 + n_test):
        write_acdc_patient(root / "testing", pid, seed, realism=realism)
    root.mkdir(parents=True, exist_ok=True)
    return root
