"""Register one pair of NIfTI files: the code path shared by ``samir register``, the bundle's
inference workflow and the MONAI Label app.

Steps (all outputs end on the **fixed image's own grid, with its affine**):

1. load and check both images (and labels): 3D, finite, labels on their image's grid;
2. resample the moving image (and label) onto the fixed grid through the affines (world
   coordinates), so a pair of any sizes and spacings starts from its scanner alignment;
3. resize both to the preset's model grid (e.g. 4 mm for abdominal CT; the native grid for
   cardiac MRI), scale intensities as in training;
4. predict the DDF (``samir.spatial`` conventions) with the network (optionally refined by
   instance optimisation), resample it back to the fixed grid;
5. warp, score and write the outputs atomically into the output folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from samir.bundle import bundle_dir
from samir.data.abdomen import ABDOMEN_LABELS
from samir.data.acdc import ACDC_LABELS
from samir.data.checks import check_finite, check_label_values, check_same_grid, load_array, read_header
from samir.spatial import resize_ddf, warp_image, warp_label

__all__ = ["Preset", "PRESETS", "choose_preset", "Registrar", "register_cli", "RegistrationResult", "network_from_weights",
           "PairInferer", "LogPaird"]


@dataclass(frozen=True)
class Preset:
    """Preprocessing and weights of one kind of pair.

    ``spacing``: model-grid voxel size in mm (None keeps the fixed image's grid); ``max_size``:
    upper bound of the model grid (a larger grid is scaled down uniformly); ``intensity``:
    ``"minmax"`` (per volume) or ``(low, high)`` clip range mapped to [0, 1]; ``weights``: file in
    ``bundle/models`` with a sidecar ``<stem>.json`` holding the network's arguments.
    """

    name: str
    description: str
    spacing: tuple[float, float, float] | None
    max_size: tuple[int, int, int]
    intensity: str | tuple[float, float]
    weights: str
    labels: dict[int, str] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "cardiac": Preset("cardiac", "cardiac cine MRI (short-axis stacks, ED/ES)", None, (256, 256, 32), "minmax",
                      "model.pt", ACDC_LABELS),
    # 8 mm: the grid the shipped abdominal model was trained on (retrained on real data at the
    # protocol's 4 mm, set this to 4.0)
    "abdomen": Preset("abdomen", "abdominal CT (HU)", (8.0, 8.0, 8.0), (128, 128, 160), (-500.0, 800.0),
                      "model_abdomen.pt", ABDOMEN_LABELS),
    "generic": Preset("generic", "any same-modality pair (MRI weights; add --optimize for best results)", None,
                      (160, 160, 160), "minmax", "model.pt", {}),
}


def choose_preset(fixed: np.ndarray, zooms) -> str:
    """Pick a preset from the fixed image: HU-like values → abdomen; thick-slice stacks → cardiac; else generic."""
    lo = float(np.percentile(fixed, 1))
    if lo <= -500:  # air in Hounsfield units: CT
        return "abdomen"
    zooms = [float(z) for z in zooms[:3]]
    if max(zooms) >= 2.5 * min(zooms) and fixed.shape[int(np.argmax(zooms))] <= 32:
        return "cardiac"
    return "generic"


@dataclass
class RegistrationResult:
    """What ``Registrar.register_files`` wrote and measured."""

    out_dir: str
    files: dict[str, str]
    metrics: dict
    preset: str

    def to_json(self) -> dict:
        return asdict(self)


def network_from_weights(weights, encoder: str | None = None, checkpoint: str | None = None, cache_dir=None,
                         what: str = "SAMIR") -> torch.nn.Module:
    """Build SAMIR from a ``model.pt`` and its sidecar ``model.json`` (the network's arguments), load it."""
    from samir.bundle import load_network_weights
    from samir.networks import build_samir

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(
            f"weights {weights} for {what} not found: train them (see bundle/docs/README.md) or pass --weights"
        )
    sidecar = weights.with_suffix(".json")
    config = json.loads(sidecar.read_text()).get("network", {}) if sidecar.is_file() else {}
    if encoder is not None:
        config["encoder"] = encoder
    if checkpoint is not None:
        config["checkpoint"] = checkpoint
    config["cache_dir"] = cache_dir
    net = build_samir(**config)
    return load_network_weights(net, weights)


def _check_out_dir(out: Path) -> Path:
    out = Path(out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".samir-write-test-", delete=True)
        probe.close()
    except OSError as err:
        raise PermissionError(f"output directory {out} cannot be written: {err.strerror or err}") from err
    return out


class Registrar:
    """Loads a preset's network once and registers pairs of files with it.

    Args:
        preset: "cardiac", "abdomen", "generic" or "auto" (chosen from the fixed image per pair).
        encoder / checkpoint: override the preset's SAM encoder (name) and its weights file.
        weights: a SAMIR ``model.pt`` to use instead of the preset's (its sidecar json if any).
        device: "cpu", "cuda", "cuda:1", ... (default: cuda when available).
        cache_dir: embedding cache (None: default place; False: off).
        optimize / iterations: refine each pair by instance optimisation (``samir.optimize``).
        from_identity: optimise from identity with no network and no trained weights (implies
            ``optimize``; only the frozen SAM ``SliceEncoder`` is built, ``encoder`` or litemedsam).
            ``optimize`` without weights for the preset falls back to it, with a note.
        network: a ready SAMIR network used for every preset (the bundle's inference config
            passes its ``network_def``); otherwise each preset's weights are loaded on first use.
    """

    def __init__(self, preset: str = "auto", encoder: str | None = None, checkpoint: str | None = None,
                 weights: str | None = None, device: str | None = None, cache_dir=None,
                 optimize: bool = False, iterations: int | None = None, verbose: bool = True,
                 network: torch.nn.Module | None = None, from_identity: bool = False):
        if preset != "auto" and preset not in PRESETS:
            raise ValueError(f"preset: expected one of {['auto', *PRESETS]}, got {preset!r}")
        if encoder is not None:
            from samir.encoders import ENCODER_NAMES

            if str(encoder).lower() not in ENCODER_NAMES:
                raise ValueError(f"encoder: unknown encoder {encoder!r}; valid names: {', '.join(ENCODER_NAMES)}")
        self.preset = preset
        self.encoder = encoder
        self.checkpoint = checkpoint
        self.weights = weights
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cache_dir = cache_dir
        self.from_identity = bool(from_identity)
        self.optimize = bool(optimize) or self.from_identity
        self._slice_encoder = None
        self.iterations = iterations
        self.verbose = verbose
        self._networks: dict[str, torch.nn.Module] = {}
        self._given_network = network.to(self.device).eval() if network is not None else None
        self._lock = threading.Lock()

    # -- network -------------------------------------------------------------------------------
    def network(self, preset: str) -> torch.nn.Module:
        """The preset's network, built and loaded once per process (thread-safe)."""
        if self._given_network is not None:
            return self._given_network
        with self._lock:
            if preset not in self._networks:
                self._networks[preset] = network_from_weights(
                    self.weights or Path(bundle_dir()) / "models" / PRESETS[preset].weights,
                    encoder=self.encoder, checkpoint=self.checkpoint, cache_dir=self.cache_dir,
                    what=f"preset '{preset}'",
                ).to(self.device).eval()
            return self._networks[preset]

    def slice_encoder(self):
        """The frozen SAM ``SliceEncoder`` alone (no network, no trained weights), built once."""
        with self._lock:
            if self._slice_encoder is None:
                from samir.encoders import SliceEncoder, build_encoder

                cache = True if self.cache_dir is None else (
                    None if self.cache_dir is False or str(self.cache_dir).lower() in ("false", "none", "off", "")
                    else self.cache_dir)
                self._slice_encoder = SliceEncoder(build_encoder(self.encoder or "litemedsam", checkpoint=self.checkpoint),
                                                   cache=cache)
            return self._slice_encoder

    def _needs_network(self, preset_name: str) -> bool:
        if self.from_identity:
            return False
        if self.optimize and self._given_network is None and self.weights is None and preset_name not in self._networks:
            path = Path(bundle_dir()) / "models" / PRESETS[preset_name].weights
            if not path.is_file():
                if self.verbose:
                    print(f"samir: no trained weights {path} for preset '{preset_name}': optimising from identity")
                self.from_identity = True
                return False
        return True

    # -- steps ---------------------------------------------------------------------------------
    @staticmethod
    def _load(path, what: str, label: bool = False):
        header = read_header(path, what)
        array = load_array(path, what)
        if label:
            check_label_values(array, path, None)
        else:
            check_finite(array, path)
        return header, array

    def _to_model_grid(self, preset: Preset, header) -> tuple[int, int, int]:
        shape = np.array(header.spatial_shape, dtype=float)
        if preset.spacing is not None:
            zooms = np.array(header.zooms[:3], dtype=float)
            shape = shape * zooms / np.array(preset.spacing)
        scale = min(1.0, *(m / s for m, s in zip(preset.max_size, shape)))
        return tuple(max(8, int(round(s * scale))) for s in shape)

    @staticmethod
    def _scale_intensity(x: torch.Tensor, intensity) -> torch.Tensor:
        from monai.transforms import ScaleIntensity, ScaleIntensityRange

        if intensity == "minmax":
            return ScaleIntensity(minv=0.0, maxv=1.0)(x)
        lo, hi = intensity
        return ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(x)

    def predict_ddf(self, fixed: torch.Tensor, moving_on_fixed: torch.Tensor, preset_name: str,
                    size: tuple[int, int, int]) -> torch.Tensor:
        """DDF (1, 3, *fixed grid) in fixed voxels from raw-intensity images (1, 1, *fixed grid); ``size``: model grid."""
        preset = PRESETS[preset_name]
        f = torch.nn.functional.interpolate(fixed, size=size, mode="trilinear", align_corners=False)
        m = torch.nn.functional.interpolate(moving_on_fixed, size=size, mode="trilinear", align_corners=False)
        f = self._scale_intensity(f[0], preset.intensity)[None].float().to(self.device)
        m = self._scale_intensity(m[0], preset.intensity)[None].float().to(self.device)
        if not self._needs_network(preset_name):
            from samir.optimize import optimize_pair

            ddf = optimize_pair(m, f, init_ddf=None, sam_encoder=self.slice_encoder(), iterations=self.iterations)
            return resize_ddf(torch.as_tensor(ddf).cpu(), tuple(fixed.shape[2:]))
        net = self.network(preset_name)
        with torch.no_grad():
            ddf = net(torch.cat([m, f], dim=1))
        if self.optimize:
            from samir.optimize import optimize_pair

            ddf = optimize_pair(m, f, init_ddf=ddf, sam_encoder=net.sam_encoder, iterations=self.iterations)
        return resize_ddf(torch.as_tensor(ddf).cpu(), tuple(fixed.shape[2:]))

    def register_files(self, fixed, moving, out_dir, moving_label=None, fixed_label=None) -> RegistrationResult:
        """Register ``moving`` onto ``fixed`` (NIfTI paths) and write the outputs into ``out_dir``."""
        from monai.data import MetaTensor
        from monai.transforms import SpatialResample

        from samir.io import l2r_displacement_name, save_nifti, write_displacement_lps, write_l2r_displacement
        from samir.metrics import registration_metrics

        start = time.perf_counter()
        out = _check_out_dir(Path(out_dir))
        f_head, f_arr = self._load(fixed, "fixed image")
        m_head, m_arr = self._load(moving, "moving image")
        labels = {}
        for key, path, head in (("fixed_label", fixed_label, f_head), ("moving_label", moving_label, m_head)):
            if path is not None:
                l_head, l_arr = self._load(path, key.replace("_", " "), label=True)
                check_same_grid(head, l_head)
                labels[key] = l_arr
        preset_name = self.preset if self.preset != "auto" else choose_preset(f_arr, f_head.zooms)
        if self.preset == "auto" and self.verbose:
            print(f"samir: preset '{preset_name}' ({PRESETS[preset_name].description}) chosen from {fixed}")
        preset = PRESETS[preset_name]
        model_size = self._to_model_grid(preset, f_head)

        # moving (and its label) onto the fixed grid through the affines
        f_aff = torch.as_tensor(f_head.affine, dtype=torch.float64)
        resample_img = SpatialResample(mode="bilinear", padding_mode="border", dtype=torch.float64)
        resample_lab = SpatialResample(mode="nearest", padding_mode="zeros", dtype=torch.float64)
        m_meta = MetaTensor(torch.as_tensor(m_arr, dtype=torch.float32)[None], affine=m_head.affine)
        moving_on_fixed = resample_img(m_meta, dst_affine=f_aff, spatial_size=f_head.spatial_shape).as_tensor()[None].float()
        fixed_t = torch.as_tensor(f_arr, dtype=torch.float32)[None, None]
        moving_label_on_fixed = None
        if "moving_label" in labels:
            l_meta = MetaTensor(torch.as_tensor(labels["moving_label"], dtype=torch.float32)[None], affine=m_head.affine)
            moving_label_on_fixed = resample_lab(l_meta, dst_affine=f_aff, spatial_size=f_head.spatial_shape).as_tensor()[None]

        t0 = time.perf_counter()
        ddf = self.predict_ddf(fixed_t, moving_on_fixed, preset_name, model_size)
        register_seconds = time.perf_counter() - t0

        warped = warp_image(moving_on_fixed, ddf)
        metrics: dict = {"preset": preset_name, "register_seconds": register_seconds,
                         "model_grid": list(model_size), "optimize": self.optimize}
        warped_label = None
        if moving_label_on_fixed is not None:
            warped_label = warp_label(moving_label_on_fixed.round().long(), ddf)
        fixed_label_t = torch.as_tensor(labels["fixed_label"])[None, None].long() if "fixed_label" in labels else None
        spacing = tuple(float(z) for z in f_head.zooms[:3])
        if warped_label is not None and fixed_label_t is not None:
            label_names = preset.labels or None
            present = sorted(set(torch.unique(fixed_label_t).tolist()) | set(torch.unique(warped_label).tolist()))
            names = {v: (label_names or {}).get(v, str(v)) for v in present if v != 0}
            m = registration_metrics(ddf, warped_label, fixed_label_t, names, spacing=spacing)
            before = registration_metrics(torch.zeros_like(ddf), moving_label_on_fixed.round().long(), fixed_label_t,
                                          names, spacing=spacing)
            metrics.update(m)
            metrics["dice_mean_before"] = before["dice_mean"]
        else:
            metrics.update(registration_metrics(ddf))

        # write everything in a temporary folder inside out, then move: no half-written outputs
        files = {}
        tmp = Path(tempfile.mkdtemp(prefix=".samir-tmp-", dir=out))
        try:
            ddf_np = ddf[0].numpy()
            save_nifti(tmp / "warped_image.nii.gz", warped[0, 0].numpy().astype(np.float32), f_head.affine)
            if warped_label is not None:
                save_nifti(tmp / "warped_label.nii.gz", warped_label[0, 0].numpy().astype(np.int16), f_head.affine)
            save_nifti(tmp / "ddf_voxels.nii.gz", np.moveaxis(ddf_np, 0, -1).astype(np.float32), f_head.affine)
            write_displacement_lps(tmp / "displacement_lps_mm.nii.gz", ddf_np, f_head.affine)
            l2r = l2r_displacement_name(fixed, moving)
            if l2r:
                write_l2r_displacement(tmp / l2r, ddf_np, f_head.affine)
            metrics["seconds"] = time.perf_counter() - start
            metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
            for p in sorted(tmp.iterdir()):
                os.replace(p, out / p.name)
                files[p.name.split(".")[0] if not p.name.startswith("disp_") else "l2r_displacement"] = str(out / p.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return RegistrationResult(str(out), files, metrics, preset_name)


def register_cli(fixed: str, moving: str, out: str, moving_label: str | None = None, fixed_label: str | None = None,
                 preset: str = "auto", encoder: str | None = None, checkpoint: str | None = None,
                 weights: str | None = None, device: str | None = None, cache_dir=None, optimize: bool = False,
                 iterations: int | None = None, from_identity: bool = False) -> None:
    """``samir register FIXED MOVING --out DIR [...]``: register, write outputs, print the metrics.

    ``--optimize [--iterations N]`` refines the network's output per pair; ``--from_identity``
    optimises from identity with no network or trained weights (only the frozen SAM encoder).
    """
    registrar = Registrar(preset=preset, encoder=encoder, checkpoint=checkpoint, weights=weights, device=device,
                          cache_dir=cache_dir, optimize=optimize, iterations=iterations, from_identity=from_identity)
    result = registrar.register_files(fixed, moving, out, moving_label=moving_label, fixed_label=fixed_label)
    shown = {k: v for k, v in result.metrics.items() if not k.startswith("hd95_") or k == "hd95_mean"}
    print(json.dumps(shown, indent=2))
    print(f"wrote {', '.join(sorted(Path(p).name for p in result.files.values()))} in {result.out_dir}")


class PairInferer:
    """The bundle's ``inferer``: register one datalist item into ``output_dir/<pair_id>/``.

    ``__call__(item)`` takes a dict {fixed, moving, fixed_label?, moving_label?, pair_id?} of paths
    and returns ``{"pairs": [metrics row], "result": RegistrationResult}`` for the evaluator's handlers.
    """

    def __init__(self, registrar: Registrar, output_dir: str):
        self.registrar = registrar
        self.output_dir = Path(output_dir)

    def __call__(self, item) -> dict:
        pair_id = str(item.get("pair_id") or f"{Path(str(item['moving'])).name.split('.')[0]}_to_"
                                              f"{Path(str(item['fixed'])).name.split('.')[0]}")
        result = self.registrar.register_files(
            item["fixed"], item["moving"], self.output_dir / pair_id,
            moving_label=item.get("moving_label"), fixed_label=item.get("fixed_label"),
        )
        row = {"pair_id": pair_id, **{k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}}
        return {"pairs": [row], "result": result}


class LogPaird:
    """Post-processing: log one line per registered pair (where its outputs are, Dice, folding, seconds)."""

    def __call__(self, output: dict) -> dict:
        import logging

        result = output.get("result")
        if result is not None:
            m = result.metrics
            dice = f", Dice {m['dice_mean']:.3f}" if m.get("dice_mean") is not None else ""
            logging.getLogger("samir").info(
                f"registered → {result.out_dir}{dice}, folding {m.get('folding_pct', float('nan')):.3f} %, "
                f"{m.get('seconds', float('nan')):.1f} s"
            )
        return output
