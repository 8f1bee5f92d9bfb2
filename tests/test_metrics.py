"""Metrics against analytic values: Dice, HD95 (mm), Jacobian determinant, folding, SDlogJ."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from parameterized import parameterized
from samir.metrics import (
    dice_per_label,
    folding_fraction,
    hd95_per_label,
    jacobian_determinant,
    registration_metrics,
    sdlogj,
)
from samir.spatial import identity_grid

SHAPE = (20, 18, 16)


def _cube(lo, hi, shape=SHAPE, value=1) -> torch.Tensor:
    m = torch.zeros(shape, dtype=torch.long)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = value
    return m


def _scaling(s: float, shape=SHAPE) -> torch.Tensor:
    x = identity_grid(shape, dtype=torch.float64)
    c = torch.tensor([(n - 1) / 2 for n in shape], dtype=torch.float64).view(3, 1, 1, 1)
    return ((s - 1) * (x - c))[None]


class TestDice:
    def test_identical_is_one(self):
        a = _cube((2, 2, 2), (10, 10, 10)) + _cube((12, 3, 3), (18, 9, 9), value=2)
        assert dice_per_label(a, a, {1: "RV", 2: "LV"}) == {"RV": 1.0, "LV": 1.0}

    def test_disjoint_is_zero(self):
        a, b = _cube((0, 0, 0), (5, 5, 5)), _cube((10, 10, 10), (15, 15, 15))
        assert dice_per_label(a, b, [1]) == {"1": 0.0}

    @parameterized.expand([("shift_2_of_10", 2, 10), ("shift_3_of_8", 3, 8), ("shift_0", 0, 6)])
    def test_known_overlap(self, _name, k, n):
        a = _cube((2, 2, 2), (2 + n, 2 + n, 2 + n))
        b = torch.roll(a, k, dims=0)
        # overlap (n - k) n^2 of 2 n^3 voxels
        assert dice_per_label(b, a, [1])["1"] == pytest.approx((n - k) / n, abs=1e-6)

    def test_layouts_and_empty_labels(self):
        a = _cube((2, 2, 2), (8, 8, 8))
        b = _cube((2, 2, 2), (8, 8, 5))
        ref = (8 - 2) ** 2 * 3 * 2 / ((8 - 2) ** 3 + (8 - 2) ** 2 * 3)
        for p, t in [(b, a), (b[None, None], a[None, None]), (b[None].numpy(), a[None].numpy())]:
            d = dice_per_label(p, t, {0: "bg", 1: "fg", 3: "absent"})
            assert d["fg"] == pytest.approx(ref, abs=1e-6)
            assert math.isnan(d["absent"])  # absent from both
            assert 0 < d["bg"] < 1
        # absent from the target only: 0, not nan
        assert dice_per_label(a, torch.zeros_like(a), [1])["1"] == 0.0

    def test_batch_mean(self):
        a = _cube((2, 2, 2), (12, 12, 12))
        b = torch.roll(a, 5, dims=0)
        pred = torch.stack([a, b])[:, None]
        target = torch.stack([a, a])[:, None]
        assert dice_per_label(pred, target, [1])["1"] == pytest.approx((1.0 + 0.5) / 2, abs=1e-6)

    @parameterized.expand(
        [
            ("shape_mismatch", torch.zeros(4, 4, 4), torch.zeros(4, 4, 5), [1]),
            ("two_channels", torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2, 4, 4, 4), [1]),
            ("negative", -torch.ones(4, 4, 4), torch.zeros(4, 4, 4), [1]),
            ("fractional", torch.full((4, 4, 4), 0.5), torch.zeros(4, 4, 4), [1]),
            ("labels_type", torch.zeros(4, 4, 4), torch.zeros(4, 4, 4), 1),
        ]
    )
    def test_errors(self, _name, p, t, labels):
        with pytest.raises(ValueError, match="expected"):
            dice_per_label(p, t, labels)


class TestHD95:
    @parameterized.expand(
        [
            ("axis0_k2_iso", 0, 2, (1.0, 1.0, 1.0)),
            ("axis2_k3_aniso", 2, 3, (1.5, 1.0, 2.0)),
            ("axis1_k1_aniso", 1, 1, (0.7, 1.25, 3.0)),
        ]
    )
    def test_shifted_mask(self, _name, axis, k, spacing):
        a = _cube((4, 4, 4), (14, 13, 11))
        b = torch.roll(a, k, dims=axis)
        h = hd95_per_label(b, a, {1: "organ"}, spacing=spacing)["organ"]
        assert h == pytest.approx(k * spacing[axis], rel=0.05)

    def test_identical_zero_and_voxel_units(self):
        a = _cube((4, 4, 4), (14, 13, 11))
        assert hd95_per_label(a, a, [1])["1"] == 0.0
        assert hd95_per_label(torch.roll(a, 2, dims=1), a, [1])["1"] == pytest.approx(2.0, rel=0.05)

    def test_empty(self):
        a = _cube((4, 4, 4), (14, 13, 11))
        out = hd95_per_label(a, torch.zeros_like(a), [1, 2], spacing=(1, 1, 1))
        assert out["1"] == math.inf and math.isnan(out["2"])

    def test_bad_spacing(self):
        a = _cube((4, 4, 4), (14, 13, 11))
        with pytest.raises(ValueError, match="expected"):
            hd95_per_label(a, a, [1], spacing=(1.0, 1.0))


class TestJacobian:
    def test_identity(self):
        zero = torch.zeros(1, 3, *SHAPE)
        torch.testing.assert_close(jacobian_determinant(zero), torch.ones(1, *SHAPE, dtype=torch.float64))
        assert folding_fraction(zero) == 0.0
        assert sdlogj(zero) == 0.0

    @parameterized.expand([("shrink", 0.8), ("grow", 1.25), ("collapse", 0.0)])
    def test_uniform_scaling(self, _name, s):
        det = jacobian_determinant(_scaling(s))
        torch.testing.assert_close(det, torch.full_like(det, s**3))  # exact everywhere (linear field)
        assert sdlogj(_scaling(s)) == pytest.approx(0.0, abs=1e-9)
        assert folding_fraction(_scaling(s)) == (1.0 if s == 0 else 0.0)

    def test_known_nonuniform(self):
        # u(x) = (a x0^2 / 2, 0, 0): det = 1 + a x0, exact for central differences in the interior
        a = 0.02
        x = identity_grid(SHAPE, dtype=torch.float64)
        ddf = torch.zeros(1, 3, *SHAPE, dtype=torch.float64)
        ddf[0, 0] = a * x[0] ** 2 / 2
        det = jacobian_determinant(ddf)[0, 1:-1, 1:-1, 1:-1]
        torch.testing.assert_close(det, (1 + a * x[0])[1:-1, 1:-1, 1:-1])
        logj = torch.log(1 + a * x[0])[2:-2, 2:-2, 2:-2]
        assert sdlogj(ddf) == pytest.approx(float(logj.std(correction=0)), rel=1e-9)

    def test_folding_field(self):
        # u0 = -2 x0 on the slab x0 in [8, 12): det = 1 - 2 < 0 there
        x = identity_grid(SHAPE, dtype=torch.float64)
        ddf = torch.zeros(1, 3, *SHAPE, dtype=torch.float64)
        ddf[0, 0] = torch.where((x[0] >= 8) & (x[0] < 12), -2.0 * (x[0] - 8), torch.zeros_like(x[0]))
        f = folding_fraction(ddf, crop=2)
        assert f > 0
        det = jacobian_determinant(ddf)[0, 2:-2, 2:-2, 2:-2]
        assert f == pytest.approx(float((det <= 0).double().mean()))
        # Learn2Reg clips det to [1e-9, 1e9] before the log, so SDlogJ stays finite
        assert math.isfinite(sdlogj(ddf)) and sdlogj(ddf) > 1.0

    def test_crop_and_errors(self):
        ddf = _scaling(0.9)
        assert folding_fraction(ddf, crop=0) == 0.0
        with pytest.raises(ValueError, match="expected"):
            folding_fraction(ddf, crop=9)  # 2 * 9 >= 16
        with pytest.raises(ValueError, match="expected"):
            jacobian_determinant(torch.zeros(1, 2, 4, 4, 4))


class TestRegistrationMetrics:
    def test_all_keys(self):
        fixed = _cube((4, 4, 4), (14, 13, 11)) + _cube((15, 2, 2), (19, 6, 6), value=2)
        warped = torch.roll(fixed, 1, dims=0)
        out = registration_metrics(_scaling(1.0), warped[None, None], fixed[None, None], labels={1: "LV", 2: "RV"}, spacing=(2.0, 1.0, 1.0))
        assert set(out) == {"dice_LV", "dice_RV", "dice_mean", "hd95_LV", "hd95_RV", "hd95_mean", "folding_pct", "sdlogj"}
        assert out["dice_mean"] == pytest.approx((out["dice_LV"] + out["dice_RV"]) / 2)
        assert out["hd95_LV"] == pytest.approx(2.0, rel=0.05)
        assert out["folding_pct"] == 0.0 and out["sdlogj"] == 0.0
        # hd95=False leaves HD95 out (a table then shows nan, never voxel distances under an "mm" header)
        quick = registration_metrics(_scaling(1.0), warped[None, None], fixed[None, None], labels={1: "LV", 2: "RV"}, hd95=False)
        assert set(quick) == {"dice_LV", "dice_RV", "dice_mean", "folding_pct", "sdlogj"}
        assert quick["dice_mean"] == out["dice_mean"]

    def test_default_labels_and_field_only(self):
        fixed = _cube((4, 4, 4), (14, 13, 11), value=3)
        out = registration_metrics(np.zeros((1, 3, *SHAPE)), fixed, fixed)
        assert out["dice_3"] == 1.0 and out["hd95_3"] == 0.0
        assert set(registration_metrics(torch.zeros(1, 3, *SHAPE))) == {"folding_pct", "sdlogj"}
        with pytest.raises(ValueError, match="expected"):
            registration_metrics(torch.zeros(1, 3, *SHAPE), fixed_label=fixed)
