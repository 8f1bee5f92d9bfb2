"""The classical peer (``samir.classical.demons_register``): axis order, a known translation, Dice."""

import numpy as np
import pytest
import torch
from samir.classical import demons_register, field_to_ddf, to_sitk
from samir.data.acdc import ACDC_LABELS, acdc_pairs
from samir.data.synthetic_acdc import write_synthetic_acdc
from samir.data.transforms import acdc_transforms, load_pair
from samir.metrics import dice_per_label, folding_fraction
from samir.spatial import identity_grid, warp, warp_label


def _blobs(shape=(48, 40, 24)):
    g = identity_grid(shape)
    img = torch.exp(-(((g[0] - 24) / 7) ** 2 + ((g[1] - 20) / 5) ** 2 + ((g[2] - 12) / 4) ** 2))
    img = img + 0.5 * torch.exp(-(((g[0] - 14) / 3) ** 2 + ((g[1] - 26) / 3) ** 2 + ((g[2] - 9) / 3) ** 2))
    return img[None, None]


def test_sitk_axis_order_round_trip():
    import SimpleITK as sitk

    a = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    img = to_sitk(a)
    assert img.GetSize() == (4, 3, 2)
    assert img.GetPixel(3, 1, 0) == a[3, 1, 0]
    # a vector field whose x component is 1 displaces our axis 0
    comp = [sitk.Image(img.GetSize(), sitk.sitkFloat64) + v for v in (1.0, 2.0, 3.0)]
    field = sitk.Compose(*comp)
    ddf = field_to_ddf(field)
    assert ddf.shape == (1, 3, 4, 3, 2)
    assert torch.allclose(ddf[0, :, 0, 0, 0], torch.tensor([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("diffeomorphic", [False, True])
def test_demons_recovers_a_known_translation(diffeomorphic):
    fixed = _blobs()
    s = torch.tensor([2.0, -1.5, 1.0])
    moving = warp(fixed, -s.view(1, 3, 1, 1, 1).expand(1, 3, *fixed.shape[2:]).contiguous())  # fixed(x) = moving(x + s)
    ddf = demons_register(moving, fixed, diffeomorphic=diffeomorphic)
    assert ddf.shape == (1, 3, *fixed.shape[2:])
    inner = ddf[..., 12:-12, 12:-12, 6:-6].mean((2, 3, 4))[0]
    print(f"translation {s.tolist()} recovered as {inner.tolist()}")
    assert torch.allclose(inner, s, atol=0.4), inner


def test_demons_raises_dice_on_acdc(tmp_path):
    root = write_synthetic_acdc(tmp_path, n=1, seed=3, n_test=0)
    item = next(p for p in acdc_pairs(root, "all") if "ED->ES" in p["pair_id"])
    pair = load_pair(acdc_transforms(), item)
    plain = lambda x: (x.as_tensor() if hasattr(x, "as_tensor") else x)[None]  # noqa: E731
    m, f = plain(pair["moving"]).float(), plain(pair["fixed"]).float()
    ml, fl = plain(pair["moving_label"]).long(), plain(pair["fixed_label"]).long()
    mean = lambda d: sum(d.values()) / len(d)  # noqa: E731
    before = mean(dice_per_label(ml, fl, ACDC_LABELS))
    ddf = demons_register(m, f)
    after = mean(dice_per_label(warp_label(ml, ddf), fl, ACDC_LABELS))
    print(f"demons on ACDC: Dice {before:.3f} -> {after:.3f}, folding {100 * folding_fraction(ddf):.4f} %")
    assert after > before + 0.08, (before, after)
    assert folding_fraction(ddf) < 0.01


def test_demons_bad_input():
    with pytest.raises(ValueError, match="same grid"):
        demons_register(np.zeros((8, 8, 8)), np.zeros((8, 8, 9)))


# -- peers of the optional ``peers`` extra (antspyx, itk-elastix): skipped when the wheels are missing --------

_SHIFT = (2.0, -1.5, 1.0)  # voxels, one per axis: a swapped axis or a flipped sign shows
_SPACING = (2.0, 1.0, 1.5)  # mm, one per axis: a mm → voxel conversion on the wrong axis shows


def _translated(shape=(48, 40, 24)):
    fixed = _blobs(shape)
    s = torch.tensor(_SHIFT)
    moving = warp(fixed, -s.view(1, 3, 1, 1, 1).expand(1, 3, *fixed.shape[2:]).contiguous())  # fixed(x) = moving(x + s)
    return moving, fixed, s


def _peer(name):
    from samir import classical

    pytest.importorskip("ants" if name == "ants" else "itk")
    if not classical.peer_available(name):
        pytest.skip(f"{name}: the peers extra is not installed")
    if name == "ants":
        # Mattes MI SyN with a short schedule: seconds (the CC default is the slow, full-size setting)
        return lambda m, f, **kw: classical.ants_syn_register(m, f, **{"metric": "mi", "iterations": (20, 10), **kw})
    return lambda m, f, **kw: classical.elastix_bspline_register(
        m, f, **{"iterations": 100, "resolutions": 2, "grid_spacing_mm": 16.0, "samples": 2000, **kw})


@pytest.mark.parametrize("name", ["ants", "elastix"])
def test_peer_recovers_a_known_translation(name, tmp_path, monkeypatch):
    register = _peer(name)
    moving, fixed, s = _translated()
    monkeypatch.chdir(tmp_path)
    ddf = register(moving, fixed, spacing=_SPACING)  # anisotropic mm: the DDF must still be in voxels
    assert not list(tmp_path.iterdir()), "the peer left files in the working directory"
    assert ddf.shape == (1, 3, *fixed.shape[2:]) and ddf.dtype == torch.float32
    inner = ddf[..., 12:-12, 12:-12, 6:-6].mean((2, 3, 4))[0]
    print(f"{name}: translation {s.tolist()} voxels recovered as {inner.tolist()}")
    assert torch.allclose(inner, s, atol=0.4), inner


def _smooth_pair(shape=(48, 48, 32), amplitude=2.0, seed=0):
    """A textured volume and a known smooth field u (voxels): fixed(x) = moving(x + u(x))."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    tex = gaussian_filter(rng.standard_normal(shape), 2.5)
    moving = torch.from_numpy((tex - tex.min()) / (tex.max() - tex.min())).float()[None, None]
    g = identity_grid(shape)
    u = torch.stack([
        amplitude * torch.sin(2 * np.pi * g[1] / shape[1]) * torch.cos(2 * np.pi * g[2] / shape[2]),
        amplitude * torch.sin(2 * np.pi * g[0] / shape[0]),
        0.5 * amplitude * torch.cos(2 * np.pi * g[0] / shape[0]) * torch.sin(2 * np.pi * g[1] / shape[1]),
    ])[None]
    return moving, warp(moving, u), u


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ants", "elastix"])
def test_peer_recovers_a_known_smooth_deformation(name):
    register = _peer(name)
    moving, fixed, u = _smooth_pair()
    ddf = register(moving, fixed, affine=False) if name == "elastix" else register(moving, fixed, iterations=(40, 20))
    c = (slice(None), slice(None), slice(8, -8), slice(8, -8), slice(6, -6))
    epe = float((ddf - u)[c].norm(dim=1).mean())
    size = float(u[c].norm(dim=1).mean())
    print(f"{name}: smooth deformation of mean {size:.2f} voxels recovered with mean end-point error {epe:.2f}")
    assert epe < 0.4 * size, (epe, size)
    assert folding_fraction(ddf) < 0.001


def test_same_contrast_tells_inverted_contrast():
    from samir.classical import same_contrast

    moving, fixed, _ = _translated()
    body = (fixed > 0.05).float()
    inverted = body * (1.2 - fixed)  # the same anatomy, bright where the other is dark, zero outside
    assert same_contrast(moving, fixed)
    assert not same_contrast(inverted, fixed)


def test_peers_bad_input():
    from samir.classical import ants_syn_register, elastix_bspline_register

    for fn in (ants_syn_register, elastix_bspline_register):
        with pytest.raises(ValueError, match="same grid"):
            fn(np.zeros((8, 8, 8)), np.zeros((8, 8, 9)))
    with pytest.raises(ValueError, match="metric"):
        ants_syn_register(np.zeros((8, 8, 8)), np.zeros((8, 8, 8)), metric="mattes")
    with pytest.raises(ValueError, match="spacing"):
        elastix_bspline_register(np.zeros((8, 8, 8)), np.zeros((8, 8, 8)), spacing=(1.0, 0.0, 1.0))
