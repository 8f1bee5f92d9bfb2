"""Input validation shared by the data readers, the transform chains and ``samir register``.

Every check raises ``FileNotFoundError`` or ``ValueError`` with a message that names the file
and says what was expected and what was found. Header checks (existence, readability, shape,
affine) are cheap and run before any voxel array is loaded; value checks (NaN, label set) run
on loaded arrays, inside the transform chains (:class:`CheckPaird`).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = [
    "NiftiHeader",
    "check_exists",
    "read_header",
    "load_array",
    "check_same_grid",
    "check_finite",
    "check_label_values",
    "check_image_label_files",
    "check_pair_files",
    "CheckFilesd",
    "CheckPaird",
    "unwrap_transform_error",
]

# errors nibabel / gzip / numpy raise on broken or truncated files
_READ_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, nib.filebasedimages.ImageFileError)

AFFINE_ATOL_MM = 1e-3


class NiftiHeader:
    """Shape (spatial, channel dims dropped when 1), affine (4, 4) and zooms of an image file, read lazily."""

    def __init__(self, path: Path, shape: tuple[int, ...], affine: np.ndarray, zooms: tuple[float, ...]):
        self.path, self.shape, self.affine, self.zooms = path, shape, affine, zooms

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The first three axes (x, y, z) of the file."""
        return tuple(self.shape[:3])

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm of the first three axes."""
        return tuple(float(z) for z in self.zooms[:3])


def _describe(what: str | None) -> str:
    return f"{what} " if what else ""


def check_exists(path: str | Path, what: str | None = None) -> Path:
    """Return ``path`` as a Path; raise ``FileNotFoundError`` naming it (and its role ``what``) if absent."""
    p = Path(path)
    if not p.is_file():
        where = "a folder" if p.is_dir() else "nothing"
        raise FileNotFoundError(f"{p}: expected {_describe(what)}file, found {where} there")
    return p


def read_header(path: str | Path, what: str | None = None) -> NiftiHeader:
    """Read only the header of a NIfTI (or other nibabel) file; errors name the file and the problem."""
    p = check_exists(path, what)
    try:
        img = nib.load(str(p))
        shape = tuple(int(s) for s in img.shape)
        affine = np.asarray(img.affine, dtype=np.float64)
        zooms = tuple(float(z) for z in img.header.get_zooms())
    except _READ_ERRORS as err:
        raise ValueError(
            f"{p}: unreadable {_describe(what)}image, expected a valid NIfTI file ({type(err).__name__}: {err})"
        ) from err
    if len(shape) < 3 or any(s < 1 for s in shape):
        raise ValueError(f"{p}: expected a 3D {_describe(what)}image, got shape {shape}")
    if len(shape) > 3 and int(np.prod(shape[3:])) != 1:
        raise ValueError(f"{p}: expected a single 3D {_describe(what)}volume, got shape {shape}")
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError(f"{p}: expected an invertible affine, got\n{affine}")
    return NiftiHeader(p, shape[:3], affine, zooms)


def load_array(path: str | Path, what: str | None = None, dtype=None) -> np.ndarray:
    """Load the voxels (x, y, z) of a file; a truncated or corrupt file raises ``ValueError`` naming it."""
    header = read_header(path, what)
    try:
        arr = np.asanyarray(nib.load(str(header.path)).dataobj)
    except _READ_ERRORS as err:
        raise ValueError(
            f"{header.path}: unreadable or truncated {_describe(what)}NIfTI, expected {header.shape} voxels "
            f"({type(err).__name__}: {err})"
        ) from err
    arr = arr.reshape(arr.shape[:3]) if arr.ndim > 3 and int(np.prod(arr.shape[3:])) == 1 else arr
    return arr if dtype is None else arr.astype(dtype)


def check_same_grid(
    a: NiftiHeader, b: NiftiHeader, check_affine: bool = True, atol_mm: float = AFFINE_ATOL_MM
) -> None:
    """Raise ``ValueError`` if two headers differ in spatial shape or (optionally) affine."""
    if a.spatial_shape != b.spatial_shape:
        raise ValueError(
            f"{b.path}: shape mismatch, expected {a.spatial_shape} (as {a.path.name}), got {b.spatial_shape}"
        )
    if check_affine and not np.allclose(a.affine, b.affine, atol=atol_mm, rtol=1e-5):
        diff = float(np.abs(a.affine - b.affine).max())
        raise ValueError(
            f"{b.path}: affine mismatch with {a.path.name} (max difference {diff:.4g}), expected\n"
            f"{np.array2string(a.affine, precision=4)}\ngot\n{np.array2string(b.affine, precision=4)}"
        )


def _to_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def check_finite(array, path: str | Path) -> None:
    """Raise ``ValueError`` if an image array has NaN or infinite voxels."""
    arr = _to_numpy(array)
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        n_bad = int(bad.sum())
        if n_bad:
            raise ValueError(f"{path}: expected finite voxel values, got {n_bad} NaN/inf voxels of {arr.size}")


def check_label_values(array, path: str | Path, allowed: Iterable[int] | None) -> None:
    """Raise ``ValueError`` if a label map is non-integer or holds values outside ``allowed`` (None: any)."""
    arr = _to_numpy(array)
    check_finite(arr, path)
    values = np.unique(arr)
    if np.issubdtype(values.dtype, np.floating) and not np.all(values == np.round(values)):
        odd = values[values != np.round(values)][:5]
        raise ValueError(f"{path}: expected integer label values, got {odd.tolist()}")
    if allowed is not None:
        allowed_set = {int(v) for v in allowed}
        extra = sorted({int(v) for v in values} - allowed_set)
        if extra:
            raise ValueError(
                f"{path}: label values outside the data set's set, expected a subset of {sorted(allowed_set)}, "
                f"got {extra}"
            )


def check_image_label_files(image: str | Path, label: str | Path | None) -> NiftiHeader:
    """Header checks of an image and its label file (exist, readable, same shape and affine); returns the image header."""
    h_img = read_header(image, "image")
    if label is not None:
        h_lab = read_header(label, "label")
        check_same_grid(h_img, h_lab)
    return h_img


def check_pair_files(item: Mapping, same_shape: bool = False) -> dict[str, NiftiHeader]:
    """Header checks of a pair dict {fixed, moving, fixed_label?, moving_label?}; returns the headers by key."""
    headers: dict[str, NiftiHeader] = {}
    for role in ("fixed", "moving"):
        if role not in item:
            raise ValueError(f"pair {item.get('pair_id', item)}: expected a '{role}' entry, got keys {sorted(item)}")
        headers[role] = check_image_label_files(item[role], item.get(f"{role}_label"))
    if same_shape and headers["fixed"].spatial_shape != headers["moving"].spatial_shape:
        raise ValueError(
            f"{headers['moving'].path}: shape mismatch, expected the fixed image's {headers['fixed'].spatial_shape} "
            f"({headers['fixed'].path.name}), got {headers['moving'].spatial_shape}"
        )
    return headers


class CheckFilesd(MapTransform):
    """Dictionary transform on *paths* (before loading): exist, readable headers, label grid = image grid.

    ``label_of`` maps a label key to its image key, e.g. ``{"fixed_label": "fixed"}``.
    """

    def __init__(
        self,
        keys: KeysCollection = ("fixed", "moving", "fixed_label", "moving_label"),
        label_of: Mapping[Hashable, Hashable] | None = None,
        same_shape: Sequence[Hashable] | None = None,
        allow_missing_keys: bool = True,
    ):
        super().__init__(keys, allow_missing_keys)
        self.label_of = dict(label_of or {"fixed_label": "fixed", "moving_label": "moving"})
        self.same_shape = tuple(same_shape or ())

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        headers = {}
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, Path)):
                headers[key] = read_header(d[key], "label" if key in self.label_of else "image")
        for lab, img in self.label_of.items():
            if lab in headers and img in headers:
                check_same_grid(headers[img], headers[lab])
        shaped = [k for k in self.same_shape if k in headers]
        for k in shaped[1:]:
            if headers[k].spatial_shape != headers[shaped[0]].spatial_shape:
                raise ValueError(
                    f"{headers[k].path}: shape mismatch, expected {headers[shaped[0]].spatial_shape} "
                    f"(as {headers[shaped[0]].path.name}), got {headers[k].spatial_shape}"
                )
        return d


def _name(x, fallback: Hashable) -> str:
    meta = getattr(x, "meta", None)
    if meta and meta.get("filename_or_obj"):
        return str(meta["filename_or_obj"])
    return str(fallback)


class CheckPaird(MapTransform):
    """Dictionary transform on *loaded* arrays (C, H, W, D): finite images, labels in ``allowed_labels``,
    label grid = image grid (shape and, for MetaTensors, affine), optionally equal shapes across ``same_shape``.
    """

    def __init__(
        self,
        image_keys: KeysCollection = ("fixed", "moving"),
        label_keys: KeysCollection = ("fixed_label", "moving_label"),
        allowed_labels: Iterable[int] | None = None,
        same_shape: bool = False,
        allow_missing_keys: bool = True,
    ):
        image_keys = [image_keys] if isinstance(image_keys, str) else list(image_keys)
        label_keys = [label_keys] if isinstance(label_keys, str) else list(label_keys)
        super().__init__(image_keys + label_keys, allow_missing_keys)
        self.image_keys, self.label_keys = image_keys, label_keys
        self.allowed = None if allowed_labels is None else sorted(int(v) for v in allowed_labels)
        self.same_shape = same_shape

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if key in self.image_keys:
                check_finite(d[key], _name(d[key], key))
            else:
                check_label_values(d[key], _name(d[key], key), self.allowed)
        for img_key, lab_key in zip(self.image_keys, self.label_keys):
            if img_key in d and lab_key in d:
                img, lab = d[img_key], d[lab_key]
                if tuple(img.shape[1:]) != tuple(lab.shape[1:]):
                    raise ValueError(
                        f"{_name(lab, lab_key)}: shape mismatch, expected {tuple(img.shape[1:])} "
                        f"(as {Path(_name(img, img_key)).name}), got {tuple(lab.shape[1:])}"
                    )
                a_img, a_lab = getattr(img, "affine", None), getattr(lab, "affine", None)
                if a_img is not None and a_lab is not None:
                    a_img, a_lab = _to_numpy(a_img).astype(float), _to_numpy(a_lab).astype(float)
                    if not np.allclose(a_img, a_lab, atol=AFFINE_ATOL_MM, rtol=1e-5):
                        raise ValueError(
                            f"{_name(lab, lab_key)}: affine mismatch with {Path(_name(img, img_key)).name}, "
                            f"expected\n{np.array2string(a_img, precision=4)}\ngot\n{np.array2string(a_lab, precision=4)}"
                        )
        if self.same_shape:
            present = [k for k in self.image_keys if k in d]
            for k in present[1:]:
                if tuple(d[k].shape[1:]) != tuple(d[present[0]].shape[1:]):
                    raise ValueError(
                        f"{_name(d[k], k)}: shape mismatch, expected {tuple(d[present[0]].shape[1:])} "
                        f"(as {Path(_name(d[present[0]], present[0])).name}), got {tuple(d[k].shape[1:])}"
                    )
        return d


def unwrap_transform_error(err: BaseException) -> BaseException:
    """The first ``ValueError``/``FileNotFoundError`` behind MONAI's ``RuntimeError('applying transform ...')``."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (ValueError, FileNotFoundError)):
            return cur
        cur = cur.__cause__
    return err
