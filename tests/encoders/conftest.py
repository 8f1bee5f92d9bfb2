"""Encoder tests never read or write the developer's stored fast-path decisions."""

import pytest


@pytest.fixture(autouse=True)
def _private_fastpath_file(monkeypatch, tmp_path):
    monkeypatch.setenv("SAMIR_FASTPATH_FILE", str(tmp_path / "fastpath.json"))
