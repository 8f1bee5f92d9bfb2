"""The SAMIR MONAI Label app on a real ``monailabel start_server``, talked to through ``MONAILabelClient``
(the client 3D Slicer's module uses): model listing, label propagation, refusals, concurrency."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from monailabel.client.client import MONAILabelClientException, MONAILabelUtils
from samir.tools.label_timing import label_server

pytestmark = pytest.mark.slow  # fits a tiny model and starts a server: ~3 min on 2 CPU cores

MODEL = "samir_registration"
AUTO = "latest labelled (auto)"
TIMINGS: dict[str, float] = {}


def _snapshot(root: Path, skip: tuple[str, ...]) -> dict[str, float]:
    """Every file under ``root`` (path -> mtime), except the folders named in ``skip``."""
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.is_file() and rel.parts[0] not in skip:
            out[str(rel)] = p.stat().st_mtime
    return out


@pytest.fixture(scope="module")
def server(acdc_crop, tiny_weights, tmp_path_factory):
    root = tmp_path_factory.mktemp("label_server")
    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    ed, es = acdc_crop["ed_id"], acdc_crop["es_id"]
    shutil.copy(acdc_crop["ed"], studies / f"{ed}.nii.gz")
    shutil.copy(acdc_crop["es"], studies / f"{es}.nii.gz")
    shutil.copy(acdc_crop["ed_gt"], studies / "labels" / "final" / f"{ed}.nii.gz")
    (studies / "zz_corrupt.nii.gz").write_bytes(b"\x1f\x8b not really a gzipped NIfTI")  # labelled, unreadable
    shutil.copy(acdc_crop["ed_gt"], studies / "labels" / "final" / "zz_corrupt.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((16, 16), np.float32), np.eye(4)), studies / "flat_image.nii.gz")  # 2D

    conf = {"weights": str(tiny_weights), "preset": "cardiac", "encoder": "tiny", "device": "cpu", "cache_dir": "false"}
    with label_server(studies, root, conf, timeout_s=300) as (client, url, started):
        TIMINGS["server_start_s"] = started
        yield {"client": client, "root": root, "studies": studies, "ed": ed, "es": es, "data": acdc_crop, "url": url}
    print(f"\nlabel server timings: { {k: round(v, 2) for k, v in TIMINGS.items()} }")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


def _status(err: MONAILabelClientException) -> int:
    return int(str(err.msg).split("Status: ")[1].split(";")[0])


def test_info_lists_segmentation_model_with_moving_dropdown(server):
    info = server["client"].info()
    model = info["models"][MODEL]
    assert model["type"] == "segmentation"
    moving = model["config"]["moving"]
    assert isinstance(moving, list) and moving[0] == AUTO
    assert server["ed"] in moving and server["es"] not in moving  # only labelled images
    # Slicer auto-runs after "Next Sample" only a model whose labels include one of the app's labels
    assert model["labels"] == [] and not set(info.get("labels") or []) & set(model["labels"])
    assert MODEL in info["trainers"]


def _infer(server, fixed, params):
    start = time.perf_counter()
    label_file, result = server["client"].infer(MODEL, fixed, params)
    return label_file, result, time.perf_counter() - start


def test_label_propagation_beats_identity(server):
    data = server["data"]
    label_file, result, cold = _infer(server, server["es"], {"moving": server["ed"]})
    TIMINGS["infer_cold_s"] = cold
    _, result_warm, warm = _infer(server, server["es"], {})  # default: the latest labelled other image
    TIMINGS["infer_warm_s"] = warm
    assert result_warm["moving"] == server["ed"]

    out = sitk.ReadImage(label_file)
    fixed = sitk.ReadImage(str(data["es"]))
    assert label_file.endswith(".nrrd") and out.GetPixelID() == sitk.sitkUInt8
    assert out.GetSize() == fixed.GetSize()
    assert np.allclose(out.GetSpacing(), fixed.GetSpacing()) and np.allclose(out.GetOrigin(), fixed.GetOrigin())
    assert result["label_names"] == {"RV": 1, "MYO": 2, "LV": 3}

    warped = sitk.GetArrayFromImage(out)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(data["es_gt"])))
    before = sitk.GetArrayFromImage(sitk.ReadImage(str(data["ed_gt"])))
    values = {int(k): v for k, v in result["label_values"].items()}
    after_d = np.mean([_dice(warped == k, truth == v) for k, v in values.items()])
    before_d = np.mean([_dice(before == v, truth == v) for v in values.values()])
    print(f"Dice identity {before_d:.3f} -> served registration {after_d:.3f}")
    assert after_d > before_d + 0.02

    folder = Path(result["outputs"]["folder"])
    assert folder.parent == (server["studies"] / ".samir" / "registrations").resolve()
    for key in ("warped_image", "displacement_lps_mm"):
        assert Path(result["outputs"][key]).is_file() and folder in Path(result["outputs"][key]).parents
    assert result["folding_pct"] is not None and result["seconds"] > 0


@pytest.mark.parametrize(
    "fixed, params, status, words",
    [
        ("no_such_image", {}, 404, "no_such_image"),
        ("ED", {"moving": "ED"}, 400, "fixed image itself"),
        ("ED", {"moving": "ES"}, 400, "no final label"),
        ("ES", {"moving": "no_such_image"}, 404, "moving"),
        ("ES", {"moving": "zz_corrupt"}, 422, "zz_corrupt"),
        ("flat_image", {"moving": "ED"}, 422, "3D"),
        ("ES", {"moving": "../ED"}, 400, "plain name"),
    ],
)
def test_bad_requests_are_4xx_and_server_keeps_running(server, fixed, params, status, words):
    names = {"ED": server["ed"], "ES": server["es"]}
    fixed = names.get(fixed, fixed)
    params = {k: names.get(v, v.replace("ED", server["ed"])) for k, v in params.items()}
    with pytest.raises(MONAILabelClientException) as err:
        server["client"].infer(MODEL, fixed, params)
    assert _status(err.value) == status, err.value.msg
    assert words in err.value.msg
    assert server["client"].info()["models"][MODEL]  # still answering


def test_traversals_are_refused_and_nothing_written_outside_studies(server, tmp_path):
    client, root, studies = server["client"], server["root"], server["studies"]
    skip = ("studies", "app", "sessions", "server.log")
    outside_before = _snapshot(root, skip)
    studies_before = _snapshot(studies, (".samir",))
    label = str(server["data"]["ed_gt"])
    attempts = [
        lambda: client.save_label(server["ed"], label, tag="../../x"),
        lambda: client.save_label("../x", label),
        lambda: client.upload_image(str(server["data"]["es"]), image_id="../x"),
        lambda: client.upload_image(str(server["data"]["es"]), image_id="/tmp/x"),
        lambda: client.infer(MODEL, "/etc/passwd", {}),
        lambda: client.infer(MODEL, str(root / "server.log"), {}),
        lambda: client.infer(MODEL, "../studies/" + server["es"], {}),
        lambda: client.infer("no_such_model", server["es"], {}),
    ]
    for i, attempt in enumerate(attempts):
        with pytest.raises(MONAILabelClientException) as err:
            attempt()
        assert 400 <= _status(err.value) < 500, (i, err.value.msg)
    for method, selector in [("DELETE", "/datastore/label?id=../x&tag=final"), ("DELETE", "/datastore/image?id=../x"),
                             ("GET", "/datastore/label?label=" + server["ed"] + "&tag=../../final"),
                             ("PUT", "/datastore/image/info?image=../x")]:
        status, body, _, _ = MONAILabelUtils.http_method(method, server["url"], selector)
        assert 400 <= status < 500, (method, selector, status, body)
    assert _snapshot(root, skip) == outside_before
    studies_after = _snapshot(studies, (".samir",))
    changed = {k for k in studies_before.keys() | studies_after.keys() if studies_before.get(k) != studies_after.get(k)}
    assert changed <= {"datastore_v2.json", ".lock"}, changed
    assert client.info()["models"][MODEL]


def test_two_concurrent_requests_both_succeed(server):
    results, errors = [], []

    def run():
        try:
            results.append(server["client"].infer(MODEL, server["es"], {"moving": server["ed"]}))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors and len(results) == 2
    for label_file, result in results:
        assert Path(label_file).is_file() and result["moving"] == server["ed"]
