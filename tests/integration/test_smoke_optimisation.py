"""Smoke optimisation: fitting SAMIR to one synthetic ACDC pair raises Dice, folding stays < 1 %."""

import pytest
import torch
import torch.nn.functional as F
from samir.data.acdc import ACDC_LABELS, acdc_pairs
from samir.data.synthetic_acdc import write_synthetic_acdc
from samir.data.transforms import acdc_transforms, load_pair
from samir.losses import RegistrationLoss
from samir.metrics import dice_per_label, folding_fraction
from samir.networks import build_samir
from samir.spatial import warp_label


@pytest.fixture(scope="module")
def acdc_pair(tmp_path_factory):
    root = write_synthetic_acdc(tmp_path_factory.mktemp("acdc"), n=1, seed=3, n_test=0)
    item = next(p for p in acdc_pairs(root, split="all") if "ED->ES" in p["pair_id"])
    return load_pair(acdc_transforms(), item)


def _downsample(pair, size):
    img = lambda k: F.interpolate(pair[k][None].float(), size=size, mode="trilinear", align_corners=False)  # noqa: E731
    lab = lambda k: F.interpolate(pair[k][None].float(), size=size, mode="nearest").long()  # noqa: E731
    return img("moving"), img("fixed"), lab("moving_label"), lab("fixed_label")


def _fit(encoder, pair, size, iterations, lr=3e-3, **net_kwargs):
    torch.manual_seed(0)
    moving, fixed, moving_label, fixed_label = _downsample(pair, size)
    net = build_samir(encoder, cache_dir=False, **net_kwargs)
    loss_fn = RegistrationLoss(sim_weight=1.0, smooth_weight=0.5, hfc_weight=0.5, ncc_kernel=7)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    x = torch.cat([moving, fixed], 1)
    emb = (net.encode(moving), net.encode(fixed))  # frozen: encode once, as the cache does in training
    net.train()
    for _ in range(iterations):
        opt.zero_grad()
        out = net(x, *emb, return_all=True)
        loss_fn(moving, fixed, out)["loss"].backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        ddf = net(x, *emb)
    before = dice_per_label(moving_label, fixed_label, ACDC_LABELS)
    after = dice_per_label(warp_label(moving_label, ddf), fixed_label, ACDC_LABELS)
    return before, after, folding_fraction(ddf)


def _mean(d):
    return sum(d.values()) / len(d)


def test_smoke_optimisation_tiny_encoder(acdc_pair):
    before, after, folding = _fit("tiny", acdc_pair, (64, 64, 16), iterations=40, levels=3, channels=(8, 16, 16),
                                  head_channels=8, head_blocks=1, flow_width=16)
    print(f"tiny: Dice {before} -> {after}, folding {100 * folding:.3f} %")
    assert _mean(after) > _mean(before) + 0.05, (before, after)
    assert after["LV"] > before["LV"]
    assert folding < 0.01


@pytest.mark.slow
def test_smoke_optimisation_litemedsam(acdc_pair):
    before, after, folding = _fit("litemedsam", acdc_pair, (64, 64, 16), iterations=60, levels=3, channels=(8, 16, 16),
                                  head_channels=8, head_blocks=1, flow_width=16, encoder_image_size=128)
    print(f"litemedsam: Dice {before} -> {after}, folding {100 * folding:.3f} %")
    assert _mean(after) > _mean(before) + 0.05, (before, after)
    assert folding < 0.01
