"""Model files: save_model / load_model round trip with the sidecar, and clear errors for broken files."""

import json

import pytest
import torch
from samir.model_files import (
    build_network,
    load_model,
    load_weights,
    network_arguments_of,
    read_sidecar,
    save_model,
    sidecar_path,
)
from samir.networks import build_samir

TINY = {"encoder": "tiny", "encoder_image_size": 32, "levels": 3, "channels": [4, 8, 8], "head_channels": 8,
        "head_blocks": 1, "flow_width": 8, "sam_min_level": 1, "hfc_channels": 8}


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    net = build_samir(cache_dir=False, **TINY)
    path = save_model(tmp_path / "m.pt", net, {**TINY, "cache_dir": "/somewhere", "checkpoint": None},
                      dataset="acdc", num_epochs=3)
    return net, path


def test_roundtrip_same_outputs(saved):
    net, path = saved
    assert sidecar_path(path) == path.with_suffix(".json")
    sidecar = read_sidecar(path)
    assert sidecar["network"] == TINY  # machine-specific arguments are not recorded
    assert sidecar["dataset"] == "acdc" and sidecar["num_epochs"] == 3
    assert network_arguments_of(path) == TINY
    loaded = load_model(path, cache_dir=False).eval()
    x = torch.rand(1, 2, 32, 32, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x))
    assert not any(p.name.startswith(".tmp") for p in path.parent.iterdir())  # atomic writes left nothing


def test_state_dict_and_training_checkpoint_load(saved, tmp_path):
    net, _ = saved
    torch.save({"network": net.state_dict(), "optimizer": {}}, tmp_path / "ckpt.pt")
    other = build_samir(cache_dir=False, **TINY)
    load_weights(other, tmp_path / "ckpt.pt")
    torch.testing.assert_close(other.state_dict(), net.state_dict())


@pytest.mark.parametrize(
    "damage,error,match",
    [
        ("truncate_pt", ValueError, r"m\.pt cannot be read as a torch weights file"),
        ("garbage_json", ValueError, r"m\.json cannot be read as json"),
        ("list_json", ValueError, r"m\.json: expected a json object"),
        ("missing_pt", FileNotFoundError, r"m\.pt for SAMIR not found"),
        ("other_network", ValueError, r"m\.pt do not fit this network"),
    ],
)
def test_broken_files_name_the_file(saved, damage, error, match):
    _, path = saved
    if damage == "truncate_pt":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage_json":
        sidecar_path(path).write_text("{not json")
    elif damage == "list_json":
        sidecar_path(path).write_text(json.dumps([1, 2]))
    elif damage == "missing_pt":
        path.unlink()
    elif damage == "other_network":
        sidecar_path(path).write_text(json.dumps({"network": {**TINY, "head_channels": 4}}))
    with pytest.raises(error, match=match):
        load_model(path, cache_dir=False)


def test_build_network_without_sidecar_uses_defaults_and_overrides(tmp_path):
    path = tmp_path / "bare.pt"
    torch.save({}, path)
    net = build_network(path, encoder="none")  # no sidecar: build_samir's defaults; encoder overridden
    assert net.sam_encoder is None


COARSE = {"encoder": "none", "levels": 4, "channels": [4, 8, 8, 8], "flow_width": 8, "finest_level": 1}


def test_grow_finer_levels_keeps_the_coarse_network(tmp_path):
    """A finest_level-1 network grown into a finest_level-0 one: same weights in the same roles, the new
    second convolution an identity, the new estimator near zero, so the same field while the first
    stage's activations are positive (LeakyReLU then passes them unchanged)."""
    torch.manual_seed(0)
    coarse = build_samir(cache_dir=False, **COARSE)
    with torch.no_grad():
        coarse.pyramid.stages[0][0].bias.fill_(20.0)  # first-stage pre-activations > 0 for inputs in [0, 1]
        for est in coarse.estimators:  # a real field, not the near-zero initial one
            est.out.weight.normal_(0.0, 0.05)
    path = save_model(tmp_path / "coarse.pt", coarse, COARSE)
    fine = build_samir(cache_dir=False, **{**COARSE, "finest_level": 0})
    before = {k: v.clone() for k, v in fine.state_dict().items()}
    with pytest.raises(ValueError, match="do not fit"):
        load_weights(fine, path)
    assert all(torch.equal(before[k], v) for k, v in fine.state_dict().items())  # a failed load changes nothing
    load_weights(fine, path, grow=True)
    for i, est in enumerate(coarse.estimators):
        for (k, a), b in zip(est.state_dict().items(), fine.estimators[i + 1].state_dict().values()):
            assert torch.equal(a, b), k
    assert torch.equal(fine.pyramid.stages[0][0][0].weight, coarse.pyramid.stages[0][0].weight)
    second = fine.pyramid.stages[0][1][0].weight
    assert torch.equal(second, torch.nn.init.dirac_(torch.empty_like(second)))
    x = torch.rand(1, 2, 32, 24, 16)
    with torch.no_grad():
        a, b = coarse.eval()(x), fine.eval()(x)
    assert a.abs().max() > 0.5  # a field worth comparing
    assert torch.allclose(a, b, atol=1e-3), (a - b).abs().max()


def test_grow_does_not_hide_a_network_that_does_not_fit(tmp_path):
    path = save_model(tmp_path / "other.pt", build_samir(cache_dir=False, **{**COARSE, "channels": [4, 8, 16, 16]}),
                      COARSE)
    fine = build_samir(cache_dir=False, **{**COARSE, "finest_level": 0})
    with pytest.raises(ValueError, match="do not fit"):
        load_weights(fine, path, grow=True)


def test_grow_keeps_light_stages_below_the_new_finest_level(tmp_path):
    """finest_level 2 -> 1: stage 0 stays light in both, stage 1 becomes a full stage."""
    args = {**COARSE, "levels": 5, "channels": [4, 8, 8, 8, 8], "finest_level": 2}
    torch.manual_seed(0)
    coarse = build_samir(cache_dir=False, **args)
    path = save_model(tmp_path / "c2.pt", coarse, args)
    fine = load_weights(build_samir(cache_dir=False, **{**args, "finest_level": 1}), path, grow=True)
    assert torch.equal(fine.pyramid.stages[0][0].weight, coarse.pyramid.stages[0][0].weight)
    assert torch.equal(fine.pyramid.stages[1][0][0].weight, coarse.pyramid.stages[1][0].weight)
    assert torch.equal(fine.estimators[1].out.weight, coarse.estimators[0].out.weight)
