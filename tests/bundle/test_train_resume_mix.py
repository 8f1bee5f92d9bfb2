"""train.json: a stopped run resumes (epoch, iteration, optimiser state), the time/iteration budget
stops at an epoch end, and a mixed (ACDC + SynthMorph) training set trains. Tiny encoder, 2 tiny pairs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundle" / "configs"

TINY = {
    "encoder": "tiny", "encoder_image_size": 32, "cache_dir": False, "levels": 3, "channels": [4, 8, 8],
    "head_channels": 8, "head_blocks": 1, "flow_width": 8, "sam_min_level": 1, "finest_level": 0, "hfc_channels": 8,
}


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory):
    from samir.data.synthetic_acdc import write_synthetic_acdc

    return write_synthetic_acdc(tmp_path_factory.mktemp("acdc"), n=2, seed=1, n_test=0)


def _workflow(**overrides):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=str(CONFIGS / "train.json"), meta_file=str(CONFIGS / "metadata.json"),
                        logging_file=str(CONFIGS / "logging.conf"), run_id="training", workflow_type="train",
                        **overrides)
    wf.initialize()
    return wf


def _common(root, out, **kw):
    return {**TINY, "dataset": "acdc", "dataset_dir": str(root), "split_options": {"val_ids": [2]},
            "output_dir": str(out), "num_epochs": 1, "val_interval": 1, "max_train_pairs": 1, "max_val_pairs": 1,
            "learning_rate": 0.001, **kw}


def test_stop_and_resume_restores_epoch_iteration_optimizer(acdc_root, tmp_path):
    out = tmp_path / "run"
    wf = _workflow(**_common(acdc_root, out, num_epochs=1))
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    n_iter = trainer.state.iteration
    assert trainer.state.epoch == 1 and n_iter >= 1
    wf.finalize()
    last = sorted(out.glob("last_checkpoint_*.pt"))
    assert len(last) == 1
    saved = torch.load(last[0], map_location="cpu", weights_only=True)
    assert {"network", "optimizer", "trainer"} <= set(saved)
    assert saved["optimizer"]["state"], "Adam moments saved"

    wf2 = _workflow(**_common(acdc_root, out, num_epochs=2, resume_from=str(last[0])))
    trainer2 = wf2.parser.get_parsed_content("train#trainer")
    optimizer2 = wf2.parser.get_parsed_content("optimizer")
    network2 = wf2.parser.get_parsed_content("network")
    assert trainer2.state.epoch == 1 and trainer2.state.iteration == n_iter
    restored = optimizer2.state_dict()
    for pid, moments in saved["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(torch.as_tensor(restored["state"][pid][name]).cpu(), torch.as_tensor(value)), (pid, name)
    for k, v in saved["network"].items():
        assert torch.equal(network2.state_dict()[k].cpu(), v)
    step_before = int(torch.as_tensor(restored["state"][0]["step"]))
    wf2.run()
    assert trainer2.state.epoch == 2 and trainer2.state.iteration == 2 * n_iter
    assert int(torch.as_tensor(optimizer2.state_dict()["state"][0]["step"])) == step_before + n_iter
    wf2.finalize()


def test_resume_keeps_the_best_validation(acdc_root, tmp_path):
    """The best validation so far travels in the last checkpoint: a resumed run whose validation is worse
    than the best before the stop neither overwrites model.pt nor reports its own epoch as the best."""
    out = tmp_path / "best"
    wf = _workflow(**_common(acdc_root, out, num_epochs=1))
    wf.run()
    best = float(wf.parser.get_parsed_content("validate#evaluator").state.best_metric)
    wf.finalize()
    assert best > 0
    last = sorted(out.glob("last_checkpoint_*.pt"))[0]
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["validation"]["best_metric"] == pytest.approx(best) and saved["validation"]["best_metric_epoch"] == 1
    assert [p for p, _ in saved["validation"]["saved"]] == [pytest.approx(best)]  # the key-metric saver's list
    # pretend the stopped run had validated better than any network can: nothing after the resume may beat it
    saved["validation"]["best_metric"] = 2.0
    saved["validation"]["saved"] = [[2.0, saved["validation"]["saved"][0][1]]]
    torch.save(saved, last)
    model_bytes = (out / "model.pt").read_bytes()

    wf2 = _workflow(**_common(acdc_root, out, num_epochs=2, resume_from=str(last)))
    evaluator2 = wf2.parser.get_parsed_content("validate#evaluator")
    assert evaluator2.state.best_metric == 2.0 and evaluator2.state.best_metric_epoch == 1
    wf2.run()
    assert wf2.parser.get_parsed_content("train#trainer").state.epoch == 2
    assert evaluator2.state.best_metric == 2.0 and evaluator2.state.best_metric_epoch == 1
    assert (out / "model.pt").read_bytes() == model_bytes, "a worse validation after the resume overwrote model.pt"
    wf2.finalize()


def test_resume_into_another_output_dir(acdc_root, tmp_path):
    """A run resumed into a new output_dir takes the best weights so far along: a new best after the resume
    replaces them there (it used to crash deleting a model.pt that folder never held), and without a new
    best the folder still holds the stopped run's best."""
    first = tmp_path / "first"
    wf = _workflow(**_common(acdc_root, first, num_epochs=1))
    wf.run()
    wf.finalize()
    last = sorted(first.glob("last_checkpoint_*.pt"))[0]
    best_bytes = (first / "model.pt").read_bytes()

    # no new best possible (the stopped run's best raised out of reach): the best file comes along unchanged
    saved = torch.load(last, map_location="cpu", weights_only=True)
    saved["validation"]["best_metric"] = 2.0
    saved["validation"]["saved"] = [[2.0, saved["validation"]["saved"][0][1]]]
    unbeatable = first / "unbeatable.pt"
    torch.save(saved, unbeatable)
    kept = tmp_path / "kept"
    wf2 = _workflow(**_common(acdc_root, kept, num_epochs=2, resume_from=str(unbeatable)))
    wf2.run()
    wf2.finalize()
    assert (kept / "model.pt").read_bytes() == best_bytes

    # a best that any validation beats: the new best is written in the new folder, the old folder untouched
    saved["validation"]["best_metric"] = -0.5
    saved["validation"]["saved"] = [[-0.5, saved["validation"]["saved"][0][1]]]
    beatable = first / "beatable.pt"
    torch.save(saved, beatable)
    second = tmp_path / "second"
    wf3 = _workflow(**_common(acdc_root, second, num_epochs=2, resume_from=str(beatable)))
    wf3.run()
    evaluator = wf3.parser.get_parsed_content("validate#evaluator")
    assert evaluator.state.best_metric_epoch == 2 and evaluator.state.best_metric > -0.5
    wf3.finalize()
    assert (second / "model.pt").is_file() and (second / "model.pt").read_bytes() != best_bytes
    assert (first / "model.pt").read_bytes() == best_bytes

    # the best weights file is gone from both folders: the best is counted anew, so model.pt and the
    # reported best epoch agree (the first validation after the resume becomes the best)
    (first / "model.pt").unlink()
    third = tmp_path / "third"
    wf4 = _workflow(**_common(acdc_root, third, num_epochs=2, resume_from=str(unbeatable)))
    evaluator = wf4.parser.get_parsed_content("validate#evaluator")
    assert evaluator.state.best_metric == -1.0
    wf4.run()
    assert evaluator.state.best_metric_epoch == 2 and (third / "model.pt").is_file()
    wf4.finalize()


def test_budget_stops_at_epoch_end(acdc_root, tmp_path):
    wf = _workflow(**_common(acdc_root, tmp_path / "budget", num_epochs=5, max_iterations=2, val_interval=10))
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2 and trainer.state.iteration == 2
    assert "max_iterations" in trainer.state.budget["stopped"]
    wf.finalize()
    assert sorted((tmp_path / "budget").glob("last_checkpoint_*.pt"))  # the resume point exists


def test_mixed_training_with_synthmorph(acdc_root, tmp_path):
    from samir.data.mix import source_counts

    wf = _workflow(**_common(acdc_root, tmp_path / "mix", mix="{'synthmorph': 0.5}", dice_weight=0.1))
    datalist = wf.parser.get_parsed_content("train#datalist")
    assert source_counts(datalist) == {"acdc": 1, "synthmorph": 1}
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 2 and trainer.state.output["loss"] == trainer.state.output["loss"]
    wf.finalize()
