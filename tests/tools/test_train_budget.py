"""samir.tools.train_budget (what bundle/scripts/train_gpu.sh runs): budget, resume, export under a new name."""

import json

import pytest
import torch

TINY = {
    "encoder": "tiny", "encoder_image_size": 32, "cache_dir": False, "levels": 3, "channels": [4, 8, 8],
    "head_channels": 8, "head_blocks": 1, "flow_width": 8, "sam_min_level": 1, "finest_level": 0, "hfc_channels": 8,
}


def test_refuses_shipped_and_existing_names(tmp_path):
    from samir.tools.train_budget import train_budget

    for name in ("model", "model_abdomen", "model_baseline", "../x", "x.pt"):
        with pytest.raises(ValueError, match="name"):
            train_budget(name=name, models_dir=str(tmp_path))
    (tmp_path / "taken.pt").write_bytes(b"")
    with pytest.raises(FileExistsError, match="taken.pt exists"):
        train_budget(name="taken", models_dir=str(tmp_path))


def test_budget_run_resumes_and_exports(tmp_path):
    from samir.data.synthetic_acdc import write_synthetic_acdc
    from samir.tools.train_budget import train_budget

    root = write_synthetic_acdc(tmp_path / "acdc", n=2, seed=1, n_test=0)
    common = dict(TINY, dataset="acdc", dataset_dir=str(root), split_options={"val_ids": [2]}, max_train_pairs=1,
                  max_val_pairs=1, val_interval=1, output_dir=str(tmp_path / "run"), models_dir=str(tmp_path / "models"),
                  device="cpu", mix={"synthmorph": 0.5})
    facts = train_budget(name="v2", max_seconds=None, max_iterations=2, **common)
    assert facts["epochs"] == {"start": 0, "end": 1} and facts["iterations"]["end"] == 2
    assert facts["train_pairs"] == {"acdc": 1, "synthmorph": 1}
    assert "max_iterations" in facts["budget"]["stopped"]
    side = json.loads((tmp_path / "models" / "v2.json").read_text())
    assert side["network"]["encoder"] == "tiny" and side["command"] and side["weights"].startswith("best")
    assert torch.load(tmp_path / "models" / "v2.pt", weights_only=True)
    # the same command again continues the run (new name: nothing is overwritten)
    facts2 = train_budget(name="v2b", max_seconds=None, max_iterations=4, **common)
    assert facts2["resumed_from"] and facts2["epochs"] == {"start": 1, "end": 2} and facts2["iterations"]["end"] == 4
