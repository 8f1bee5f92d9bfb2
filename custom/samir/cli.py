"""The ``samir`` command line, built on ``fire`` as MONAI's own bundle CLI is.

Every command is a thin entry point over a package function with a typed signature, so that
``samir --help`` and ``samir COMMAND --help`` list every option with its default and meaning (the
``Args:`` of each docstring). An option a command does not take is refused before anything runs,
with a message naming it. Heavy imports happen inside the commands so that ``--help`` stays
instant. Only this module and the tools (``samir.tools``) print; the library logs, and ``main``
shows the ``samir`` loggers' INFO lines on stderr.
"""

import contextlib
import importlib.abc
import inspect
import json
import logging
import os
import sys
from pathlib import Path

import fire

__all__ = ["SamirCLI", "main"]


class Synth:
    """Write synthetic stand-ins in the exact official layouts (deterministic by seed)."""

    def acdc(self, out: str, n: int = 24, seed: int = 0, n_test: int = 6, realism: float = 1.0) -> None:
        """ACDC layout: OUT/training/patient001..n, OUT/testing/patient101..100+n_test.

        Args:
            out: folder to write (created).
            n: training patients (1..100).
            seed: random seed; the same seed writes the same files.
            n_test: test patients (0..50).
            realism: 0..1, trabeculae, texture, partial-volume blur and surface-coil field (0: plain phantoms).
        """
        from samir.data.synthetic_acdc import write_synthetic_acdc

        root = write_synthetic_acdc(out, n=n, seed=seed, n_test=n_test, realism=realism)
        print(f"wrote synthetic ACDC to {root}")

    def synthmorph(self, out: str, n: int = 40, seed: int = 0, n_val: int = 8, n_test: int = 0,
                   shape: tuple | list | str = "128,128,16", p_cross: float = 0.25, p_invert: float = 0.1) -> None:
        """SynthMorph-style pairs (random label maps, two deformations, independent contrasts) with OUT/pairs.json.

        Readable by ``--dataset synthmorph --dataset_dir OUT`` and ``--dataset pairs --dataset_dir OUT/pairs.json``.

        Args:
            out: folder to write (created): images/, labels/, pairs.json (train, val, test).
            n: training pairs.
            seed: random seed; the same seed writes the same files.
            n_val: validation pairs.
            n_test: test pairs.
            shape: grid "H,W,D".
            p_cross: share of cross-contrast pairs (independent label intensities).
            p_invert: share of pairs whose moving image has the inverted contrast.
        """
        from samir.data.synthetic_labels import write_synthmorph_pairs

        if isinstance(shape, str):
            shape = tuple(int(s) for s in shape.split(","))
        root = write_synthmorph_pairs(out, n=n, seed=seed, n_val=n_val, n_test=n_test, shape=tuple(shape),
                                      p_cross=p_cross, p_invert=p_invert)
        print(f"wrote SynthMorph-style pairs to {root} (pairs.json)")

    def abdomen(self, out: str, n: int = 30, seed: int = 0, shape: tuple | list | str | None = None) -> None:
        """Learn2Reg AbdomenCTCT layout: OUT/AbdomenCTCT_dataset.json, imagesTr/, labelsTr/.

        Args:
            out: folder to write (created).
            n: subjects (the protocol's split needs 30).
            seed: random seed; the same seed writes the same files.
            shape: volume size "H,W,D" (default 192,160,256 at 2 mm; 96,80,128 writes smaller volumes).
        """
        from samir.data.synthetic_abdomen import write_synthetic_abdomen

        if isinstance(shape, str):
            shape = tuple(int(s) for s in shape.split(","))
        root = write_synthetic_abdomen(out, n=n, seed=seed, shape=tuple(shape) if shape else None)
        print(f"wrote synthetic AbdomenCTCT to {root}")

    def brain(self, out: str, n: int = 4, seed: int = 0, cross_contrast: bool = True) -> None:
        """Brain pairs of the MNI152 template (needs nilearn: pip install 'samir[brain]'), 2 mm, labels CSF/GM/WM.

        Writes OUT/imagesTr/brain_NNNN_0000.nii.gz (T1), _0001 (T2-like), OUT/labelsTr/brain_NNNN.nii.gz and
        OUT/pairs.json with the lists dev, test (T1 -> T1) and dev_cross, test_cross (T2-like moving -> T1).
        Dev and test subjects come from disjoint seeds: tune on dev, judge on test.

        Args:
            out: folder to write (created).
            n: pairs per split (each pair is two new subjects; 1..500).
            seed: random seed; the same seed writes the same files.
            cross_contrast: also write the T2-like images and the *_cross lists (--nocross_contrast: T1 only).
        """
        from samir.data.synthetic_brain import write_synthetic_brain

        root = write_synthetic_brain(out, n=n, seed=seed, cross_contrast=cross_contrast)
        print(f"wrote synthetic brain pairs to {root} (pairs.json)")

    def acdc_alt(self, out: str, n: int = 10, seed: int = 0, n_test: int = 10) -> None:
        """ACDC layout from a second, independent cardiac phantom generator (for held-out judging).

        Args:
            out: folder to write (created): OUT/training/patient001..n, OUT/testing/patient101..100+n_test.
            n: training patients (0..100).
            seed: random seed; the same seed writes the same files.
            n_test: test patients (0..50).
        """
        from samir.data.synthetic_cardiac_alt import write_synthetic_cardiac_alt

        root = write_synthetic_cardiac_alt(out, n=n, seed=seed, n_test=n_test)
        print(f"wrote synthetic ACDC (alternative generator) to {root}")


class SamirCLI:
    """SAMIR: learned 3D registration guided by Segment Anything features."""

    def __init__(self):
        self.synth = Synth()

    def register(self, fixed: str | None = None, moving: str | None = None, out: str | None = None, moving_label: str | None = None,
                 fixed_label: str | None = None, preset: str = "auto", weights: str | None = None,
                 encoder: str | None = None, checkpoint: str | None = None, device: str | None = None,
                 cache_dir: str | bool | None = None, no_optimize: bool = False, iterations: int | None = None,
                 from_identity: bool = False, l2r_short_names: bool = False, pairs: str | None = None,
                 pairs_key: str | None = None, quiet: bool = False) -> None:
        """Register MOVING onto FIXED and write the outputs in OUT (warped image and label, DDF, metrics.json).

        Presets with trained weights (cardiac, abdomen) run the network, then the fast training-free
        refinement; any other image (generic) gets the training-free core alone. A last guard keeps
        the best of identity / network / refined (metrics.json: method, guard).
        Batch: ``samir register --pairs pairs.json --out DIR`` (FIXED and MOVING omitted) loads
        everything once and writes DIR/<pair_id>/ per pair.

        Args:
            fixed: the fixed image (NIfTI); every output is on its grid, with its affine.
            moving: the moving image (NIfTI), warped onto FIXED.
            out: output folder (created; outputs appear whole or not at all).
            moving_label: the moving image's label map, warped with nearest neighbour.
            fixed_label: the fixed image's label map: Dice and HD95 before/after in metrics.json.
            preset: cardiac | abdomen | generic | auto (chosen from FIXED): preprocessing and shipped weights.
            weights: a SAMIR model.pt (with its model.json) instead of the preset's.
            encoder: SAM encoder name instead of the weights' own (litemedsam, sam_vit_b, ...).
            checkpoint: the SAM encoder's weights file.
            device: cpu | cuda | cuda:1 ... (default: cuda when available).
            cache_dir: embedding cache folder, or false for none (default: ~/.cache/samir).
            no_optimize: the network's field only (no training-free refinement; a network whose sidecar
                says "symmetric" runs both directions and averages them, and its "passes" run one after
                another on the moving image warped so far).
            iterations: Adam steps of the training-free core (default: its own).
            from_identity: the training-free core from identity, no network (any anatomy, any contrast).
            l2r_short_names: Learn2Reg file disp_FFFF_MMMM for every pair (older scorers) instead of the current names.
            pairs: a datalist json ({"pairs": [{fixed, moving, fixed_label?, moving_label?, pair_id?}]} or a list):
                register every pair into OUT/<pair_id>/ in one process.
            pairs_key: which list of the --pairs json (e.g. test); default: its first list of pairs.
            quiet: no progress lines on stderr.
        """
        before_imports = cpu_sample()  # the other jobs' load is measured over the imports
        with lean_import():
            from samir.register import Registrar

        if not out:
            raise ValueError("register: --out DIR is required (the output folder)")
        import torch

        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(choose_threads(since=before_imports))
        registrar = Registrar(preset=preset, encoder=encoder, checkpoint=checkpoint, weights=weights, device=device,
                              cache_dir=cache_dir, optimize=not no_optimize, iterations=iterations,
                              from_identity=from_identity, l2r_short_names=l2r_short_names, progress=not quiet)
        if pairs is not None:
            if fixed or moving:
                raise ValueError("register: give FIXED and MOVING, or --pairs, not both")
            from samir.register import register_batch

            rows = register_batch(registrar, pairs, out, key=pairs_key, progress=not quiet)
            print(json.dumps(rows, indent=2))
            return
        if not fixed or not moving:
            raise ValueError("register: FIXED and MOVING images are required (or --pairs pairs.json)")
        result = registrar.register_files(fixed, moving, out, moving_label=moving_label, fixed_label=fixed_label)
        shown = {k: v for k, v in result.metrics.items() if not k.startswith("hd95_") or k == "hd95_mean"}
        print(json.dumps(shown, indent=2))
        print(f"wrote {', '.join(sorted(Path(p).name for p in result.files.values()))} in {result.out_dir}")

    def train(self, export: str | None = None, models_dir: str | None = None, dataset: str | None = None,
              dataset_dir: str | None = None, output_dir: str | None = None, num_epochs: int | None = None,
              learning_rate: float | None = None, encoder: str | None = None, init_weights: str | None = None,
              resume_from: str | None = None, **overrides) -> None:
        """Run the bundle's training workflow (train.json); any other train.json key as --key value.

        Options left at None keep train.json's value.

        Args:
            export: save the best weights as MODELS_DIR/EXPORT.pt with an EXPORT.json sidecar.
            models_dir: where --export writes (default: bundle/models).
            dataset: acdc | abdomen | pairs (train.json: acdc).
            dataset_dir: the data set's folder (or datalist json); none: the synthetic stand-in.
            output_dir: checkpoints and logs (train.json: runs/samir).
            num_epochs: training epochs (train.json: 50).
            learning_rate: Adam learning rate (train.json: 1e-4).
            encoder: SAM encoder name (train.json: litemedsam).
            init_weights: start from these weights (a model.pt).
            resume_from: continue a run from its last_checkpoint_*.pt.
            overrides: any other train.json key, e.g. --hfc_weight 0.2 --max_train_pairs 8.
        """
        from samir.bundle import train_and_export

        named = dict(dataset=dataset, dataset_dir=dataset_dir, output_dir=output_dir, num_epochs=num_epochs,
                     learning_rate=learning_rate, encoder=encoder, init_weights=init_weights, resume_from=resume_from)
        overrides.update({k: v for k, v in named.items() if v is not None})
        facts = train_and_export(export=export, models_dir=models_dir, **overrides)
        print(json.dumps(facts, indent=2))

    def evaluate(self, dataset: str = "acdc", root: str | None = None, n_pairs: int | None = 4,
                 methods: tuple | list | str = ("identity", "demons", "baseline", "samir", "samir+opt"),
                 encoder: str = "litemedsam", weights: str | None = None, baseline_weights: str | None = None,
                 out_csv: str | None = None, split: str = "test", iterations: int | None = None,
                 cache_dir: str | bool | None = True, hd95: bool = True, peer_metric: str = "auto",
                 data_root: str | None = None, networks: str | dict | None = None) -> None:
        """Accuracy table on held-out pairs: identity, demons, no-SAM baseline, SAMIR, SAMIR + optimisation
        (and the peers ants, elastix when asked for in ``methods``: the ``peers`` extra).

        Args:
            dataset: acdc | abdomen | any registered data set name.
            root: the data set's folder (for ``--dataset pairs``: the datalist json); none: the synthetic stand-in.
            n_pairs: score the first N pairs (none: all).
            methods: comma-separated subset of identity, demons, ants, elastix, baseline, samir, samir+opt.
            encoder: the SAM encoder of the optimisation from identity.
            weights: SAMIR weights (default: bundle/models/model.pt).
            baseline_weights: no-SAM baseline weights (default: bundle/models/model_baseline.pt).
            out_csv: also write the per-pair rows here (every method's pairs, then its mean row).
            split: train | val | test.
            iterations: optimisation steps for samir+opt (default: the optimiser's own).
            cache_dir: embedding cache folder, or false for none.
            hd95: compute HD95 (slow on large volumes).
            peer_metric: metric of the ants / elastix rows: auto (per pair: same contrast or not), cc|ncc, mi|mattes.
            data_root: same as root (the bundle configs' name for it).
            networks: ablation networks "NAME=model.pt,NAME2=other.pt": adds the methods net:NAME (network
                alone) and net:NAME+fast (network + fast refinement).
        """
        from samir.tools.accuracy_table import run_benchmark

        if data_root is not None:
            if root is not None and str(root) != str(data_root):
                raise ValueError(f"root {root!r} and data_root {data_root!r}: give one of them")
            root = data_root

        if isinstance(methods, str):
            methods = tuple(m.strip() for m in methods.split(","))
        if isinstance(networks, str):
            pairs = [item.split("=", 1) for item in networks.split(",") if item.strip()]
            bad = [item for item in pairs if len(item) != 2 or not item[0].strip()]
            if bad:
                raise ValueError(f"networks: expected NAME=weights.pt[,NAME=weights.pt], got {networks!r}")
            networks = {k.strip(): v.strip() for k, v in pairs}
        run_benchmark(dataset=dataset, root=root, n_pairs=n_pairs, methods=tuple(methods), encoder=encoder,
                      weights=weights, baseline_weights=baseline_weights, out_csv=out_csv, split=split,
                      iterations=iterations, cache_dir=cache_dir, hd95=hd95, peer_metric=peer_metric,
                      networks=networks)

    def baseline(self, dataset: str = "acdc", root: str | None = None, split: str = "test",
                 csv_path: str | None = None) -> None:
        """Print the identity baseline (Dice per label, HD95) of a data set's pairs.

        Args:
            dataset: acdc | abdomen | any registered data set name.
            root: the data set's folder; none: the synthetic stand-in.
            split: train | val | test.
            csv_path: also write the per-pair rows here.
        """
        from samir.evaluation import identity_baseline

        _, table = identity_baseline(dataset=dataset, root=root, split=split, csv_path=csv_path)
        print(table)

    def demo(self, epochs: int = 1, train_pairs: int = 8, output_dir: str = "runs/demo", encoder: str | None = None,
             data_root: str | None = None) -> None:
        """The main job: synthetic ACDC, score, fine-tune through train.json, score again, print the table.

        Args:
            epochs: fine-tuning epochs.
            train_pairs: fine-tuning pairs.
            output_dir: where each stage writes its CSVs and weights.
            encoder: SAM encoder name instead of the shipped model's.
            data_root: a real ACDC folder instead of the synthetic one.
        """
        from samir.tools.demo import run_demo

        run_demo(epochs=epochs, train_pairs=train_pairs, output_dir=output_dir, encoder=encoder, data_root=data_root)

    def figures(self, dataset: str = "acdc", out: str | None = None, weights: str | None = None,
                root: str | None = None, split: str = "test", index: int = 0, half_resolution: bool = True) -> None:
        """Draw one registered pair (checkerboard, deformed grid, Jacobian) as a PNG for the model card.

        Args:
            dataset: acdc | abdomen.
            out: the PNG (default: bundle/docs/figures/DATASET_pair.png).
            weights: SAMIR weights (default: the preset's shipped ones).
            root: the data set's folder; none: the synthetic stand-in.
            split: train | val | test.
            index: which pair of the split.
            half_resolution: abdomen at half resolution, as the shipped model was trained.
        """
        from samir.tools.figures import figure_for_dataset

        print(figure_for_dataset(dataset, out or f"bundle/docs/figures/{dataset}_pair.png", weights=weights,
                                 root=root, split=split, index=index, half_resolution=half_resolution))

    def bench(self, quick: bool = False, sizes: tuple | list | str | None = None,
              paths: tuple | list | str | None = None, compile: bool = False, batch: int | None = None,
              repeats: int = 3, vit: bool = False, vit_checkpoint: str | None = None, threads: int | None = None,
              out: str | None = None, store: bool = False, thread_counts: tuple | list | str | None = None,
              volume_baseline: bool = False, encoder: str = "litemedsam", network: bool = True) -> None:
        """Print the speed / memory table of the encoder paths (and the shipped network).

        Args:
            quick: smoke run (32 px, batch 1, no network rows).
            sizes: encoder input sizes, e.g. 256,128 (quick: 64).
            paths: subset of the fast paths (eager, fuse_bn, channels_last, sdpa, ..., bf16).
            compile: also measure the torch.compile paths (minutes on 2 cores).
            batch: slices per encoder call (default 4; quick: 1).
            repeats: timed runs per row (median; at least 3).
            vit: also measure a SAM ViT-B at 256 and 512 px.
            vit_checkpoint: the ViT-B weights (default: random).
            threads: torch threads (default: torch's own choice).
            out: also write the markdown table to this file.
            store: record the fastest faithful path per size as this machine's decision.
            thread_counts: also time the base path at these thread counts, e.g. 1,2.
            volume_baseline: also time a whole volume with fp32 eager.
            encoder: the main encoder (tiny for plumbing tests).
            network: add the shipped cardiac network's rows and the writing of one pair's outputs (not with --quick).
        """
        from samir.tools.speed_bench import network_rows, output_rows, run_bench

        run_bench(quick=quick, sizes=sizes, paths=paths, compile=compile, batch=batch, repeats=repeats, vit=vit,
                  vit_checkpoint=vit_checkpoint, threads=threads, out=out, store=store, thread_counts=thread_counts,
                  volume_baseline=volume_baseline, encoder=encoder,
                  extra_rows={**network_rows(), **output_rows()} if network and not quick else None)

    def zip(self, out: str = ".", bundle: str = "bundle") -> None:
        """Write samir_registration_v<version>.zip, a model-zoo bundle.

        Args:
            out: folder for the zip.
            bundle: the bundle folder to pack.
        """
        from samir.tools.bundle_zip import write_bundle_zip

        print(write_bundle_zip(bundle_dir=bundle, out_dir=out))


def _train_keys() -> set[str]:
    """The keys ``samir train`` may override: train.json's top-level ids."""
    from samir.bundle import bundle_dir

    return set(json.loads((Path(bundle_dir()) / "configs" / "train.json").read_text()))


def _command(cli: SamirCLI, argv: list[str]) -> tuple[str, object, list[str]] | None:
    """(command name, bound method, its arguments) of ``argv``; None when argv names no command."""
    target: object = cli
    words = []
    rest = list(argv)
    while rest and not rest[0].startswith("-"):
        member = getattr(target, rest[0], None)
        if member is None or rest[0].startswith("_"):
            break
        words.append(rest.pop(0))
        target = member
        if callable(target):
            return " ".join(words), target, rest
    return None


def check_options(argv: list[str], cli: SamirCLI | None = None) -> None:
    """Refuse an option the command does not take (fire would run the command first, then complain)."""
    found = _command(cli or SamirCLI(), argv)
    if found is None:
        return
    name, method, args = found
    params = inspect.signature(method).parameters
    named = {p for p, v in params.items() if v.kind is not inspect.Parameter.VAR_KEYWORD}
    extra = "overrides" in params and params["overrides"].kind is inspect.Parameter.VAR_KEYWORD
    flags = {p for p, v in params.items() if isinstance(v.default, bool)}
    for token in args:
        if token == "--":  # fire's own flags (--help, --trace, ...) follow
            break
        if not token.startswith("--"):
            continue
        key = token[2:].split("=", 1)[0].replace("-", "_")
        if key in named or key == "help" or (key.startswith("no") and key[2:] in flags):
            continue
        if extra and name == "train" and key.split("#")[0] in _train_keys():
            continue
        options = ", ".join(f"--{p}" for p in params if p not in ("overrides",))
        where = " or a train.json key" if extra else ""
        raise ValueError(f"{name}: unknown option --{key}; expected one of {options}{where} "
                         f"(samir {name} --help)")


def _quiet_third_party() -> None:
    """No third-party warning floods on a user's terminal (SAMIR_DEBUG=1 keeps them): MONAI's
    grid_sample notice, torch's deprecation notes and the like say nothing a user can act on."""
    if os.environ.get("SAMIR_DEBUG"):
        return
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    # MONAI's DICOM plugin logs on every import that NVIDIA's optional GPU image codec is missing
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)


# What MONAI imports at start-up only because it is installed (``optional_import``), and that
# ``samir register`` never uses: ``import monai`` took 9.3–13.2 s on a quiet 2-core Xeon, and MONAI with
# these hidden plus ``samir.register`` 3.9–5.1 s (same runs). timm and
# torchvision (the SAM encoders) are imported later, when an encoder is built.
LEAN_IMPORT_SKIPS = frozenset({
    "mlflow", "ignite", "torchvision", "pandas", "sklearn", "matplotlib", "tifffile", "fastapi", "gdown",
    "transformers", "clearml", "tensorboard", "tensorboardX", "optuna", "onnx", "onnxruntime", "zarr", "h5py",
    "openslide", "cucim", "cupy", "skimage", "imagecodecs", "polygraphy", "lpips",
    # scipy.signal (and the scipy.stats it imports): only MONAI's ultrasound and signal transforms use it
    "scipy.signal",
    # ITK (installed with the peers extra's itk-elastix): MONAI's ITK reader and writer; 0.8 s here
    "itk",
    # MONAI's download helpers (bs4, requests) and bundle validation (jsonschema), its DICOM readers and
    # nibabel's DICOM-in-NIfTI extensions (pydicom): 0.3 s; register reads NIfTI and downloads nothing
    "bs4", "pydicom", "requests", "jsonschema",
})


@contextlib.contextmanager
def lean_import(skip=LEAN_IMPORT_SKIPS):
    """Import inside this block with the optional packages in ``skip`` hidden (as if not installed;
    a dotted name hides that sub-package and its own sub-packages only).

    MONAI probes every optional dependency it knows when it is first imported; hidden, they cost
    nothing and MONAI carries on without them (it treats them all as optional). Only the
    ``register`` command uses this, before anything else has imported MONAI; SAMIR_FULL_IMPORTS=1
    turns it off. Nothing stays hidden after the block.
    """
    if os.environ.get("SAMIR_FULL_IMPORTS") or "monai" in sys.modules:
        yield
        return

    class _Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == s or name.startswith(s + ".") for s in skip):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden while importing MONAI)", name=name)
            return None

    finder = _Hide()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def cpu_sample() -> tuple[int, int, float, float] | None:
    """(total jiffies, idle jiffies, this process's CPU seconds, wall seconds) now; None without /proc/stat."""
    import time

    try:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    except (OSError, ValueError, IndexError):
        return None
    return sum(values), idle, time.process_time(), time.perf_counter()


def busy_cores(interval: float = 0.2, since: tuple | None = None) -> float | None:
    """Cores busy with *other* work: the share of non-idle CPU time in /proc/stat since ``since`` (a
    :func:`cpu_sample`; default: now, then this call sleeps ``interval`` s) times the cores, less this
    process's own CPU time over the same wall time. None where /proc/stat is missing.

    With ``since`` taken before the imports, the measurement rides on them (it sleeps only what is
    left of ``interval``): the imports' own core does not count, and nothing is added to start-up.
    Unlike the 1-minute load average it does not count jobs that have just finished.
    """
    import time

    start = since or cpu_sample()
    if start is None:
        return None
    left = interval - (time.perf_counter() - start[3])
    if left > 0:
        time.sleep(left)
    end = cpu_sample()
    if end is None or end[0] <= start[0]:
        return None
    cores = os.cpu_count() or 1
    busy = (1.0 - (end[1] - start[1]) / (end[0] - start[0])) * cores
    own = (end[2] - start[2]) / max(end[3] - start[3], 1e-6)
    return max(0.0, busy - own)


def choose_threads(since: tuple | None = None) -> int:
    """Torch threads for this run: the cores, less those busy with other jobs.

    OpenMP threads that share a core with another job wait on each other: on a 2-core machine
    with one other heavy job, 2 threads ran the optimisation 5× slower than 1 thread. Busy cores
    are measured now (/proc/stat: over the imports since ``since``, or 0.2 s); the 1-minute load
    average is the fallback (it still counts a job that ended seconds ago: back-to-back commands
    then ran on 1 of 2 idle cores).
    """
    cores = os.cpu_count() or 1
    busy = busy_cores(since=since) if since is not None else busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
    return max(1, min(cores, cores - int(busy + 0.5)))


class _CurrentStderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is at each record (tests and tools swap it).

    It stays silent for a record that a console handler on the root logger prints anyway: a bundle
    workflow applies ``configs/logging.conf`` (a stdout handler on the root), and every ``samir.*``
    line of ``samir demo``/``train``/``evaluate`` was printed twice, once in each format."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if not _root_console_prints(record):
            super().emit(record)


def _root_console_prints(record: logging.LogRecord) -> bool:
    """Whether a plain console handler on the root logger (``logging.conf``'s) prints ``record`` too:
    the record propagates up to the root (only the handlers' levels apply there, not the root's) and
    one of its handlers is exactly a ``StreamHandler`` (pytest's capture handlers and file handlers are
    subclasses and print nothing to the console)."""
    root = logging.getLogger()
    logger = logging.getLogger(record.name)
    while logger is not None and logger is not root:
        if not logger.propagate:
            return False
        logger = logger.parent
    return any(type(h) is logging.StreamHandler and record.levelno >= h.level for h in root.handlers)


def _show_library_logs() -> None:
    """The library's INFO lines (``samir.*`` loggers) on stderr, once."""
    log = logging.getLogger("samir")
    if not log.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("samir: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def _help_last(argv: list[str]) -> list[str]:
    """``--help``/``-h`` as fire's own flag (after ``--``): fire would otherwise hand ``--help`` to a
    command that takes ``**overrides`` (``train``) as an override and run it."""
    head, sep, tail = (argv, [], []) if "--" not in argv else (argv[: argv.index("--")], ["--"], argv[argv.index("--") + 1:])
    if not any(a in ("--help", "-h") for a in head):
        return argv
    return [a for a in head if a not in ("--help", "-h")] + ["--", *tail, "--help"]


def _exit_now() -> None:
    """End the process at once, outputs flushed: the interpreter's teardown of torch and MONAI (module by
    module) took 0.4–0.6 s of a 10 s registration on 2 cores, and a finished command has nothing left to
    release (its files are written, moved into place and closed)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    from_console = argv is None  # the ``samir`` command itself (tests call main with their argv)
    argv = _help_last(list(sys.argv[1:] if argv is None else argv))
    try:
        cli = SamirCLI()
        check_options(argv, cli)
        _quiet_third_party()
        _show_library_logs()
        fire.Fire(cli, command=argv, name="samir")
    except (OSError, ValueError, RuntimeError) as err:  # OSError: missing file, unwritable folder
        # user errors: one clear line, no traceback (SAMIR_DEBUG=1 shows it)
        if os.environ.get("SAMIR_DEBUG"):
            raise
        print(f"samir: error: {err}", file=sys.stderr)
        sys.exit(2)
    if from_console and argv[:1] == ["register"] and "--help" not in argv:
        _exit_now()


if __name__ == "__main__":
    main()
