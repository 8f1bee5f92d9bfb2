"""Fixtures of the MONAI Label app tests: a small synthetic ACDC pair and a tiny SAMIR fitted to it."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

CROP = (96, 96)  # in-plane box around the heart (voxels), then every 2nd voxel in-plane: 48 x 48 x D
STEP = 2  # keeps fitting and serving fast on 2 shared CPU cores
FIT_STEPS = 30
TINY_NETWORK = {"encoder": "tiny", "levels": 3, "channels": [4, 8, 8], "head_channels": 8, "head_blocks": 1}


def _crop_patient(src: Path, dst: Path, frames: list[str]) -> dict[str, Path]:
    """Crop every frame (and its _gt) of one patient to ``CROP`` around the union of its labels."""
    labels = [np.asarray(nib.load(src / f"{f}_gt.nii.gz").dataobj) for f in frames]
    fg = np.argwhere(np.any([lab > 0 for lab in labels], axis=0))
    centre = (fg.min(0) + fg.max(0)) // 2
    shape = labels[0].shape
    start = [int(np.clip(centre[a] - CROP[a] // 2, 0, shape[a] - CROP[a])) for a in range(2)]
    box = (slice(start[0], start[0] + CROP[0], STEP), slice(start[1], start[1] + CROP[1], STEP), slice(None))
    dst.mkdir(parents=True, exist_ok=True)
    out = {}
    for f in frames:
        for suffix in ("", "_gt"):
            img = nib.load(src / f"{f}{suffix}.nii.gz")
            affine = img.affine.copy()
            affine[:3, 3] = img.affine[:3, :3] @ np.array([start[0], start[1], 0]) + img.affine[:3, 3]
            affine[:3, :2] *= STEP
            path = dst / f"{f}{suffix}.nii.gz"
            nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[box], affine, img.header), path)
            out[f"{f}{suffix}"] = path
    return out


@pytest.fixture(scope="session")
def acdc_crop(tmp_path_factory) -> dict[str, Path]:
    """patient001 ED ("frame01") and ES frames and their labels, cropped around the heart, 48 x 48 x D."""
    from samir.data.acdc import read_info_cfg
    from samir.data.synthetic_acdc import write_synthetic_acdc

    root = write_synthetic_acdc(tmp_path_factory.mktemp("acdc"), n=1, seed=0, n_test=0)
    patient = root / "training" / "patient001"
    info = read_info_cfg(patient / "Info.cfg")
    ed, es = (f"patient001_frame{int(info[k]):02d}" for k in ("ED", "ES"))
    files = _crop_patient(patient, tmp_path_factory.mktemp("acdc_crop"), [ed, es])
    return {"ed": files[ed], "ed_gt": files[f"{ed}_gt"], "es": files[es], "es_gt": files[f"{es}_gt"],
            "ed_id": ed, "es_id": es}


@pytest.fixture(scope="session")
def tiny_weights(acdc_crop, tmp_path_factory) -> Path:
    """A tiny SAMIR fitted to ED -> ES of ``acdc_crop`` (moving ED, fixed ES) for ``FIT_STEPS`` Adam steps, as
    ``model.pt`` + ``model.json``; inputs built as ``Registrar`` builds them (native grid, min-max)."""
    from samir.losses import RegistrationLoss
    from samir.networks import build_samir

    def load(path):
        x = torch.as_tensor(np.asarray(nib.load(path).dataobj), dtype=torch.float32)[None, None]
        return (x - x.min()) / (x.max() - x.min())

    torch.manual_seed(0)
    moving, fixed = load(acdc_crop["ed"]), load(acdc_crop["es"])
    args = {k: v for k, v in TINY_NETWORK.items() if k != "encoder"}
    net = build_samir("tiny", cache_dir=False, **args)
    loss_fn = RegistrationLoss(sim_weight=1.0, smooth_weight=0.5, hfc_weight=0.5, ncc_kernel=7)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=3e-3)
    x = torch.cat([moving, fixed], 1)
    emb = (net.encode(moving), net.encode(fixed))
    net.train()
    for _ in range(FIT_STEPS):
        opt.zero_grad()
        loss_fn(moving, fixed, net(x, *emb, return_all=True))["loss"].backward()
        opt.step()
    out = tmp_path_factory.mktemp("tiny_model")
    torch.save(net.state_dict(), out / "model.pt")
    (out / "model.json").write_text(json.dumps({"network": TINY_NETWORK}))
    return out / "model.pt"
