"""``samir evaluate`` (``samir.tools.accuracy_table``): a pairs datalist, the peer rows skipped without their wheels."""

import json
import math
import shutil

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
    import csv

    table = list(csv.DictReader((tmp_path / "table.csv").read_text().splitlines()))
    pairs_rows = [r for r in table if r["pair_id"] != "mean"]
    assert [r["key"] for r in table] == ["identity"] * len(table) and table[-1]["pair_id"] == "mean"
    assert len(pairs_rows) == rows[0]["pairs"] >= 1 and len({r["pair_id"] for r in pairs_rows}) == len(pairs_rows)
    per_pair = [float(r["dice_mean"]) for r in pairs_rows]
    assert abs(sum(per_pair) / len(per_pair) - rows[0]["dice_mean"]) < 1e-5
    assert abs(float(table[-1]["dice_mean"]) - rows[0]["dice_mean"]) < 1e-5
    assert accuracy_table.COLUMNS == ("dice_mean", "hd95_mean", "folding_pct", "sdlogj", "seconds")


def test_ablation_network_rows(tmp_path):
    """``networks={NAME: weights}`` adds net:NAME (network alone) and net:NAME+fast rows; unknown names are refused."""
    import pytest
    import torch
    from samir.networks import build_samir

    path = _write_pairs(tmp_path)
    cfg = {"encoder": "none", "levels": 3, "channels": [4, 8, 8], "head_channels": 4, "head_blocks": 1,
           "flow_width": 4, "sam_min_level": 1, "hfc_channels": 4}
    torch.manual_seed(0)
    torch.save(build_samir(cache_dir=False, **cfg).state_dict(), tmp_path / "nosam.pt")
    (tmp_path / "nosam.json").write_text(json.dumps({"network": cfg}))
    shutil.copy(tmp_path / "nosam.pt", tmp_path / "two.pt")  # the same network, run as a sidecar may say
    (tmp_path / "two.json").write_text(json.dumps({"network": {**cfg, "symmetric": True, "passes": 2}}))
    rows = run_benchmark(dataset="pairs", root=str(path), split="test", hd95=False, cache_dir=False,
                         methods=("identity", "net:nosam", "net:nosam+fast", "net:two"),
                         networks={"nosam": str(tmp_path / "nosam.pt"), "two": str(tmp_path / "two.pt")})
    by = {r["key"]: r for r in rows}
    assert list(by) == ["identity", "net:nosam", "net:nosam+fast", "net:two"]
    assert by["net:nosam"]["method"] == "network 'nosam'"
    assert by["net:two"]["method"] == "network 'two' (both directions, 2 passes)"  # how it ran, in the table
    # (the images are noise: only that both rows ran and scored a valid field is checked here)
    assert all(0.0 < by[k]["dice_mean"] <= 1.0 and by[k]["folding_pct"] <= 0.5 for k in by)
    assert all(math.isnan(by[k]["hd95_mean"]) for k in by)  # hd95=False: not computed, not voxels shown as mm
    with pytest.raises(ValueError, match="net:NAME"):
        run_benchmark(dataset="pairs", root=str(path), split="test", methods=("net:other",),
                      networks={"nosam": str(tmp_path / "nosam.pt")})
    with pytest.raises(FileNotFoundError, match="nosam"):
        run_benchmark(dataset="pairs", root=str(path), split="test", methods=("net:nosam",),
                      networks={"nosam": str(tmp_path / "missing.pt")})


def test_pair_csv_groups_methods_each_with_its_mean(tmp_path):
    """The table of several methods: each method's pairs, then its own mean row (per-label columns too)."""
    import csv

    from samir.training import write_pair_csv

    rows = [{"method": m, "key": k, "pair_id": f"p{i}", "dice_mean": d, "dice_LV": d + 0.1}
            for m, k, ds in (("identity", "identity", (0.2, 0.4)), ("demons", "demons", (0.6, 0.9)))
            for i, d in enumerate(ds)]
    write_pair_csv(str(tmp_path / "t.csv"), rows, group_by=("method", "key"))
    table = list(csv.DictReader((tmp_path / "t.csv").read_text().splitlines()))
    assert [(r["key"], r["pair_id"]) for r in table] == [("identity", "p0"), ("identity", "p1"), ("identity", "mean"),
                                                         ("demons", "p0"), ("demons", "p1"), ("demons", "mean")]
    assert float(table[2]["dice_mean"]) == 0.3 and float(table[5]["dice_mean"]) == 0.75
    assert abs(float(table[5]["dice_LV"]) - 0.85) < 1e-9 and table[5]["method"] == "demons"
