"""``samir evaluate`` (``samir.tools.accuracy_table``): a pairs datalist, the peer rows skipped without their wheels."""

import json

import nibabel as nib
import numpy as np
from samir.tools import accuracy_table
from samir.tools.accuracy_table import METHOD_NAMES, _labels_of_pairs, run_benchmark


def _write_pairs(tmp_path):
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    names = {}
    for k in range(2):
        img = rng.random((16, 16, 12)).astype(np.float32)
        lab = np.zeros((16, 16, 12), np.uint8)
        lab[4:10, 4:10, 3:8] = 1
        lab[6 + k : 12 + k, 8:14, 4:9] = 2
        nib.save(nib.Nifti1Image(img, affine), tmp_path / f"img{k}.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), tmp_path / f"lab{k}.nii.gz")
        names[k] = (f"img{k}.nii.gz", f"lab{k}.nii.gz")
    pair = {"fixed": names[0][0], "fixed_label": names[0][1], "moving": names[1][0], "moving_label": names[1][1]}
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps({"test": [pair]}))
    return path


def test_peer_rows_are_known_methods():
    assert {"demons", "ants", "elastix"} <= set(METHOD_NAMES)


def test_pairs_datalist_and_missing_peers(tmp_path, monkeypatch, capsys):
    path = _write_pairs(tmp_path)
    from samir.data.registry import dataset_pairs

    assert _labels_of_pairs(dataset_pairs("pairs", path, "test")) == {1: "1", 2: "2"}
    import samir.classical

    monkeypatch.setattr(samir.classical, "peer_available", lambda name: False)
    rows = run_benchmark(dataset="pairs", root=str(path), split="test", methods=("identity", "ants", "elastix"),
                         out_csv=str(tmp_path / "table.csv"))
    out = capsys.readouterr().out
    assert [r["key"] for r in rows] == ["identity"]
    assert "skipping 'ANTs SyN" in out and "antspyx" in out and "itk-elastix" in out
    assert 0.0 < rows[0]["dice_mean"] < 1.0 and rows[0]["folding_pct"] == 0.0
    assert (tmp_path / "table.csv").is_file()
    assert accuracy_table.COLUMNS == ("dice_mean", "hd95_mean", "folding_pct", "sdlogj", "seconds")
