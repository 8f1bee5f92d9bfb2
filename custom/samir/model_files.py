"""SAMIR model files: the weights ``NAME.pt`` and their sidecar ``NAME.json``, saved and loaded in one place.

A model file is a bare ``state_dict`` (or a training checkpoint whose ``"network"`` entry is one);
the sidecar records the network's constructor arguments under ``"network"`` (what
:func:`samir.networks.build_samir` takes) next to facts about how it was made (data set, epochs,
best validation Dice...), as VoxelMorph's ``LoadableModel`` stores its config with the weights::

    save_model("bundle/models/model.pt", network, {"levels": 4, ...}, dataset="acdc")
    network = load_model("bundle/models/model.pt", cache_dir=False)

Files load with ``torch.load(..., weights_only=True)`` (no code runs) and are written atomically
(a temporary name, then a rename): a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from samir.io import atomic_write

__all__ = [
    "sidecar_path",
    "read_sidecar",
    "network_arguments_of",
    "read_state",
    "load_weights",
    "build_network",
    "load_model",
    "save_model",
]

#: ``build_samir`` arguments that belong to the machine, not to the model (never recorded)
NOT_RECORDED = ("_target_", "cache_dir", "checkpoint")


def sidecar_path(weights: str | os.PathLike) -> Path:
    """``model.pt`` → ``model.json``."""
    return Path(weights).with_suffix(".json")


def read_sidecar(weights: str | os.PathLike) -> dict:
    """The whole sidecar json of ``weights`` ({} when there is none); an unreadable one names the file."""
    path = sidecar_path(weights)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"model sidecar {path} cannot be read as json ({err}): rewrite it or remove it") from err
    if not isinstance(data, dict):
        raise ValueError(f"model sidecar {path}: expected a json object with 'network', got {type(data).__name__}")
    return data


def network_arguments_of(weights: str | os.PathLike) -> dict:
    """The network's arguments recorded next to ``weights`` (``sidecar["network"]``; {} when none)."""
    return dict(read_sidecar(weights).get("network") or {})


def read_state(path: str | os.PathLike) -> dict:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing or unreadable file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle with code, not a torch file
        raise ValueError(f"checkpoint {path} cannot be read as a torch weights file: {err}") from err


def load_weights(network: torch.nn.Module, path: str | os.PathLike, grow: bool = False) -> torch.nn.Module:
    """Load a ``model.pt`` (bare state dict or a training checkpoint's ``"network"``) into ``network``.

    ``grow``: the file may be the same network with a coarser ``finest_level`` (a start for training
    finer levels: :func:`samir.networks.samir_net.grow_finer_levels`). A file that does not fit the
    network (another preset, pyramid or head size) is a clear error naming the file and the first
    mismatches.
    """
    state = read_state(path)
    if "network" in state and isinstance(state["network"], dict):
        state = state["network"]
    if grow:
        from samir.networks.samir_net import SAMIR, grow_finer_levels

        if isinstance(network, SAMIR):
            state = grow_finer_levels(state, network)
    own = network.state_dict()
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [f"{k}: {tuple(state[k].shape)} in the file, {tuple(v.shape)} here" for k, v in own.items()
                 if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    if problems:  # checked first: load_state_dict copies what fits before it raises, leaving a half-loaded network
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ValueError(f"weights {path} do not fit this network ({'; '.join(problems[:3])}{more})")
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        lines = str(err).splitlines()
        raise ValueError(f"weights {path} do not fit this network ({' '.join(lines[:3])[:400]})") from err
    return network


def build_network(weights: str | os.PathLike, encoder: str | None = None, checkpoint: str | None = None,
                  cache_dir: str | os.PathLike | bool | None = None, what: str = "SAMIR") -> torch.nn.Module:
    """SAMIR built from the sidecar of ``weights`` (not loaded: see :func:`load_model`).

    ``encoder`` / ``checkpoint`` override the recorded SAM encoder; ``cache_dir`` is the embedding
    cache option (:func:`samir.encoders.cache.parse_cache_option`).
    """
    from samir.networks import build_samir

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(
            f"weights {weights} for {what} not found: train them (see bundle/docs/README.md) or pass --weights"
        )
    config = network_arguments_of(weights)
    if encoder is not None:
        config["encoder"] = encoder
    if checkpoint is not None:
        config["checkpoint"] = checkpoint
    config["cache_dir"] = cache_dir
    return build_samir(**config)


def load_model(weights: str | os.PathLike, encoder: str | None = None, checkpoint: str | None = None,
               cache_dir: str | os.PathLike | bool | None = None, what: str = "SAMIR") -> torch.nn.Module:
    """SAMIR built from the sidecar of ``weights`` and loaded with them (arguments as :func:`build_network`)."""
    return load_weights(build_network(weights, encoder, checkpoint, cache_dir, what=what), weights)


def save_model(path: str | os.PathLike, model: torch.nn.Module | Mapping, network: Mapping, **facts) -> Path:
    """Write ``model``'s weights to ``path`` and the sidecar ``{"network": network, **facts}`` next to it.

    ``model``: a module or a state dict; ``network``: its ``build_samir`` arguments (machine-specific
    ones, :data:`NOT_RECORDED`, are dropped); ``facts``: json-serialisable notes (data set, epochs...).
    Both files are written atomically; returns ``path``.
    """
    path = Path(path)
    state = model.state_dict() if isinstance(model, torch.nn.Module) else dict(model)
    sidecar = {"network": {k: v for k, v in dict(network).items() if k not in NOT_RECORDED}, **facts}
    text = json.dumps(sidecar, indent=2) + "\n"  # before writing anything: a fact that is not json fails here
    with atomic_write(path) as tmp:
        torch.save(state, tmp)
    with atomic_write(sidecar_path(path)) as tmp:
        Path(tmp).write_text(text)
    return path
