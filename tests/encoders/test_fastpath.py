"""Fast paths: fidelity against fp32 eager (cosine >= 0.99), bf16 gating, stored decisions."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from samir.encoders import SliceEncoder, build_encoder, fastpath
from samir.encoders.fastpath import FastEncoder, auto_fast_encoder, choose_fast_path, fuse_conv_bn, make_fast


def _cos(a, b):
    return float(F.cosine_similarity(a.flatten(2), b.flatten(2), dim=1).mean())


@pytest.fixture(scope="module")
def lite64():
    return build_encoder("litemedsam", image_size=64)


@pytest.fixture(scope="module")
def sample(lite64):
    from samir.tools.encoder_fidelity import phantom_slices

    x = phantom_slices(1, 64)[:, None].clamp(0, 1).expand(-1, 3, -1, -1)
    return lite64.normalize(x)


@pytest.fixture(scope="module")
def eager_ref(lite64, sample):
    with torch.no_grad():
        return lite64(sample)


@pytest.mark.parametrize("flags", [{"fuse_bn": True}, {"fuse_bn": True, "channels_last": True}, {"channels_last": True}])
def test_default_paths_match_eager(flags, lite64, sample, eager_ref):
    fast = make_fast(lite64, **flags)
    assert isinstance(fast, FastEncoder) and fast.runtime  # flags reach the cache key
    with torch.no_grad():
        out = fast(sample)
    assert out.shape == eager_ref.shape and out.is_contiguous()
    assert _cos(out, eager_ref) >= 0.99
    assert torch.allclose(out, eager_ref, atol=1e-3)


def test_channels_last_leaves_the_shared_fused_network_alone(lite64):
    """The NHWC path converts its own copy: a later plain path still has contiguous (NCHW) weights."""
    make_fast(lite64, fuse_bn=True, channels_last=True)
    plain = make_fast(lite64, fuse_bn=True)
    convs = [m for m in plain.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs and all(c.weight.is_contiguous() for c in convs)


def test_default_path_without_a_stored_decision(lite64, monkeypatch):
    """No stored decision: fused BN, fused attention and NHWC everywhere, bf16 only with native bf16."""
    monkeypatch.setattr(fastpath, "stored_decision", lambda *a, **k: None)
    for native in (False, True):
        monkeypatch.setattr(fastpath, "native_bf16", lambda native=native: native)
        flags = auto_fast_encoder(lite64).flags
        assert flags["fuse_bn"] and flags["sdpa"] and flags["channels_last"]
        assert flags["bf16"] is native
        assert flags["fuse_act"] is (fastpath._pointwise_conv_op() is not None)


def test_fuse_conv_bn_is_exact():
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3, padding=1, bias=False), torch.nn.BatchNorm2d(6)))
    bn = block[0][1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    block.eval()
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        ref = block(x)
        fused = fuse_conv_bn(block)
        assert isinstance(fused[0], torch.nn.Conv2d)
        assert torch.allclose(fused(x), ref, atol=1e-5)


def test_shared_network_is_not_modified(lite64):
    make_fast(lite64, fuse_bn=True)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in lite64.modules())


def test_bf16_refused_without_native_support(monkeypatch):
    monkeypatch.setattr(fastpath, "native_bf16", lambda: False)
    with pytest.raises(ValueError, match="native bf16"):
        FastEncoder(build_encoder("tiny"), bf16=True)
    assert "bf16" not in fastpath.allowed_candidates()


def test_tiny_needs_no_fast_path():
    tiny = build_encoder("tiny")
    assert make_fast(tiny) is tiny  # nothing to fold, nothing asked


def test_choose_and_store_decision(monkeypatch, tmp_path):
    monkeypatch.setenv("SAMIR_FASTPATH_FILE", str(tmp_path / "fastpath.json"))
    tiny = build_encoder("tiny")
    assert fastpath.stored_decision(tiny, 4) is None
    chosen, results = choose_fast_path(tiny, batch_size=2, candidates=["eager", "channels_last"], repeats=3)
    assert {r["path"] for r in results} == {"eager", "channels_last"}
    assert all(r["cosine"] > 0.99 and r["seconds_per_slice"] > 0 for r in results)
    flags = fastpath.stored_decision(tiny, 2)
    assert flags is not None
    auto = auto_fast_encoder(tiny, 2)
    assert auto.runtime == chosen.runtime


def test_slice_encoder_fast_path_matches_eager(lite64):
    vol = torch.zeros(1, 1, 48, 40, 2)
    vol[0, 0, 10:40, 8:30, 0] = torch.rand(30, 22) + 1
    eager = SliceEncoder(lite64, fast_path="eager")(vol)
    auto = SliceEncoder(lite64, fast_path="auto")
    assert auto.runner.runtime.get("fuse_bn") or auto.runner.runtime  # a fast path is on by default
    assert _cos(auto(vol).flatten(2, 3), eager.flatten(2, 3)) >= 0.99
    with pytest.raises(ValueError, match="fast_path"):
        SliceEncoder(lite64, fast_path="turbo")


@pytest.mark.slow
def test_compiled_path_matches_eager(lite64, sample):
    fast = make_fast(lite64, fuse_bn=True, compile=True)
    with torch.no_grad():
        assert _cos(fast(sample), lite64(sample)) >= 0.99


@pytest.mark.parametrize("flags", [{"sdpa": True}, {"fuse_bn": True, "sdpa": True, "channels_last": True}])
def test_sdpa_attention_matches_eager(flags, lite64, sample, eager_ref):
    fast = make_fast(lite64, **flags)
    assert fast.runtime.get("sdpa") and not lite64.sdpa  # the shared encoder keeps its own path
    with torch.no_grad():
        out = fast(sample)
    assert _cos(out, eager_ref) >= 0.99 and torch.allclose(out, eager_ref, atol=1e-3)


@pytest.mark.skipif(fastpath._pointwise_conv_op() is None, reason="this torch build has no oneDNN pointwise convolution")
@pytest.mark.parametrize("flags", [{"fuse_bn": True, "fuse_act": True},
                                   {"fuse_bn": True, "sdpa": True, "channels_last": True, "fuse_act": True}])
def test_fused_gelu_matches_eager(flags, lite64, sample, eager_ref):
    """Every conv → GELU pair of TinyViT runs as one fused call, with the numbers of conv then GELU."""
    fast = make_fast(lite64, **flags)
    assert fast.runtime.get("fuse_act")  # in the cache key
    fused = [m for m in fast.model.modules() if isinstance(m, fastpath.ConvGELU)]
    # patch embedding 1, two MBConv blocks × 2, three patch mergings × 2
    assert len(fused) == 11
    assert not any(isinstance(m, fastpath.ConvGELU) for m in lite64.modules())  # the shared encoder is untouched
    calls = []
    op = fastpath._pointwise_conv_op()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fastpath, "_pointwise_conv_op", lambda: (lambda *a: calls.append(a[7]) or op(*a)))
        with torch.no_grad():
            out = fast(sample)
    assert calls == ["gelu"] * 11  # the fused op served every pair
    assert _cos(out, eager_ref) >= 0.999 and torch.allclose(out, eager_ref, atol=1e-3)


def test_conv_gelu_falls_back_where_the_fused_op_cannot_serve():
    """With gradients, or with no fused op, ConvGELU is conv then GELU (same numbers, gradients flow)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1)
    block = fastpath.ConvGELU(conv)
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    out = block(x)
    out.sum().backward()
    assert x.grad is not None and torch.allclose(out, F.gelu(conv(x)))
    with torch.no_grad():
        assert torch.allclose(block(x), F.gelu(conv(x)), atol=1e-5)  # fused (where available), same numbers
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fastpath, "_pointwise_conv_op", lambda: None)
        with torch.no_grad():
            assert torch.equal(block(x), F.gelu(conv(x)))
    with pytest.raises(TypeError, match="nn.Conv2d"):
        fastpath.ConvGELU(torch.nn.Linear(3, 3))


def test_flags_without_effect_are_dropped():
    tiny = build_encoder("tiny")
    assert make_fast(tiny, sdpa=True) is tiny


def test_bench_quick_smoke(capsys):
    from samir.tools.speed_bench import run_bench

    res = run_bench(quick=True, encoder="tiny", paths="eager,channels_last", thread_counts="1")
    text = capsys.readouterr().out
    assert "GFLOP/s" in text and "peak RSS" in text and "16-slice" in text
    assert res["machine"]["matmul_gflops"] > 0
    assert {r["path"] for r in res["rows"]} >= {"eager", "channels_last"}
    assert res["rows"][0]["speedup"] == pytest.approx(1.0)


@pytest.mark.parametrize("symmetric", [True, False])
def test_bench_network_rows_time_what_register_runs(tmp_path, symmetric, monkeypatch):
    import gc
    import json
    import tempfile

    import torch
    from samir.networks import build_samir
    from samir.tools.speed_bench import network_rows

    args = {"encoder": "tiny", "levels": 3, "channels": [4, 8, 8], "head_channels": 8, "head_blocks": 1,
            "flow_width": 8, "symmetric": symmetric}
    torch.manual_seed(0)
    torch.save(build_samir(cache_dir=False, **args).state_dict(), tmp_path / "m.pt")
    (tmp_path / "m.json").write_text(json.dumps({"network": args}))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the rows' embedding cache goes
    rows = network_rows(str(tmp_path / "m.pt"))
    forward = [name for name in rows if name.startswith("network forward")]
    assert len(forward) == (2 if symmetric else 1)  # a symmetric network: both directions, and one
    assert ("both directions" in forward[0]) == symmetric
    for name in forward:
        assert rows[name]().shape == (1, 3, 128, 128, 16)
    assert [p.name.startswith("samir-bench-cache-") for p in scratch.iterdir()] == [True]
    del rows
    gc.collect()
    assert list(scratch.iterdir()) == []  # the cache goes with the rows' network, not left in /tmp


def test_bench_output_row_writes_what_register_writes(tmp_path, monkeypatch):
    import tempfile

    import samir.register as register
    from samir.tools.speed_bench import output_rows

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    written = []
    real = register.write_outputs

    def spy(folder, *args, **kwargs):
        real(folder, *args, **kwargs)
        written.extend(sorted(os.listdir(folder)))

    monkeypatch.setattr(register, "write_outputs", spy)
    (name, write), = output_rows((20, 18, 6)).items()
    assert "20×18×6" in name
    write()
    assert written == ["ddf_voxels.nii.gz", "displacement_lps_mm.nii.gz", "warped_image.nii.gz", "warped_label.nii.gz"]
    assert not os.listdir(tmp_path)  # the row's folder is removed
