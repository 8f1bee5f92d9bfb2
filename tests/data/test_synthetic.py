"""Synthetic stand-ins: official layouts, realistic ranges, motion, determinism by seed."""

from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pytest
from samir.data.abdomen import ABDOMEN_LABELS
from samir.data.acdc import read_info_cfg
from samir.data.synthetic_abdomen import FOV_MM, write_synthetic_abdomen
from samir.data.synthetic_acdc import acdc_phantom, write_acdc_patient, write_synthetic_acdc
from synth_params import ABDOMEN_SMALL, ACDC_TEST, ACDC_TRAIN


def _patients(root):
    return [root / "training" / f"patient{i:03d}" for i in ACDC_TRAIN] + [
        root / "testing" / f"patient{i:03d}" for i in ACDC_TEST
    ]


def _frames(d):
    info = read_info_cfg(d / "Info.cfg")
    out = {}
    for phase in ("ED", "ES"):
        img = nib.load(str(d / f"{d.name}_frame{info[phase]:02d}.nii.gz"))
        lab = nib.load(str(d / f"{d.name}_frame{info[phase]:02d}_gt.nii.gz"))
        out[phase] = (img, np.asarray(img.dataobj), np.asarray(lab.dataobj))
    return info, out


def test_acdc_layout_and_grid(acdc_root):
    for d in _patients(acdc_root):
        info, fr = _frames(d)
        assert (d / "Info.cfg").read_text().splitlines()[0] == "ED: 1"
        assert info["Group"] in {"NOR", "MINF", "DCM", "HCM", "RV"}
        img = fr["ED"][0]
        sx, sy, sz = img.header.get_zooms()
        nx, ny, nz = img.shape
        assert 1.3 <= sx <= 1.8 and sx == sy and 5.0 <= sz <= 10.0
        assert 154 <= nx <= 256 and 154 <= ny <= 256 and (nx, ny) != (128, 128) and 6 <= nz <= 12
        np.testing.assert_allclose(np.abs(np.diag(img.affine))[:3], (sx, sy, sz), rtol=1e-6)
        assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
        for phase in ("ED", "ES"):
            _, arr, lab = fr[phase]
            assert arr.dtype == np.int16 and lab.dtype == np.uint8 and arr.shape == lab.shape
            assert set(np.unique(lab).tolist()) == {0, 1, 2, 3}, f"{d.name} {phase}"


def test_acdc_anatomy_and_motion(acdc_root):
    groups = set()
    for d in _patients(acdc_root):
        info, fr = _frames(d)
        groups.add(info["Group"])
        (_, ed, led), (_, _, les) = fr["ED"], fr["ES"]
        # bright blood, darker myocardium
        assert np.median(ed[led == 3]) > 2.0 * np.median(ed[led == 2])
        assert np.median(ed[led == 1]) > 2.0 * np.median(ed[led == 2])
        # the LV cavity contracts by at least 10 %, the myocardium thickens
        v_ed, v_es = (led == 3).sum(), (les == 3).sum()
        assert v_es <= 0.9 * v_ed, (d.name, v_es / v_ed)
        both = [k for k in range(led.shape[2]) if (led[..., k] == 3).any() and (les[..., k] == 3).any()]
        thick = {}
        for phase, lab in (("ED", led), ("ES", les)):
            r_endo = np.sqrt([(lab[..., k] == 3).sum() / np.pi for k in both])
            r_epi = np.sqrt([((lab[..., k] == 3) | (lab[..., k] == 2)).sum() / np.pi for k in both])
            thick[phase] = float(np.mean(r_epi - r_endo))
        assert thick["ES"] > 1.1 * thick["ED"], (d.name, thick)
        # through-plane motion: the base (top labelled slice of the LV) does not rise, the LV shortens
        top = lambda lab: max(k for k in range(lab.shape[2]) if (lab[..., k] == 3).any())  # noqa: E731
        assert top(les) <= top(led)
        z_ed = np.argwhere(led == 3)[:, 2].mean()
        z_es = np.argwhere(les == 3)[:, 2].mean()
        assert z_es < z_ed  # the cavity's centroid moves towards the apex (lower slices)
    assert len(groups) >= 4


def test_acdc_patients_differ(acdc_root):
    shapes = {nib.load(str(next(d.glob("*_frame01.nii.gz")))).shape for d in _patients(acdc_root)}
    assert len(shapes) >= 5
    lv = [np.asarray(nib.load(str(d / f"{d.name}_frame01_gt.nii.gz")).dataobj) for d in _patients(acdc_root)]
    assert len({int((x == 3).sum()) for x in lv}) == len(lv)


def test_acdc_deterministic(tmp_path):
    a, b = acdc_phantom(3, seed=5), acdc_phantom(3, seed=5)
    c = acdc_phantom(3, seed=6)
    for phase in ("ED", "ES"):
        assert np.array_equal(a[phase][0], b[phase][0]) and np.array_equal(a[phase][1], b[phase][1])
    assert a["ED"][0].shape != c["ED"][0].shape or not np.array_equal(a["ED"][0], c["ED"][0])
    d1 = write_acdc_patient(tmp_path / "s1", 3, seed=5)
    d2 = write_acdc_patient(tmp_path / "s2", 3, seed=5)
    for f in sorted(p.name for p in d1.glob("*.nii.gz")):
        assert np.array_equal(np.asarray(nib.load(str(d1 / f)).dataobj), np.asarray(nib.load(str(d2 / f)).dataobj))
    assert (d1 / "Info.cfg").read_text() == (d2 / "Info.cfg").read_text()


def test_write_synthetic_acdc_small(tmp_path):
    root = write_synthetic_acdc(tmp_path / "acdc", n=2, seed=0, n_test=1)
    assert sorted(p.name for p in (root / "training").iterdir()) == ["patient001", "patient002"]
    assert sorted(p.name for p in (root / "testing").iterdir()) == ["patient101"]
    assert len(list((root / "training" / "patient001").glob("*.nii.gz"))) == 4
    with pytest.raises(ValueError, match="expected 0 <= n <= 100"):
        write_synthetic_acdc(tmp_path / "x", n=101)


def test_abdomen_layout(abdomen_root):
    meta = json.loads((abdomen_root / "AbdomenCTCT_dataset.json").read_text())
    assert meta["numTraining"] == 30 and len(meta["training"]) == 30 and meta["modality"] == {"0": "CT"}
    assert meta["labels"]["0"] == {str(k): v for k, v in ABDOMEN_LABELS.items()}
    assert meta["training"][0] == {"image": "./imagesTr/AbdomenCTCT_0001_0000.nii.gz",
                                   "label": "./labelsTr/AbdomenCTCT_0001_0000.nii.gz"}
    assert {"fixed", "moving"} == set(meta["registration_val"][0])
    img = nib.load(str(abdomen_root / "imagesTr" / "AbdomenCTCT_0007_0000.nii.gz"))
    lab = nib.load(str(abdomen_root / "labelsTr" / "AbdomenCTCT_0007_0000.nii.gz"))
    assert img.shape == lab.shape == ABDOMEN_SMALL
    np.testing.assert_allclose(img.header.get_zooms(), [f / s for f, s in zip(FOV_MM, ABDOMEN_SMALL)])
    np.testing.assert_allclose(FOV_MM, (384.0, 320.0, 512.0))
    arr, seg = np.asarray(img.dataobj), np.asarray(lab.dataobj)
    assert arr.dtype == np.int16 and seg.dtype == np.uint8
    assert set(np.unique(seg).tolist()) == set(range(14))
    # CT numbers: air outside, fat, soft-tissue organs, contrast-enhanced vessels, bone
    assert np.median(arr[0, 0, :]) < -900
    assert np.median(arr[seg == 6]) == pytest.approx(105, abs=40)  # liver
    assert np.median(arr[seg == 8]) > 130  # aorta
    assert (arr > 400).sum() > 50  # bone
    assert ((arr > -150) & (arr < -60)).sum() > 0.05 * arr.size  # fat


def test_abdomen_subjects_differ_smoothly(abdomen_root):
    segs = [np.asarray(nib.load(str(abdomen_root / "labelsTr" / f"AbdomenCTCT_{i:04d}_0000.nii.gz")).dataobj)
            for i in (1, 2, 3)]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        d = [2 * ((segs[a] == k) & (segs[b] == k)).sum() / ((segs[a] == k).sum() + (segs[b] == k).sum())
             for k in (1, 2, 3, 6, 7)]
        assert 0.2 < np.mean(d) < 0.95  # different subjects, same anatomy
    vols = np.array([[(s == k).sum() for k in range(1, 14)] for s in segs])
    assert (vols.std(0) > 0).all()


def test_abdomen_deterministic(tmp_path):
    a = write_synthetic_abdomen(tmp_path / "a", n=2, seed=3, shape=(24, 20, 32))
    b = write_synthetic_abdomen(tmp_path / "b", n=2, seed=3, shape=(24, 20, 32))
    c = write_synthetic_abdomen(tmp_path / "c", n=2, seed=4, shape=(24, 20, 32))
    name = "imagesTr/AbdomenCTCT_0002_0000.nii.gz"
    load = lambda r: np.asarray(nib.load(str(r / name)).dataobj)  # noqa: E731
    assert np.array_equal(load(a), load(b)) and not np.array_equal(load(a), load(c))
    assert json.loads((a / "AbdomenCTCT_dataset.json").read_text())["registration_val"] == []


@pytest.mark.slow
def test_full_size_generation(tmp_path, capsys):
    """Default sizes: ACDC n=24+6 and AbdomenCTCT at 192x160x256 (timings and MB are printed)."""
    t0 = time.time()
    root = write_synthetic_acdc(tmp_path / "acdc", n=24, seed=0, n_test=6)
    t_acdc = time.time() - t0
    mb_acdc = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
    t0 = time.time()
    abd = write_synthetic_abdomen(tmp_path / "abd", n=2, seed=0)
    t_abd = time.time() - t0
    mb_abd = sum(p.stat().st_size for p in abd.rglob("*") if p.is_file()) / 1e6
    assert nib.load(str(abd / "imagesTr" / "AbdomenCTCT_0001_0000.nii.gz")).shape == (192, 160, 256)
    with capsys.disabled():
        print(f"\nACDC 24+6: {t_acdc:.1f} s, {mb_acdc:.1f} MB; AbdomenCTCT 2 at full size: {t_abd:.1f} s, {mb_abd:.1f} MB")
    assert t_acdc < 60
