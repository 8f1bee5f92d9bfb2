"""`samir` command line: --help at every level lists the commands and each option with its default and
meaning; an option a command does not take is refused, named, before anything runs."""

import inspect

import pytest
from samir.cli import SamirCLI, Synth, check_options, main

COMMANDS = ["register", "train", "evaluate", "baseline", "demo", "figures", "bench", "zip"]


def _help(capfd, argv):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    captured = capfd.readouterr()
    return captured.out + captured.err  # fire writes help to stderr


def test_top_help_lists_commands_and_groups(capfd, monkeypatch):
    monkeypatch.setenv("PAGER", "cat")
    out = _help(capfd, [])
    assert "samir GROUP | COMMAND" in out
    for name in [*COMMANDS, "synth"]:
        assert f"\n     {name}\n" in out, name


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["register"], ["--moving_label", "--fixed_label", "--preset", "Default: 'auto'", "Default: False",
                        "--iterations", "--from_identity", "--l2r_short_names", "cardiac | abdomen | generic | auto"]),
        (["synth"], ["acdc", "abdomen"]),
        (["synth", "acdc"], ["--n", "Default: 24", "--seed", "random seed"]),
        (["train"], ["--export", "--num_epochs", "--dataset_dir", "any other train.json key"]),
        (["train", "-h"], ["--export"]),
    ],
)
def test_command_help_lists_options_defaults_meaning(capfd, monkeypatch, argv, expected):
    import samir.bundle

    monkeypatch.setenv("PAGER", "cat")
    # --help never runs the command (fire would pass it to train's **overrides)
    monkeypatch.setattr(samir.bundle, "train_and_export", lambda **kw: pytest.fail("train ran on --help"))
    out = _help(capfd, argv)
    for text in expected:
        assert text in out, text


def _methods():
    cli = SamirCLI()
    yield from ((n, getattr(cli, n)) for n in COMMANDS)
    yield from ((f"synth {n}", getattr(Synth(), n)) for n in dir(Synth) if not n.startswith("_"))


@pytest.mark.parametrize("name,method", list(_methods()))
def test_every_option_is_typed_and_documented(name, method):
    doc = inspect.getdoc(method)
    for param in inspect.signature(method).parameters.values():
        if param.kind is param.VAR_KEYWORD:
            assert name == "train", f"{name}: **{param.name} hides options from --help"
            continue
        assert param.annotation is not param.empty, f"{name} --{param.name}: no type"
        assert f"    {param.name}: " in doc, f"{name} --{param.name}: no line of meaning in Args"


@pytest.mark.parametrize(
    "argv,unknown",
    [
        (["register", "f.nii.gz", "m.nii.gz", "--out", "OUT", "--bogus", "1"], "--bogus"),
        (["register", "f.nii.gz", "m.nii.gz", "--out=OUT", "--moving-labl=x"], "--moving_labl"),
        (["synth", "acdc", "OUT", "--patients", "3"], "--patients"),
        (["train", "--num_epoch", "3"], "--num_epoch"),
    ],
)
def test_unknown_option_is_named_and_nothing_runs(capfd, tmp_path, argv, unknown):
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capfd.readouterr().err
    assert f"unknown option {unknown}" in err and "--help" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["register", "f", "m", "--out", "o", "--from_identity", "--nofrom_identity", "--preset=cardiac"],
        ["train", "--hfc_weight", "0.2", "--validate#dataloader#num_workers", "2"],  # train.json keys
        ["synth", "acdc", "o", "--", "--help"],  # fire's own flags after --
        ["--help"],
    ],
)
def test_known_options_pass(argv):
    check_options(argv)


@pytest.mark.parametrize("load, cores, expected", [(0.1, 2, 2), (1.2, 2, 1), (5.0, 2, 1), (1.0, 8, 7)])
def test_choose_threads_leaves_busy_cores_alone(monkeypatch, load, cores, expected):
    import samir.cli as cli

    monkeypatch.setattr(cli.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(cli.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(cli, "busy_cores", lambda **kw: None)  # no /proc/stat: the load average decides
    assert cli.choose_threads() == expected
    monkeypatch.setattr(cli, "busy_cores", lambda **kw: load)  # measured now
    assert cli.choose_threads() == expected


def test_busy_cores_sees_another_job_but_not_this_process():
    """Another process spinning fills about one core; this process's own work (a spinning thread) does
    not count, so the imports it measures over are not mistaken for another job."""
    import subprocess
    import sys
    import threading
    import time

    import samir.cli as cli

    idle = cli.busy_cores(0.3)
    if idle is None:
        pytest.skip("no /proc/stat here")
    assert 0.0 <= idle <= (__import__("os").cpu_count() or 1)
    other = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time() + 3\nwhile time.time() < t: pass"])
    try:
        time.sleep(0.5)
        assert cli.busy_cores(0.5) >= 0.6  # the other job fills about one core
    finally:
        other.wait()
    since = cli.cpu_sample()
    stop = time.perf_counter() + 0.6

    def spin():
        while time.perf_counter() < stop:
            pass

    t = threading.Thread(target=spin)
    t.start()
    t.join()
    assert cli.busy_cores(0.3, since=since) <= idle + 0.4  # our own spinning is subtracted


def test_lean_import_hides_optional_packages_only_inside_the_block():
    """``samir register`` imports MONAI with its unused optional packages hidden; afterwards they import as usual."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from samir.cli import lean_import\n"
        "with lean_import():\n"
        "    import monai\n"
        "    from monai.networks.blocks import Warp\n"
        "    assert 'ignite' not in sys.modules and 'mlflow' not in sys.modules, 'hidden packages were imported'\n"
        "    import scipy.ndimage\n"  # a sub-package that is not hidden imports inside the block
        "    assert 'scipy.signal' not in sys.modules, 'a hidden sub-package was imported'\n"
        "    try:\n"
        "        import ignite\n"
        "        raise SystemExit('ignite importable inside the block')\n"
        "    except ModuleNotFoundError as err:\n"
        "        assert 'hidden' in str(err)\n"
        "import ignite\n"  # after the block: importable again
        "import scipy.signal\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in __import__("os").environ.items() if k != "SAMIR_FULL_IMPORTS"})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_register_path_imports_no_compiler_stack():
    """What ``samir register`` runs (lean MONAI import, the LiteMedSAM encoder, the fast core with its
    Adam steps) never imports timm, torchvision, ITK or ``torch._dynamo``: together they were seconds
    of start-up on a 2-core CPU (timm alone 2.9 s, through the vendored TinyViT); nor MONAI's optional
    download, DICOM and validation packages (0.3 s)."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from samir.cli import lean_import\n"
        "with lean_import():\n"
        "    import samir.register\n"
        "from samir.encoders import SliceEncoder, build_encoder\n"
        "from samir.optimize.fast import fast_optimize_pair\n"
        "enc = SliceEncoder(build_encoder('litemedsam', image_size=64), cache=False)\n"
        "img = torch.rand(1, 1, 24, 24, 8)\n"
        "e = enc(img)\n"
        "ddf, info = fast_optimize_pair(img, img.roll(1, 2), moving_embedding=e, fixed_embedding=e, iterations=3,\n"
        "                               fine_iterations=0)\n"
        "bad = sorted(m for m in ('timm', 'torchvision', 'torch._dynamo', 'itk', 'requests', 'pydicom', 'bs4',\n"
        "                         'jsonschema') if m in sys.modules)\n"
        "print('imported:', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in __import__("os").environ.items() if k != "SAMIR_FULL_IMPORTS"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "imported: []", out.stdout


def test_monai_optional_codec_notice_is_quiet():
    """MONAI's image loader logs that NVIDIA's optional GPU image codec is missing (where pydicom is
    installed), on every start of a command that loads images: the CLI keeps that line off the terminal."""
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k not in ("SAMIR_DEBUG", "SAMIR_FULL_IMPORTS")}
    load = "from monai.transforms import LoadImage\nLoadImage()"
    loud = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True,
                          timeout=300, env=env)
    if "nvImageCodec" not in loud.stderr:
        pytest.skip("this MONAI / pydicom install logs no codec notice")
    quiet = subprocess.run([sys.executable, "-c", "from samir.cli import _quiet_third_party\n"
                            "_quiet_third_party()\n" + load], capture_output=True, text=True,
                           timeout=300, env=env)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "nvImageCodec" not in quiet.stderr


def test_library_lines_printed_once_when_a_bundle_configured_the_root_logger(capsys):
    """`samir demo`/`train`/`evaluate` apply the bundle's logging.conf (a console handler on the root
    logger); the CLI's own ``samir:`` handler must then stay silent, not print every line twice."""
    import io
    import logging

    from samir.cli import _show_library_logs

    root, log = logging.getLogger(), logging.getLogger("samir")
    saved = (list(root.handlers), root.level, list(log.handlers), log.level)
    try:
        log.handlers.clear()
        # a console handler an earlier test's bundle workflow left on the root would silence ours too
        root.handlers[:] = [h for h in root.handlers if type(h) is not logging.StreamHandler]
        _show_library_logs()
        logging.getLogger("samir.bundle").info("alone")          # no root console handler: ours prints
        conf_out = io.StringIO()
        root.addHandler(logging.StreamHandler(conf_out))           # what logging.conf installs
        root.setLevel(logging.WARNING)  # the root's own level does not filter records propagated to it
        logging.getLogger("samir.bundle").info("configured")
        err = capsys.readouterr().err
        assert err.count("samir: alone") == 1
        assert "configured" not in err and conf_out.getvalue().count("configured") == 1
        log.propagate = False                                      # nothing reaches the root: ours prints
        logging.getLogger("samir.bundle").info("private")
        assert capsys.readouterr().err.count("samir: private") == 1 and "private" not in conf_out.getvalue()
    finally:
        root.handlers[:], log.handlers[:] = saved[0], saved[2]
        log.propagate = True
        root.setLevel(saved[1])
        log.setLevel(saved[3])
