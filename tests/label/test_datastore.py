"""The app's hardened datastore and config, without a server (fast)."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi import HTTPException

APP = Path(__file__).resolve().parents[2] / "custom" / "samir_label"
sys.path.insert(0, str(APP))
from lib.configs.registration import RegistrationConfig  # noqa: E402
from lib.datastore import SafeLocalDatastore, is_plain_name  # noqa: E402

sys.path.remove(str(APP))


@pytest.mark.parametrize(
    "name, ok",
    [("patient001_frame01", True), ("a.b-c_1", True), ("../x", False), ("x/../y", False), ("/etc/passwd", False),
     (".samir", False), ("..", False), ("a..b", False), ("", False), ("a b", False), ("x" * 201, False),
     ("a\\b", False), (None, False)],
)
def test_plain_names(name, ok):
    assert is_plain_name(name) is ok


@pytest.fixture
def store(tmp_path):
    studies = tmp_path / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    img = nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 4)).astype(np.float32), np.eye(4))
    nib.save(img, studies / "a.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.uint8), np.eye(4)), studies / "labels" / "final" / "a.nii.gz")
    nib.save(img, tmp_path / "upload.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image")
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    return SafeLocalDatastore(str(studies), extensions=["*.nii.gz", "*.nii", "*.nrrd"]), tmp_path


@pytest.mark.parametrize(
    "call, status",
    [
        (lambda ds, t: ds.save_label("a", str(t / "upload.nii.gz"), "../../x", {}), 400),
        (lambda ds, t: ds.save_label("../a", str(t / "upload.nii.gz"), "final", {}), 400),
        (lambda ds, t: ds.save_label("missing", str(t / "upload.nii.gz"), "final", {}), 404),
        (lambda ds, t: ds.add_image("../x", str(t / "upload.nii.gz"), {}), 400),
        (lambda ds, t: ds.add_image("/tmp/x", str(t / "upload.nii.gz"), {}), 400),
        (lambda ds, t: ds.add_image("b", str(t / "broken.nii.gz"), {}), 422),
        (lambda ds, t: ds.add_image("b", str(t / "flat.nii.gz"), {}), 422),
        (lambda ds, t: ds.remove_image("../a"), 400),
        (lambda ds, t: ds.remove_label("a", "../final"), 400),
        (lambda ds, t: ds.update_image_info("missing", {}), 404),
        (lambda ds, t: ds.get_label_uri("a", "../final"), 400),
    ],
)
def test_refusals_write_nothing(store, call, status):
    ds, tmp = store
    before = sorted(str(p) for p in tmp.rglob("*") if p.name not in ("datastore_v2.json", ".lock"))
    with pytest.raises(HTTPException) as err:
        call(ds, tmp)
    assert err.value.status_code == status and err.value.detail
    assert sorted(str(p) for p in tmp.rglob("*") if p.name not in ("datastore_v2.json", ".lock")) == before


def test_refused_uploads_leave_no_temporary_file(store, monkeypatch):
    """monailabel writes each upload to a ``tmp*`` file and deletes it only after a successful response:
    a refused one is deleted here, while a file given by path (upload.nii.gz above) is never touched."""
    import shutil
    import tempfile

    ds, tmp = store
    server_tmp = tmp / "server_tmp"
    server_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(server_tmp))
    for refused in (lambda f: ds.add_image("../x", f, {}), lambda f: ds.save_label("a", f, "../../x", {}),
                    lambda f: ds.save_label("missing", f, "final", {})):
        upload = server_tmp / "tmpab12cd.nii.gz"
        shutil.copy(tmp / "upload.nii.gz", upload)
        with pytest.raises(HTTPException):
            refused(str(upload))
        assert not upload.exists()
    kept = server_tmp / "scan.nii.gz"  # in the temporary folder, but not an upload's name
    shutil.copy(tmp / "upload.nii.gz", kept)
    with pytest.raises(HTTPException):
        ds.add_image("../x", str(kept), {})
    assert kept.is_file() and (tmp / "upload.nii.gz").is_file()


def test_valid_writes_and_listing(store):
    ds, tmp = store
    assert ds.add_image("b", str(tmp / "upload.nii.gz"), {}) == "b"
    assert ds.labelled_by_recency() == ["a"]
    ds.save_label("b", str(tmp / "upload.nii.gz"), "final", {"label_info": [{"name": "LV", "idx": 1}]})
    assert set(ds.labelled_by_recency()) == {"a", "b"} and ds.label_names("b") == {1: "LV"}
    assert ds.final_label_path("b").is_file()


def test_config_from_conf(tmp_path):
    cfg = RegistrationConfig.from_conf(str(tmp_path / "app"), str(tmp_path / "studies"), {"preset": "abdomen"})
    assert cfg.preset == "abdomen" and cfg.active_weights() is None and cfg.optimize  # refinement on by default
    assert cfg.outputs_dir == (tmp_path / "studies" / ".samir" / "registrations").resolve()
    with pytest.raises(ValueError, match="preset"):
        RegistrationConfig.from_conf(str(tmp_path), str(tmp_path), {"preset": "brain"})
    with pytest.raises(FileNotFoundError, match="weights"):
        RegistrationConfig.from_conf(str(tmp_path), str(tmp_path), {"weights": str(tmp_path / "none.pt")})
