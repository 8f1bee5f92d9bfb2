"""A LocalDatastore that refuses ids, tags and files that could reach outside the studies folder.

The stock ``LocalDatastore`` of monailabel 0.8.5 joins request parameters straight into paths:
``PUT /datastore/label?image=ID&tag=../../x`` and ``PUT /datastore/image?image=../x`` write outside
the datastore, and a missing id ends in an opaque 500 (``ImageNotFoundException`` is not an HTTP
error). Every datastore endpoint calls one of the methods below before touching the disk, so the
checks sit here; each refusal is an ``HTTPException`` (4xx, ``detail`` = the message Slicer shows)
raised before anything is written.
"""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore

__all__ = ["SafeLocalDatastore", "check_plain_name", "is_plain_name", "inside", "as_nifti", "IMAGE_SUFFIXES"]

# a plain name: no separators, no "..", no leading dot (hidden files, ".samir"), bounded length
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}")
# file kinds this app's datastore holds (images and label maps)
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd")


def is_plain_name(value) -> bool:
    """True for a datastore id or tag that is a single plain file-name stem (``patient001_frame01``)."""
    return isinstance(value, str) and bool(_PLAIN.fullmatch(value)) and ".." not in value


def check_plain_name(value, what: str) -> str:
    """Return ``value`` or raise a 400 naming the argument: ids and tags must be plain names, never paths."""
    if not is_plain_name(value):
        raise HTTPException(
            status_code=400,
            detail=f"{what}: expected a plain name (letters, digits, '_', '-', '.'; no path separators, no '..', "
                   f"not starting with '.'), got {value!r}; nothing was written",
        )
    return value


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` resolves (symlinks followed) to ``folder`` or somewhere below it."""
    p, f = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([p, f]) == f


def _suffix(filename: str) -> str:
    name = os.path.basename(filename).lower()
    return next((s for s in sorted(IMAGE_SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")


def check_image_file(path: str, what: str) -> None:
    """422 unless ``path`` is a readable 3D image of a supported kind (header check only, cheap)."""
    suffix = _suffix(path)
    if not suffix:
        raise HTTPException(
            status_code=415, detail=f"{what}: expected a {' / '.join(IMAGE_SUFFIXES)} file, got {os.path.basename(path)!r}"
        )
    try:
        if suffix in (".nii", ".nii.gz"):
            from samir.data.checks import read_header

            read_header(path, what)
        else:
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            if reader.GetDimension() != 3:
                raise ValueError(f"{what}: expected a 3D image, got {reader.GetDimension()} dimensions")
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise HTTPException(status_code=422, detail=f"{what}: {err}".replace(str(path), "uploaded file")) from err


def as_nifti(path: str | os.PathLike, folder: str | os.PathLike, name: str) -> Path:
    """``path`` itself when it is NIfTI, else a NIfTI copy ``folder/name.nii.gz`` (SimpleITK keeps the geometry).

    Slicer saves labels as ``.nrrd``; samir reads NIfTI. Raises ``ValueError`` naming the file if unreadable.
    """
    path = Path(path)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        return path
    import SimpleITK as sitk

    out = Path(folder) / f"{name}.nii.gz"
    try:
        sitk.WriteImage(sitk.ReadImage(str(path)), str(out))
    except RuntimeError as err:
        raise ValueError(f"{path.name}: not a readable image ({str(err).strip().splitlines()[-1]})") from err
    return out


@contextmanager
def _upload_dropped_if_refused(filename: str):
    """On a refusal, delete the request's upload: monailabel's endpoints write it to a temporary file and
    delete it in a background task that runs only after a successful response, so every refused upload
    would stay in the server's temporary folder. Only such an upload is touched: a ``tmp*`` file directly in
    that folder (``NamedTemporaryFile``'s name), never a file given by path from anywhere else."""
    try:
        yield
    except HTTPException:
        path = os.path.realpath(filename) if filename else ""
        if (path and os.path.dirname(path) == os.path.realpath(tempfile.gettempdir())
                and os.path.basename(path).startswith("tmp") and os.path.isfile(path)):
            os.remove(path)
        raise


class SafeLocalDatastore(LocalDatastore):
    """``LocalDatastore`` whose ids and tags must be plain names, whose files stay inside the studies folder,
    and whose unknown ids are 404s instead of 500s."""

    # -- checks ----------------------------------------------------------------------------------
    def _require_image(self, image_id: str, what: str = "image") -> None:
        check_plain_name(image_id, what)
        if image_id not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=f"{what}: no image {image_id!r} in the datastore")

    def _check_dest(self, dest: str, what: str) -> None:
        if not inside(dest, self._datastore_path):
            raise HTTPException(status_code=400, detail=f"{what}: would be written outside the studies folder; refused")

    @property
    def studies(self) -> str:
        return os.path.realpath(self._datastore_path)

    # -- writes ----------------------------------------------------------------------------------
    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        with _upload_dropped_if_refused(image_filename):
            if not image_id:
                image_id, _ = self._to_id(os.path.basename(image_filename))
            check_plain_name(image_id, "image")
            check_image_file(image_filename, f"image {image_id!r}")
            self._check_dest(os.path.join(self._datastore.image_path(), image_id + _suffix(image_filename)), "image")
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        with _upload_dropped_if_refused(label_filename):
            self._require_image(image_id)
            check_plain_name(label_tag, "tag")
            check_image_file(label_filename, f"label of {image_id!r}")
            self._check_dest(os.path.join(self._datastore.label_path(label_tag), image_id), "label")
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def remove_image(self, image_id: str) -> None:
        self._require_image(image_id, "id")
        super().remove_image(image_id)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        self._require_image(label_id, "id")
        check_plain_name(label_tag, "tag")
        if not self._datastore.label(label_id, label_tag):
            raise HTTPException(status_code=404, detail=f"label: no {label_tag!r} label for image {label_id!r}")
        super().remove_label(label_id, label_tag)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        self._require_image(image_id)
        super().update_image_info(image_id, info)

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        self._require_image(label_id, "label")
        check_plain_name(label_tag, "tag")
        if not self._datastore.label(label_id, label_tag):
            raise HTTPException(status_code=404, detail=f"label: no {label_tag!r} label for image {label_id!r}")
        super().update_label_info(label_id, label_tag, info)

    # -- reads -----------------------------------------------------------------------------------
    def get_image_uri(self, image_id: str) -> str:
        check_plain_name(image_id, "image")
        return super().get_image_uri(image_id)

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        check_plain_name(label_id, "label")
        check_plain_name(label_tag, "tag")
        return super().get_label_uri(label_id, label_tag)

    # -- helpers for the registration task -------------------------------------------------------
    def image_path(self, image_id: str, what: str = "image") -> Path:
        """The file of a datastore image; 404 naming ``what`` when the id is unknown."""
        self._require_image(image_id, what)
        return Path(super().get_image_uri(image_id))

    def final_label_path(self, image_id: str) -> Path | None:
        """The ``final`` label file of an image, or None."""
        uri = super().get_label_uri(image_id, "final") if self._datastore.label(image_id, "final") else ""
        return Path(uri) if uri and os.path.isfile(uri) else None

    def labelled_by_recency(self) -> list[str]:
        """Ids of images with a ``final`` label, the most recently labelled first."""
        items = []
        for image_id, obj in self._datastore.objects.items():
            label = obj.labels.get("final")
            if label is not None:
                items.append((int(label.info.get("ts", 0)), image_id))
        return [i for _, i in sorted(items, key=lambda t: (-t[0], t[1]))]

    def label_names(self, image_id: str) -> dict[int, str]:
        """Names of the values of an image's ``final`` label as Slicer saved them (``label_info``), else {}."""
        label = self._datastore.label(image_id, "final")
        info = (label.info if label else {}).get("label_info") or []
        names = {}
        for entry in info if isinstance(info, list) else []:
            if isinstance(entry, dict) and "name" in entry and "idx" in entry:
                names[int(entry["idx"])] = str(entry["name"])
        return names
