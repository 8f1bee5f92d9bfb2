"""Exports on the fixed grid: atomic writes, Learn2Reg file and the LPS-millimetre field for ITK/Slicer.

The key test warps the index-coordinate maps of the grid three ways, so that agreement is in voxels:
(a) samir.spatial.warp_image, (b) scipy map_coordinates on the Learn2Reg file, (c) SimpleITK
Resample of the moving NIfTI with the exported field as a DisplacementFieldTransform.
"""

from __future__ import annotations

import math
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from parameterized import parameterized
from samir.io import (
    FIELD_GZIP_LEVEL,
    atomic_write,
    ddf_to_mm_lps,
    l2r_displacement_array,
    l2r_displacement_name,
    lps_geometry,
    read_displacement_lps,
    read_l2r_displacement,
    save_nifti,
    write_displacement_lps,
    write_l2r_displacement,
)
from samir.spatial import identity_grid, warp_image
from scipy.ndimage import map_coordinates

SHAPE = (20, 17, 13)
MEASURED: dict = {}  # max disagreement per (affine, field, pair), voxels; read by the report


def _rot(axis, deg) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = math.radians(deg)
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * k @ k


def _affine(m, origin) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = m
    a[:3, 3] = origin
    return a


# voxel-to-RAS affines of the fixed (= moving) grid
AFFINES = {
    "identity": np.eye(4),
    "anisotropic": _affine(np.diag([0.8, 1.5, 3.0]), [-10.0, 5.0, 20.0]),
    "flipped": _affine(np.diag([-1.2, 1.0, -2.5]), [30.0, -4.0, 7.0]),
    "oblique": _affine(_rot([1, 2, 3], 25) @ np.diag([1.1, 0.9, 2.0]), [3.0, -7.0, 11.0]),
    "permuted_flipped": _affine(np.array([[0.0, 0.0, 2.0], [-1.5, 0.0, 0.0], [0.0, 1.2, 0.0]]), [5.0, 60.0, -30.0]),
}


def _field(kind: str) -> torch.Tensor:
    """Known voxel DDF (1, 3, *SHAPE)."""
    x = identity_grid(SHAPE, dtype=torch.float64)
    c = torch.tensor([(s - 1) / 2 for s in SHAPE], dtype=torch.float64).view(3, 1, 1, 1)
    if kind == "translation":
        u = torch.tensor([1.3, -0.7, 0.45], dtype=torch.float64).view(3, 1, 1, 1).expand(3, *SHAPE)
    elif kind == "rotation":
        r = torch.as_tensor(_rot([0.2, 0.3, 1.0], 9.0))
        u = torch.einsum("ij,jhwd->ihwd", r - torch.eye(3, dtype=torch.float64), x - c)
    elif kind == "sinusoid":
        h, w, d = SHAPE
        u = torch.stack(
            [
                1.6 * torch.sin(2 * math.pi * x[1] / w) * torch.cos(2 * math.pi * x[2] / d),
                -1.2 * torch.sin(2 * math.pi * x[2] / d + 0.5),
                0.9 * torch.cos(2 * math.pi * x[0] / h) + 0.3,
            ]
        )
    else:
        raise KeyError(kind)
    return u[None].float().contiguous()


CASES = [(f"{a}_{f}", a, f) for a in AFFINES for f in ("translation", "rotation", "sinusoid")]


def _interior(ddf: torch.Tensor) -> np.ndarray:
    """Voxels at least 2 from the border whose target x + u(x) is at least 1 voxel inside the grid."""
    x = identity_grid(SHAPE).numpy()
    y = x + ddf[0].numpy()
    hi = np.array(SHAPE).reshape(3, 1, 1, 1)
    ok = np.all((x >= 2) & (x <= hi - 3), axis=0) & np.all((y >= 1) & (y <= hi - 2), axis=0)
    return ok


class TestThreeWarps:
    @parameterized.expand(CASES)
    def test_warps_agree(self, _name, affine_key, field_kind):
        import tempfile

        affine = AFFINES[affine_key]
        ddf = _field(field_kind)
        assert float(ddf.abs().max()) > 0.5  # a real displacement, not a trivial one
        coords = identity_grid(SHAPE)  # moving image: its own index coordinates, 3 channels
        mask = _interior(ddf)
        assert mask.mean() > 0.2

        # (a) our warp
        ours = warp_image(coords[None], ddf)[0].numpy()

        with tempfile.TemporaryDirectory() as tmp:
            # (b) Learn2Reg file + scipy map_coordinates (moving sampled at x + u)
            l2r_path = os.path.join(tmp, "disp_0002_0001.nii.gz")
            write_l2r_displacement(l2r_path, ddf, affine)
            disp = nib.load(l2r_path).get_fdata()
            assert disp.shape == (*SHAPE, 3)
            ident = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"))
            pts = ident + disp.transpose(3, 0, 1, 2)
            scipy_out = np.stack([map_coordinates(coords[c].numpy(), pts, order=1) for c in range(3)])

            # (c) SimpleITK: moving NIfTI (with its affine) resampled through the exported mm LPS field
            field_path = os.path.join(tmp, "field_lps.nii.gz")
            write_displacement_lps(field_path, ddf, affine)
            img = sitk.ReadImage(field_path)
            assert img.GetPixelID() == sitk.sitkVectorFloat32 and img.GetNumberOfComponentsPerPixel() == 3
            transform = sitk.DisplacementFieldTransform(sitk.ReadImage(field_path, sitk.sitkVectorFloat64))
            itk_out = []
            for c in range(3):
                mpath = os.path.join(tmp, f"moving_{c}.nii.gz")
                save_nifti(mpath, coords[c].numpy(), affine, dtype=np.float32)
                moving = sitk.ReadImage(mpath, sitk.sitkFloat64)
                res = sitk.Resample(moving, moving, transform, sitk.sitkLinear, float("nan"), sitk.sitkFloat64)
                itk_out.append(sitk.GetArrayFromImage(res).transpose(2, 1, 0))
            itk_out = np.stack(itk_out)

        expected = coords.numpy() + ddf[0].numpy()  # exact: the sampled coordinates are x + u(x)
        errs = {
            "ours_vs_exact": np.abs(ours - expected)[:, mask].max(),
            "l2r_vs_ours": np.abs(scipy_out - ours)[:, mask].max(),
            "itk_vs_ours": np.abs(itk_out - ours)[:, mask].max(),
            "itk_vs_l2r": np.abs(itk_out - scipy_out)[:, mask].max(),
        }
        for key, err in errs.items():
            MEASURED[(affine_key, field_kind, key)] = float(err)
            assert err < 0.1, f"{affine_key}/{field_kind}: {key} max disagreement {err:.4f} voxel"

    def test_h5_transform_matches_image_field(self, tmp_path):
        affine = AFFINES["oblique"]
        ddf = _field("sinusoid")
        write_displacement_lps(tmp_path / "f.nii.gz", ddf, affine)
        write_displacement_lps(tmp_path / "f.h5", ddf, affine)
        t_img = read_displacement_lps(tmp_path / "f.nii.gz")
        t_h5 = read_displacement_lps(tmp_path / "f.h5")
        assert isinstance(sitk.ReadTransform(str(tmp_path / "f.h5")), sitk.DisplacementFieldTransform)
        origin, spacing, direction = lps_geometry(affine)
        ref = sitk.Image([int(s) for s in SHAPE], sitk.sitkFloat32)
        ref.SetOrigin(origin)
        ref.SetSpacing(spacing)
        ref.SetDirection(direction)
        for idx in [(3, 4, 5), (10, 8, 6), (15, 12, 9)]:
            p = ref.TransformIndexToPhysicalPoint(idx)
            np.testing.assert_allclose(t_img.TransformPoint(p), t_h5.TransformPoint(p), atol=1e-5)  # the image is float32, the .h5 float64
            # the ITK transform maps the fixed point x to the moving point x + u(x), in mm LPS
            moved_idx = np.array(idx, float) + ddf[0, :, idx[0], idx[1], idx[2]].double().numpy()
            np.testing.assert_allclose(
                t_img.TransformPoint(p), ref.TransformContinuousIndexToPhysicalPoint(moved_idx.tolist()), atol=1e-4
            )


class TestGeometry:
    @parameterized.expand([(k,) for k in AFFINES])
    def test_lps_geometry_matches_itk_reader(self, key):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "img.nii.gz")
            save_nifti(path, np.zeros(SHAPE, np.float32), AFFINES[key])
            img = sitk.ReadImage(path)
        origin, spacing, direction = lps_geometry(AFFINES[key])
        np.testing.assert_allclose(img.GetOrigin(), origin, atol=1e-4)
        np.testing.assert_allclose(img.GetSpacing(), spacing, atol=1e-4)
        np.testing.assert_allclose(img.GetDirection(), direction, atol=1e-4)

    @parameterized.expand(
        [
            ("identity", np.eye(4), [1.0, 2.0, 3.0], [-1.0, -2.0, 3.0]),
            ("scaled", np.diag([2.0, 3.0, 4.0, 1.0]), [1.0, 1.0, 1.0], [-2.0, -3.0, 4.0]),
            ("flipped", np.diag([-2.0, 1.0, -1.0, 1.0]), [1.0, 0.0, 2.0], [2.0, 0.0, -2.0]),
            ("swapped", np.array([[0.0, 2.0, 0, 9], [3.0, 0, 0, 9], [0, 0, 1.0, 9], [0, 0, 0, 1]]), [1.0, 0.0, 0.0], [0.0, -3.0, 0.0]),
        ]
    )
    def test_ddf_to_mm_lps(self, _name, affine, u_vox, expected_lps):
        ddf = torch.tensor(u_vox).view(1, 3, 1, 1, 1).expand(1, 3, 2, 3, 4)
        out = ddf_to_mm_lps(ddf, affine)
        assert out.shape == (2, 3, 4, 3)
        np.testing.assert_allclose(out[1, 2, 3], expected_lps, atol=1e-12)
        np.testing.assert_allclose(ddf_to_mm_lps(ddf[0].numpy(), affine), out)

    @parameterized.expand(
        [
            ("bad_ddf_channels", lambda: ddf_to_mm_lps(np.zeros((2, 4, 4, 4)), np.eye(4))),
            ("bad_ddf_batch", lambda: ddf_to_mm_lps(np.zeros((2, 3, 4, 4, 4)), np.eye(4))),
            ("nan_ddf", lambda: ddf_to_mm_lps(np.full((3, 4, 4, 4), np.nan), np.eye(4))),
            ("bad_affine", lambda: ddf_to_mm_lps(np.zeros((3, 4, 4, 4)), np.eye(3))),
            ("singular_affine", lambda: ddf_to_mm_lps(np.zeros((3, 4, 4, 4)), np.diag([1.0, 0.0, 1.0, 1.0]))),
            ("shear_affine", lambda: lps_geometry(np.array([[1.0, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))),
        ]
    )
    def test_errors(self, _name, fn):
        with pytest.raises(ValueError, match="expected"):
            fn()


class TestLearn2Reg:
    # the current public scorer (MDL-UzL/L2R evaluation.py, commit 8847509): the short name only for
    # modality 0000 -> 0001, the long one for every other pair (same-modality AbdomenCTCT included)
    @parameterized.expand(
        [
            ("same_modality", "AbdomenCTCT_0022_0000.nii.gz", "AbdomenCTCT_0021_0000.nii.gz",
             "disp_0022_0000_0021_0000.nii.gz"),
            ("with_dirs", "/d/imagesTr/AbdomenCTCT_0024_0000.nii.gz", "imagesTs/AbdomenCTCT_0030_0000.nii.gz",
             "disp_0024_0000_0030_0000.nii.gz"),
            ("mod_0_to_1", "LungCT_0001_0000.nii.gz", "LungCT_0001_0001.nii.gz", "disp_0001_0001.nii.gz"),
            ("mod_1_to_0", "ThoraxCBCT_0011_0001.nii.gz", "ThoraxCBCT_0011_0000.nii.gz", "disp_0011_0001_0011_0000.nii.gz"),
            ("mod_0_to_2", "ThoraxCBCT_0011_0000.nii.gz", "ThoraxCBCT_0011_0002.nii.gz", "disp_0011_0000_0011_0002.nii.gz"),
            ("mod_1_to_1", "AbdomenMRCT_0001_0001.nii.gz", "AbdomenMRCT_0002_0001.nii.gz", "disp_0001_0001_0002_0001.nii.gz"),
            ("uncompressed", "OASIS_0395_0000.nii", "OASIS_0396_0000.nii", "disp_0395_0000_0396_0000.nii.gz"),
            ("acdc", "patient001_frame01.nii.gz", "patient001_frame12.nii.gz", None),
            ("one_not_l2r", "AbdomenCTCT_0022_0000.nii.gz", "moving.nii.gz", None),
            ("short_case", "AbdomenCTCT_22_0000.nii.gz", "AbdomenCTCT_0021_0000.nii.gz", None),
        ]
    )
    def test_name(self, _name, fixed, moving, expected):
        assert l2r_displacement_name(fixed, moving) == expected

    # older scorers (e.g. commit 24403cf) read only the short name: short=True
    @parameterized.expand(
        [
            ("same_modality", "AbdomenCTCT_0022_0000.nii.gz", "AbdomenCTCT_0021_0000.nii.gz", "disp_0022_0021.nii.gz"),
            ("mod_0_to_1", "LungCT_0001_0000.nii.gz", "LungCT_0001_0001.nii.gz", "disp_0001_0001.nii.gz"),
            ("mod_1_to_0", "ThoraxCBCT_0011_0001.nii.gz", "ThoraxCBCT_0011_0000.nii.gz", "disp_0011_0011.nii.gz"),
            ("not_l2r", "fixed.nii.gz", "moving.nii.gz", None),
        ]
    )
    def test_short_name_option(self, _name, fixed, moving, expected):
        assert l2r_displacement_name(fixed, moving, short=True) == expected

    def test_file_layout_and_roundtrip(self, tmp_path):
        ddf = _field("sinusoid")
        arr = l2r_displacement_array(ddf)
        assert arr.shape == (*SHAPE, 3) and arr.dtype == np.float32
        np.testing.assert_array_equal(arr[..., 1], ddf[0, 1].numpy())
        path = write_l2r_displacement(tmp_path / "disp_0001_0002.nii.gz", ddf, AFFINES["oblique"])
        img = nib.load(path)
        assert img.shape == (*SHAPE, 3)
        assert img.get_data_dtype() == np.float32
        np.testing.assert_allclose(img.affine, AFFINES["oblique"], atol=1e-5)
        np.testing.assert_array_equal(img.get_fdata(), arr)
        back = read_l2r_displacement(path)
        assert back.shape == (1, 3, *SHAPE)
        torch.testing.assert_close(back, ddf)
        assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


class TestAtomicWrite:
    def test_success_replaces(self, tmp_path):
        target = tmp_path / "sub" / "a.nii.gz"
        with atomic_write(target) as tmp:
            assert tmp.endswith("a.nii.gz") and os.path.dirname(tmp) == str(target.parent)
            with open(tmp, "w") as f:
                f.write("new")
        assert target.read_text() == "new"
        assert os.listdir(target.parent) == ["a.nii.gz"]

    def test_error_keeps_old_and_removes_temp(self, tmp_path):
        target = tmp_path / "a.txt"
        target.write_text("old")
        with pytest.raises(RuntimeError, match="boom"):
            with atomic_write(target) as tmp:
                with open(tmp, "w") as f:
                    f.write("half")
                raise RuntimeError("boom")
        assert target.read_text() == "old"
        assert os.listdir(tmp_path) == ["a.txt"]

    def test_no_file_written_is_an_error(self, tmp_path):
        with pytest.raises(FileNotFoundError):
            with atomic_write(tmp_path / "a.txt"):
                pass
        assert os.listdir(tmp_path) == []

    @parameterized.expand([("uint8", np.uint8), ("int16", np.int16), ("float32", np.float32)])
    def test_save_nifti_roundtrip(self, _name, dtype):
        import tempfile

        arr = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 7).astype(np.float64)
        with tempfile.TemporaryDirectory() as tmp:
            path = save_nifti(os.path.join(tmp, "x.nii.gz"), torch.as_tensor(arr), AFFINES["permuted_flipped"], dtype=dtype)
            img = nib.load(path)
            assert img.get_data_dtype() == np.dtype(dtype)
            np.testing.assert_array_equal(np.asarray(img.dataobj), arr.astype(dtype))
            np.testing.assert_allclose(img.affine, AFFINES["permuted_flipped"], atol=1e-5)
            assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1

    def test_gzip_level_of_fields_reads_the_same_and_leaves_nothing_behind(self, tmp_path):
        import gzip

        ramp = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 7).astype(np.float32)  # compresses well
        raw = save_nifti(tmp_path / "raw.nii", ramp, np.eye(4)).stat().st_size
        default = save_nifti(tmp_path / "d.nii.gz", ramp, np.eye(4))
        stored = save_nifti(tmp_path / "s.nii.gz", ramp, np.eye(4), compresslevel=FIELD_GZIP_LEVEL)
        for path in (default, stored):
            assert path.read_bytes()[:2] == b"\x1f\x8b"  # a gzip stream either way
            np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), ramp)
        assert default.stat().st_size < raw / 4 and stored.stat().st_size >= raw  # level 0: stored blocks
        assert len(gzip.decompress(stored.read_bytes())) == raw
        ddf = _field("sinusoid")
        lps = write_displacement_lps(tmp_path / "f.nii.gz", ddf, AFFINES["oblique"])
        assert lps.read_bytes()[:2] == b"\x1f\x8b"
        np.testing.assert_allclose(read_displacement_lps(lps).GetDisplacementField().GetSize(), SHAPE)
        assert sorted(os.listdir(tmp_path)) == ["d.nii.gz", "f.nii.gz", "raw.nii", "s.nii.gz"]

    def test_gzip_level_failure_keeps_old_file_and_removes_both_temporaries(self, tmp_path, monkeypatch):
        import samir.io as io

        target = tmp_path / "a.nii.gz"
        save_nifti(target, np.ones(SHAPE, np.float32), np.eye(4))
        before = target.read_bytes()

        def full_disk(src, dst, level):
            open(dst, "wb").write(b"half")
            raise OSError("No space left on device")

        monkeypatch.setattr(io, "_gzip_copy", full_disk)
        for write in (lambda: write_l2r_displacement(target, _field("sinusoid"), np.eye(4)),
                      lambda: write_displacement_lps(target, _field("sinusoid"), np.eye(4))):
            with pytest.raises(OSError, match="No space"):
                write()
            assert target.read_bytes() == before and os.listdir(tmp_path) == ["a.nii.gz"]

    def test_save_nifti_rejects_2d(self, tmp_path):
        with pytest.raises(ValueError, match="expected"):
            save_nifti(tmp_path / "x.nii.gz", np.zeros((4, 4)), np.eye(4))
        assert os.listdir(tmp_path) == []
