"""``python -m samir.tools.shortcut_fidelity``: each encoder shortcut scored against the full path on the same pairs."""

import pytest
from samir.tools.shortcut_fidelity import shortcut_fidelity

from tests.tools.test_accuracy_table import _write_pairs


def test_rows_against_the_full_path(tmp_path, monkeypatch, capsys):
    import samir.encoders.fastpath

    monkeypatch.setattr(samir.encoders.fastpath, "native_bf16", lambda: False)
    path = _write_pairs(tmp_path)
    rows = shortcut_fidelity(dataset="pairs", root=str(path), split="test", encoder="tiny",
                             shortcuts=("stride2", "bf16", "default"), out_csv=str(tmp_path / "fidelity.csv"))
    out = capsys.readouterr().out
    assert [r["shortcut"] for r in rows] == ["full", "stride2", "default"]  # full first: the reference
    assert "skipping 'bf16'" in out
    full, stride2, default = rows
    assert full["delta_mean"] == 0.0 and full["delta_max_abs"] == 0.0 and full["slice_stride"] == 1
    assert stride2["slice_stride"] == 2 and default["slice_stride"] == 2  # the generic preset encodes every 2nd slice
    for r in rows:
        assert 0.0 < r["dice_mean"] <= 1.0 and r["pairs"] == 1 and r["encode_seconds"] > 0
        assert abs(r["delta_mean"]) <= r["delta_max_abs"] + 1e-12
    assert (tmp_path / "fidelity.csv").read_text().startswith("shortcut,bf16,slice_stride")


def test_unknown_shortcut():
    with pytest.raises(ValueError, match="unknown.*'half'"):
        shortcut_fidelity(shortcuts=("half",))
