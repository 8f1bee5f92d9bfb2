"""Label propagation: warp a labelled datastore image's ``final`` label onto the image open in Slicer.

The registration is ``samir.register.Registrar.register_files``: the same loading, checks, resampling,
network and warping as ``samir register`` and the bundle. This task only picks the files, converts
NRRD inputs to NIfTI (Slicer saves labels as ``.nrrd``), and turns the warped label into what Slicer
expects: one ``.nrrd`` uint8 label map on the fixed image's grid, values 1..N named by ``label_names``.

Slicer never starts it on its own: it auto-runs a segmentation model after "Next Sample" only when one
of the app's labels is among the model's ``labels``; this model declares none (its names come with
each result), so it runs only when the user presses Run.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.configs.registration import RegistrationConfig
from lib.datastore import SafeLocalDatastore, as_nifti, check_image_file, check_plain_name

__all__ = ["LabelPropagation", "AUTO_MOVING"]

logger = logging.getLogger(__name__)

# first item of the drop-down: "the most recently labelled image other than the one on screen"
AUTO_MOVING = "latest labelled (auto)"


class LabelPropagation(InferTask):
    """Registration (SAMIR) of a labelled moving image onto the fixed image; returns the warped label.

    Request: ``image`` (the fixed image's path, resolved by the app), ``moving`` (a datastore id, or
    ``AUTO_MOVING``). Result: (label ``.nrrd`` path, json with ``label_names``, the saved outputs,
    folding %, runtime and the registration metrics).
    """

    def __init__(self, cfg: RegistrationConfig, datastore: SafeLocalDatastore):
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=[],  # none declared: Slicer's auto-run after "Next Sample" matches the app's labels against these
            dimension=3,
            description="SAMIR label propagation: pick a labelled moving image, press Run; its label is "
                        "registered onto the image on screen",
        )
        self.cfg = cfg
        self.datastore = datastore
        self._registrar = None
        self._registrar_key = None
        self._lock = threading.Lock()

    # -- what Slicer shows -------------------------------------------------------------------------
    def config(self) -> dict:
        """Rebuilt on every ``/info/``: the moving-image drop-down (first item is the default)."""
        return {"moving": [AUTO_MOVING, *self.datastore.labelled_by_recency()]}

    def is_valid(self) -> bool:
        return True  # listed even before weights exist: a run then says which file is missing

    # -- network -----------------------------------------------------------------------------------
    def registrar(self):
        """One ``Registrar`` per weights file (rebuilt when the train task writes new weights)."""
        from samir.register import Registrar

        weights = self.cfg.active_weights()
        path = Path(weights) if weights else self.cfg.default_weights_path()
        if not path.is_file():
            raise HTTPException(
                status_code=503,
                detail=f"registration weights {path} not found: train the bundle (bundle/docs/README.md) or start "
                       f"the server with --conf weights PATH",
            )
        key = (str(path), path.stat().st_mtime_ns)
        with self._lock:
            if key != self._registrar_key:
                self._registrar = Registrar(**self.cfg.registrar_kwargs(), verbose=False)
                self._registrar_key = key
            return self._registrar

    # -- request -----------------------------------------------------------------------------------
    def _moving_id(self, request: dict, fixed_id: str) -> str:
        moving = request.get("moving", AUTO_MOVING)
        if isinstance(moving, (list, tuple)):  # the config's list itself: take its default
            moving = moving[0] if moving else AUTO_MOVING
        if moving in (None, "", AUTO_MOVING):
            candidates = [i for i in self.datastore.labelled_by_recency() if i != fixed_id]
            if not candidates:
                raise HTTPException(
                    status_code=400,
                    detail=f"moving: no labelled image other than {fixed_id!r} in the datastore; save a label on "
                           f"another image first",
                )
            return candidates[0]
        check_plain_name(moving, "moving")
        if moving == fixed_id:
            raise HTTPException(status_code=400, detail=f"moving: {moving!r} is the fixed image itself; pick another")
        return moving

    def __call__(self, request: dict):
        start = time.perf_counter()
        image = request.get("image")
        if not isinstance(image, str) or not os.path.isfile(image):
            raise HTTPException(status_code=400, detail=f"image: expected a datastore image id, got {image!r}")
        fixed = Path(image)
        fixed_id = request.get("samir_fixed_id") or self.datastore._to_id(fixed.name)[0]
        moving_id = self._moving_id(request, fixed_id)
        moving = self.datastore.image_path(moving_id, "moving")
        label = self.datastore.final_label_path(moving_id)
        if label is None:
            raise HTTPException(
                status_code=400, detail=f"moving: image {moving_id!r} has no final label to propagate; pick a labelled one"
            )
        check_image_file(str(fixed), f"fixed image {fixed_id!r}")
        check_image_file(str(moving), f"moving image {moving_id!r}")
        check_image_file(str(label), f"final label of {moving_id!r}")

        registrar = self.registrar()
        out_dir = self.cfg.outputs_dir / f"{fixed_id}__{moving_id}"
        with tempfile.TemporaryDirectory(prefix="samir-label-") as tmp:
            tmp = Path(tmp)
            try:
                result = registrar.register_files(
                    as_nifti(fixed, tmp, "fixed"), as_nifti(moving, tmp, "moving"), out_dir,
                    moving_label=as_nifti(label, tmp, "moving_label"),
                )
            except (ValueError, FileNotFoundError) as err:
                raise HTTPException(status_code=422, detail=f"registration of {moving_id!r} onto {fixed_id!r}: {err}") from err
        label_file, label_names, values = self._slicer_label(result.files["warped_label"], moving_id, result.preset)

        metrics = result.metrics
        outputs = {k: result.files[k] for k in ("warped_image", "displacement_lps_mm", "warped_label", "ddf_voxels",
                                                 "metrics") if k in result.files}
        total = time.perf_counter() - start
        return label_file, {
            "label_names": label_names,
            "label_values": values,
            "fixed": fixed_id,
            "moving": moving_id,
            "outputs": {"folder": result.out_dir, **outputs},
            "folding_pct": metrics.get("folding_pct"),
            "sdlogj": metrics.get("sdlogj"),
            "seconds": round(total, 3),
            "register_seconds": round(float(metrics.get("register_seconds", 0.0)), 3),
            "preset": result.preset,
            "method": metrics.get("method"),
            "guard_kept": (metrics.get("guard") or {}).get("kept"),
            "weights": str(registrar.weights or self.cfg.default_weights_path()),
            "latencies": {"total": round(total, 3), "infer": round(float(metrics.get("register_seconds", 0.0)), 3)},
        }

    def _slicer_label(self, warped_label: str, moving_id: str, preset: str) -> tuple[str, dict, dict]:
        """Warped label (NIfTI, fixed grid) -> ``.nrrd`` uint8 with values 1..N, ``label_names`` {name: value}."""
        import SimpleITK as sitk
        from samir.register import PRESETS

        img = sitk.ReadImage(warped_label)
        arr = sitk.GetArrayFromImage(img)
        source = sitk.GetArrayFromImage(sitk.ReadImage(str(self.datastore.final_label_path(moving_id))))
        values = sorted(int(v) for v in np.unique(source) if v != 0)
        if len(values) > 255:
            raise HTTPException(status_code=422, detail=f"moving label of {moving_id!r}: {len(values)} labels, at most 255 fit uint8")
        names = self.datastore.label_names(moving_id) or dict(PRESETS[preset].labels)
        lut = np.zeros(int(max(values + [int(arr.max()), 0])) + 1, dtype=np.uint8)
        label_names: dict[str, int] = {}
        for new, old in enumerate(values, start=1):
            lut[old] = new
            name = names.get(old, f"label_{old}")
            label_names[name if name not in label_names else f"{name}_{old}"] = new
        out = sitk.GetImageFromArray(lut[np.asarray(arr, dtype=np.int64)])
        out.CopyInformation(img)
        fd, path = tempfile.mkstemp(suffix=".nrrd", prefix="samir-label-")
        os.close(fd)
        sitk.WriteImage(out, path, True)
        return path, label_names, {str(new): old for new, old in enumerate(values, start=1)}
