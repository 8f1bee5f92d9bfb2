"""Generic pair datalists: a JSON list of {fixed, moving, fixed_label?, moving_label?}.

Accepted forms: a top-level list, or an object whose ``key`` entry (default: the first of ``pairs``,
``registration_val``, ``registration_test``, ``training``, ``validation``, ``test`` that holds
fixed/moving entries) is that list. Relative paths are relative to the JSON file's folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from samir.data.checks import check_exists

__all__ = ["datalist_pairs", "pair_id", "PAIR_KEYS"]

PAIR_KEYS = ("fixed", "moving", "fixed_label", "moving_label")
_LIST_KEYS = ("pairs", "registration_val", "registration_test", "training", "validation", "test")


def pair_id(item) -> str:
    """A pair's id: its ``pair_id`` entry, else ``<moving stem>_to_<fixed stem>``."""
    return str(item.get("pair_id") or f"{Path(str(item['moving'])).name.split('.')[0]}_to_"
                                       f"{Path(str(item['fixed'])).name.split('.')[0]}")


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def datalist_pairs(json_path: str | Path, key: str | None = None, check_files: bool = True) -> list[dict]:
    """Read a pair datalist; returns dicts with absolute str paths for fixed, moving (+ labels) and a ``pair_id``.

    Other fields of an entry are kept. Missing files raise ``FileNotFoundError`` naming the file and the entry.
    """
    path = check_exists(json_path, "pair datalist json")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: expected valid JSON ({err})") from err
    if isinstance(data, dict):
        if key is not None:
            if key not in data:
                raise ValueError(f"{path}: expected a '{key}' entry, got keys {sorted(data)}")
            entries = data[key]
        else:
            found = [k for k in _LIST_KEYS if isinstance(data.get(k), list) and data[k]
                     and isinstance(data[k][0], dict) and "fixed" in data[k][0]]
            if not found:
                raise ValueError(
                    f"{path}: expected a list of {{fixed, moving}} entries or one of the keys {list(_LIST_KEYS)} "
                    f"holding such a list, got keys {sorted(data)}"
                )
            key, entries = found[0], data[found[0]]
    else:
        entries = data
    where = f"{path}[{key}]" if key else str(path)
    if not isinstance(entries, list):
        raise ValueError(f"{where}: expected a list of pairs, got {type(entries).__name__}")
    base = path.parent
    pairs = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or "fixed" not in entry or "moving" not in entry:
            got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ValueError(f"{where}: entry {n}: expected keys 'fixed' and 'moving', got {got}")
        item = dict(entry)
        for k in PAIR_KEYS:
            if k in entry and entry[k] is not None:
                if not isinstance(entry[k], str):
                    raise ValueError(f"{where}: entry {n}: expected a path string for '{k}', got {entry[k]!r}")
                p = _resolve(base, entry[k])
                if check_files and not p.is_file():
                    raise FileNotFoundError(f"{p}: expected the '{k}' file of entry {n} in {path}, file not found")
                item[k] = str(p)
            else:
                item.pop(k, None)
        if "pair_id" not in item:
            f = Path(item["fixed"]).name.split(".")[0]
            m = Path(item["moving"]).name.split(".")[0]
            item["pair_id"] = f"{n:04d}_{f}_{m}"
        pairs.append(item)
    return pairs
