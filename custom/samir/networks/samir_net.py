"""SAMIR's registration network: frozen SAM slice features + 3D head + coarse-to-fine pyramid.

Input ``x``: (B, 2, H, W, D), channel 0 moving, channel 1 fixed, intensities in [0, 1].
Output: DDF (B, 3, H, W, D) in voxels of the fixed grid (conventions: ``samir.spatial``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from samir.networks.head import FeatureHead3D
from samir.spatial import compose, invert_ddf, resize_ddf, velocity_to_ddf, warp

__all__ = ["SAMIR", "ImagePyramid", "resample_embedding", "grow_finer_levels"]


def as_flag(name: str, value) -> bool:
    """A yes/no option as a bool: ``True``/``False``, 0/1, or the text a command line gives ("true",
    "false", "yes", "no", "1", "0", any case). ``bool("false")`` is True: a flag given as
    ``--symmetric false`` must not turn the option on. Anything else is an error naming the option."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise ValueError(f"{name}: expected true or false, got {value!r}")


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.2, inplace=True))


class ImagePyramid(nn.Module):
    """Shared CNN pyramid: image (B, 1, H, W, D) → list of features, level l at size (H, W, D) / 2**l.

    The first ``light_levels`` levels get one convolution instead of two (no field is estimated there).
    """

    def __init__(self, channels: Sequence[int], light_levels: int = 0):
        super().__init__()
        stages, cin = [], 1
        for level, c in enumerate(channels):
            stride = 1 if level == 0 else 2
            if level < light_levels:  # only feeds the next level: one convolution is enough
                stages.append(_conv(cin, c, stride))
            else:
                stages.append(nn.Sequential(_conv(cin, c, stride), _conv(c, c)))
            cin = c
        self.stages = nn.ModuleList(stages)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        feats, x = [], image
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def resample_embedding(
    embedding: torch.Tensor, volume_size: Sequence[int], level_size: Sequence[int], factor: int
) -> torch.Tensor:
    """Resample slice embeddings onto one pyramid level of the (end-padded) volume grid.

    ``embedding`` (B, C, h, w, d) covers exactly the unpadded volume's field of view
    (``volume_size`` voxels, grid edges aligned, as ``SliceEncoder`` returns it). Level voxel
    ``j`` sits at full-resolution voxel ``(j + 0.5) * factor - 0.5``; points in the padding take
    the border value. Returns (B, C, *level_size).
    """
    coords = []
    for size_full, size_level in zip(volume_size, level_size):
        j = torch.arange(size_level, dtype=embedding.dtype, device=embedding.device)
        coords.append(((j + 0.5) * factor) / size_full * 2.0 - 1.0)  # normalised, align_corners=False
    gx, gy, gz = torch.meshgrid(*coords, indexing="ij")
    # grid_sample wants (x, y, z) = (last, middle, first) spatial axis order
    grid = torch.stack((gz, gy, gx), dim=-1).unsqueeze(0).expand(embedding.shape[0], -1, -1, -1, -1)
    return F.grid_sample(embedding, grid, mode="bilinear", padding_mode="border", align_corners=False)


class _FlowEstimator(nn.Module):
    """Predict a residual field (B, 3, ...) from warped-moving and fixed features and the field so far."""

    def __init__(self, cin: int, width: int):
        super().__init__()
        self.body = nn.Sequential(_conv(cin, width), _conv(width, width))
        self.out = nn.Conv3d(width, 3, 3, padding=1)
        nn.init.normal_(self.out.weight, 0.0, 1e-5)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class SAMIR(nn.Module):
    """Coarse-to-fine deformable registration guided by frozen SAM slice embeddings.

    ``forward(x)``: x (B, 2, H, W, D), channel 0 moving, channel 1 fixed → DDF (B, 3, H, W, D) in
    voxels of the fixed grid; the warped moving image is ``samir.spatial.warp(moving, ddf)``.

    Inside: the frozen ``sam_encoder`` (a ``SliceEncoder``: (B, 1, H, W, D) → (B, C, h, w, d) over
    the same field of view), ``FeatureHead3D``, and a shared image-feature pyramid of ``levels``
    levels. From the coarsest level to the finest, the moving features are warped by the field so
    far (upsampled), a residual is predicted from [warped moving, fixed, field] and composed in.
    Levels from ``sam_min_level`` up carry the refined SAM features next to the image features;
    finer levels carry image features only. With ``diffeomorphic=True`` each residual
    is a stationary velocity integrated by scaling and squaring (MONAI ``DVF2DDF``).

    The frozen encoder is not a registered sub-module of the ``SliceEncoder``: ``state_dict()``
    holds SAMIR's own weights only (the encoder's come from its package or checkpoint).

    Args:
        sam_encoder: frozen slice encoder, or None for the no-SAM baseline (same pyramid, image
            features only). Built from a name with ``samir.networks.build_samir``.
        sam_channels: channels of the SAM embedding (256).
        levels: pyramid levels (>= 3); sizes not divisible by 2**(levels-1) are padded, then cropped.
        channels: image-pyramid channels per level, finest first (length ``levels``).
        head_channels / head_blocks: ``FeatureHead3D`` size.
        diffeomorphic: integrate residual velocities (scaling and squaring, ``int_steps`` steps).
        hfc_channels: channels of the fixed random projection of the frozen embeddings returned
            for the HFC loss (0 keeps all channels).
        finest_level: finest level at which a field is estimated (1: half resolution, the field
            is then upsampled to the image; about 3× cheaper to train on a CPU than 0).
        sam_min_level: finest level that carries refined SAM features (2: quarter resolution,
            where LiteMedSAM's 32×32 grid at 128 px meets a 128×128 slice; 1 for its 64×64 grid
            at 256 px); finer levels use image features only. HFC uses every level.
        symmetric: at inference (eval mode, without ``return_all``) estimate both directions,
            moving→fixed and fixed→moving, in one batch (the pyramid and head features are shared),
            and return the mean of the forward field and the inverted backward field. One
            direction alone is biased towards the side it warps; the mean cancels part of that
            (+1.4 to +3.9 Dice points for the cardiac network alone on whole images, see the model
            card) for about one more pass of the flow estimators. Only for a network trained on
            both directions (the shipped ones: ACDC pairs both ways, random inter-subject pairs): a
            network fitted to one direction gets a meaningless backward field, so the default is
            off and the shipped sidecars switch it on. Training always runs one direction.
        inverse_iterations: fixed-point iterations that invert the backward field (``invert_ddf``).
        passes: at inference (eval mode, without ``return_all``) run the whole network this many
            times, each pass on the moving image and embedding warped by the field so far, and
            compose the fields: a recursive cascade of one network (Zhao et al., ICCV 2019, cascade
            several); what a pass leaves, the next sees as a smaller, easier deformation. 1 (the
            default) is one pass; training runs one (``train_cascade`` trains some steps as a later
            pass). The shipped abdominal sidecar sets 3 (on the dev pairs: 0.6.0 2 / 3 / 4 passes
            0.786 / 0.797 / 0.795, 0.7.0 3 passes 0.809; 0.5.0 gained +3.9 and +5.0 points from a
            second pass); the cardiac one keeps 1 (on whole images a second pass lost 1 point on
            a dev set and on the held-out pairs). See the model card.
    """

    def __init__(
        self,
        sam_encoder: nn.Module | None = None,
        sam_channels: int = 256,
        levels: int = 4,
        channels: Sequence[int] | None = None,
        head_channels: int = 32,
        head_blocks: int = 2,
        flow_width: int = 32,
        diffeomorphic: bool = False,
        int_steps: int = 7,
        hfc_channels: int = 32,
        sam_min_level: int = 2,
        finest_level: int = 0,
        symmetric: bool = False,
        inverse_iterations: int = 10,
        passes: int = 1,
        seed: int = 0,
    ):
        super().__init__()
        if levels < 3:
            raise ValueError(f"levels: expected at least 3 pyramid levels, got {levels}")
        channels = list(channels) if channels is not None else [8, 16, 32, 32, 64, 64][:levels]
        if len(channels) != levels:
            raise ValueError(f"channels: expected {levels} values (one per level, finest first), got {channels}")
        self.levels = levels
        self.diffeomorphic = as_flag("diffeomorphic", diffeomorphic)
        self.int_steps = int_steps
        self.symmetric = as_flag("symmetric", symmetric)
        self.inverse_iterations = int(inverse_iterations)
        if isinstance(passes, bool) or not str(passes).strip().isdigit() or int(passes) < 1:
            raise ValueError(f"passes: expected a whole number of at least 1, got {passes!r}")
        self.passes = int(passes)
        self.sam_encoder = sam_encoder
        self.use_sam = sam_encoder is not None
        if not 0 <= finest_level <= levels - 3:
            raise ValueError(f"finest_level: expected 0..{levels - 3} (at least 3 estimated levels), got {finest_level}")
        self.finest_level = finest_level
        self.pyramid = ImagePyramid(channels, light_levels=finest_level)
        self.head = FeatureHead3D(sam_channels, head_channels, head_blocks) if self.use_sam else None
        self.estimators = nn.ModuleList()
        if not finest_level <= sam_min_level < levels:
            raise ValueError(f"sam_min_level: expected {finest_level}..{levels - 1}, got {sam_min_level}")
        self.sam_levels = [self.use_sam and level >= sam_min_level for level in range(levels)]
        for level, c in enumerate(channels[finest_level:], start=finest_level):
            cin = 2 * (c + (head_channels if self.sam_levels[level] else 0)) + 3
            width = flow_width if level > 0 else max(8, flow_width // 2)  # full resolution: lighter
            self.estimators.append(_FlowEstimator(cin, width))
        if self.use_sam and hfc_channels:
            gen = torch.Generator().manual_seed(seed)
            q, _ = torch.linalg.qr(torch.randn(sam_channels, hfc_channels, generator=gen))
            self.register_buffer("hfc_projection", q.T.contiguous(), persistent=True)  # (hfc_channels, C)
        else:
            self.hfc_projection = None

    # -- helpers -------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if self.sam_encoder is not None:
            self.sam_encoder.eval()  # frozen: never in training mode
        return self

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Frozen SAM embeddings of one image (B, 1, H, W, D) → (B, C, h, w, d), no gradient."""
        if self.sam_encoder is None:
            raise RuntimeError("encode: this network is the no-SAM baseline (sam_encoder=None)")
        with torch.no_grad():
            return self.sam_encoder(image)

    def _embeddings(self, x: torch.Tensor, moving_embedding, fixed_embedding):
        """The frozen embeddings of the pair ``x``: those given, the others encoded (both missing: one
        batch, encoded side by side)."""
        b = x.shape[0]
        if moving_embedding is None and fixed_embedding is None:
            both = self.encode(torch.cat([x[:, :1], x[:, 1:]], dim=0))
            return both[:b], both[b:]
        return (self.encode(x[:, :1]) if moving_embedding is None else moving_embedding,
                self.encode(x[:, 1:]) if fixed_embedding is None else fixed_embedding)

    def _project(self, emb: torch.Tensor) -> torch.Tensor:
        if self.hfc_projection is None:
            return emb
        return torch.einsum("kc,bc...->bk...", self.hfc_projection.to(emb.dtype), emb)

    def _recursive(self, x, moving_embedding, fixed_embedding, symmetric, passes: int) -> torch.Tensor:
        """``passes`` passes of the whole network, each on the moving image (and its frozen embedding)
        warped by the field so far, the fields composed. Each pass warps from the original moving image
        by the composed field: interpolation does not pile up."""
        if self.use_sam:
            moving_embedding, fixed_embedding = self._embeddings(x, moving_embedding, fixed_embedding)
        ddf = self.forward(x, moving_embedding, fixed_embedding, symmetric=symmetric, passes=1)
        for _ in range(passes - 1):
            pair, warped_embedding = self.next_pass_inputs(x, ddf, moving_embedding)
            ddf = compose(ddf, self.forward(pair, warped_embedding, fixed_embedding, symmetric=symmetric, passes=1))
        return ddf

    def next_pass_inputs(self, x: torch.Tensor, ddf: torch.Tensor, moving_embedding: torch.Tensor | None = None):
        """What the next pass sees after the field ``ddf``: the pair with the moving image warped, and
        the moving embedding warped alike (its grid spans the same field of view; None without SAM)."""
        pair = torch.cat([warp(x[:, :1], ddf), x[:, 1:]], dim=1)
        if not self.use_sam or moving_embedding is None:
            return pair, None
        return pair, warp(moving_embedding.to(ddf.dtype), resize_ddf(ddf, tuple(moving_embedding.shape[2:])))

    # -- forward -------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        moving_embedding: torch.Tensor | None = None,
        fixed_embedding: torch.Tensor | None = None,
        return_all: bool = False,
        symmetric: bool | None = None,
        passes: int | None = None,
    ):
        """x (B, 2, H, W, D) [moving, fixed] → DDF (B, 3, H, W, D) voxels (or a dict with ``return_all``).

        ``moving_embedding``/``fixed_embedding`` (B, C, h, w, d): precomputed frozen embeddings
        (e.g. from the cache), used instead of encoding again. With ``return_all`` the result is
        a dict: ``ddf``, ``level_ddfs`` (coarse→fine down to ``finest_level``, each
        (B, 3, *level grid) in that level's voxels, on the padded grid), ``level_embeddings`` ((moving, fixed) projected frozen
        embeddings resampled to each level; None for the baseline), ``padded_size``.
        ``symmetric``: None follows ``self.symmetric`` in eval mode (never in training mode or with
        ``return_all``); True/False forces it. ``passes``: None follows ``self.passes`` likewise (one
        pass in training mode or with ``return_all``); a number forces it.
        """
        if x.ndim != 5 or x.shape[1] != 2:
            raise ValueError(f"x: expected (B, 2, H, W, D) with channel 0 moving, 1 fixed, got {tuple(x.shape)}")
        if passes is None:
            passes = self.passes if not self.training and not return_all else 1
        if int(passes) < 1:
            raise ValueError(f"passes: expected at least 1, got {passes}")
        if int(passes) > 1:
            if return_all:
                raise ValueError("passes > 1 is for inference: return_all returns the levels of one pass")
            return self._recursive(x, moving_embedding, fixed_embedding, symmetric, int(passes))
        size = tuple(x.shape[2:])
        factor = 2 ** (self.levels - 1)
        padded = tuple(int(math.ceil(s / factor) * factor) for s in size)
        pad = []
        for s, p in zip(reversed(size), reversed(padded)):
            pad += [0, p - s]
        xp = F.pad(x, pad, mode="replicate") if any(pad) else x
        moving, fixed = xp[:, :1], xp[:, 1:]

        feats = self.pyramid(torch.cat([moving, fixed], dim=0))
        b = x.shape[0]
        mov_feats = [f[:b] for f in feats]
        fix_feats = [f[b:] for f in feats]

        level_embeddings = None
        if self.use_sam:
            moving_embedding, fixed_embedding = self._embeddings(x, moving_embedding, fixed_embedding)
            head = self.head(torch.cat([moving_embedding, fixed_embedding], dim=0).to(x.dtype))
            level_embeddings = [] if return_all else None  # the HFC inputs: training only
            proj = self._project(torch.cat([moving_embedding, fixed_embedding], dim=0).to(x.dtype)) if return_all else None
            for level in range(self.finest_level, self.levels):
                level_size = mov_feats[level].shape[2:]
                if self.sam_levels[level]:
                    h = resample_embedding(head, size, level_size, 2**level)
                    mov_feats[level] = torch.cat([mov_feats[level], h[:b]], dim=1)
                    fix_feats[level] = torch.cat([fix_feats[level], h[b:]], dim=1)
                if return_all:
                    e = resample_embedding(proj, size, level_size, 2**level)  # HFC at every level
                    level_embeddings.append((e[:b], e[b:]))

        if symmetric is None:
            symmetric = self.symmetric and not self.training and not return_all
        if symmetric:  # both directions in one batch: [moving→fixed, fixed→moving]
            mov_feats, fix_feats = (
                [torch.cat([m, f], dim=0) for m, f in zip(mov_feats, fix_feats)],
                [torch.cat([f, m], dim=0) for m, f in zip(mov_feats, fix_feats)],
            )
            b = 2 * b

        ddf = None
        level_ddfs = []
        for level in reversed(range(self.finest_level, self.levels)):
            level_size = tuple(mov_feats[level].shape[2:])
            if ddf is None:
                ddf_up = mov_feats[level].new_zeros((b, 3, *level_size))
            else:
                ddf_up = resize_ddf(ddf, level_size)
            warped = warp(mov_feats[level], ddf_up)
            estimator = self.estimators[level - self.finest_level]
            residual = estimator(torch.cat([warped, fix_feats[level], ddf_up], dim=1))
            if self.diffeomorphic:
                residual = velocity_to_ddf(residual, self.int_steps)
            ddf = compose(ddf_up, residual)
            level_ddfs.append(ddf)

        if symmetric:  # mean of the forward field and the inverted backward one, on the finest level's grid
            b //= 2
            ddf = 0.5 * (ddf[:b] + invert_ddf(ddf[b:], self.inverse_iterations))
            level_ddfs = [d[:b] for d in level_ddfs]
        if self.finest_level:  # the finest estimated level is coarser than the image: upsample
            ddf = resize_ddf(ddf, padded)
        out = ddf[..., : size[0], : size[1], : size[2]]
        if not return_all:
            return out
        if level_embeddings is not None:
            level_embeddings = list(reversed(level_embeddings))  # coarse → fine, like level_ddfs
        return {"ddf": out, "level_ddfs": level_ddfs, "level_embeddings": level_embeddings, "padded_size": padded}


def grow_finer_levels(state: dict, network: SAMIR) -> dict:
    """A state dict of the same network with a coarser ``finest_level``, made to fit ``network``.

    The coarser network's weights keep their roles: its estimator of level l becomes ``network``'s
    estimator of level l, its one-convolution (light) pyramid stages become the first convolution
    of ``network``'s full stages, whose second convolution starts as the identity (a Dirac kernel,
    zero bias). The new finer estimators keep ``network``'s own initialisation, whose last layer is
    near zero. The grown network starts with the field of the coarser one (upsampled, plus the finer
    levels' near-zero residuals) where the grown stages' first activations are non-negative; where
    they are negative, LeakyReLU now acts twice (slope 0.04 instead of 0.2), so the start is close to
    the coarser network, not equal (abdominal 0.5.0 on a random pair: at most 1.3 of 4 voxels apart).
    Training then teaches the finer levels what the coarser grid missed.
    A state that is not such a coarser copy is returned unchanged (``load_state_dict`` then says
    what does not fit).
    """
    own = network.state_dict()
    n_old = len({k.split(".")[1] for k in state if k.startswith("estimators.")})
    shift = len(network.estimators) - n_old
    if shift <= 0 or n_old == 0:
        return state
    grown: dict = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "estimators":
            parts[1] = str(int(parts[1]) + shift)
        elif parts[0] == "pyramid" and len(parts) == 5 and network.finest_level <= int(parts[2]) < network.finest_level + shift:
            parts = parts[:3] + ["0"] + parts[3:]  # light stage (conv, act) -> first conv of the full stage
        grown[".".join(parts)] = value
    for key, value in own.items():
        if key in grown:
            continue
        parts = key.split(".")
        if parts[0] == "pyramid" and parts[3] == "1":  # the full stage's new second convolution: identity
            if parts[-1] == "weight":
                value = torch.zeros_like(value)
                torch.nn.init.dirac_(value)
            else:
                value = torch.zeros_like(value)
        grown[key] = value
    if set(grown) != set(own) or any(grown[k].shape != own[k].shape for k in own):
        return state
    return grown


def build_samir(
    encoder: str | None = "litemedsam",
    checkpoint: str | None = None,
    encoder_image_size: int | None = None,
    cache_dir: str | bool | None = None,
    slice_axis: int = -1,
    encoder_batch_size: int = 8,
    **kwargs,
) -> SAMIR:
    """Build the network by encoder name (``None``/"none" gives the no-SAM baseline); kwargs go to ``SAMIR``.

    ``cache_dir``: the embedding-cache option (:func:`samir.encoders.cache.parse_cache_option`):
    None = the default folder ($XDG_CACHE_HOME/samir or ~/.cache/samir), False/"none" = no cache, else a folder.
    """
    if encoder is None or str(encoder).lower() == "none":
        return SAMIR(sam_encoder=None, **kwargs)
    from samir.encoders import SliceEncoder, build_encoder
    from samir.encoders.cache import parse_cache_option

    slice_encoder = SliceEncoder(
        build_encoder(encoder, checkpoint=checkpoint, image_size=encoder_image_size),
        axis=slice_axis,
        batch_size=encoder_batch_size,
        cache=parse_cache_option(cache_dir),
    )
    return SAMIR(sam_encoder=slice_encoder, sam_channels=slice_encoder.out_channels, **kwargs)

