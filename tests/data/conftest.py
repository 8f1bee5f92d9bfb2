"""Shared synthetic data for the data tests (written once per session, small and fast)."""

from __future__ import annotations

import pytest
from samir.data.synthetic_abdomen import write_synthetic_abdomen
from samir.data.synthetic_acdc import write_acdc_patient
from synth_params import ABDOMEN_SMALL, ACDC_TEST, ACDC_TRAIN


@pytest.fixture(scope="session")
def acdc_root(tmp_path_factory):
    """A synthetic ACDC root with a few training (incl. validation) and testing patients."""
    root = tmp_path_factory.mktemp("acdc")
    for pid in ACDC_TRAIN:
        write_acdc_patient(root / "training", pid, seed=0)
    for pid in ACDC_TEST:
        write_acdc_patient(root / "testing", pid, seed=0)
    return root


@pytest.fixture(scope="session")
def abdomen_root(tmp_path_factory):
    """A synthetic AbdomenCTCT root: all 30 subjects at a small shape."""
    root = tmp_path_factory.mktemp("abdomen")
    return write_synthetic_abdomen(root, n=30, seed=0, shape=ABDOMEN_SMALL)
