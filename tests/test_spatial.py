"""Spatial core: warp, compose, velocity integration and DDF resizing on known fields (voxel units)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from parameterized import parameterized
from samir.spatial import (
    compose,
    identity_grid,
    invert_ddf,
    resize_ddf,
    shrink_factor,
    velocity_to_ddf,
    warp,
    warp_image,
    warp_label,
)

SHAPE = (18, 16, 12)


def _field(kind: str, scale: float = 1.0, shape=SHAPE) -> torch.Tensor:
    """Known voxel DDF (1, 3, *shape)."""
    x = identity_grid(shape, dtype=torch.float64)
    c = torch.tensor([(s - 1) / 2 for s in shape], dtype=torch.float64).view(3, 1, 1, 1)
    h, w, d = shape
    if kind == "translation":
        u = torch.tensor([1.25, -0.5, 0.75], dtype=torch.float64).view(3, 1, 1, 1).expand(3, *shape)
    elif kind == "rotation":  # 8 degrees about axis 2 through the centre
        t = math.radians(8.0)
        r = torch.tensor([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        u = torch.einsum("ij,jhwd->ihwd", r - torch.eye(3, dtype=torch.float64), x - c)
    elif kind == "sinusoid":
        u = torch.stack(
            [
                1.5 * torch.sin(2 * math.pi * x[1] / w),
                -1.0 * torch.cos(2 * math.pi * x[2] / d),
                0.8 * torch.sin(2 * math.pi * x[0] / h + 0.3),
            ]
        )
    else:
        raise KeyError(kind)
    return (scale * u)[None].float().contiguous()


def _interior(ddf: torch.Tensor, margin: int = 2) -> torch.Tensor:
    """(H, W, D) mask: at least ``margin`` from the border and x + u(x) at least 1 voxel inside."""
    shape = ddf.shape[2:]
    x = identity_grid(tuple(shape))
    y = x + ddf[0]
    hi = torch.tensor(shape).view(3, 1, 1, 1)
    return ((x >= margin) & (x <= hi - 1 - margin)).all(0) & ((y >= 1) & (y <= hi - 2)).all(0)


FIELDS = [("translation",), ("rotation",), ("sinusoid",)]


class TestWarp:
    @parameterized.expand(FIELDS)
    def test_coordinates_are_sampled_at_x_plus_u(self, kind):
        ddf = _field(kind)
        coords = identity_grid(SHAPE)[None]
        out = warp_image(coords, ddf)
        m = _interior(ddf)
        err = (out - (coords + ddf))[0][:, m].abs().max()
        assert m.float().mean() > 0.3
        assert float(err) < 1e-4

    def test_integer_translation_is_a_shift(self):
        img = torch.rand(1, 2, *SHAPE)
        ddf = torch.zeros(1, 3, *SHAPE)
        ddf[:, 0] = 2.0
        ddf[:, 2] = -1.0
        out = warp_image(img, ddf)
        # out[x] = img[x + (2, 0, -1)]
        torch.testing.assert_close(out[:, :, :-2, :, 1:], img[:, :, 2:, :, :-1])

    def test_identity_returns_image(self):
        img = torch.rand(2, 3, *SHAPE)
        zero = torch.zeros(2, 3, *SHAPE)
        torch.testing.assert_close(warp_image(img, zero), img, atol=1e-5, rtol=0)
        lab = torch.randint(0, 4, (2, 1, *SHAPE), dtype=torch.uint8)
        out = warp_label(lab, zero)
        assert out.dtype == torch.uint8
        assert torch.equal(out, lab)

    def test_mixed_dtypes(self):
        img = torch.rand(1, 1, *SHAPE)
        ddf = _field("translation").double()
        out = warp_image(img, ddf)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, warp_image(img, ddf.float()))
        assert warp_image(img.double(), ddf.float()).dtype == torch.float64
        assert warp_label(torch.zeros(1, 1, *SHAPE, dtype=torch.int16), ddf).dtype == torch.int16

    def test_label_warp_is_nearest(self):
        lab = torch.randint(0, 5, (1, 1, *SHAPE), dtype=torch.int64)
        out = warp_label(lab, _field("sinusoid"))
        assert out.dtype == torch.int64
        assert set(out.unique().tolist()) <= set(lab.unique().tolist())

    @parameterized.expand(
        [
            ("ddf_channels", torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 2, 4, 4, 4)),
            ("image_4d", torch.zeros(1, 4, 4, 4), torch.zeros(1, 3, 4, 4, 4)),
            ("size_mismatch", torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 3, 4, 4, 5)),
            ("batch_mismatch", torch.zeros(2, 1, 4, 4, 4), torch.zeros(1, 3, 4, 4, 4)),
        ]
    )
    def test_bad_shapes(self, _name, img, ddf):
        with pytest.raises(ValueError, match="expected|must share"):
            warp(img, ddf)


class TestCompose:
    @parameterized.expand([("rot_sin", "rotation", "sinusoid"), ("sin_trans", "sinusoid", "translation"), ("trans_rot", "translation", "rotation")])
    def test_compose_equals_sequential_warps(self, _name, outer_kind, inner_kind):
        outer, inner = _field(outer_kind, 0.5), _field(inner_kind, 0.5)
        coords = identity_grid(SHAPE)[None]
        sequential = warp_image(warp_image(coords, outer), inner)
        composed = warp_image(coords, compose(outer, inner))
        both = compose(outer, inner)
        m = _interior(both, margin=3) & _interior(inner, margin=3)
        assert m.float().mean() > 0.2
        assert float((sequential - composed)[0][:, m].abs().max()) < 1e-3

    def test_compose_matches_analytic_point_map(self):
        # inner rotation about the centre, outer translation: u = inner(x) + t exactly
        inner, outer = _field("rotation"), _field("translation")
        out = compose(outer, inner)
        m = _interior(inner, margin=2)
        torch.testing.assert_close(out[0][:, m], (inner + outer)[0][:, m], atol=1e-4, rtol=0)
        # inner translation, outer smooth: u = t + outer(x + t)
        t = _field("translation")
        x = identity_grid(SHAPE, dtype=torch.float64) + t[0].double()
        h, w, d = SHAPE
        outer_at = torch.stack(
            [
                0.5 * 1.5 * torch.sin(2 * math.pi * x[1] / w),
                -0.5 * torch.cos(2 * math.pi * x[2] / d),
                0.5 * 0.8 * torch.sin(2 * math.pi * x[0] / h + 0.3),
            ]
        )
        out = compose(_field("sinusoid", 0.5), t)[0].double()
        m = _interior(t, margin=2)
        # trilinear interpolation of a smooth field: small, bounded error
        assert float((out - (t[0].double() + outer_at))[:, m].abs().max()) < 0.05


class TestVelocity:
    def test_zero_velocity_gives_zero(self):
        assert float(velocity_to_ddf(torch.zeros(1, 3, *SHAPE)).abs().max()) == 0.0

    def test_constant_velocity_gives_the_constant(self):
        v = torch.zeros(1, 3, *SHAPE)
        v[:, 0], v[:, 1], v[:, 2] = 0.3, -0.2, 0.1
        torch.testing.assert_close(velocity_to_ddf(v), v, atol=1e-5, rtol=0)

    def test_inverse_consistency(self):
        v = _field("sinusoid", 0.5)
        fwd, bwd = velocity_to_ddf(v), velocity_to_ddf(-v)
        m = _interior(fwd, margin=3)
        assert float(compose(bwd, fwd)[0][:, m].abs().max()) < 0.05

    def test_bad_shape(self):
        with pytest.raises(ValueError, match="expected"):
            velocity_to_ddf(torch.zeros(1, 2, 4, 4, 4))


class TestInvert:
    def test_inverse_of_a_smooth_field_composes_to_zero(self):
        u = velocity_to_ddf(_field("sinusoid", 0.5))  # up to 0.75 voxel
        m = _interior(u, margin=3)
        inv = invert_ddf(u, iterations=10)
        err = float(compose(inv, u)[0][:, m].abs().max())  # x ↦ x + u(x) ↦ back to x
        naive = float(compose(-u, u)[0][:, m].abs().max())  # -u: the first-order guess
        assert err < 0.05 and err < naive / 4  # what is left is trilinear interpolation error

    def test_matches_the_exact_inverse_of_a_velocity_field(self):
        v = _field("sinusoid", 0.5)
        m = _interior(v, margin=3)
        exact = velocity_to_ddf(-v)
        got = invert_ddf(velocity_to_ddf(v))
        assert float((got - exact)[0][:, m].abs().max()) < 0.02

    def test_translation_inverts_to_the_opposite_translation(self):
        u = torch.zeros(1, 3, *SHAPE, dtype=torch.float64)
        u[:, 0], u[:, 2] = 1.5, -0.5
        torch.testing.assert_close(invert_ddf(u), -u)

    def test_bad_shape(self):
        with pytest.raises(ValueError, match="expected"):
            invert_ddf(torch.zeros(1, 2, 4, 4, 4))


class TestResize:
    @parameterized.expand([("up", (8, 8, 8), (16, 12, 8)), ("down", (16, 12, 8), (8, 6, 4))])
    def test_constant_field_units(self, _name, src, dst):
        ddf = torch.ones(1, 3, *src) * torch.tensor([2.0, -1.0, 0.5]).view(1, 3, 1, 1, 1)
        out = resize_ddf(ddf, dst)
        assert out.shape == (1, 3, *dst)
        ratio = torch.tensor([t / s for s, t in zip(src, dst)]).view(1, 3, 1, 1, 1)
        torch.testing.assert_close(out, (ddf.mean((2, 3, 4), keepdim=True) * ratio).expand_as(out), atol=1e-5, rtol=0)

    def test_linear_field_same_physical_map(self):
        # u(x) = a (x - c) on the coarse grid; with align_corners=False the fine index xf sits at
        # coarse position (xf + 0.5) / f - 0.5, and fine voxels are f times smaller.
        src, f = (8, 8, 8), 2
        a = 0.1
        xc = identity_grid(src)
        ddf = (a * (xc - 3.5))[None]
        out = resize_ddf(ddf, tuple(s * f for s in src))
        xf = identity_grid(tuple(s * f for s in src))
        expected = f * a * ((xf + 0.5) / f - 0.5 - 3.5)
        inner = (slice(None),) + (slice(2, -2),) * 3
        torch.testing.assert_close(out[0][inner], expected[inner], atol=1e-5, rtol=0)

    def test_same_size_is_identity(self):
        ddf = torch.randn(1, 3, 4, 5, 6)
        assert resize_ddf(ddf, (4, 5, 6)) is ddf
        np.testing.assert_array_equal(resize_ddf(ddf, [4, 5, 6]).numpy(), ddf.numpy())


@pytest.mark.parametrize(
    "size,factor,min_size,expected",
    [
        (128, 4, 16, 4),  # 128 / 4 = 32 voxels: allowed
        (16, 4, 16, 1),  # a 16-slice stack is not shrunk
        (32, 4, 16, 2),  # halved once: 32 / 2 = 16
        (40, 8, 8, 4),  # 40 / 8 = 5 < 8 -> 4 (10 voxels)
        (7, 2, 8, 1),  # already below min_size
        (64, 1, 8, 1),
    ],
)
def test_shrink_factor(size, factor, min_size, expected):
    f = shrink_factor(size, factor, min_size)
    assert f == expected
    assert f == 1 or size / f >= min_size
