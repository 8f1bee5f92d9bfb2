"""`samir register`: outputs on the fixed grid, clear errors, nothing half-written."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from samir.cli import main
from samir.networks import build_samir
from samir.register import Registrar

TINY = {"encoder": "tiny", "encoder_image_size": 32, "levels": 3, "channels": [4, 8, 8], "head_channels": 8,
        "head_blocks": 1, "flow_width": 8, "sam_min_level": 1, "hfc_channels": 8}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    net = build_samir(cache_dir=False, **TINY)
    torch.save(net.state_dict(), d / "model.pt")
    (d / "model.json").write_text(json.dumps({"network": TINY}))
    return d / "model.pt"


def _nifti(path, array, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return str(path)


@pytest.fixture()
def pair(tmp_path):
    rng = np.random.default_rng(0)
    zz = np.zeros((40, 36, 10), np.float32)
    zz[10:30, 8:28, 2:8] = 1.0
    fixed = zz + 0.05 * rng.standard_normal(zz.shape).astype(np.float32)
    moving_arr = np.roll(zz, 4, axis=0) + 0.05 * rng.standard_normal(zz.shape).astype(np.float32)
    aff_f = np.diag([1.5, 1.5, 8.0, 1.0])
    aff_m = np.diag([1.5, 1.5, 8.0, 1.0])
    aff_m[:3, 3] = [-1.5, 0.0, 0.0]  # moving grid shifted by one voxel in world space
    lab_f = (zz > 0.5).astype(np.uint8)
    lab_m = np.roll(lab_f, 4, axis=0)
    return {
        "fixed": _nifti(tmp_path / "fixed.nii.gz", fixed, aff_f),
        "moving": _nifti(tmp_path / "moving.nii.gz", moving_arr, aff_m),
        "fixed_label": _nifti(tmp_path / "fixed_gt.nii.gz", lab_f, aff_f),
        "moving_label": _nifti(tmp_path / "moving_gt.nii.gz", lab_m, aff_m),
        "affine": aff_f,
        "shape": zz.shape,
    }


def test_outputs_on_fixed_grid(pair, weights, tmp_path):
    reg = Registrar(preset="cardiac", weights=str(weights), cache_dir=False, device="cpu")
    out = tmp_path / "out"
    result = reg.register_files(pair["fixed"], pair["moving"], out, moving_label=pair["moving_label"],
                                fixed_label=pair["fixed_label"])
    names = {p.name for p in out.iterdir()}
    assert names == {"warped_image.nii.gz", "warped_label.nii.gz", "ddf_voxels.nii.gz",
                     "displacement_lps_mm.nii.gz", "metrics.json"}
    for name in ("warped_image.nii.gz", "warped_label.nii.gz", "ddf_voxels.nii.gz"):
        img = nib.load(str(out / name))
        assert img.shape[:3] == pair["shape"]
        np.testing.assert_allclose(img.affine, pair["affine"], atol=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("dice_mean", "folding_pct", "sdlogj", "seconds", "dice_mean_before"):
        assert key in metrics
    assert result.preset == "cardiac"
    # the world-space resampling undid the one-voxel grid shift: labels overlap better than the raw arrays
    raw = nib.load(pair["moving_label"]).get_fdata() > 0
    fixed_lab = nib.load(pair["fixed_label"]).get_fdata() > 0
    raw_dice = 2 * (raw & fixed_lab).sum() / (raw.sum() + fixed_lab.sum())
    assert metrics["dice_mean_before"] > raw_dice


def test_learn2reg_names_get_a_disp_file(tmp_path, weights):
    arr = np.random.default_rng(1).random((24, 20, 16)).astype(np.float32)
    f = _nifti(tmp_path / "AbdomenCTCT_0022_0000.nii.gz", arr * 1000 - 500)
    m = _nifti(tmp_path / "AbdomenCTCT_0021_0000.nii.gz", arr[::-1].copy() * 1000 - 500)
    reg = Registrar(preset="generic", weights=str(weights), cache_dir=False, device="cpu")
    result = reg.register_files(f, m, tmp_path / "out")
    disp = [p for p in (tmp_path / "out").iterdir() if p.name.startswith("disp_")]
    # the current Learn2Reg scorer's name for a same-modality pair (samir.io.l2r_displacement_name)
    assert [p.name for p in disp] == ["disp_0022_0000_0021_0000.nii.gz"]
    assert nib.load(str(disp[0])).shape == (24, 20, 16, 3)
    assert "l2r_displacement" in result.files
    short = Registrar(preset="generic", weights=str(weights), cache_dir=False, device="cpu", l2r_short_names=True)
    result = short.register_files(f, m, tmp_path / "out_short")
    assert Path(result.files["l2r_displacement"]).name == "disp_0022_0021.nii.gz"


@pytest.mark.parametrize(
    "case,match",
    [
        ("missing", "moving.*(does not exist|found nothing|expected)"),
        ("2d", "3D"),
        ("nan", "NaN"),
        ("label_grid", "shape mismatch"),
    ],
)
def test_bad_input_clear_error_nothing_written(case, match, pair, weights, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("already here")
    kwargs = {"moving_label": pair["moving_label"]}
    fixed, moving = pair["fixed"], pair["moving"]
    if case == "missing":
        moving = str(tmp_path / "nope" / "moving.nii.gz")
        kwargs = {}
    elif case == "2d":
        fixed = _nifti(tmp_path / "flat.nii.gz", np.zeros((30, 30), np.float32))
    elif case == "nan":
        arr = nib.load(pair["fixed"]).get_fdata().astype(np.float32)
        arr[3, 3, 3] = np.nan
        fixed = _nifti(tmp_path / "nan.nii.gz", arr, pair["affine"])
    elif case == "label_grid":
        kwargs = {"moving_label": _nifti(tmp_path / "small_gt.nii.gz", np.zeros((8, 8, 8), np.uint8))}
    reg = Registrar(preset="cardiac", weights=str(weights), cache_dir=False, device="cpu")
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        reg.register_files(fixed, moving, out, **kwargs)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # nothing half-written, nothing lost


def test_unknown_preset_and_encoder():
    with pytest.raises(ValueError, match="preset"):
        Registrar(preset="lung")
    with pytest.raises(ValueError, match="encoder"):
        Registrar(encoder="vit_giant")


def test_unwritable_output_dir(pair, weights, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    reg = Registrar(preset="cardiac", weights=str(weights), cache_dir=False, device="cpu")
    with pytest.raises(PermissionError, match="cannot be written"):
        reg.register_files(pair["fixed"], pair["moving"], blocker / "out")


def test_cli_prints_error_line_and_exits_2(pair, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["register", pair["fixed"], str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "samir: error:" in err and "missing.nii.gz" in err


def test_cli_unwritable_output_is_one_line_error(pair, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["register", pair["fixed"], pair["moving"], "--out", str(blocker / "out")])
    assert exc.value.code == 2
    assert "cannot be written" in capsys.readouterr().err


# -- what runs by default: the network + fast refinement, the training-free core, the guard ---------

def _metrics(out):
    return json.loads((Path(out) / "metrics.json").read_text())


def test_generic_preset_uses_the_training_free_core_and_raises_dice(pair, tmp_path):
    # no weights for "generic": never another anatomy's network
    reg = Registrar(preset="generic", encoder="tiny", cache_dir=False, device="cpu", verbose=False)
    assert reg.method_for("generic") == "fast"
    reg.register_files(pair["fixed"], pair["moving"], tmp_path / "o", moving_label=pair["moving_label"],
                       fixed_label=pair["fixed_label"])
    m = _metrics(tmp_path / "o")
    assert m["method"] == "fast" and "network" not in m["guard"]["mind_cost"] and "network" not in m
    assert m["threads"] == torch.get_num_threads()  # what the timings ran on
    assert m["dice_mean"] > m["dice_mean_before"] + 0.02
    assert m["folding_pct"] <= 0.5


def test_network_then_refinement_by_default_and_no_optimize(pair, weights, tmp_path):
    reg = Registrar(preset="cardiac", weights=str(weights), cache_dir=False, device="cpu")
    reg.register_files(pair["fixed"], pair["moving"], tmp_path / "a", moving_label=pair["moving_label"],
                       fixed_label=pair["fixed_label"])
    m = _metrics(tmp_path / "a")
    assert m["method"] == "network+fast"
    costs = m["guard"]["mind_cost"]
    assert set(costs) == {"identity", "network", "refined"}
    kept = m["guard"]["kept"]
    assert costs[kept] <= min(costs.values()) * (1 + m["guard"]["tolerance"]) + 1e-6  # never clearly worse
    assert m["dice_mean"] >= m["dice_mean_before"] - 0.01  # never below the start
    only = Registrar(preset="cardiac", weights=str(weights), cache_dir=False, device="cpu", optimize=False)
    only.register_files(pair["fixed"], pair["moving"], tmp_path / "b")
    assert _metrics(tmp_path / "b")["method"] == "network"


def test_symmetric_network_runs_both_directions_and_its_passes_only_when_its_field_is_the_answer(pair, tmp_path):
    d = tmp_path / "w"
    d.mkdir()
    torch.manual_seed(0)
    torch.save(build_samir(cache_dir=False, **TINY).state_dict(), d / "model.pt")
    (d / "model.json").write_text(json.dumps({"network": {**TINY, "symmetric": True, "passes": 2}}))
    seen = {}
    for optimize in (False, True):
        reg = Registrar(preset="cardiac", weights=str(d / "model.pt"), cache_dir=False, device="cpu", optimize=optimize)
        net = reg.network("cardiac")
        assert net.symmetric and net.passes == 2  # from the sidecar
        calls = seen.setdefault(optimize, [])
        net.register_forward_hook(lambda mod, args, kwargs, out, calls=calls: calls.append(
            (kwargs.get("symmetric"), kwargs.get("passes"))), with_kwargs=True)
        reg.register_files(pair["fixed"], pair["moving"], tmp_path / f"o{int(optimize)}")
    # network only: both directions and the sidecar's two passes; before the refinement: one direction, one pass
    assert seen[False] == [(True, 2)]
    assert seen[True] == [(False, 1)]
    assert _metrics(tmp_path / "o0")["network"] == {"symmetric": True, "passes": 2}  # said in metrics.json
    assert _metrics(tmp_path / "o1")["network"] == {"symmetric": False, "passes": 1}


def test_abdomen_starts_from_identity_until_its_network_beats_it(weights):
    from samir.presets import PRESETS

    assert PRESETS["abdomen"].network_start is False and PRESETS["cardiac"].network_start is True
    assert Registrar(preset="abdomen", cache_dir=False, device="cpu").method_for("abdomen") == "fast"
    # weights the user gives are always run
    assert Registrar(preset="abdomen", weights=str(weights), cache_dir=False, device="cpu").method_for("abdomen") == \
        "network+fast"


def test_guard_keeps_the_most_refined_field_unless_clearly_worse():
    from samir.register import choose_candidate

    # within the tolerance of the lowest cost: the most refined candidate
    assert choose_candidate({"identity": 0.1000, "network": 0.1010, "refined": 0.1015}, 0.02) == "refined"
    # the refined field clearly worse than the network's: the network
    assert choose_candidate({"identity": 0.1000, "network": 0.0800, "refined": 0.0900}, 0.02) == "network"
    # everything clearly worse than doing nothing: identity
    assert choose_candidate({"identity": 0.0500, "network": 0.0700, "refined": 0.0600}, 0.02) == "identity"
    assert choose_candidate({"identity": 0.05, "refined": 0.051}, 0.0) == "identity"


def test_batch_registers_every_pair_and_reports_a_bad_one(pair, tmp_path):
    datalist = tmp_path / "pairs.json"
    datalist.write_text(json.dumps({"pairs": [
        {"fixed": pair["fixed"], "moving": pair["moving"], "moving_label": pair["moving_label"],
         "fixed_label": pair["fixed_label"], "pair_id": "good"},
        {"fixed": pair["fixed"], "moving": str(tmp_path / "missing.nii.gz"), "pair_id": "bad"},
    ]}))
    from samir.register import register_batch

    reg = Registrar(preset="generic", encoder="tiny", cache_dir=False, device="cpu", verbose=False)
    rows = register_batch(reg, datalist, tmp_path / "out")
    assert [r["pair_id"] for r in rows] == ["good", "bad"]
    assert rows[0]["method"] == "fast" and rows[0]["dice_mean"] > rows[0]["dice_mean_before"]
    assert "missing.nii.gz" in rows[1]["error"]
    assert (tmp_path / "out" / "good" / "metrics.json").is_file()
    assert not (tmp_path / "out" / "bad").exists()


def test_model_grid_and_core_grid():
    """The abdominal network runs at its 8 mm training grid; the core refines on a finer grid (2 mm CT: 4 mm)."""
    from samir.presets import PRESETS
    from samir.register import core_grid, model_grid

    abdomen, cardiac = PRESETS["abdomen"], PRESETS["cardiac"]
    size = model_grid(abdomen, (192, 160, 256), (2.0, 2.0, 2.0))
    assert size == (48, 40, 64)
    assert core_grid(abdomen, (192, 160, 256), (2.0, 2.0, 2.0), size) == (96, 80, 128)
    # cardiac: native grid for both (nothing finer to gain)
    size = model_grid(cardiac, (224, 252, 12), (1.4, 1.4, 10.0))
    assert size == (224, 252, 12) and core_grid(cardiac, (224, 252, 12), (1.4, 1.4, 10.0), size) == size
    # an abdomen already at 8 mm: the model grid is the image's, the core stays there
    size = model_grid(abdomen, (48, 40, 64), (8.0, 8.0, 8.0))
    assert size == (48, 40, 64) and core_grid(abdomen, (48, 40, 64), (8.0, 8.0, 8.0), size) == size


def test_abdomen_network_on_its_grid_core_on_a_finer_one(weights, tmp_path):
    """A 4 mm CT-like pair: the network sees 8 mm (half the grid), the core and the guard the 4 mm grid."""
    rng = np.random.default_rng(1)
    body = np.full((40, 32, 36), -1000.0, np.float32)
    body[6:34, 5:27, 4:32] = 40.0
    organ = np.zeros_like(body, dtype=np.uint8)
    organ[14:26, 10:22, 10:26] = 1
    fixed = body + 300.0 * organ + 10 * rng.standard_normal(body.shape).astype(np.float32)
    moving = np.roll(fixed, 3, axis=0)
    aff = np.diag([4.0, 4.0, 4.0, 1.0])
    paths = {k: _nifti(tmp_path / f"{k}.nii.gz", v, aff) for k, v in
             (("fixed", fixed), ("moving", moving), ("fixed_label", organ), ("moving_label", np.roll(organ, 3, axis=0)))}
    reg = Registrar(preset="abdomen", weights=str(weights), cache_dir=False, device="cpu")
    reg.register_files(paths["fixed"], paths["moving"], tmp_path / "out", moving_label=paths["moving_label"],
                       fixed_label=paths["fixed_label"])
    m = _metrics(tmp_path / "out")
    assert m["model_grid"] == [20, 16, 18] and m["core_grid"] == [40, 32, 36]
    assert m["method"] == "network+fast" and set(m["guard"]["mind_cost"]) == {"identity", "network", "refined"}
    assert m["dice_mean"] > m["dice_mean_before"] + 0.1


def test_console_command_writes_and_reports_before_its_quick_exit(pair, tmp_path):
    """The ``samir register`` process ends without the interpreter's teardown (os._exit): its JSON and
    its last line still reach stdout, the outputs are whole, and the exit status is 0."""
    import os
    import subprocess
    import sys

    out = tmp_path / "cli_out"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "samir.cli", "register", pair["fixed"], pair["moving"], "--out",
                           str(out), "--moving_label", pair["moving_label"], "--fixed_label", pair["fixed_label"],
                           "--preset", "generic", "--quiet"], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    assert text.rstrip().splitlines()[-1].startswith("wrote ")
    shown = json.loads(text[: text.rindex("}") + 1])
    assert shown["method"] == "fast" and shown["dice_mean"] > shown["dice_mean_before"]
    assert json.loads((out / "metrics.json").read_text())["dice_mean"] == pytest.approx(shown["dice_mean"])
    assert nib.load(out / "warped_label.nii.gz").shape == pair["shape"]
