"""Fine-tune the registration network on the datastore's images (unsupervised; Dice where both have labels).

One training path: the task writes the datastore's pairs as a datalist json and runs the bundle's own
``train.json`` (``samir.bundle.bundle_workflow``, as ``samir train`` and the demo do) with overrides:
``dataset pairs``, the model grid, the source weights' network arguments and ``init_weights``, no
validation. The trained network is written to the app's ``model/samir_finetuned.pt`` with its sidecar
(``samir.model_files.save_model``); the infer task switches to it on its next request.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import tempfile
import time
from pathlib import Path

import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from lib.configs.registration import RegistrationConfig
from lib.datastore import as_nifti

__all__ = ["RegistrationFineTune"]

logger = logging.getLogger(__name__)


def _parse_size(value) -> tuple[int, int, int]:
    parts = [int(v) for v in (value.replace("x", ",").split(",") if isinstance(value, str) else value)]
    if len(parts) != 3 or min(parts) < 8:
        raise ValueError(f"spatial_size: expected three sizes >= 8 like '64,64,16', got {value!r}")
    return tuple(parts)


class RegistrationFineTune(TrainTask):
    """``TrainTask`` whose options (Slicer's train options) are ``max_epochs``, ``max_pairs``,
    ``learning_rate``, ``spatial_size`` ("H,W,D" model grid), ``dice_weight`` (labelled pairs only)."""

    def __init__(self, cfg: RegistrationConfig):
        super().__init__("Fine-tune SAMIR on the datastore's images (unsupervised; labels where present)")
        self.cfg = cfg

    def config(self) -> dict:
        return {"max_epochs": 2, "max_pairs": 16, "learning_rate": 1e-4, "spatial_size": "64,64,16",
                "dice_weight": 0.5, "seed": 0}

    @property
    def stats_file(self) -> Path:
        return self.cfg.model_dir / "samir_finetuned_stats.json"

    def stats(self) -> dict:
        try:
            return json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            return {}

    def _pairs(self, datastore: Datastore, max_pairs: int, seed: int, folder: Path) -> list[dict]:
        ids = sorted(datastore.list_images())
        if len(ids) < 2:
            raise ValueError(f"datastore {self.cfg.studies}: fine-tuning needs at least 2 images, found {len(ids)}")
        files = {}
        for i in ids:
            image = datastore.get_image_uri(i)
            if not image.lower().endswith((".nii", ".nii.gz", ".nrrd")):
                continue
            label = datastore.get_label_uri(i, "final") if datastore.get_label_by_image_id(i, "final") else ""
            files[i] = (as_nifti(image, folder, f"{i}_image"),
                        as_nifti(label, folder, f"{i}_label") if label else None)
        pairs = list(itertools.permutations(sorted(files), 2))
        random.Random(seed).shuffle(pairs)
        items = []
        for f, m in pairs[:max_pairs]:
            item = {"fixed": str(files[f][0]), "moving": str(files[m][0]), "pair_id": f"{f}<-{m}"}
            if files[f][1] is not None and files[m][1] is not None:
                item.update(fixed_label=str(files[f][1]), moving_label=str(files[m][1]))
            items.append(item)
        return items

    def __call__(self, request: dict, datastore: Datastore) -> dict:
        import numpy as np
        from samir.bundle import bundle_workflow
        from samir.data.checks import load_array
        from samir.model_files import save_model

        opts = {**self.config(), **{k: v for k, v in request.items() if k in self.config()}}
        max_epochs, max_pairs = int(opts["max_epochs"]), int(opts["max_pairs"])
        size, lr, dice_weight = _parse_size(opts["spatial_size"]), float(opts["learning_rate"]), float(opts["dice_weight"])
        device = self.cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        source = Path(self.cfg.active_weights() or self.cfg.default_weights_path())
        network_arguments = self.cfg.network_arguments()  # before the fine-tuned file (maybe the source) is replaced
        start = time.time()

        with tempfile.TemporaryDirectory(prefix="samir-finetune-") as tmp:
            items = self._pairs(datastore, max_pairs, int(opts["seed"]), Path(tmp))
            labelled = [it for it in items if "moving_label" in it]
            num_classes = None
            if labelled and dice_weight > 0:
                num_classes = 1 + max(int(load_array(it[k], k).max()) for it in labelled for k in ("fixed_label", "moving_label"))
            datalist = Path(tmp) / "datalist.json"
            datalist.write_text(json.dumps({"train": items, "val": (labelled or items)[:1]}))
            overrides = {
                "dataset": "pairs", "dataset_dir": str(datalist), "spatial_size": list(size),
                "output_dir": str(Path(tmp) / "run"), "num_epochs": max_epochs, "learning_rate": lr,
                "val_interval": max_epochs + 1, "max_val_pairs": 1,  # no validation: the datastore has no held-out set
                # label ids of the datastore (the validator needs at least one even when it never runs)
                "labels": {i: str(i) for i in range(1, max(num_classes or 0, 2))},
                "dice_weight": dice_weight if num_classes else 0.0,
                "seed": int(opts["seed"]), "device": f"$torch.device('{device}')",
                # the network the source weights were made with (their sidecar), then loaded with them
                "network_def": {"_target_": "samir.model_files.build_network", "weights": str(source),
                                "encoder": self.cfg.encoder, "checkpoint": self.cfg.checkpoint,
                                "cache_dir": self.cfg.cache_dir},
                "init_weights": str(source),
            }
            logger.info(f"fine-tuning {source} on {len(items)} pairs ({len(labelled)} labelled) for {max_epochs} epochs "
                        f"through the bundle's train.json")
            wf = bundle_workflow(["train.json"], "training", configure_logging=False, **overrides)
            wf.run()
            network = wf.parser.get_parsed_content("network")
            output = wf.parser.get_parsed_content("train#trainer").state.output or {}
            wf.finalize()

        target = self.cfg.finetuned
        save_model(target, network, network_arguments, source_weights=str(source), pairs=len(items),
                   epochs=max_epochs)
        stats = {
            "model": str(target), "source_weights": str(source), "pairs": len(items), "labelled_pairs": len(labelled),
            "total_epochs": max_epochs, "epoch": max_epochs, "total_time": round(time.time() - start, 2),
            "last_loss": {k: float(np.round(v, 6)) for k, v in output.items()} if isinstance(output, dict) else None,
            "best_metric": 0, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        self.stats_file.write_text(json.dumps(stats, indent=2))
        return stats
