"""Embedding cache: hits, every key component misses, corrupt entries recomputed, atomic writes."""

from __future__ import annotations

import warnings

import pytest
import torch
from parameterized import parameterized
from samir.encoders import EmbeddingCache, SliceEncoder, build_encoder, default_cache_root


def _volume(seed=0, shape=(24, 20, 4), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((1, 1, *shape), generator=g).to(dtype)


def _slice_encoder(cache, **kw):
    enc = build_encoder("tiny", image_size=kw.pop("image_size", 64), seed=kw.pop("seed", 0))
    return SliceEncoder(enc, cache=cache, **kw)


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "samir"
    assert EmbeddingCache().root == tmp_path / "xdg" / "samir"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_root() == tmp_path / "home" / ".cache" / "samir"


@parameterized.expand([(False,), ("none",), (None,)])
def test_disabled_cache_writes_nothing(option):
    se = _slice_encoder(option)
    se(_volume())
    assert not se.cache.enabled


def test_hit_returns_the_same_and_skips_encoding(tmp_path):
    se = _slice_encoder(tmp_path)
    vol = _volume()
    first = se(vol)
    n = se.slices_encoded
    second = se(vol)
    assert se.slices_encoded == n and se.cache.hits == 1 and se.cache.misses == 1
    assert torch.equal(first, second)
    assert len(list(tmp_path.glob("??/*.pt"))) == 1
    assert not list(tmp_path.rglob("*.tmp"))  # atomic write leaves no temporary file


# each mutation changes one component of the key; the cache must miss
MUTATIONS = {
    "voxel": lambda: (dict(), _volume().index_put_((torch.tensor(0),) * 5, torch.tensor(0.123))),
    "shape": lambda: (dict(), _volume().reshape(1, 1, 20, 24, 4)),
    "dtype": lambda: (dict(), _volume().double()),
    "weights": lambda: (dict(seed=1), _volume()),
    "image_size": lambda: (dict(image_size=32), _volume()),
    "clip": lambda: (dict(clip_percentiles=(1.0, 99.0)), _volume()),
    "axis": lambda: (dict(axis=1), _volume()),
    "skip_blank": lambda: (dict(skip_blank=False), _volume()),
}


@parameterized.expand([(k,) for k in [*MUTATIONS, "encoder_name", "runtime_flag", "store_dtype"]])
def test_every_key_component_misses(component):
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        base = _slice_encoder(root)
        base(_volume())
        assert base.cache.misses == 1
        if component in MUTATIONS:
            kw, vol = MUTATIONS[component]()
            se = _slice_encoder(root, **kw)
        else:
            se, vol = _slice_encoder(root), _volume()
            if component == "encoder_name":
                se.encoder.name = "tiny_renamed"
            elif component == "runtime_flag":
                se.encoder.runtime["channels_last"] = True
            else:
                se.cache = EmbeddingCache(root, dtype=torch.float16)
        assert se.cache_key(vol[0]) != base.cache_key(_volume()[0])
        se(vol)
        assert se.cache.hits == 0 and se.cache.misses == 1


def _corrupt(path, how):
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif how == "garbage":
        path.write_bytes(b"not a torch file")
    elif how == "flip":  # bytes inside the tensor data: only the checksum sees it
        blob = bytearray(data)
        mid = len(blob) // 2
        blob[mid : mid + 8] = bytes(8 - i for i in range(8))
        path.write_bytes(bytes(blob))
    elif how == "wrong_key":
        entry = torch.load(path, weights_only=True)
        entry["key"] = "0" * 64
        torch.save(entry, path)
    elif how == "empty":
        path.write_bytes(b"")


@parameterized.expand([("truncate",), ("garbage",), ("flip",), ("wrong_key",), ("empty",)])
def test_corrupt_entry_is_recomputed_with_a_warning(how):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as root:
        se = _slice_encoder(root)
        vol = _volume()
        ref = se(vol)
        (path,) = Path(root).glob("??/*.pt")
        _corrupt(path, how)
        with pytest.warns(RuntimeWarning, match="corrupt or partial"):
            again = se(vol)
        assert torch.equal(again, ref)
        assert se.cache.corrupt == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert torch.equal(se(vol), ref)  # rewritten, valid again
        assert se.cache.hits == 1


def test_float16_storage(tmp_path):
    se = _slice_encoder(EmbeddingCache(tmp_path, dtype=torch.float16))
    vol = _volume()
    miss = se(vol)
    hit = se(vol)
    assert torch.equal(miss, hit) and hit.dtype == torch.float32


def test_unwritable_root_warns_and_still_returns(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    se = _slice_encoder(blocker / "cache")
    with pytest.warns(RuntimeWarning, match="could not write"):
        out = se(_volume())
    assert out.shape[:2] == (1, 256)


def test_batch_items_cached_separately(tmp_path):
    se = _slice_encoder(tmp_path)
    vols = torch.cat([_volume(0), _volume(1)])
    both = se(vols)
    se2 = _slice_encoder(tmp_path)
    assert torch.equal(se2(vols[1:]), both[1:]) and se2.cache.hits == 1


@pytest.mark.parametrize(
    "value,expected",
    [
        (None, "default"), (True, "default"), ("default", "default"), ("True", "default"), ("on", "default"),
        (False, False), ("false", False), ("None", False), ("off", False), ("no", False), ("0", False), ("", False),
        ("  OFF ", False), ("some/folder", "some/folder"),
    ],
)
def test_parse_cache_option(value, expected, monkeypatch, tmp_path):
    from pathlib import Path

    from samir.encoders.cache import parse_cache_option

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    parsed = parse_cache_option(value)
    if expected == "default":
        assert parsed == tmp_path / "xdg" / "samir"
    elif expected is False:
        assert parsed is False
        assert not EmbeddingCache(value).enabled  # the cache reads the option the same way
    else:
        assert parsed == Path(expected)
    assert parse_cache_option(parsed) == parsed  # idempotent


def test_size_bound_removes_the_least_recently_used(tmp_path):
    """Writes beyond the bound remove the entries used longest ago; a hit counts as a use."""
    import os
    import time

    probe = EmbeddingCache(tmp_path, max_bytes=0)
    one = os.path.getsize(probe.save("0" * 64, torch.zeros(4, 64, 64)))  # size of one entry
    probe.path("0" * 64).unlink()
    cache = EmbeddingCache(tmp_path, max_bytes=int(one * 3.5))
    keys = [f"{i:02x}" + "a" * 62 for i in range(3)]
    for k, key in enumerate(keys):
        cache.save(key, torch.full((4, 64, 64), float(k)))
        past = time.time() - 100 + k  # distinct, increasing times of use
        os.utime(cache.path(key), (past, past))
    assert cache.size_bytes() == 3 * one and cache.evicted == 0
    assert cache.load(keys[0]) is not None  # a hit: keys[0] is now the most recently used
    for k in range(3, 5):  # two more writes: the bound (3.5 entries, pruned to 90 %) keeps the newest three
        cache.save(f"{k:02x}" + "b" * 62, torch.full((4, 64, 64), float(k)))
    assert cache.size_bytes() <= int(one * 3.5)
    kept = {p.name[:2] for p in tmp_path.glob("*/*.pt")}
    assert "00" in kept  # used recently: kept
    assert not {"01", "02"} & kept  # used longest ago: removed first
    assert cache.evicted >= 2
    assert cache.load(keys[1]) is None and cache.corrupt == 0  # a removed entry is a plain miss


def test_size_bound_from_the_environment(monkeypatch, tmp_path):
    from samir.encoders.cache import default_max_bytes

    monkeypatch.setenv("SAMIR_CACHE_MAX_GB", "0.5")
    assert default_max_bytes() == 500_000_000 and EmbeddingCache(tmp_path).max_bytes == 500_000_000
    monkeypatch.setenv("SAMIR_CACHE_MAX_GB", "0")
    assert EmbeddingCache(tmp_path).max_bytes == 0  # no bound
    monkeypatch.setenv("SAMIR_CACHE_MAX_GB", "lots")
    with pytest.warns(RuntimeWarning, match="not a number"):
        assert default_max_bytes() == 4_000_000_000
