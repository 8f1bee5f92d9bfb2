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
