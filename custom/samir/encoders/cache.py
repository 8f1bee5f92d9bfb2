"""On-disk cache of slice-encoder embeddings.

One file per (volume, encoder, preprocessing) at ``ROOT/<key[:2]>/<key>.pt``. The key is the
sha256 of the voxel data (bytes, shape, dtype), the encoder's name and weights hash, and every
parameter that changes the numbers (input size, clip percentiles, slice axis, fast-path flags,
the stored dtype...): see :meth:`SliceEncoder.cache_params`. Change any of them and the cache
misses.

* Default root: ``$XDG_CACHE_HOME/samir``, else ``~/.cache/samir``. ``EmbeddingCache(path)``
  relocates it; ``EmbeddingCache(False)`` (or ``"none"``) disables it.
* Writes are atomic (a temporary file in the same folder, then ``os.replace``): a reader never
  sees half a file.
* Each entry holds its own key and a sha256 of its tensor bytes. An entry that cannot be read,
  or whose key, shape or checksum does not match, is never served: it is removed, a warning
  says so, and the caller recomputes it.
* A failing write (read-only or full disk) warns and leaves the computation's result intact.
* Bounded size: after writes, entries least recently used (a hit refreshes an entry's time) are
  removed until the cache holds at most ``max_bytes`` (default ``$SAMIR_CACHE_MAX_GB``, else
  4 GB; 0 or less: no bound). Training on freshly augmented volumes writes an entry per volume:
  unbounded, one machine's cache had grown to 9.5 GB.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

__all__ = ["EmbeddingCache", "default_cache_root", "default_max_bytes", "parse_cache_option", "volume_digest",
           "make_key"]

FORMAT_VERSION = 1
DEFAULT_MAX_GB = 4.0
_DISABLED = {"none", "off", "false", "no", "0", ""}
_DEFAULT = {"default", "true", "yes", "on", "1"}


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/samir`` if XDG_CACHE_HOME is set, else ``~/.cache/samir``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "samir"


def default_max_bytes() -> int:
    """The cache's size bound in bytes: ``$SAMIR_CACHE_MAX_GB`` (GB, 0 or less = no bound), else 4 GB."""
    text = os.environ.get("SAMIR_CACHE_MAX_GB", "").strip()
    try:
        gb = float(text) if text else DEFAULT_MAX_GB
    except ValueError:
        warnings.warn(f"SAMIR_CACHE_MAX_GB={text!r} is not a number; using {DEFAULT_MAX_GB} GB", RuntimeWarning,
                      stacklevel=2)
        gb = DEFAULT_MAX_GB
    return int(gb * 1e9) if gb > 0 else 0


def parse_cache_option(value: str | os.PathLike | bool | None) -> Path | bool:
    """The embedding-cache option as users give it (``--cache_dir``, ``--conf cache_dir``, configs) → its meaning.

    ``None``, ``True`` or "default"/"true"/"yes"/"on"/"1" → the default folder (:func:`default_cache_root`);
    ``False`` or "false"/"none"/"off"/"no"/"0"/"" → ``False`` (no cache); anything else → that folder.
    Idempotent, and the result is what ``SliceEncoder(cache=...)`` and ``EmbeddingCache(...)`` take.
    """
    if value is None or value is True:
        return default_cache_root()
    if value is False:
        return False
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _DISABLED:
            return False
        if text in _DEFAULT:
            return default_cache_root()
    return Path(value).expanduser()


def _tensor_bytes(t: torch.Tensor):
    t = t.detach().cpu().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""


def volume_digest(volume: torch.Tensor) -> str:
    """sha256 of a tensor's shape, dtype and bytes (the data part of a cache key)."""
    digest = hashlib.sha256(f"{tuple(volume.shape)}|{volume.dtype}|".encode())
    digest.update(_tensor_bytes(volume))
    return digest.hexdigest()


def make_key(volume: torch.Tensor, params: dict) -> str:
    """Cache key of ``volume`` encoded with ``params`` (a JSON-serialisable dict)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(f"{text}|{volume_digest(volume)}".encode()).hexdigest()


class EmbeddingCache:
    """Embedding files under ``root``.

    Parameters
    ----------
    root : None (default place: :func:`default_cache_root`), a folder, or ``False``/``"none"``
        to disable the cache (every lookup misses, nothing is written).
    dtype : optional storage dtype (e.g. ``torch.float16`` halves the files); entries are
        returned as float32. Part of the key, so fp16 and fp32 entries never mix.
    max_bytes : size bound of the whole folder's entries (None: :func:`default_max_bytes`; 0: none).
        Checked after the first write of the process and then after every 5 % of the bound
        written; the least recently used entries go first.

    Counters ``hits``, ``misses``, ``corrupt`` and ``evicted`` count since construction.
    """

    def __init__(self, root: str | os.PathLike | bool | None = None, dtype: torch.dtype | None = None,
                 max_bytes: int | None = None):
        parsed = parse_cache_option(root)
        self.root: Path | None = parsed if parsed is not False else None
        self.dtype = dtype
        self.max_bytes = default_max_bytes() if max_bytes is None else max(0, int(max_bytes))
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self.evicted = 0
        self._written_since_prune: int | None = None  # None: no prune yet in this process

    def __repr__(self) -> str:
        return f"EmbeddingCache(root={str(self.root) if self.root else False!r}, dtype={self.dtype})"

    @property
    def enabled(self) -> bool:
        return self.root is not None

    @classmethod
    def resolve(cls, cache) -> EmbeddingCache:
        """``None``/``False``/"none" → disabled; ``True`` → default place; a path → there;
        an :class:`EmbeddingCache` → itself."""
        if isinstance(cache, EmbeddingCache):
            return cache
        if cache is None:
            return cls(False)
        return cls(cache)

    def signature(self) -> dict:
        """The cache's own part of every key."""
        return {"format": FORMAT_VERSION, "store_dtype": str(self.dtype) if self.dtype else "native"}

    def path(self, key: str) -> Path:
        if self.root is None:
            raise RuntimeError("the embedding cache is disabled")
        return self.root / key[:2] / f"{key}.pt"

    def _reject(self, path: Path, reason: str) -> None:
        self.corrupt += 1
        warnings.warn(
            f"embedding cache entry {path} is corrupt or partial ({reason}); ignoring it and recomputing",
            RuntimeWarning,
            stacklevel=3,
        )
        try:
            path.unlink()
        except OSError:
            pass

    def load(self, key: str, shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
        """The stored features for ``key`` (float32), or None on a miss or a bad entry."""
        if self.root is None:
            return None
        path = self.path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:  # removed in between (another process's size bound)
            self.misses += 1
            return None
        except Exception as err:  # truncated zip, garbage bytes, ...
            self._reject(path, f"{type(err).__name__}: {err}")
            self.misses += 1
            return None
        reason = None
        if not isinstance(entry, dict) or not isinstance(entry.get("features"), torch.Tensor):
            reason = "not an embedding entry"
        elif entry.get("format") != FORMAT_VERSION or entry.get("key") != key:
            reason = "key or format does not match"
        elif shape is not None and tuple(entry["features"].shape) != tuple(shape):
            reason = f"shape {tuple(entry['features'].shape)} != expected {tuple(shape)}"
        else:
            digest = hashlib.sha256(_tensor_bytes(entry["features"])).hexdigest()
            if digest != entry.get("sha256"):
                reason = "checksum mismatch"
        if reason:
            self._reject(path, reason)
            self.misses += 1
            return None
        self.hits += 1
        try:
            os.utime(path)  # recently used: the size bound removes it last
        except OSError:
            pass
        return entry["features"].float()

    def save(self, key: str, features: torch.Tensor) -> Path | None:
        """Write ``features`` for ``key`` atomically; returns the path (None if disabled or failed)."""
        if self.root is None:
            return None
        path = self.path(key)
        feats = features.detach().cpu().contiguous()
        if self.dtype is not None:
            feats = feats.to(self.dtype)
        entry = {
            "format": FORMAT_VERSION,
            "key": key,
            "features": feats,
            "sha256": hashlib.sha256(_tensor_bytes(feats)).hexdigest(),
        }
        tmp_name = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                torch.save(entry, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, path)
            self._after_write(path)
            return path
        except OSError as err:
            warnings.warn(f"could not write embedding cache entry {path}: {err}", RuntimeWarning, stacklevel=2)
            if tmp_name and os.path.exists(tmp_name):
                os.unlink(tmp_name)
            return None

    def clear(self) -> int:
        """Remove every entry under ``root``; returns how many files were removed."""
        if self.root is None or not self.root.is_dir():
            return 0
        n = 0
        for f in self.root.glob("??/*.pt"):
            f.unlink()
            n += 1
        return n

    # -- size bound ---------------------------------------------------------------------------
    def _entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, bytes, path) of every entry file (``<2 hex>/<key>.pt``) under the root."""
        out = []
        if self.root is None or not self.root.is_dir():
            return out
        for sub in os.scandir(self.root):
            if not (sub.is_dir(follow_symlinks=False) and len(sub.name) == 2):
                continue
            try:
                files = list(os.scandir(sub.path))
            except OSError:  # removed in between
                continue
            for f in files:
                if f.name.endswith(".pt") and f.is_file(follow_symlinks=False):
                    try:
                        st = f.stat()
                    except OSError:  # removed in between
                        continue
                    out.append((st.st_mtime, st.st_size, Path(f.path)))
        return out

    def size_bytes(self) -> int:
        """Bytes held by the cache's entries now."""
        return sum(size for _, size, _ in self._entries())

    def prune(self, max_bytes: int | None = None) -> int:
        """Remove the least recently used entries until at most ``max_bytes`` (default: the bound;
        pruning goes to 90 % of it, so that the next writes do not prune again at once) remain.
        Returns the number of entries removed."""
        limit = self.max_bytes if max_bytes is None else int(max_bytes)
        if self.root is None or limit <= 0:
            return 0
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        if total <= limit:
            return 0
        target = int(limit * 0.9) if max_bytes is None else limit
        removed = 0
        for _, size, path in entries:
            if total <= target:
                break
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                continue
            total -= size
            removed += 1
        self.evicted += removed
        return removed

    def _after_write(self, path: Path) -> None:
        if self.max_bytes <= 0:
            return
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        if self._written_since_prune is None or self._written_since_prune + size > self.max_bytes // 20:
            self._written_since_prune = 0
            try:
                self.prune()
            except OSError as err:  # the entry itself is written; only the bound could not be kept
                warnings.warn(f"could not bound the embedding cache {self.root}: {err}", RuntimeWarning, stacklevel=3)
        else:
            self._written_since_prune += size
