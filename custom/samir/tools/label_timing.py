"""Time label propagation through a real MONAI Label server, as 3D Slicer's module asks for it.

``python -m samir.tools.label_timing FIXED MOVING MOVING_LABEL [--fixed_label GT] [--repeats 3]``
starts ``monailabel start_server`` with the SAMIR app (shipped weights, the preset chosen from the
image) on a temporary studies folder holding the pair, then times ``MONAILabelClient.infer``: the
first request (cold: encoder weights loaded, embeddings computed) and the next ones on the same
pair (warm server; the disk cache is off unless ``--cache_dir`` is given, but the encoder keeps the
last two volumes in memory, so these requests do not encode again). With ``--next_fixed``,
``--next_moving`` and ``--next_moving_label`` (another pair: an annotator's next case), one more
request on it times the warm server on images it has not encoded yet. Prints a table of seconds
and, with ``--fixed_label``, the Dice of the served label. Server start-up is reported apart: a
server starts once for a whole session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["label_server", "time_label_server"]

APP = Path(__file__).resolve().parents[2] / "samir_label"
MODEL = "samir_registration"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _study_name(path: Path) -> str:
    return path.name.split(".")[0]


def _dice_mean(served: str, truth: str, label_values: dict) -> float:
    import numpy as np
    import SimpleITK as sitk

    a = sitk.GetArrayFromImage(sitk.ReadImage(served))
    b = sitk.GetArrayFromImage(sitk.ReadImage(truth))
    scores = []
    for served_value, value in label_values.items():
        x, y = a == int(served_value), b == int(value)
        s = x.sum() + y.sum()
        if s:
            scores.append(2.0 * np.logical_and(x, y).sum() / s)
    return float(np.mean(scores)) if scores else float("nan")


@contextlib.contextmanager
def label_server(studies: Path, work_dir: Path, conf: dict[str, str] | None = None, timeout_s: float = 300.0):
    """A ``monailabel start_server`` of the SAMIR app (a copy in ``work_dir``) on ``studies``, ready.

    Yields ``(client, url, start_seconds)``: a ``MONAILabelClient`` once the server answers
    ``info``, its URL and how long start-up took. ``conf``: the app's ``--conf`` options. The
    server runs in its own process group and is stopped (uvicorn and its workers) on exit; a
    server that exits or does not answer in ``timeout_s`` raises ``RuntimeError`` with its log's tail.
    """
    from monailabel.client import MONAILabelClient
    from monailabel.client.client import MONAILabelClientException

    work_dir = Path(work_dir)
    app = work_dir / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("model", "logs", "bin", "__pycache__"))
    port = _free_port()
    venv_bin = Path(sys.executable).parent
    server_tmp = work_dir / "server_tmp"  # the server's temporary files (its logging config, each result)
    server_tmp.mkdir(parents=True, exist_ok=True)  # stay in work_dir, not in the system's /tmp
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
           "MONAI_LABEL_SESSION_PATH": str(work_dir / "sessions"), "MONAI_LABEL_TRACKING_ENABLED": "false",
           "TMPDIR": str(server_tmp)}
    cmd = [str(venv_bin / "monailabel"), "start_server", "--app", str(app), "--studies", str(studies),
           "--host", "127.0.0.1", "--port", str(port)]
    for key, value in (conf or {}).items():
        cmd += ["--conf", str(key), str(value)]
    log_path = work_dir / "server.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        client = MONAILabelClient(url, tmpdir=str(work_dir / "client"))
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
                try:
                    client.info()
                    break
                except (OSError, MONAILabelClientException):
                    if time.perf_counter() - start > timeout_s:
                        raise RuntimeError(f"server not up in {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}") from None
                    time.sleep(0.5)
            yield client, url, time.perf_counter() - start
        finally:
            os.killpg(proc.pid, 15)  # the server's own process group (start_new_session)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


def _pair_paths(fixed, moving, moving_label, prefix: str = "") -> tuple[Path, Path, Path]:
    paths = tuple(Path(p).expanduser().resolve() for p in (fixed, moving, moving_label))
    for what, p in zip(("fixed", "moving", "moving_label"), paths):
        if not p.is_file():
            raise FileNotFoundError(f"{prefix}{what}: no file at {p}")
    if _study_name(paths[0]) == _study_name(paths[1]):
        raise ValueError(f"{prefix}fixed and {prefix}moving: give two different images")
    return paths


def time_label_server(fixed: str, moving: str, moving_label: str, fixed_label: str | None = None,
                      repeats: int = 3, device: str = "cpu", cache_dir: str = "false",
                      timeout_s: float = 600.0, next_pair: tuple[str, str, str] | None = None) -> dict:
    """Start a server on the pair, infer ``repeats`` times (then once on ``next_pair``: fixed, moving,
    moving label of images the server has not seen), stop it; returns the timings (and Dice)."""
    pairs = [_pair_paths(fixed, moving, moving_label)]
    if next_pair is not None:
        if len(next_pair) != 3:
            raise ValueError(f"next_pair: expected (fixed, moving, moving_label), got {next_pair!r}")
        pairs.append(_pair_paths(*next_pair, prefix="next_"))
        names = [_study_name(p) for pair in pairs for p in pair[:2]]
        if len(set(names)) != 4:
            raise ValueError(f"next_pair: expected two images other than the first pair's, got {names[2:]}")
    root = Path(tempfile.mkdtemp(prefix="samir-label-timing-"))
    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for fixed_p, moving_p, label_p in pairs:
        shutil.copy(fixed_p, studies / fixed_p.name)
        shutil.copy(moving_p, studies / moving_p.name)
        shutil.copy(label_p, studies / "labels" / "final" / moving_p.name)
    fixed_p, moving_p, _ = pairs[0]
    result: dict = {"fixed": _study_name(fixed_p), "moving": _study_name(moving_p)}
    try:
        with label_server(studies, root, {"device": device, "cache_dir": cache_dir}, timeout_s) as (client, _, started):
            result["server_start_s"] = started
            seconds = []
            for _ in range(max(1, int(repeats))):
                t0 = time.perf_counter()
                label_file, info = client.infer(MODEL, result["fixed"], {"moving": result["moving"]})
                seconds.append(time.perf_counter() - t0)
            result.update(infer_cold_s=seconds[0], infer_warm_s=statistics.median(seconds[1:]) if len(seconds) > 1 else None,
                          infer_s=seconds, method=info.get("method"), guard_kept=info.get("guard_kept"),
                          register_seconds=info.get("register_seconds"))
            if fixed_label:
                result["dice_mean"] = _dice_mean(label_file, str(Path(fixed_label).expanduser()),
                                                 info.get("label_values") or {})
            if len(pairs) > 1:
                t0 = time.perf_counter()
                client.infer(MODEL, _study_name(pairs[1][0]), {"moving": _study_name(pairs[1][1])})
                result["infer_new_pair_s"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result


def main(fixed: str, moving: str, moving_label: str, fixed_label: str | None = None, repeats: int = 3,
         device: str = "cpu", cache_dir: str = "false", next_fixed: str | None = None,
         next_moving: str | None = None, next_moving_label: str | None = None) -> None:
    """Print the table (see the module docstring)."""
    from samir.encoders.fastpath import cpu_info

    try:
        given = [p for p in (next_fixed, next_moving, next_moving_label) if p is not None]
        if given and len(given) != 3:
            raise ValueError("next_fixed, next_moving, next_moving_label: give all three or none")
        r = time_label_server(fixed, moving, moving_label, fixed_label, repeats, device, cache_dir,
                              next_pair=tuple(given) if given else None)
    except (OSError, ValueError, RuntimeError) as err:  # a missing file, one image twice, a server that failed
        print(f"label_timing: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    info = cpu_info()
    print(f"CPU: {info['cpu']} ({info['capability']}, native bf16 {info['native_bf16']}), load {os.getloadavg()[0]:.1f}")
    print("| what | seconds |\n|---|---|")
    print(f"| server start (once per session) | {r['server_start_s']:.1f} |")
    print(f"| infer, first request (cold) | {r['infer_cold_s']:.1f} |")
    if r.get("infer_warm_s") is not None:
        print(f"| infer, same pair again (median of {len(r['infer_s']) - 1}; embeddings kept in memory) | "
              f"{r['infer_warm_s']:.1f} |")
    if r.get("infer_new_pair_s") is not None:
        print(f"| infer, warm server, a pair it has not encoded | {r['infer_new_pair_s']:.1f} |")
    print(f"method {r.get('method')} (guard kept {r.get('guard_kept')}), registration {r.get('register_seconds')} s "
          f"of the last request, Dice {r.get('dice_mean', float('nan')):.3f}, all requests {[round(s, 1) for s in r['infer_s']]}")


if __name__ == "__main__":
    import fire

    fire.Fire(main)
