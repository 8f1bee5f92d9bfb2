"""Register one pair of NIfTI files: the code path shared by ``samir register``, the bundle's
inference workflow and the MONAI Label app. Presets are in :mod:`samir.presets`, model files in
:mod:`samir.model_files`; the command line is :mod:`samir.cli`.

Steps (all outputs end on the **fixed image's own grid, with its affine**):

1. load and check both images (and labels): 3D, finite, labels on their image's grid;
2. resample the moving image (and label) onto the fixed grid through the affines (world
   coordinates), so a pair of any sizes and spacings starts from its scanner alignment;
3. resize both to the preset's model grid (8 mm for abdominal CT, as its network was trained; the
   native grid for cardiac MRI), scale intensities as in training;
4. predict the DDF (``samir.spatial`` conventions) with the network, refined by the training-free
   core on the core grid (the model grid, or 4 mm for 2 mm abdominal CT), resample it back to the
   fixed grid;
5. warp, score and write the outputs atomically into the output folder.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from samir.data.checks import check_finite, check_label_values, check_same_grid, load_array, read_header
from samir.model_files import load_model
from samir.presets import PRESETS, Preset, check_preset, choose_preset, preset_weights
from samir.spatial import resize_ddf, warp_image, warp_label

__all__ = ["Registrar", "RegistrationResult", "check_out_dir", "choose_candidate", "core_grid", "model_grid",
           "register_batch", "write_outputs"]

logger = logging.getLogger(__name__)


@dataclass
class RegistrationResult:
    """What ``Registrar.register_files`` wrote and measured."""

    out_dir: str
    files: dict[str, str]
    metrics: dict
    preset: str

    def to_json(self) -> dict:
        return asdict(self)


# The last guard's tolerance: relative MIND-cost differences below it are noise. Measured on the cardiac
# dev pairs (native grid, 6 pairs): the network's field cost 1.4–1.6 % *more* than identity on pairs where
# its Dice was 0.02–0.07 higher; a field that is really wrong (another anatomy's network) costs far more.
GUARD_TOLERANCE = 0.02


def model_grid(preset: Preset, shape, spacing) -> tuple[int, int, int]:
    """The preset's model grid for an image of ``shape`` voxels of ``spacing`` mm: the network's and the
    SAM encoder's grid (the preset's voxel size if it has one, then at most its ``max_size``)."""
    shape = np.array([float(s) for s in shape], dtype=float)
    if preset.spacing is not None:
        shape = shape * np.array([float(z) for z in spacing], dtype=float) / np.array(preset.spacing)
    scale = min(1.0, *(m / s for m, s in zip(preset.max_size, shape)))
    return tuple(max(8, int(round(s * scale))) for s in shape)


def core_grid(preset: Preset, shape, spacing, model_size) -> tuple[int, int, int]:
    """The training-free core's grid: the model grid, or, where the preset's voxel size makes that
    grid coarser than the image (abdominal CT: 8 mm for the network), the image's own grid reduced
    to the core's ``max_fine_voxels``, so its last stage compares finer features than the network saw."""
    from samir.optimize.fast import reduced_grid

    max_voxels = int(preset.fast.get("max_fine_voxels", 2_000_000))
    native, _ = reduced_grid(tuple(int(s) for s in shape), tuple(float(z) for z in spacing), max_voxels)
    return native if math.prod(native) > math.prod(model_size) else tuple(int(s) for s in model_size)


def choose_candidate(costs: dict[str, float], tolerance: float = GUARD_TOLERANCE) -> str:
    """The last guard's pick among candidate fields ordered from the least to the most refined
    (e.g. identity, network, refined): the most refined one whose MIND cost is within ``tolerance``
    (relative) of the lowest; so a field clearly worse than doing nothing is never kept, and a
    difference within the measure's noise does not throw a refinement away."""
    lowest = min(costs.values())
    for name in reversed(list(costs)):
        if costs[name] <= lowest * (1.0 + tolerance) + 1e-12:
            return name
    return min(costs, key=lambda k: costs[k])


def check_out_dir(out: str | os.PathLike) -> Path:
    """Create ``out`` if needed and prove it writable (a probe file); else ``PermissionError`` naming it."""
    out = Path(out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".samir-write-test-", delete=True)
        probe.close()
    except OSError as err:
        raise PermissionError(f"output directory {out} cannot be written: {err.strerror or err}") from err
    return out


class Registrar:
    """Registers pairs of files: the preset's network (if it has one) and/or the training-free core.

    What runs for a pair (``metrics.json`` names it as ``method``):

    * a preset **with** trained weights that beat identity (cardiac): the network, then the fast training-free
      refinement on SAM + MIND features (:func:`samir.optimize.fast.fast_optimize_pair`) from the
      network's field; ``optimize=False`` (``--no_optimize``) stops after the network;
    * a preset **without** weights (generic: any other anatomy), missing weights, a preset whose
      weights do not yet beat identity (``network_start=False``: abdomen), or ``from_identity``: the
      training-free core from identity — never another anatomy's network;
    * a last guard compares the MIND-SSC dissimilarity (contrast-insensitive) of identity, the
      network's field and the refined field against the fixed image and keeps the most refined one
      within ``GUARD_TOLERANCE`` (2 %) of the lowest (:func:`choose_candidate`); the candidates'
      costs and the kept one are in ``metrics.json`` under ``guard``.

    Args:
        preset: "cardiac", "abdomen", "generic" or "auto" (chosen from the fixed image per pair).
        encoder / checkpoint: override the SAM encoder (name) and its weights file.
        weights: a SAMIR ``model.pt`` to use instead of the preset's (its sidecar json if any).
        device: "cpu", "cuda", "cuda:1", ... (default: cuda when available).
        cache_dir: embedding cache (None: default place; False: off).
        optimize: run the training-free refinement after the network (default True).
        iterations: Adam steps of the training-free core (default: its own).
        from_identity: the training-free core from identity, no network.
        l2r_short_names: name the Learn2Reg displacement ``disp_FFFF_MMMM`` for every pair, as older
            scorers read (default: the current scorer's names, :func:`samir.io.l2r_displacement_name`).
        network: a ready SAMIR network used for every preset (the bundle's inference config
            passes its ``network_def``); otherwise each preset's weights are loaded on first use.
        progress: show a progress line per stage on stderr (encoding, search, optimisation).
        fast_options: options of the training-free core over the preset's (e.g. ``{"sam_weight": 0}``).
    """

    def __init__(self, preset: str = "auto", encoder: str | None = None, checkpoint: str | None = None,
                 weights: str | None = None, device: str | None = None, cache_dir=None,
                 optimize: bool = True, iterations: int | None = None, verbose: bool = True,
                 network: torch.nn.Module | None = None, from_identity: bool = False,
                 l2r_short_names: bool = False, progress: bool = False, fast_options: dict | None = None):
        check_preset(preset)
        if encoder is not None:
            from samir.encoders import ENCODER_NAMES

            if str(encoder).lower() not in ENCODER_NAMES:
                raise ValueError(f"encoder: unknown encoder {encoder!r}; valid names: {', '.join(ENCODER_NAMES)}")
        if iterations is not None and int(iterations) < 0:
            raise ValueError(f"iterations: expected >= 0, got {iterations}")
        self.preset = preset
        self.encoder = encoder
        self.checkpoint = checkpoint
        self.weights = weights
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cache_dir = cache_dir
        self.from_identity = bool(from_identity)
        self.l2r_short_names = bool(l2r_short_names)
        self.optimize = bool(optimize) or self.from_identity
        self._slice_encoders: dict[tuple, object] = {}
        self.iterations = iterations
        self.verbose = verbose
        self.progress = bool(progress)
        self.fast_options = dict(fast_options or {})
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
                self._networks[preset] = load_model(
                    self.weights or preset_weights(preset),
                    encoder=self.encoder, checkpoint=self.checkpoint, cache_dir=self.cache_dir,
                    what=f"preset '{preset}'",
                ).to(self.device).eval()
            return self._networks[preset]

    def slice_encoder(self, image_size: int | None = None, slice_stride: int = 1):
        """The frozen SAM ``SliceEncoder`` alone (no network, no trained weights), built once per setting."""
        key = (image_size, int(slice_stride))
        with self._lock:
            if key not in self._slice_encoders:
                from samir.encoders import SliceEncoder, build_encoder
                from samir.encoders.cache import parse_cache_option

                name = self.encoder or "litemedsam"
                kwargs = {"image_size": int(image_size)} if image_size and name == "litemedsam" else {}
                self._slice_encoders[key] = SliceEncoder(
                    build_encoder(name, checkpoint=self.checkpoint, **kwargs),
                    cache=parse_cache_option(self.cache_dir), slice_stride=int(slice_stride))
            return self._slice_encoders[key]

    def method_for(self, preset_name: str) -> str:
        """What registers a pair of this preset: "network+fast", "network" or "fast" (see the class doc)."""
        if self.from_identity:
            return "fast"
        if self._given_network is None and self.weights is None and not PRESETS[preset_name].network_start:
            return "fast"
        if self._given_network is None and self.weights is None and preset_name not in self._networks:
            path = preset_weights(preset_name)
            if path is None or not path.is_file():
                if path is not None and self.verbose:
                    logger.info(f"no trained weights {path} for preset '{preset_name}': training-free core")
                return "fast"
        return "network+fast" if self.optimize else "network"

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
        return model_grid(preset, header.spatial_shape, header.zooms[:3])

    @staticmethod
    def _scale_intensity(x: torch.Tensor, intensity) -> torch.Tensor:
        from monai.transforms import ScaleIntensity, ScaleIntensityRange

        if intensity == "minmax":
            return ScaleIntensity(minv=0.0, maxv=1.0)(x)
        lo, hi = intensity
        return ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(x)

    def predict_ddf(self, fixed: torch.Tensor, moving_on_fixed: torch.Tensor, preset_name: str,
                    size: tuple[int, int, int], spacing: tuple[float, float, float] | None = None,
                    report: dict | None = None, scale_intensity: bool = True) -> torch.Tensor:
        """DDF (1, 3, *fixed grid) in fixed voxels from raw-intensity images (1, 1, *fixed grid).

        ``size``: the model grid (:func:`model_grid`: the network and the SAM encoder run there);
        the training-free core and the last guard run on :func:`core_grid` (the model grid, or a
        finer one where the preset's voxel size is coarse). ``spacing``: the fixed grid's voxel size
        (mm). ``report`` (a dict) receives the method, the guard's costs and per-stage seconds.
        ``scale_intensity=False``: the images are already scaled as the preset's network expects (a
        data set's MONAI chain).
        """
        from samir.optimize.fast import MindCost, fast_optimize_pair, reduced_grid

        preset = PRESETS[preset_name]
        report = {} if report is None else report
        native = tuple(int(n) for n in fixed.shape[2:])
        size = tuple(int(n) for n in size)
        spacing = tuple(float(s) for s in (spacing or (1.0, 1.0, 1.0)))
        fast_options = {**preset.fast, **self.fast_options}
        method = self.method_for(preset_name)
        report["method"] = method

        def on_grid(grid):  # both images resized to ``grid`` and scaled as the preset's network expects
            f = torch.nn.functional.interpolate(fixed, size=grid, mode="trilinear", align_corners=False)
            m = torch.nn.functional.interpolate(moving_on_fixed, size=grid, mode="trilinear", align_corners=False)
            if scale_intensity:
                f, m = self._scale_intensity(f[0], preset.intensity)[None], self._scale_intensity(m[0], preset.intensity)[None]
            # plain tensors: MONAI's transforms return MetaTensors, whose per-operation bookkeeping would
            # follow every operation of the encoder, the network and the core
            f, m = (x.as_tensor() if hasattr(x, "as_tensor") else x for x in (f, m))
            return f.float().to(self.device), m.float().to(self.device), tuple(sp * n / g for sp, n, g in zip(spacing, native, grid))

        f, m, model_spacing = on_grid(size)
        # the core may work on a finer grid than the network (abdomen: 8 mm network, 4 mm core)
        work = size if method == "network" else core_grid(preset, native, spacing, size)
        fc, mc, work_spacing = (f, m, model_spacing) if work == size else on_grid(work)
        if work != size:
            report["core_grid"] = list(work)
        seconds: dict[str, float] = {}
        candidates: dict[str, torch.Tensor] = {"identity": m.new_zeros((1, 3, *work))}
        em = ef = encoder = None
        if method.startswith("network"):
            t = time.perf_counter()
            net = self.network(preset_name)
            with torch.no_grad():
                # symmetric (both directions, averaged) and the sidecar's passes when the network's field
                # is the answer; one direction and one pass when the refinement follows: it removes that
                # bias itself (dev and held-out cardiac pairs within ±0.5 Dice either way), and the second
                # direction costs ~0.25 s
                pair = torch.cat([m, f], dim=1)
                alone = method == "network"
                report["network"] = {"symmetric": bool(net.symmetric and alone), "passes": net.passes if alone else 1}
                candidates["network"] = resize_ddf(net(pair, **report["network"]), work)
            seconds["network"] = time.perf_counter() - t
            encoder = net.sam_encoder if method == "network+fast" else None
        elif fast_options.get("sam_weight", 1.0) > 0:
            encoder = self.slice_encoder(fast_options.get("encoder_size"), fast_options.get("slice_stride", 1))
        if fast_options.get("sam_weight", 1.0) <= 0:
            encoder = None  # the core runs on MIND alone for this preset: no encoding at all
        if method != "network":
            if encoder is not None:  # on the model grid: the embeddings span the field of view, any grid
                t = time.perf_counter()
                with torch.no_grad():
                    em, ef = encoder(torch.cat([m, f])).split(1)  # one batch: encoded side by side
                seconds["encode"] = time.perf_counter() - t
                self._note(f"SAM features {tuple(em.shape[2:])} in {seconds['encode']:.1f} s")
            options = {k: v for k, v in fast_options.items() if k not in ("encoder_size", "slice_stride")}
            if self.iterations is not None:
                options["iterations"] = int(self.iterations)
            init = candidates.get("network")
            ddf, info = fast_optimize_pair(mc, fc, spacing=work_spacing, init_ddf=init, moving_embedding=em,
                                           fixed_embedding=ef, progress=self._note, **options)
            candidates["refined"] = ddf
            seconds.update({f"fast_{k}": v for k, v in info["seconds"].items() if k != "total"})
            report["fast"] = {k: info[k] for k in ("features", "work_grid", "search_grid", "search_radius", "mutual_information")
                              if k in info}
        # last guard: the candidate most similar to the fixed image (MIND-SSC: any contrast) wins
        t = time.perf_counter()
        with torch.no_grad():
            grid, _ = reduced_grid(work, work_spacing, 400_000)
            cost = MindCost(fc, grid)
            costs = {name: cost(warp_image(mc, d) if name != "identity" else mc) for name, d in candidates.items()}
        best = choose_candidate(costs, GUARD_TOLERANCE)
        seconds["guard"] = time.perf_counter() - t
        report["guard"] = {"mind_cost": {k: round(v, 6) for k, v in costs.items()}, "kept": best,
                           "tolerance": GUARD_TOLERANCE}
        report["stage_seconds"] = {k: round(v, 3) for k, v in seconds.items()}
        if best != list(candidates)[-1]:
            logger.info(f"guard: kept the {best} field (MIND cost {costs[best]:.4f}) over the "
                        f"{list(candidates)[-1]} one ({costs[list(candidates)[-1]]:.4f})")
        return resize_ddf(torch.as_tensor(candidates[best]).cpu(), native)

    def _note(self, message: str) -> None:
        """A progress line: INFO when ``progress`` (the CLI shows samir's INFO lines on stderr), else DEBUG."""
        logger.log(logging.INFO if self.progress else logging.DEBUG, message)

    def register_files(self, fixed, moving, out_dir, moving_label=None, fixed_label=None) -> RegistrationResult:
        """Register ``moving`` onto ``fixed`` (NIfTI paths) and write the outputs into ``out_dir``."""
        from monai.data import MetaTensor
        from monai.transforms import SpatialResample

        from samir.io import l2r_displacement_name
        from samir.metrics import dice_per_label, registration_metrics

        start = time.perf_counter()
        out = check_out_dir(out_dir)
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
            logger.info(f"preset '{preset_name}' ({PRESETS[preset_name].description}) chosen from {fixed}")
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
        report: dict = {}
        spacing = tuple(float(z) for z in f_head.zooms[:3])
        ddf = self.predict_ddf(fixed_t, moving_on_fixed, preset_name, model_size, spacing=spacing, report=report)
        register_seconds = time.perf_counter() - t0

        warped = warp_image(moving_on_fixed, ddf)
        metrics: dict = {"preset": preset_name, "method": report["method"], "register_seconds": register_seconds,
                         "threads": torch.get_num_threads(),
                         "model_grid": list(model_size), **({"core_grid": report["core_grid"]} if "core_grid" in report else {}),
                         **({"network": report["network"]} if "network" in report else {}), "guard": report["guard"],
                         "stage_seconds": report["stage_seconds"], **({"fast": report["fast"]} if "fast" in report else {})}
        warped_label = None
        if moving_label_on_fixed is not None:
            warped_label = warp_label(moving_label_on_fixed.round().long(), ddf)
        fixed_label_t = torch.as_tensor(labels["fixed_label"])[None, None].long() if "fixed_label" in labels else None
        if warped_label is not None and fixed_label_t is not None:
            label_names = preset.labels or None
            present = sorted(set(torch.unique(fixed_label_t).tolist()) | set(torch.unique(warped_label).tolist()))
            names = {v: (label_names or {}).get(v, str(v)) for v in present if v != 0}
            m = registration_metrics(ddf, warped_label, fixed_label_t, names, spacing=spacing)
            before = dice_per_label(moving_label_on_fixed.round().long(), fixed_label_t, names)
            metrics.update(m)
            metrics["dice_mean_before"] = float(np.nanmean(list(before.values())))
        else:
            metrics.update(registration_metrics(ddf))

        # write everything in a temporary folder inside out, then move: no half-written outputs
        files = {}
        tmp = Path(tempfile.mkdtemp(prefix=".samir-tmp-", dir=out))
        try:
            write_outputs(tmp, f_head.affine, warped, ddf, warped_label,
                          l2r_displacement_name(fixed, moving, short=self.l2r_short_names))
            metrics["seconds"] = time.perf_counter() - start
            metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
            for p in sorted(tmp.iterdir()):
                os.replace(p, out / p.name)
                files[p.name.split(".")[0] if not p.name.startswith("disp_") else "l2r_displacement"] = str(out / p.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return RegistrationResult(str(out), files, metrics, preset_name)


def write_outputs(folder: str | os.PathLike, affine, warped: torch.Tensor, ddf: torch.Tensor,
                  warped_label: torch.Tensor | None = None, l2r_name: str | None = None) -> None:
    """A pair's output files into ``folder``: ``warped_image``, ``ddf_voxels``, ``displacement_lps_mm``
    (``.nii.gz``), ``warped_label`` with a label, the Learn2Reg ``l2r_name`` with one. ``warped`` and
    ``warped_label`` (1, 1, H, W, D), ``ddf`` (1, 3, H, W, D) voxels, ``affine`` the fixed image's.
    The float fields are stored gzip (``samir.io.FIELD_GZIP_LEVEL``)."""
    from samir.io import FIELD_GZIP_LEVEL, save_nifti, write_displacement_lps, write_l2r_displacement

    folder = Path(folder)
    ddf_np = ddf[0].numpy()
    field_nifti = functools.partial(save_nifti, compresslevel=FIELD_GZIP_LEVEL)
    jobs = [(save_nifti, folder / "warped_image.nii.gz", warped[0, 0].numpy().astype(np.float32), affine),
            (field_nifti, folder / "ddf_voxels.nii.gz", np.moveaxis(ddf_np, 0, -1).astype(np.float32), affine),
            (write_displacement_lps, folder / "displacement_lps_mm.nii.gz", ddf_np, affine)]
    if warped_label is not None:
        jobs.append((save_nifti, folder / "warped_label.nii.gz", warped_label[0, 0].numpy().astype(np.int16), affine))
    if l2r_name:
        jobs.append((write_l2r_displacement, folder / l2r_name, ddf_np, affine))
    # gzip releases the GIL: the files are compressed side by side
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        for done in [pool.submit(fn, *args) for fn, *args in jobs]:
            done.result()


def register_batch(registrar: Registrar, datalist: str | os.PathLike, out_dir: str | os.PathLike,
                   key: str | None = None, progress: bool = False) -> list[dict]:
    """Register every pair of a datalist json into ``out_dir/<pair_id>/`` with one ``Registrar``.

    Everything (imports, networks, encoders) is loaded once. A pair that fails (bad file) is
    reported in its row with the error and the others go on. Returns one summary row per pair.
    """
    from samir.data.pairs import datalist_pairs
    from samir.data.pairs import pair_id as make_pair_id

    pairs = datalist_pairs(datalist, key=key, check_files=False)
    out = check_out_dir(out_dir)
    rows = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pairs), desc="samir register", unit="pair", leave=False)
    for item in pairs:
        pair_id = make_pair_id(item)
        row: dict = {"pair_id": pair_id}
        try:
            result = registrar.register_files(item["fixed"], item["moving"], out / pair_id,
                                              moving_label=item.get("moving_label"),
                                              fixed_label=item.get("fixed_label"))
            m = result.metrics
            row.update({k: m.get(k) for k in ("method", "dice_mean_before", "dice_mean", "folding_pct", "seconds")
                        if m.get(k) is not None}, out_dir=result.out_dir)
        except (OSError, ValueError, RuntimeError) as err:
            row["error"] = str(err)
            logger.error(f"pair {pair_id}: {err}")
            try:  # a folder made for a pair that failed is removed if it holds nothing
                (out / pair_id).rmdir()
            except OSError:
                pass
        rows.append(row)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return rows
