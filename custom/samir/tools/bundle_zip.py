"""Write the model-zoo zip: ``samir_registration_v<version>.zip``.

The archive holds one folder ``samir_registration/`` with ``configs/``, ``models/``, ``docs/``,
``large_files.yml`` and a copy of the ``samir`` package source, so that the unzipped bundle runs
with MONAI's own tools (``python -m monai.bundle run ...`` from inside it imports ``samir`` from
the folder when it is not installed).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

__all__ = ["write_bundle_zip"]

_SKIP_DIRS = {"__pycache__", ".pytest_cache", "runs"}


def _files(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if not name.endswith((".pyc", ".tmp")) and not name.startswith("."):
                yield Path(dirpath) / name


def write_bundle_zip(bundle_dir: str | os.PathLike = "bundle", out_dir: str | os.PathLike = ".",
                     name: str = "samir_registration") -> Path:
    """Zip ``bundle_dir`` (+ the ``samir`` package) into ``out_dir/<name>_v<version>.zip``; returns its path."""
    import samir

    bundle = Path(bundle_dir)
    meta_path = bundle / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: expected a bundle folder with configs/metadata.json")
    version = json.loads(meta_path.read_text())["version"]
    out = Path(out_dir) / f"{name}_v{version}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    package = Path(samir.__file__).parent
    tmp = out.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in _files(bundle):
            zf.write(path, Path(name) / path.relative_to(bundle))
        for path in _files(package):
            zf.write(path, Path(name) / "samir" / path.relative_to(package))
    os.replace(tmp, out)
    return out
