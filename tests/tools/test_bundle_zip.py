"""The model-zoo zip unzips into a bundle that MONAI's own tools accept."""

import json
import os
import zipfile
from pathlib import Path

import pytest
from samir.tools.bundle_zip import write_bundle_zip

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"


def test_zip_layout_and_monai_tools(tmp_path, monkeypatch):
    from monai.bundle import verify_metadata, verify_net_in_out

    version = json.loads((REPO / "bundle/configs/metadata.json").read_text())["version"]
    path = write_bundle_zip(REPO / "bundle", tmp_path)
    assert path.name == f"samir_registration_v{version}.zip"
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "unzipped")
    for member in ("configs/metadata.json", "configs/train.json", "configs/inference.json", "configs/evaluate.json",
                   "configs/multi_gpu_train.json", "configs/logging.conf", "docs/README.md",
                   "docs/data_license.txt", "large_files.yml", "LICENSE", "samir/networks/samir_net.py"):
        assert f"samir_registration/{member}" in names, member
    assert not any("__pycache__" in n for n in names)
    root = tmp_path / "unzipped" / "samir_registration"
    monkeypatch.chdir(root)
    if SCHEMA.is_file():
        verify_metadata(meta_file="configs/metadata.json", filepath=str(SCHEMA))
    else:
        pytest.skip(f"offline schema not found at {SCHEMA}")
    verify_net_in_out(net_id="network_def", meta_file="configs/metadata.json", config_file="configs/train.json",
                      n=2, encoder="tiny", encoder_image_size=32, cache_dir=False)
    assert os.path.samefile(os.getcwd(), root)


def test_zip_needs_a_bundle(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        write_bundle_zip(tmp_path, tmp_path)
