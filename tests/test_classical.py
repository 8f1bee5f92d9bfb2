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
