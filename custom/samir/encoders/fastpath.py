"""Fast CPU paths for the frozen encoders, chosen at run time from the CPU and from measurement.

A :class:`FastEncoder` wraps a :class:`SamEncoder` with any of:

* ``fuse_bn``: fold every eval-mode BatchNorm into the preceding convolution (LiteMedSAM's
  ``Conv2d_BN``); exact up to float rounding, fewer passes over memory;
* ``channels_last``: NHWC memory layout for the input and the convolution weights (for
  TinyViT it also removes the copies around each block's depthwise conv);
* ``sdpa``: LiteMedSAM's window attention through ``F.scaled_dot_product_attention`` with the
  learned bias as the mask (one fused kernel instead of matmul, bias add, softmax, matmul);
* ``fuse_act``: each convolution that a GELU follows (TinyViT's first stage, patch embedding and
  merging) runs as one oneDNN convolution with the GELU as a post-op (:class:`ConvGELU`): the
  GELUs over the 4×-expanded full-resolution maps were a third of LiteMedSAM's CPU time. Needs
  ``fuse_bn``; off the CPU, with gradients, or where torch lacks the op it is conv then GELU;
* ``compile``: ``torch.compile`` (inductor). Its cost is paid once per machine: inductor's
  on-disk caches live under ``<samir cache>/inductor`` (``TORCHINDUCTOR_CACHE_DIR`` unless the
  user set it), and :meth:`FastEncoder.warm_up` compiles ahead of the first real batch;
* ``bf16``: bfloat16 autocast, **only** where the CPU has native bf16 (AVX512-BF16 or AMX);
  elsewhere it is emulated and many times slower (issue 4 measured 9× slower on AVX2).

:func:`choose_fast_path` measures the candidates that this CPU allows on a sample batch (median
of ``repeats`` timed runs after a warm-up), rejects any whose embedding cosine against fp32
eager is below ``min_cosine`` (0.99), keeps the fastest and stores the decision in
``<samir cache>/fastpath.json`` keyed by CPU, torch version, thread count, encoder, weights and
input size (the batch size is recorded, not keyed). :func:`auto_fast_encoder` (what ``SliceEncoder(fast_path="auto")`` uses) applies a
stored decision, or, with none stored, ``fuse_bn`` + ``sdpa`` + ``channels_last`` (plus bf16 where the
CPU has native bf16): nothing is compiled or measured behind the user's back. ``samir bench`` measures and stores decisions.

Every choice that changes the numbers is recorded in ``encoder.runtime`` and so in the
embedding cache key.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import SamEncoder
from .cache import default_cache_root

__all__ = [
    "FastEncoder",
    "auto_fast_encoder",
    "choose_fast_path",
    "cpu_info",
    "ConvGELU",
    "fuse_conv_bn",
    "fuse_conv_gelu",
    "make_fast",
    "native_bf16",
    "stored_decision",
    "time_call",
]

# ---------------------------------------------------------------------- the CPU


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16)."""
    flags = _cpu_flags()
    if {"avx512_bf16", "amx_bf16"} & flags:
        return True
    return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX")


def cpu_info() -> dict:
    """CPU model, torch's capability string, native bf16, threads, torch version."""
    return {
        "cpu": cpu_model(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16(),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }


# ---------------------------------------------------------------------- transforms


def _fused_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=conv.groups, bias=True,
    )
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused.requires_grad_(False)


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold eval BatchNorms into the convolutions before them, in place; returns ``module``.

    Handles ``Sequential(conv, bn)`` pairs (LiteMedSAM's ``Conv2d_BN``, whose children are
    ``c`` and ``bn``) anywhere in the tree.
    """
    for name, child in list(module.named_children()):
        kids = list(child.children()) if isinstance(child, nn.Sequential) else []
        if len(kids) == 2 and isinstance(kids[0], nn.Conv2d) and isinstance(kids[1], nn.BatchNorm2d):
            setattr(module, name, _fused_conv(kids[0], kids[1]))
        else:
            fuse_conv_bn(child)
    return module


def _pointwise_conv_op():
    """oneDNN's convolution with a fused post-op (what inductor's CPU fusions call), or None."""
    try:
        op = torch.ops.mkldnn._convolution_pointwise.default
    except (AttributeError, RuntimeError):
        return None
    return op if torch.backends.mkldnn.is_available() else None


class ConvGELU(nn.Module):
    """``GELU(conv(x))`` (exact erf GELU) for an eval-mode ``nn.Conv2d``, as one oneDNN call on the CPU.

    Under bf16 autocast it runs in bf16 with a bf16 copy of the weights (made once), as autocast
    would run the convolution. Anywhere the fused op cannot serve (another device, gradients
    needed, no oneDNN, or the op failing once) it is the plain convolution followed by GELU.
    """

    _broken = False  # set when the fused op raised once in this process: plain path from then on

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not isinstance(conv, nn.Conv2d) or isinstance(conv.padding, str):
            raise TypeError(f"ConvGELU: expected an nn.Conv2d with numeric padding, got {conv!r}")
        self.conv = conv
        self._weights: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv(x))

    def _cast(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        if dtype not in self._weights:
            w, b = self.conv.weight.detach(), self.conv.bias
            fmt = torch.channels_last if w.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            self._weights[dtype] = (w.to(dtype).contiguous(memory_format=fmt),
                                    None if b is None else b.detach().to(dtype))
        return self._weights[dtype]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = _pointwise_conv_op()
        c = self.conv
        if (op is None or ConvGELU._broken or x.device.type != "cpu" or x.ndim != 4
                or (torch.is_grad_enabled() and (x.requires_grad or c.weight.requires_grad))):
            return self._plain(x)
        dtype = x.dtype
        if torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
        if dtype not in (torch.float32, torch.bfloat16):
            return self._plain(x)
        w, b = self._cast(dtype)
        try:
            return op(x.to(dtype), w, b, list(c.padding), list(c.stride), list(c.dilation), c.groups, "gelu", [None], "none")
        except RuntimeError as err:  # pragma: no cover - depends on the torch build
            ConvGELU._broken = True
            warnings.warn(f"fused convolution + GELU unavailable ({err}); using the plain path", RuntimeWarning, stacklevel=2)
            return self._plain(x)


def fuse_conv_gelu(module: nn.Module) -> int:
    """Replace the convolution → GELU pairs of TinyViT's ``MBConv``, ``PatchEmbed`` and ``PatchMerging``
    (after :func:`fuse_conv_bn`: plain ``nn.Conv2d`` with bias) by :class:`ConvGELU`, in place.

    Returns the number of pairs fused (0 for any other network, or with BatchNorms not yet folded).
    """
    from .tinyvit import MBConv, PatchEmbed, PatchMerging

    def fusable(conv, act) -> bool:
        return isinstance(conv, nn.Conv2d) and isinstance(act, nn.GELU) and act.approximate == "none"

    count = 0
    for m in list(module.modules()):
        if isinstance(m, MBConv):
            for conv, act in (("conv1", "act1"), ("conv2", "act2")):
                if fusable(getattr(m, conv), getattr(m, act)):
                    setattr(m, conv, ConvGELU(getattr(m, conv)))
                    setattr(m, act, nn.Identity())
                    count += 1
        elif isinstance(m, PatchMerging):  # one GELU module after conv1 and after conv2
            if fusable(m.conv1, m.act) and isinstance(m.conv2, nn.Conv2d):
                m.conv1, m.conv2, m.act = ConvGELU(m.conv1), ConvGELU(m.conv2), nn.Identity()
                count += 2
        elif isinstance(m, PatchEmbed) and len(m.seq) == 3 and fusable(m.seq[0], m.seq[1]):
            m.seq = nn.Sequential(ConvGELU(m.seq[0]), nn.Identity(), m.seq[2])
            count += 1
    return count


def _inductor_cache_dir() -> None:
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        path = default_cache_root() / "inductor"
        path.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)


# fused copies, one per (encoder class, shared network, input size) in the process
_FUSED: dict[tuple, tuple[nn.Module, nn.Module]] = {}


def _has_bn(module: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def _fused_copy(base: SamEncoder, channels_last: bool = False, fuse_act: bool = False) -> nn.Module:
    """The BN-folded copy of ``base`` (NHWC weights with ``channels_last``, GELUs folded into their
    convolutions with ``fuse_act``), one per process and variant: each is its own copy, so converting
    one never changes another."""
    inner = getattr(base, "net", base)
    key = (type(base).__name__, id(inner), base.image_size, bool(channels_last), bool(fuse_act))
    entry = _FUSED.get(key)
    if entry is None or entry[0] is not inner:  # the id could be reused after garbage collection
        fused = fuse_conv_bn(copy.deepcopy(base))
        if channels_last:
            fused = fused.to(memory_format=torch.channels_last)
        if fuse_act:
            fuse_conv_gelu(fused)
        for m in fused.modules():  # the frozen copy's attention biases, gathered once (as TinyViT's eval mode does)
            if hasattr(m, "attention_biases") and hasattr(m, "attention_bias_idxs"):
                m.ab = m.attention_biases[:, m.attention_bias_idxs].detach()
        entry = (inner, fused)
        _FUSED[key] = entry
    return entry[1]


def _can_fuse_act(encoder: SamEncoder) -> bool:
    """Whether ``fuse_act`` changes anything for this encoder on this torch build."""
    from .tinyvit import MBConv, PatchEmbed, PatchMerging

    return _pointwise_conv_op() is not None and any(
        isinstance(m, (MBConv, PatchEmbed, PatchMerging)) for m in encoder.modules())


class FastEncoder(SamEncoder):
    """A :class:`SamEncoder` run through a fast path: same input, same output layout.

    ``forward(x)``: (N, 3, S, S) normalised → (N, C, S/stride, S/stride) float32, contiguous.
    """

    def __init__(self, base: SamEncoder, fuse_bn=True, channels_last=False, compile=False, bf16=False, sdpa=False,
                 fuse_act=False):
        super().__init__(base.image_size, base.weights_hash, base.pixel_mean, base.pixel_std)
        self.name = base.name
        self.out_channels = base.out_channels
        self.out_stride = base.out_stride
        self.base = base
        if bf16 and not native_bf16():
            raise ValueError(
                "bf16=True: this CPU has no native bf16 (AVX512-BF16/AMX); emulated bf16 is many times "
                "slower. Leave bf16=False (the default)."
            )
        model: nn.Module = base
        if fuse_bn and _has_bn(base):
            fuse_act = bool(fuse_act) and _can_fuse_act(base)
            model = _fused_copy(base, channels_last, fuse_act)  # shared by the paths of one variant
        else:
            fuse_bn = fuse_act = False
            if channels_last:  # a copy: ``Module.to`` works in place
                model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        if sdpa and hasattr(model, "sdpa"):
            model = copy.copy(model)  # shares the weights; only the flag differs
            model.sdpa = True
        else:
            sdpa = False
        self.model = model
        self.flags = {"fuse_bn": bool(fuse_bn), "channels_last": bool(channels_last), "compile": bool(compile),
                      "bf16": bool(bf16), "sdpa": bool(sdpa), "fuse_act": bool(fuse_act)}
        self.runtime = dict(base.runtime) | {k: v for k, v in self.flags.items() if v}
        self._fn = model
        if compile:
            _inductor_cache_dir()
            self._fn = torch.compile(model, dynamic=False)
        self.freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flags["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.flags["bf16"]:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = self._fn(x)
        else:
            out = self._fn(x)
        return out.float().contiguous()

    @torch.no_grad()
    def warm_up(self, batch_size: int = 1) -> float:
        """Run one batch (compiles if needed); returns the seconds it took."""
        x = torch.zeros(batch_size, 3, self.image_size, self.image_size, device=next(self.parameters()).device)
        t0 = time.perf_counter()
        self(x)
        return time.perf_counter() - t0


def make_fast(encoder: SamEncoder, **flags) -> SamEncoder:
    """``FastEncoder(encoder, **flags)``; an all-off request returns ``encoder`` itself."""
    if isinstance(encoder, FastEncoder):
        encoder = encoder.base
    flags = {"fuse_bn": True} | dict(flags)
    flags["fuse_bn"] = bool(flags["fuse_bn"]) and _has_bn(encoder)
    flags["sdpa"] = bool(flags.get("sdpa")) and hasattr(encoder, "sdpa")
    flags["fuse_act"] = bool(flags.get("fuse_act")) and flags["fuse_bn"] and _can_fuse_act(encoder)
    if not any(flags.get(k) for k in ("fuse_bn", "channels_last", "compile", "bf16", "sdpa", "fuse_act")):
        return encoder
    return FastEncoder(encoder, **flags)


# ---------------------------------------------------------------------- measurement


@torch.no_grad()
def time_call(fn, x: torch.Tensor, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall seconds of ``fn(x)`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.float().flatten(2), b.float().flatten(2), dim=1).mean())


def _decision_file() -> Path:
    return Path(os.environ.get("SAMIR_FASTPATH_FILE") or default_cache_root() / "fastpath.json")


def _decision_key(encoder: SamEncoder, batch_size: int) -> str:
    info = cpu_info()
    return "|".join(
        str(v)
        for v in (info["cpu"], info["capability"], info["torch"], info["threads"], encoder.name,
                  encoder.weights_hash[:16], encoder.image_size)
    )


def stored_decision(encoder: SamEncoder, batch_size: int) -> dict | None:
    """The flags stored by :func:`choose_fast_path` for this machine/encoder/size, if any."""
    path = _decision_file()
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    entry = table.get(_decision_key(encoder, batch_size))
    return dict(entry["flags"]) if isinstance(entry, dict) and "flags" in entry else None


def store_decision(encoder: SamEncoder, batch_size: int, flags: dict, results: list[dict]) -> None:
    """Record ``flags`` as this machine's fast path for ``encoder`` at its input size."""
    path = _decision_file()
    try:
        table = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        table = {}
    table[_decision_key(encoder, batch_size)] = {"flags": flags, "results": results, "time": time.time()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1))
        os.replace(tmp, path)
    except OSError as err:
        warnings.warn(f"could not store the fast-path decision in {path}: {err}", RuntimeWarning, stacklevel=2)


CANDIDATES: dict[str, dict] = {
    "eager": {"fuse_bn": False},
    "fuse_bn": {"fuse_bn": True},
    "channels_last": {"fuse_bn": True, "channels_last": True},
    "sdpa": {"fuse_bn": True, "sdpa": True},
    "sdpa_channels_last": {"fuse_bn": True, "sdpa": True, "channels_last": True},
    "compile_sdpa_channels_last": {"fuse_bn": True, "sdpa": True, "channels_last": True, "compile": True},
    "compile": {"fuse_bn": True, "compile": True},
    "compile_channels_last": {"fuse_bn": True, "channels_last": True, "compile": True},
    "sdpa_channels_last_act": {"fuse_bn": True, "sdpa": True, "channels_last": True, "fuse_act": True},
    "bf16": {"fuse_bn": True, "bf16": True},
    "bf16_sdpa_channels_last": {"fuse_bn": True, "sdpa": True, "channels_last": True, "bf16": True},
    "bf16_sdpa_channels_last_act": {"fuse_bn": True, "sdpa": True, "channels_last": True, "bf16": True, "fuse_act": True},
}


def allowed_candidates(include_compile: bool = True) -> list[str]:
    """The candidate paths this CPU allows: bf16 only with native bf16."""
    names = ["eager", "fuse_bn", "channels_last", "sdpa", "sdpa_channels_last", "sdpa_channels_last_act"]
    if include_compile:
        names += ["compile", "compile_channels_last", "compile_sdpa_channels_last"]
    if native_bf16():
        names += ["bf16", "bf16_sdpa_channels_last", "bf16_sdpa_channels_last_act"]
    return names


@torch.no_grad()
def choose_fast_path(
    encoder: SamEncoder,
    batch_size: int = 4,
    candidates: Iterable[str] | None = None,
    min_cosine: float = 0.99,
    repeats: int = 3,
    sample: torch.Tensor | None = None,
    store: bool = True,
) -> tuple[SamEncoder, list[dict]]:
    """Measure candidate paths on a sample batch; return the fastest faithful one and the table.

    Each result row: ``{"path", "flags", "seconds_per_slice", "first_call_s", "cosine", "ok"}``;
    ``ok`` is False where the cosine against fp32 eager is below ``min_cosine`` (never chosen).
    """
    base = encoder.base if isinstance(encoder, FastEncoder) else encoder
    names = list(candidates) if candidates is not None else allowed_candidates()
    if "eager" not in names:
        names.insert(0, "eager")
    if sample is None:
        g = torch.Generator().manual_seed(0)
        sample = base.normalize(torch.rand(batch_size, 1, base.image_size, base.image_size, generator=g).expand(-1, 3, -1, -1))
    ref = None
    results = []
    for name in names:
        flags = CANDIDATES[name]
        if flags.get("bf16") and not native_bf16():
            continue
        enc = make_fast(base, **flags)
        t0 = time.perf_counter()
        out = enc(sample)
        first = time.perf_counter() - t0
        secs = time_call(enc, sample, repeats=repeats, warmup=0) / sample.shape[0]
        if ref is None:
            ref = out
        cos = _cosine(out, ref)
        results.append({"path": name, "flags": flags, "seconds_per_slice": secs, "first_call_s": first,
                        "cosine": cos, "ok": cos >= min_cosine})
    best = min((r for r in results if r["ok"]), key=lambda r: r["seconds_per_slice"])
    if store:
        store_decision(base, batch_size, best["flags"], results)
    return make_fast(base, **best["flags"]), results


def auto_fast_encoder(encoder: SamEncoder, batch_size: int = 8) -> SamEncoder:
    """The stored decision for this machine if there is one, else ``fuse_bn`` + ``sdpa`` (+ bf16 where native)."""
    if isinstance(encoder, FastEncoder):
        return encoder
    flags = stored_decision(encoder, batch_size)
    if flags is None:
        # the fused attention kernel (same maths; 1.5–2× faster at 128 px on 2 cores, fp32 or bf16), the
        # NHWC layout (2 Sapphire Rapids cores, 12 slices at 128 px: 1.25× faster in fp32, 1.7× in bf16),
        # and bf16 where the CPU computes it natively (cosine to fp32 ≥ 0.999 on LiteMedSAM at 64/128 px);
        # emulated bf16 is many times slower: fp32 there. GELUs fused into their convolutions (2 slices
        # at 128 px, bf16 NHWC: 150 → 119 ms; fp32 depthwise conv + GELU alone 2.4× faster; cosine unchanged)
        flags = {"fuse_bn": True, "sdpa": True, "channels_last": True, "fuse_act": True} | (
            {"bf16": True} if native_bf16() else {})
    if flags.get("bf16") and not native_bf16():
        flags = {k: v for k, v in flags.items() if k != "bf16"}
    return make_fast(encoder, **flags)
