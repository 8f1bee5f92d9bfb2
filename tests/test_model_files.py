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
