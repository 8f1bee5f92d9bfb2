"""The ``samir`` command line, built on ``fire`` as MONAI's own bundle CLI is.

Every command is a thin entry point over a package function; heavy imports happen inside
the command so that ``samir --help`` stays instant.
"""

from __future__ import annotations

import sys

import fire


class Synth:
    """Write synthetic stand-ins in the exact official layouts (deterministic by seed)."""

    def acdc(self, out: str, n: int = 24, seed: int = 0, n_test: int = 6):
        """ACDC layout: OUT/training/patient001..n, OUT/testing/patient101..100+n_test."""
        from samir.data.synthetic_acdc import write_synthetic_acdc

        root = write_synthetic_acdc(out, n=n, seed=seed, n_test=n_test)
        print(f"wrote synthetic ACDC to {root}")

    def abdomen(self, out: str, n: int = 30, seed: int = 0, shape: tuple | list | str | None = None):
        """Learn2Reg AbdomenCTCT layout; ``--shape 96,80,128`` writes smaller volumes (default 192,160,256)."""
        from samir.data.synthetic_abdomen import write_synthetic_abdomen

        if isinstance(shape, str):
            shape = tuple(int(s) for s in shape.split(","))
        root = write_synthetic_abdomen(out, n=n, seed=seed, shape=tuple(shape) if shape else None)
        print(f"wrote synthetic AbdomenCTCT to {root}")


class SamirCLI:
    """SAMIR: learned 3D registration guided by Segment Anything features."""

    def __init__(self):
        self.synth = Synth()

    def baseline(self, dataset: str = "acdc", root: str | None = None, split: str = "test"):
        """Print the identity baseline (Dice per label, HD95) of a data set's pairs."""
        from samir.evaluation import identity_baseline

        identity_baseline(dataset=dataset, root=root, split=split)

    def demo(self, **kwargs):
        """The main job: synthetic ACDC, then the table (see README)."""
        from samir.tools.demo import run_demo

        run_demo(**kwargs)

    def train(self, export: str | None = None, **overrides):
        """Run the bundle's training workflow (any train.json key as --key value); --export NAME copies
        the best weights to bundle/models/NAME.pt with a NAME.json sidecar."""
        from samir.bundle import train_and_export

        train_and_export(export=export, **overrides)

    def register(self, fixed: str, moving: str, out: str, **kwargs):
        """Register MOVING onto FIXED and write the outputs in OUT (see ``samir.register``)."""
        from samir.register import register_cli

        register_cli(fixed, moving, out, **kwargs)

    def bench(self, **kwargs):
        """Print the speed/memory benchmark table."""
        from samir.tools.speed_bench import network_rows, run_bench

        if not kwargs.get("quick"):
            kwargs.setdefault("extra_rows", network_rows())
        run_bench(**kwargs)

    def evaluate(self, dataset: str = "acdc", **kwargs):
        """Benchmark table on held-out pairs: identity, demons, no-SAM baseline, SAMIR, SAMIR + optimisation."""
        from samir.tools.accuracy_table import run_benchmark

        run_benchmark(dataset=dataset, **kwargs)

    def figures(self, dataset: str = "acdc", out: str | None = None, **kwargs):
        """Draw one registered pair (checkerboard, deformed grid, Jacobian) as a PNG for the model card."""
        from samir.tools.figures import figure_for_dataset

        print(figure_for_dataset(dataset, out or f"bundle/docs/figures/{dataset}_pair.png", **kwargs))

    def zip(self, out: str = ".", bundle: str = "bundle"):
        """Write samir_registration_v<version>.zip, a model-zoo bundle."""
        from samir.tools.bundle_zip import write_bundle_zip

        print(write_bundle_zip(bundle_dir=bundle, out_dir=out))


def main(argv: list[str] | None = None) -> None:
    try:
        fire.Fire(SamirCLI, command=argv, name="samir")
    except (OSError, ValueError, RuntimeError) as err:  # OSError: missing file, unwritable folder
        # user errors: one clear line, no traceback (SAMIR_DEBUG=1 shows it)
        import os

        if os.environ.get("SAMIR_DEBUG"):
            raise
        print(f"samir: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
