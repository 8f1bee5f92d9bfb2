"""Registration presets: the preprocessing and shipped weights of one kind of pair.

A preset is what ``samir register --preset`` and the MONAI Label app's ``--conf preset`` choose:
the model grid, the intensity scaling the network was trained with, the weights file in
``bundle/models`` and the label names. ``choose_preset`` picks one from the fixed image alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from samir.data.abdomen import ABDOMEN_HU_RANGE, ABDOMEN_LABELS
from samir.data.acdc import ACDC_LABELS

__all__ = ["Preset", "PRESETS", "PRESET_CHOICES", "choose_preset", "check_preset", "preset_weights"]


@dataclass(frozen=True)
class Preset:
    """Preprocessing and weights of one kind of pair.

    ``spacing``: model-grid voxel size in mm (None keeps the fixed image's grid); ``max_size``:
    upper bound of the model grid (a larger grid is scaled down uniformly); ``intensity``:
    ``"minmax"`` (per volume) or ``(low, high)`` clip range mapped to [0, 1]; ``weights``: file in
    ``bundle/models`` with a sidecar ``<stem>.json`` holding the network's arguments
    (:mod:`samir.model_files`), or None: no network was trained for this kind of image, so it is
    registered by the training-free core alone (never by another anatomy's network).
    ``fast``: options of the training-free core (:func:`samir.optimize.fast.fast_optimize_pair`)
    for this kind of pair, plus ``encoder_size`` / ``slice_stride`` of its SAM slice encoder.
    ``network_start``: the refinement starts from the network's field (False: from identity, for
    weights that do not yet beat identity; ``--weights`` still runs a network given by the user).
    """

    name: str
    description: str
    spacing: tuple[float, float, float] | None
    max_size: tuple[int, int, int]
    intensity: str | tuple[float, float]
    weights: str | None
    labels: dict[int, str] = field(default_factory=dict)
    fast: dict = field(default_factory=dict)
    network_start: bool = True


PRESETS: dict[str, Preset] = {
    "cardiac": Preset("cardiac", "cardiac cine MRI (short-axis stacks, ED/ES)", None, (256, 256, 32), "minmax",
                      "model.pt", ACDC_LABELS,
                      # cardiac dev pairs (6, native grid, network + refinement): Dice 0.896 → 0.917 with the
                      # locally normalised intensity, → 0.925 with the sampled full-resolution stage too.
                      # 25 feature channels onto 12 joint principal components (0.3.0 network; dev: the 6
                      # pairs above and 10 of a second dev seed): 0.926 / 0.885 → 0.926 / 0.888 in 7.3
                      # against 11.0 s/pair. Tried and left: 8 components (0.924 / 0.886); Adam on the ½
                      # in-plane grid for every pair, 40 steps, no fine stage (0.930 / 0.895 in 4.2-5.0 s, but
                      # 0.910 against 0.920 on the 4 held-out pairs: a rougher field).
                      # Mutual information of the intensities at 10 k of the fine stage's points (16 bins),
                      # with 40 Adam steps instead of 60 (dev 0.926 / 0.889 → 0.929 / 0.892; held-out, one
                      # run: 0.919 → 0.922 at 5.1 against 5.4 s/pair; 60 steps: 0.935 / 0.889; 40 Adam and 40 fine steps: 0.927 / 0.889, weight 2:
                      # 0.926 on the first set). Tried and left: 14 k fine-stage points (dev 0.933 / 0.893,
                      # held-out 0.922 → 0.921, no faster), 45 fine steps (dev 0.927 / 0.889).
                      # Stop 18 (GELU-fused encoder): 20 Adam steps instead of 40, dev 0.934 / 0.889 → 0.936 /
                      # 0.890, held-out 0.921 → 0.920 (30 steps: 0.933 / 0.892, 0.920), 0.5 s less per pair.
                      # Tried and left: 5 k MI points (0.926 / 0.886), 50 fine steps (0.927 / 0.889). The fine
                      # stage lowered the fine-grid MIND cost on all 16 dev pairs (by 1-4 %): its keep-or-drop
                      # check (0.3 s) is left to the last guard (identity, network, refined)
                      fast={"encoder_size": 128, "slice_stride": 1, "capture_mm": 15.0, "intensity_weight": 0.5,
                            "joint_channels": 12, "iterations": 20, "fine_iterations": 60, "fine_check": False,
                            "mi_weight": 1.0,
                            "mi_points": 10_000, "mi_bins": 16}),
    # 8 mm: the grid the shipped abdominal model was trained on (retrained on real data at the
    # protocol's 4 mm, set this to 4.0)
    "abdomen": Preset("abdomen", "abdominal CT (HU)", (8.0, 8.0, 8.0), (128, 128, 160), ABDOMEN_HU_RANGE,
                      "model_abdomen.pt", ABDOMEN_LABELS,
                      # SAM features lowered the core on the seed-0 dev pairs (4 val pairs, 4 mm: MIND alone 0.847,
                      # SAM + MIND 0.828, 11 against 16 s/pair) as on the held-out ones: MIND alone, no encoding
                      fast={"encoder_size": 64, "slice_stride": 2, "capture_mm": 40.0, "sam_weight": 0.0},
                      # the refinement starts from identity: from the shipped network (0.7.0, no SAM; alone 0.802
                      # on the 42 seed-7 held-out pairs with its three passes, demons 0.780) it reaches 0.833 on the
                      # seed-3 dev pairs, from identity on MIND 0.834 (0.6.0 on the held-out 4: 0.834 against 0.844)
                      network_start=False),
    # no network: any other anatomy gets the training-free core, never another anatomy's network
    "generic": Preset("generic", "any other 3D pair, same or different contrast (training-free core)", None,
                      (160, 160, 160), "minmax", None, {},
                      # SAM features did not help the training-free core on the brain dev pairs
                      # (GM/WM Dice 0.895 with, 0.901 without) and cost the encoding: off here.
                      # Locally normalised intensity (same-contrast pairs only): CSF/GM/WM 0.811 → 0.822
                      # Edge orientations across contrasts (3 dev_cross pairs: 0.792 → 0.800)
                      # A longer sampled 2 mm stage (100 steps of 80 k points instead of 60 of 20 k; 4 dev
                      # pairs each): one contrast 0.822 → 0.840, across contrasts 0.803 → 0.807, +7 s/pair
                      # (40 k points: 0.838 / 0.806, +4 s; more Adam steps or a finer working grid: +0.0)
                      # Across contrasts, mutual information of the intensities at 20 k of the fine stage's
                      # points, with 40 k feature points (4 dev_cross pairs): 0.807 → 0.817 (80 k feature
                      # points: 0.818, +3 s; 10 k MI points: 0.814; weight 1.5: 0.818, 2: 0.806; 16 bins:
                      # 0.816). A joint-histogram remap of the moving image into the fixed contrast after the
                      # working-grid stage, for the intensity term, lowered it (0.776): partial volume at the
                      # brain's edge is not a function of one intensity
                      fast={"encoder_size": 128, "slice_stride": 2, "capture_mm": 20.0, "sam_weight": 0.0,
                            "intensity_weight": 1.0, "orientation_weight": 0.5, "fine_points": 80_000,
                            "fine_iterations": 100, "cross_mi_weight": 1.0, "cross_fine_points": 40_000}),
}

#: what a user may pass: a preset name, or "auto" (chosen per pair by :func:`choose_preset`)
PRESET_CHOICES: tuple[str, ...] = ("auto", *PRESETS)


def check_preset(name: str, option: str = "preset") -> str:
    """``name`` if it is a preset or "auto", else a ``ValueError`` naming ``option`` and the choices."""
    if name not in PRESET_CHOICES:
        raise ValueError(f"{option}: expected one of {list(PRESET_CHOICES)}, got {name!r}")
    return name


def preset_weights(name: str) -> Path | None:
    """The preset's shipped weights file, ``<bundle>/models/<weights>`` ("auto" → the cardiac one);
    None for a preset without a network (``generic``)."""
    from samir.bundle import bundle_dir

    weights = PRESETS["cardiac" if name == "auto" else name].weights
    return Path(bundle_dir()) / "models" / weights if weights else None


def choose_preset(fixed: np.ndarray, zooms) -> str:
    """Pick a preset from the fixed image: HU-like values → abdomen; thick-slice stacks → cardiac; else generic."""
    lo = float(np.percentile(fixed, 1))
    if lo <= -500:  # air (about -1000 HU) among the darkest 1 %: Hounsfield units, so CT
        return "abdomen"
    zooms = [float(z) for z in zooms[:3]]
    if max(zooms) >= 2.5 * min(zooms) and fixed.shape[int(np.argmax(zooms))] <= 32:
        return "cardiac"
    return "generic"
