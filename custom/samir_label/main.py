"""SAMIR MONAI Label app: registrations (label propagation) served to 3D Slicer.

Start: ``monailabel start_server --app custom/samir_label --studies DIR [--conf weights PATH] [--workers N]``
(options: ``lib/configs/registration.py``). One model, ``samir_registration`` (type segmentation, so
Slicer lists it): the image on screen is the fixed image, the moving one is picked from a drop-down of
labelled datastore images, and the result is the moving label warped onto the fixed grid.

Hardening over the stock server (monailabel 0.8.5): the datastore (``lib/datastore.py``) refuses ids,
tags and files that are not plain names inside the studies folder, and ``infer`` accepts only a
datastore id (or a Slicer session's upload), never an arbitrary server path; every refusal is a 4xx
with a message.
"""

from __future__ import annotations

import logging
import os

import samir
from fastapi import HTTPException
from lib.configs.registration import RegistrationConfig
from lib.datastore import SafeLocalDatastore, inside, is_plain_name
from lib.infers.registration import LabelPropagation
from lib.trainers.registration import RegistrationFineTune
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp

logger = logging.getLogger(__name__)

MODEL_NAME = "samir_registration"


class SamirLabelApp(MONAILabelApp):
    """The MONAI Label app: a hardened local datastore, the label-propagation infer task, the fine-tune task."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.cfg = RegistrationConfig.from_conf(app_dir, studies, conf)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="SAMIR",
            description="SAMIR registration: propagate a labelled image's segmentation onto the image on screen",
            version=samir.__version__,
        )
        logger.info(f"SAMIR app: {self.cfg.describe()}; outputs in {self.cfg.outputs_dir}")

    def init_datastore(self) -> SafeLocalDatastore:
        if self.studies.startswith(("http://", "https://")):
            raise ValueError(f"--studies {self.studies}: the SAMIR app serves a local folder of NIfTI/NRRD images")
        return SafeLocalDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self):
        return {MODEL_NAME: LabelPropagation(self.cfg, self._datastore)}

    def init_trainers(self):
        return {MODEL_NAME: RegistrationFineTune(self.cfg)}

    def _allowed_roots(self) -> list[str]:
        roots = [self.cfg.studies]
        if self.sessions() is not None:  # Slicer uploads a volume that is not in the datastore as a session
            roots.append(self.sessions().store_path)
        return [str(r) for r in roots]

    def infer(self, request, datastore=None):
        """Resolve ``image`` to a file inside the studies folder (or a session) before the stock ``infer``."""
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(status_code=404, detail=f"model: no model {model!r}; available: {sorted(self._infers)}")
        image = request.get("image")
        if isinstance(image, str):
            request = dict(request)
            if is_plain_name(image):
                request["image"] = str(self._datastore.image_path(image, "image"))
                request["samir_fixed_id"] = image
            elif not (os.path.isfile(image) and any(inside(image, r) for r in self._allowed_roots())):
                raise HTTPException(
                    status_code=400,
                    detail=f"image: expected the id of a datastore image, got {image!r} (paths outside the studies "
                           f"folder are refused)",
                )
        return super().infer(request, datastore)
