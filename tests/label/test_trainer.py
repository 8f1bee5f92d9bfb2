"""The app's train task fine-tunes the registration network on the datastore and writes a loadable model."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "custom" / "samir_label"


@pytest.mark.slow
def test_finetune_writes_loadable_weights(acdc_crop, tiny_weights, tmp_path):
    sys.path.insert(0, str(APP))
    try:
        from lib.configs.registration import RegistrationConfig
        from lib.datastore import SafeLocalDatastore
        from lib.trainers.registration import RegistrationFineTune
    finally:
        sys.path.remove(str(APP))
    from samir.model_files import load_model

    studies = tmp_path / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for key in ("ed", "es"):
        shutil.copy(acdc_crop[key], studies / acdc_crop[key].name)
        shutil.copy(acdc_crop[f"{key}_gt"], studies / "labels" / "final" / acdc_crop[key].name)
    ds = SafeLocalDatastore(str(studies), extensions=["*.nii.gz"])
    cfg = RegistrationConfig.from_conf(str(tmp_path / "app"), str(studies),
                                       {"weights": str(tiny_weights), "device": "cpu", "cache_dir": "false"})
    task = RegistrationFineTune(cfg)
    stats = task({"max_epochs": 1, "max_pairs": 2, "spatial_size": "32,32,8"}, ds)
    assert stats["pairs"] == 2 and stats["labelled_pairs"] == 2 and "loss" in stats["last_loss"]
    assert cfg.finetuned.is_file() and json.loads(cfg.finetuned.with_suffix(".json").read_text())["network"]
    assert task.stats()["model"] == str(cfg.finetuned)
    load_model(cfg.finetuned, cache_dir=False)  # the infer task can load it
    # with --conf weights the configured file stays in use; without, the fine-tuned one is picked up
    assert RegistrationConfig.from_conf(str(tmp_path / "app"), str(studies), {}).active_weights() == str(cfg.finetuned)
