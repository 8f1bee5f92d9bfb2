"""RegistrationTrainStep: the cascade option trains a later inference pass on the pair the first pass leaves."""

from types import SimpleNamespace

import pytest
import torch
from samir.losses import RegistrationLoss
from samir.networks import build_samir
from samir.spatial import warp_image
from samir.training import RegistrationTrainStep

NET = {"levels": 3, "channels": [4, 8, 8], "head_channels": 8, "head_blocks": 1, "flow_width": 8,
       "sam_min_level": 1, "hfc_channels": 8}


class Recording(RegistrationLoss):
    """The real loss, keeping what it was given."""

    def forward(self, moving, fixed, outputs, moving_onehot=None, fixed_onehot=None):
        self.seen = (moving.detach().clone(), None if moving_onehot is None else moving_onehot.detach().clone())
        return super().forward(moving, fixed, outputs, moving_onehot, fixed_onehot)


def _engine(encoder):
    torch.manual_seed(0)
    net = build_samir(encoder=encoder, encoder_image_size=32, cache_dir=False, **NET)
    with torch.no_grad():
        for est in net.estimators:  # a first pass that moves voxels, so the warped pair differs
            est.out.weight.normal_(0.0, 0.5)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    return SimpleNamespace(network=net, optimizer=opt, state=SimpleNamespace(device=torch.device("cpu")))


def _batch():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (2, 1, 1, 24, 24, 8), generator=g)
    images = labels.float() / 2 + 0.05 * torch.rand(2, 1, 1, 24, 24, 8, generator=g)
    return {"moving": images[0], "fixed": images[1], "moving_label": labels[0], "fixed_label": labels[1]}


@pytest.mark.parametrize("encoder", ["none", "tiny"])
def test_cascade_step_learns_on_the_pair_the_first_pass_leaves(encoder):
    engine, batch = _engine(encoder), _batch()
    net = engine.network
    with torch.no_grad():
        first = net.train()(torch.cat([batch["moving"], batch["fixed"]], dim=1))  # one pass, one direction
    assert first.abs().max() > 0.1
    loss = Recording(dice_weight=1.0)
    before = [p.detach().clone() for p in net.parameters() if p.requires_grad]
    out = RegistrationTrainStep(loss, num_classes=3, cascade=1.0)(engine, batch)
    moving, onehot = loss.seen
    assert torch.allclose(moving, warp_image(batch["moving"], first), atol=1e-5)
    hot = torch.nn.functional.one_hot(batch["moving_label"][:, 0], 3).permute(0, 4, 1, 2, 3).float()
    assert torch.allclose(onehot, warp_image(hot, first), atol=1e-5)
    assert {"loss", "sim", "smooth", "dice"} <= set(out) and all(map(torch.isfinite, map(torch.tensor, out.values())))
    after = [p for p in net.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # the step trained the network

    RegistrationTrainStep(loss, num_classes=3, cascade=0.0)(engine, batch)  # the default: the pair as given
    assert torch.equal(loss.seen[0], batch["moving"])


def test_cascade_must_be_a_fraction():
    with pytest.raises(ValueError, match="cascade"):
        RegistrationTrainStep(RegistrationLoss(), cascade=1.5)
