"""The training profiler: per-iteration seconds of the bundle's own train.json, no scratch left behind."""

import tempfile

import pytest
from samir.data.synthetic_acdc import write_synthetic_acdc
from samir.tools.train_profile import profile_training


@pytest.mark.slow
def test_profile_times_an_iteration_and_removes_its_scratch_folder(tmp_path, monkeypatch):
    data = write_synthetic_acdc(tmp_path / "acdc", n=2, seed=1, n_test=0)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where mkdtemp puts the cache and the run
    out = profile_training(iterations=1, warmup=0, preset="tiny", dataset_dir=str(data), threads=1,
                           split_options={"val_ids": [2]})
    assert out["iterations"] == 1 and out["per_iteration_s"] > 0
    assert out["components_s"]["backward"] > 0
    assert list(scratch.iterdir()) == []  # the embedding cache and run folder are gone
