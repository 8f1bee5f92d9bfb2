"""SliceEncoder: shapes per axis, feature grid, padding cropped, blank slices, gradients."""

from __future__ import annotations

import torch
from parameterized import parameterized
from samir.encoders import SliceEncoder, build_encoder, feature_grid, normalise_slices


def _encoder(**kw):
    return SliceEncoder(build_encoder("tiny", image_size=kw.pop("image_size", 64)), **kw)


@parameterized.expand(
    [
        ((32, 32, 4), -1, (16, 16, 4)),
        ((40, 30, 5), -1, (16, 12, 5)),
        ((30, 40, 3), 2, (12, 16, 3)),
        ((64, 128, 2), -1, (8, 16, 2)),
        ((12, 20, 16), 0, (12, 16, 13)),
        ((12, 20, 16), 1, (12, 20, 16)),
        ((20, 6, 16), -2, (16, 6, 13)),
        ((10, 9, 7), -3, (10, 16, 12)),
    ]
)
def test_shapes(spatial, axis, expected):
    se = _encoder(axis=axis, batch_size=3)
    vol = torch.rand(2, 1, *spatial)
    out = se(vol)
    assert out.shape == (2, 256, *expected)
    assert se.output_shape(spatial) == expected
    assert out.dtype == torch.float32 and not out.requires_grad


@parameterized.expand([((128, 128), 256, 4, (64, 64)), ((128, 128), 128, 4, (32, 32)), ((128, 96), 256, 4, (64, 48)),
                       ((100, 70), 1024, 16, (64, 45)), ((1, 50), 64, 4, (1, 16))])
def test_feature_grid(in_plane, size, stride, expected):
    assert feature_grid(in_plane, size, stride) == expected


def test_normalise_slices():
    x = torch.stack([torch.linspace(-5, 5, 100).view(10, 10), torch.full((10, 10), 3.0)])
    y, blank = normalise_slices(x, (1.0, 99.0))
    assert blank.tolist() == [False, True]
    assert y[0].min() == 0 and y[0].max() == 1 and torch.all(y[1] == 0)
    y2, _ = normalise_slices(x, None)
    assert torch.allclose(y2[0].flatten(), torch.linspace(0, 1, 100), atol=1e-6)


def test_padding_is_cropped():
    """Features of a 64×40 slice agree with those of the same slice zero-padded to 64×64."""
    torch.manual_seed(0)
    img = torch.zeros(64, 40, 3)
    img[8:56, 6:34] = torch.rand(48, 28, 3) + 1.0  # anatomy on a zero background
    padded = torch.zeros(64, 64, 3)
    padded[:, :40] = img
    se = _encoder(clip_percentiles=None)
    a = se(img[None, None])  # (1, C, 16, 10, 3)
    b = se(padded[None, None])  # (1, C, 16, 16, 3)
    assert a.shape[2:4] == (16, 10) and b.shape[2:4] == (16, 16)
    cos = torch.nn.functional.cosine_similarity(a, b[:, :, :, :10], dim=1)
    assert cos[:, :, :9].min() > 0.99  # away from the right edge (the tiny encoder's receptive field)


def test_blank_slices_are_exact_and_skipped():
    vol = torch.rand(1, 1, 32, 24, 6)
    vol[..., 1] = 0
    vol[..., 4] = 7.5
    fast, full = _encoder(skip_blank=True), _encoder(skip_blank=False)
    a, b = fast(vol), full(vol)
    assert torch.allclose(a, b, atol=1e-6)
    assert (fast.slices_encoded, fast.slices_skipped) == (4, 2)
    assert full.slices_encoded == 6


@parameterized.expand([(1,), (4,), (16,)])
def test_batch_size_does_not_change_features(batch_size):
    torch.manual_seed(1)
    vol = torch.rand(2, 1, 24, 24, 5)
    ref = _encoder(batch_size=5)(vol)
    assert torch.allclose(_encoder(batch_size=batch_size)(vol), ref, atol=1e-5)
    # each batch item is encoded on its own
    assert torch.allclose(_encoder()(vol[1:]), ref[1:], atol=1e-5)


def test_gradients_never_reach_the_encoder():
    se = _encoder()
    head = torch.nn.Conv3d(256, 2, 1)
    parent = torch.nn.ModuleDict({"enc": se, "head": head})
    parent.train()
    assert not se.encoder.training
    vol = torch.rand(1, 1, 16, 16, 3, requires_grad=True)
    loss = head(se(vol)).square().mean()
    loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in se.encoder.parameters())
    assert vol.grad is None
    # frozen weights stay out of the parent's state dict and parameters
    assert not any(k.startswith("enc.") for k in parent.state_dict())
    assert len(list(se.parameters())) == 0


def test_bad_arguments():
    import pytest

    with pytest.raises(ValueError, match="axis"):
        _encoder(axis=3)
    with pytest.raises(ValueError, match="clip_percentiles"):
        _encoder(clip_percentiles=(99, 1))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W, D\)"):
        _encoder()(torch.rand(1, 2, 8, 8, 2))


def test_warm_up_runs_one_batch():
    se = _encoder(batch_size=2)
    assert se.warm_up() >= 0.0


def test_a_pair_asked_for_twice_is_encoded_once_without_a_cache():
    """The network and then the refinement ask for the same two volumes: kept in memory, not encoded again."""
    enc = SliceEncoder(build_encoder("tiny"), cache=False)
    a, b, c = (torch.rand(1, 1, 24, 20, 3) for _ in range(3))
    fa = enc(a)
    enc(b)
    n = enc.slices_encoded
    assert torch.equal(enc(a), fa) and enc.slices_encoded == n  # from memory
    enc(b)
    enc(c)  # the oldest of the pair drops out: a is encoded again
    enc(a)
    assert enc.slices_encoded == n + 6


def test_a_batch_of_volumes_is_encoded_side_by_side_with_the_same_numbers(tmp_path):
    """A pair given as one batch is encoded in parallel threads on a CPU (one torch thread each): the same
    features as one volume at a time, each volume once (a volume repeated in the batch too), the slice
    counters exact, and torch's thread count restored."""
    torch.manual_seed(3)
    vols = torch.rand(3, 1, 24, 20, 4)
    vols[2] = vols[0]  # the same volume twice
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        enc = SliceEncoder(build_encoder("tiny"), cache=False)
        together = enc(vols)
        assert torch.get_num_threads() == 2
        assert enc.slices_encoded == 8  # 2 distinct volumes × 4 slices
        one_by_one = torch.cat([SliceEncoder(build_encoder("tiny"), cache=False)(v[None]) for v in vols])
        assert torch.equal(together, one_by_one)
        cached = SliceEncoder(build_encoder("tiny"), cache=tmp_path)
        assert torch.equal(cached(vols), together) and cached.slices_encoded == 8
        assert torch.equal(cached(vols), together) and cached.slices_encoded == 8  # all from the disk cache
    finally:
        torch.set_num_threads(threads)
