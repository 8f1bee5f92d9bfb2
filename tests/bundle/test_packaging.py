"""Packaging facts: licences where the zoo and PyPI look, and a large_files.yml MONAI's downloader can read."""

import inspect
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", ["LICENSE", "bundle/LICENSE"])
def test_apache_license_present(path):
    text = (REPO / path).read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_large_files_entries_are_download_url_arguments():
    from monai.apps.utils import download_url
    from samir.encoders.base import LARGE_FILES

    assert (REPO / LARGE_FILES).is_file(), f"the error messages point to {LARGE_FILES}"
    entries = yaml.safe_load((REPO / LARGE_FILES).read_text())["large_files"]
    accepted = set(inspect.signature(download_url).parameters) | {"path"}  # path becomes filepath
    for entry in entries:
        assert set(entry) <= accepted, f"{entry['path']}: keys {set(entry) - accepted} break download_large_files"
        assert entry["url"].startswith("https://"), entry["url"]
        assert entry["hash_type"] == "sha256"
        assert entry["hash_val"] == "" or len(entry["hash_val"]) == 64
