"""``python -m samir.tools.label_timing``: refuses bad input before any server starts."""

import pytest
from samir.tools.label_timing import time_label_server


def test_missing_file_is_named(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="moving"):
        time_label_server(str(tmp_path / "a.nii.gz"), str(tmp_path / "nope.nii.gz"), str(tmp_path / "a.nii.gz"))


def test_same_image_twice_is_refused(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    with pytest.raises(ValueError, match="two different images"):
        time_label_server(str(tmp_path / "a.nii.gz"), str(tmp_path / "a.nii.gz"), str(tmp_path / "a.nii.gz"))


def test_command_line_names_the_problem_without_a_traceback(tmp_path, capsys):
    from samir.tools.label_timing import main

    with pytest.raises(SystemExit) as stop:
        main(str(tmp_path / "f.nii.gz"), str(tmp_path / "m.nii.gz"), str(tmp_path / "l.nii.gz"))
    assert stop.value.code == 2
    assert "fixed: no file at" in capsys.readouterr().err


def test_next_pair_must_be_two_other_images(tmp_path, capsys):
    from samir.tools.label_timing import main

    for name in ("f", "m", "l", "g", "n"):
        (tmp_path / f"{name}.nii.gz").write_bytes(b"x")
    f, m, lab, g, n = (str(tmp_path / f"{k}.nii.gz") for k in ("f", "m", "l", "g", "n"))
    with pytest.raises(ValueError, match="next_pair: expected two images other than the first pair's"):
        time_label_server(f, m, lab, next_pair=(m, g, lab))
    with pytest.raises(FileNotFoundError, match="next_moving: no file"):
        time_label_server(f, m, lab, next_pair=(g, str(tmp_path / "nope.nii.gz"), lab))
    with pytest.raises(SystemExit) as stop:
        main(f, m, lab, next_fixed=g, next_moving=n)
    assert stop.value.code == 2 and "give all three or none" in capsys.readouterr().err
