"""Encoder registry: names, determinism, frozen behaviour, checkpoint errors (small fake files)."""

from __future__ import annotations

import pytest
import torch
from parameterized import parameterized
from samir.encoders import ENCODER_NAMES, CorruptCheckpointError, build_encoder, describe_state_dict
from samir.encoders.base import load_encoder_state


def _cheap(shape):
    """A tensor of ``shape`` stored as one expanded element: a few bytes on disk."""
    return torch.zeros(1).expand(*shape)


def fake_vit_state(embed: int, depth: int, prefix: str = "") -> dict:
    """Keys and the patch-embed shape of a SAM ViT encoder, with almost no bytes."""
    state = {f"{prefix}patch_embed.proj.weight": _cheap((embed, 3, 16, 16))}
    for i in range(depth):
        state[f"{prefix}blocks.{i}.norm1.weight"] = _cheap((embed,))
    return state


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_encoder("sam_vit_x")
    for name in ENCODER_NAMES:
        assert name in str(err.value)


@parameterized.expand([(0,), (3,)])
def test_tiny_is_deterministic_by_seed(seed):
    a, b = build_encoder("tiny", seed=seed), build_encoder("tiny", seed=seed)
    other = build_encoder("tiny", seed=seed + 1)
    x = torch.rand(2, 3, 64, 64)
    assert a.weights_hash == b.weights_hash != other.weights_hash
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), other(x))


def test_tiny_takes_no_checkpoint():
    with pytest.raises(ValueError, match="tiny"):
        build_encoder("tiny", checkpoint="weights.pth")


@parameterized.expand([(64,), (32,), (128,)])
def test_interface_attributes_and_shapes(size):
    enc = build_encoder("tiny", image_size=size)
    assert (enc.name, enc.image_size, enc.out_channels, enc.out_stride) == ("tiny", size, 256, 4)
    assert len(enc.pixel_mean) == len(enc.pixel_std) == 3
    assert enc(torch.rand(2, 3, size, size)).shape == (2, 256, size // 4, size // 4)


def test_frozen_and_always_eval():
    enc = build_encoder("tiny")
    parent = torch.nn.Sequential(enc, torch.nn.Conv2d(256, 4, 1))
    parent.train()
    assert not enc.training
    assert all(not p.requires_grad for p in enc.parameters())


def test_bad_image_size():
    with pytest.raises(ValueError, match="image_size"):
        build_encoder("tiny", image_size=30)


@parameterized.expand([("sam_vit_b",), ("sam_vit_l",), ("sam_vit_h",), ("medsam_vit_b",)])
def test_vit_needs_a_checkpoint(name):
    with pytest.raises(FileNotFoundError, match="large_files.yml"):
        build_encoder(name)


@parameterized.expand([("sam_vit_b", "SAM ViT-B"), ("litemedsam", "LiteMedSAM"), ("medsam_vit_b", "MedSAM")])
def test_missing_file_names_file_kind_and_source(name, kind):
    import tempfile
    from pathlib import Path

    missing = Path(tempfile.gettempdir()) / "samir-no-such-dir" / "weights.pth"
    with pytest.raises(FileNotFoundError) as err:
        build_encoder(name, checkpoint=missing)
    msg = str(err.value)
    assert str(missing) in msg and kind in msg and "large_files.yml" in msg


@parameterized.expand([("truncated",), ("garbage",), ("not_a_state_dict",)])
def test_corrupt_checkpoint_names_file(kind):
    import tempfile
    from pathlib import Path

    folder = tempfile.TemporaryDirectory()
    path = Path(folder.name) / "sam_vit_b.pth"
    torch.save(fake_vit_state(768, 12, prefix="image_encoder."), path)
    if kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
    else:
        torch.save([1, 2, 3], path)
    with folder, pytest.raises(CorruptCheckpointError) as err:
        build_encoder("sam_vit_b", checkpoint=path)
    assert str(path) in str(err.value)


@parameterized.expand(
    [
        ("sam_vit_b", 1024, 24, "SAM ViT-L"),
        ("sam_vit_l", 768, 12, "SAM ViT-B"),
        ("sam_vit_h", 1024, 24, "SAM ViT-L"),
        ("medsam_vit_b", 1280, 32, "SAM ViT-H"),
    ]
)
def test_mismatched_vit_checkpoint(name, embed, depth, found, prefix="image_encoder."):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.pth"
        torch.save(fake_vit_state(embed, depth, prefix=prefix), path)
        assert path.stat().st_size < 200_000  # the fake stays small
        with pytest.raises(ValueError) as err:
            build_encoder(name, checkpoint=path)
    msg = str(err.value)
    assert str(path) in msg and found in msg and f"embed dim {embed}" in msg and name in msg


def test_vit_checkpoint_given_to_litemedsam(tmp_path):
    path = tmp_path / "vit_b.pth"
    torch.save(fake_vit_state(768, 12), path)  # bare encoder dict this time
    with pytest.raises(ValueError) as err:
        build_encoder("litemedsam", checkpoint=path)
    assert str(path) in str(err.value) and "SAM ViT-B" in str(err.value)


def test_state_dict_unwrapping(tmp_path):
    inner = fake_vit_state(768, 12)
    for i, obj in enumerate(
        [
            inner,
            {f"image_encoder.{k}": v for k, v in inner.items()} | {"mask_decoder.x": torch.zeros(1)},
            {"model": {f"module.image_encoder.{k}": v for k, v in inner.items()}},
            {"state_dict": inner},
        ]
    ):
        path = tmp_path / f"ckpt{i}.pth"
        torch.save(obj, path)
        state = load_encoder_state(path, "sam_vit_b")
        assert set(state) == set(inner)
        assert describe_state_dict(state).startswith("SAM ViT-B")
