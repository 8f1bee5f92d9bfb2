"""Bundle configs through MONAI's own ConfigWorkflow, on the tiny encoder and tiny synthetic data."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundle" / "configs"
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"

TINY = {
    "encoder": "tiny",
    "encoder_image_size": 32,
    "cache_dir": False,
    "levels": 3,
    "channels": [4, 8, 8],
    "head_channels": 8,
    "head_blocks": 1,
    "flow_width": 8,
    "sam_min_level": 1,
    "finest_level": 0,
    "hfc_channels": 8,
}


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory):
    from samir.data.synthetic_acdc import write_synthetic_acdc

    return write_synthetic_acdc(tmp_path_factory.mktemp("acdc"), n=2, seed=1, n_test=1)


def _common(root, out):
    return {**TINY, "dataset": "acdc", "dataset_dir": str(root), "split_options": {"val_ids": [2]},
            "output_dir": str(out), "num_epochs": 1, "val_interval": 1, "max_train_pairs": 2, "max_val_pairs": 1}


def _workflow(files, run_id, **overrides):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=[str(CONFIGS / f) for f in files], meta_file=str(CONFIGS / "metadata.json"),
                        logging_file=str(CONFIGS / "logging.conf"), run_id=run_id,
                        workflow_type="train" if run_id == "training" else "infer", **overrides)
    wf.initialize()
    return wf


def test_metadata_verifies_offline():
    from monai.bundle import verify_metadata

    if not SCHEMA.is_file():
        pytest.skip(f"offline schema not found at {SCHEMA}")
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))  # raises on error


def test_property_ids_present():
    from monai.bundle import ConfigParser

    train = ConfigParser.load_config_file(str(CONFIGS / "train.json"))
    for pid in ("network_def", "train", "validate", "training", "initialize"):
        assert pid in train
    for pid in ("trainer", "dataset", "handlers"):
        assert pid in train["train"]
    assert "evaluator" in train["validate"]
    inference = ConfigParser.load_config_file(str(CONFIGS / "inference.json"))
    # no "inferer": a registration is not a MONAI Inferer; the evaluator's iteration registers each pair
    for pid in ("network_def", "preprocessing", "register_pairs", "postprocessing", "evaluator", "inference"):
        assert pid in inference
    for f in ("evaluate.json", "multi_gpu_train.json"):  # overrides only: no imports, no network_def copy
        assert "imports" not in json.loads((CONFIGS / f).read_text())


def test_parsing_writes_nothing(tmp_path, monkeypatch):
    """Configs are wiring: resolving the data folder and the network writes no data set; the synthetic
    stand-in is written only by the explicit step (``initialize``'s ``samir.bundle.prepare_data``)."""
    from monai.bundle import ConfigParser

    monkeypatch.chdir(tmp_path)
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    parser.update({k: v for k, v in TINY.items()})
    parser.parse()
    assert parser.get_parsed_content("data_dir") == "data/synthetic_acdc"
    assert parser.get_parsed_content("val_split") == "test"  # evaluate.json: one datalist helper, another split
    parser.get_parsed_content("network_def")
    parser.get_parsed_content("labels")
    assert list(tmp_path.iterdir()) == []
    from samir.bundle import prepare_data

    root = prepare_data("acdc", None, "data/synthetic_acdc", n=1, n_test=0)  # the explicit step
    assert (tmp_path / root / "training" / "patient001").is_dir()


def test_recorded_network_arguments_read_command_line_flags_as_meant(tmp_path, monkeypatch):
    """``--symmetric false`` reaches the config as the text "false": the sidecar records False and the
    network is built one-directional (``bool("false")`` would be True); ``passes`` is recorded too."""
    from monai.bundle import ConfigParser
    from samir.bundle import network_arguments

    monkeypatch.chdir(tmp_path)
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json")])
    parser.update({**TINY, "symmetric": "false", "diffeomorphic": "true", "passes": 2})
    parser.parse()
    args = network_arguments(parser)
    assert args["symmetric"] is False and args["diffeomorphic"] is True and args["passes"] == 2
    net = parser.get_parsed_content("network_def")
    assert net.symmetric is False and net.diffeomorphic is True and net.passes == 2


def test_verify_net_in_out_on_tiny_encoder():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"),
                      config_file=str(CONFIGS / "train.json"), n=2, **{k: v for k, v in TINY.items()})


def test_train_evaluate_resume(acdc_root, tmp_path):
    wf = _workflow(["train.json"], "training", **_common(acdc_root, tmp_path / "train"))
    wf.run()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    assert 0.0 < evaluator.state.best_metric <= 1.0
    wf.finalize()
    out = tmp_path / "train"
    assert (out / "model.pt").is_file()
    last = sorted(out.glob("last_checkpoint_*.pt"))
    assert last and any(p.name.startswith("events.out.tfevents") for p in out.iterdir())
    state = torch.load(out / "model.pt", weights_only=True)
    assert state and not any(k.startswith("module.") for k in state)

    # resume: the trainer continues from epoch 1 to epoch 2
    wf2 = _workflow(["train.json"], "training", **{**_common(acdc_root, tmp_path / "train"), "num_epochs": 2,
                                                   "resume_from": str(last[-1])})
    trainer = wf2.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1
    wf2.run()
    assert trainer.state.epoch == 2
    wf2.finalize()

    # evaluate: a CSV row per pair plus the mean row, with every column the issue asks for
    ev = _workflow(["train.json", "evaluate.json"], "evaluating",
                   **{**_common(acdc_root, tmp_path / "eval"), "model_file": str(out / "model.pt"),
                      "max_val_pairs": None})
    ev.run()
    ev.finalize()
    rows = list(csv.DictReader(open(tmp_path / "eval" / "evaluation.csv")))
    assert len(rows) == 2 + 1  # patient101 ED->ES, ES->ED, mean
    for col in ("dice_RV", "dice_MYO", "dice_LV", "hd95_mean", "folding_pct", "sdlogj", "seconds"):
        assert col in rows[0]
    assert rows[-1]["pair_id"] == "mean"
    summary = json.loads((tmp_path / "eval" / "evaluation_summary.json").read_text())
    assert 0 < summary["dice_mean"]["mean"] <= 1


def test_inference_writes_register_outputs(acdc_root, tmp_path):
    from samir.data.acdc import acdc_pairs
    from samir.networks import build_samir

    pair = acdc_pairs(acdc_root, split="test")[0]
    datalist = tmp_path / "pairs.json"
    datalist.write_text(json.dumps({"pairs": [{k: pair[k] for k in ("fixed", "moving", "fixed_label", "moving_label")}]}))
    net = build_samir(**{k: v for k, v in TINY.items()})
    weights = tmp_path / "model.pt"
    torch.save(net.state_dict(), weights)
    weights.with_suffix(".json").write_text(json.dumps({"network": {k: v for k, v in TINY.items() if k != "cache_dir"}}))
    wf = _workflow(["inference.json"], "inference", model_file=str(weights), datalist=str(datalist),
                   output_dir=str(tmp_path / "out"), cache_dir=False)
    wf.run()
    wf.finalize()
    dirs = [d for d in (tmp_path / "out").iterdir() if d.is_dir()]
    assert len(dirs) == 1
    names = {p.name for p in dirs[0].iterdir()}
    assert {"warped_image.nii.gz", "warped_label.nii.gz", "ddf_voxels.nii.gz", "displacement_lps_mm.nii.gz",
            "metrics.json"} <= names
    assert (tmp_path / "out" / "inference.csv").is_file()


@pytest.mark.slow
def test_multi_gpu_config_with_gloo_two_processes(acdc_root, tmp_path):
    overrides = _common(acdc_root, tmp_path / "ddp")
    args = []
    for k, v in overrides.items():
        args += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "monai.bundle", "run", "training", "--config_file",
           f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']",
           "--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf"), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = torch.load(tmp_path / "ddp" / "model.pt", weights_only=True)
    assert state and not any(k.startswith("module.") for k in state)  # the unwrapped network is saved


def test_train_pairs_drawn_at_random_span_the_subjects(monkeypatch):
    """``max_train_pairs`` with ``train_pairs_seed``: a seeded draw over all pairs, not the first ones
    (which, for an inter-subject set ordered by fixed subject, hold only the first few subjects)."""
    from itertools import permutations

    import samir.bundle
    import samir.data.registry

    pairs = [{"fixed": f, "moving": m} for f, m in permutations(range(1, 41), 2)]
    monkeypatch.setattr(samir.data.registry, "dataset_pairs", lambda *a, **k: list(pairs))
    first = samir.bundle.datalist("abdomen", "root", "train", None, 100)
    drawn = samir.bundle.datalist("abdomen", "root", "train", None, 100, 0)
    assert first == pairs[:100] and len({p["fixed"] for p in first}) == 3
    assert len(drawn) == 100 and len({p["fixed"] for p in drawn}) > 30
    assert len({(p["fixed"], p["moving"]) for p in drawn}) == 100  # no pair twice
    assert drawn == samir.bundle.datalist("abdomen", "root", "train", None, 100, 0)  # same seed, same draw
    assert drawn != samir.bundle.datalist("abdomen", "root", "train", None, 100, 1)
    assert samir.bundle.datalist("abdomen", "root", "train", None, None, 0) == pairs  # no limit: all
    with pytest.raises(ValueError, match="positive number"):
        samir.bundle.datalist("abdomen", "root", "train", None, 0, 0)
