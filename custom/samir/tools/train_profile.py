"""Seconds per training iteration, and where they go: encoder, head, pyramid/flow, loss, backward, step.

Builds the bundle's own training objects (``train.json`` through ``ConfigWorkflow``: network, loss,
optimiser, training data set) with the given overrides, takes real training pairs and times
``iterations`` full iterations (``RegistrationTrainStep``'s work: forward with ``return_all``, loss,
backward, gradient clipping, Adam step) after ``warmup`` ones. Components are timed by wrapping the
frozen encoder, the feature head, the image pyramid and the flow estimators; what is left of the
forward (warps, resampling, composition) is reported as ``forward_other``. Components are wall
seconds; ``per_iteration_cpu_s`` is the process CPU time (all threads), a steadier number on a
shared machine.

``cache``: "cold" encodes every pair every time (no embedding cache; what generated/augmented pairs
cost), "warm" reads them from an embedding cache filled during the warm-up (what a fixed data set costs
from its second epoch on).

    python -m samir.tools.train_profile --iterations 5 --cache warm            # the shipped cardiac config
    python -m samir.tools.train_profile --iterations 5 --preset tiny          # tiny encoder / network
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict

import torch

__all__ = ["profile_training", "TINY"]

TINY = {
    "encoder": "tiny", "encoder_image_size": 32, "levels": 3, "channels": [4, 8, 8], "head_channels": 8,
    "head_blocks": 1, "flow_width": 8, "sam_min_level": 1, "finest_level": 0, "hfc_channels": 8,
}


class _Timer:
    def __init__(self):
        self.seconds = defaultdict(float)

    def wrap(self, module, name: str) -> None:
        if module is None:
            return
        forward = module.forward

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return forward(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t

        module.forward = timed


def profile_training(iterations: int = 5, warmup: int = 1, cache: str = "warm", preset: str = "shipped",
                     threads: int | None = None, **overrides) -> dict:
    """Time ``iterations`` training iterations; returns {"per_iteration_s", "components_s", ...} per iteration."""
    if threads:
        torch.set_num_threads(int(threads))
    if cache not in ("warm", "cold"):
        raise ValueError(f"cache: expected 'warm' or 'cold', got {cache!r}")
    # its embedding cache and run folder are scratch: removed however the profile ends
    with tempfile.TemporaryDirectory(prefix="samir-profile-", ignore_cleanup_errors=True) as tmp:
        return _profile(tmp, iterations, warmup, cache, preset, overrides)


def _profile(tmp: str, iterations: int, warmup: int, cache: str, preset: str, overrides: dict) -> dict:
    from samir.bundle import bundle_workflow
    from samir.training import pair_inputs

    cfg = dict(TINY) if preset == "tiny" else {}
    cfg.update({"cache_dir": (tmp + "/cache") if cache == "warm" else False, "output_dir": tmp + "/run",
                "val_interval": 10**6})
    cfg.update(overrides)
    wf = bundle_workflow(["train.json"], "training", **cfg)
    net = wf.parser.get_parsed_content("network")
    loss_fn = wf.parser.get_parsed_content("loss")
    optimizer = wf.parser.get_parsed_content("optimizer")
    dataset = wf.parser.get_parsed_content("train#dataset")
    device = wf.parser.get_parsed_content("device")
    items = [dataset[i % len(dataset)] for i in range(min(len(dataset), iterations))]
    if cache == "warm" and net.sam_encoder is not None:  # fill the embedding cache with every timed pair
        with torch.no_grad():
            for item in items:
                for key in ("moving", "fixed"):
                    net.encode(torch.as_tensor(item[key])[None].float().to(device))

    timer = _Timer()
    timer.wrap(net.sam_encoder, "encoder")
    timer.wrap(net.head, "head")
    timer.wrap(net.pyramid, "pyramid")
    for est in net.estimators:
        timer.wrap(est, "flow_estimators")
    stages = defaultdict(float)
    n_timed = 0
    for i in range(warmup + iterations):
        item = items[(i - warmup) % len(items)]
        batch = {k: (v[None] if torch.is_tensor(v) else [v]) for k, v in item.items()}
        if i == warmup:
            timer.seconds.clear()
        c0 = time.process_time()
        t0 = time.perf_counter()
        net.train()
        moving, fixed = pair_inputs(batch, device)
        optimizer.zero_grad(set_to_none=True)
        outputs = net(torch.cat([moving, fixed], dim=1), return_all=True)
        t1 = time.perf_counter()
        terms = loss_fn(moving, fixed, outputs)
        t2 = time.perf_counter()
        terms["loss"].backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], 10.0)
        optimizer.step()
        t4 = time.perf_counter()
        c4 = time.process_time()
        if i >= warmup:
            n_timed += 1
            stages["cpu"] += c4 - c0
            stages["forward"] += t1 - t0
            stages["loss"] += t2 - t1
            stages["backward"] += t3 - t2
            stages["step"] += t4 - t3
            stages["total"] += t4 - t0
    n = max(n_timed, 1)
    comp = {k: v / n for k, v in timer.seconds.items()}
    comp["forward_other"] = stages["forward"] / n - sum(comp.values())
    comp.update({k: stages[k] / n for k in ("loss", "backward", "step")})
    shape = tuple(items[0]["fixed"].shape[-3:])
    out = {
        "preset": preset, "cache": cache, "threads": torch.get_num_threads(), "pair_shape": list(shape),
        "iterations": n_timed, "per_iteration_s": round(stages["total"] / n, 3),
        "per_iteration_cpu_s": round(stages["cpu"] / n, 3),
        "components_s": {k: round(v, 3) for k, v in comp.items()},
        "encoder": getattr(net.sam_encoder, "name", type(net.sam_encoder).__name__) if net.sam_encoder is not None else None,
    }
    wf.finalize()
    return out


def main(**kwargs) -> None:
    print(json.dumps(profile_training(**kwargs), indent=1))


if __name__ == "__main__":
    import fire

    fire.Fire(main)
