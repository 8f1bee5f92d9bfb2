"""HFC loss: decreases with the right field, cannot be lowered by a collapsed head, level weights."""

import pytest
import torch
import torch.nn.functional as F
from samir.losses import HierarchicalFeatureConsistencyLoss, RegistrationLoss
from samir.networks import build_samir


def _smooth_features(shape, channels=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, *shape, generator=g)
    return F.avg_pool3d(x, 5, stride=1, padding=2)


def _shift(x, k, axis=2):
    return torch.roll(x, shifts=k, dims=axis)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_true_shift_lowers_hfc(k):
    loss = HierarchicalFeatureConsistencyLoss(level_weights=(1.0,))
    fixed = _smooth_features((24, 24, 12))
    moving = _shift(fixed, k)  # moving(x) = fixed(x - k): sample moving at x + k to recover fixed
    identity = torch.zeros(1, 3, 24, 24, 12)
    true = identity.clone()
    true[:, 0] = k
    l_id = loss([(moving, fixed)], [identity])
    l_true = loss([(moving, fixed)], [true])
    assert l_true < 0.2 * l_id  # roll wraps k of 24 rows at one border, warping clamps there: residue only
    assert l_id > 0.1


def test_level_weights_finest_first_and_zero():
    fixed = _smooth_features((16, 16, 8))
    moving = _shift(fixed, 2)
    ddfs = [torch.zeros(1, 3, 16, 16, 8)] * 2
    pairs = [(moving, fixed)] * 2
    only_finest = HierarchicalFeatureConsistencyLoss((1.0, 0.0))(pairs, ddfs)
    only_coarse = HierarchicalFeatureConsistencyLoss((0.0, 1.0))(pairs, ddfs)
    torch.testing.assert_close(only_finest, only_coarse)  # same content at both levels here
    assert HierarchicalFeatureConsistencyLoss((0.0, 0.0))(pairs, ddfs) == 0
    assert HierarchicalFeatureConsistencyLoss((1.0,))([None, (moving, fixed)], ddfs) > 0


def test_negative_weight_rejected():
    with pytest.raises(ValueError, match="level_weights"):
        HierarchicalFeatureConsistencyLoss((1.0, -0.5))


class _Collapsed(torch.nn.Module):
    """A head that outputs one constant, whatever its input (what a cheating head would learn)."""

    def __init__(self, channels):
        super().__init__()
        self.out_channels = channels

    def forward(self, x):
        return torch.full((x.shape[0], self.out_channels, *x.shape[2:]), 0.3)


def test_collapsed_head_does_not_lower_hfc():
    torch.manual_seed(0)
    net = build_samir("tiny", cache_dir=False, levels=3, channels=(4, 8, 8), head_channels=8, head_blocks=1)
    net.eval()
    img = torch.rand(1, 1, 32, 32, 8)
    x = torch.cat([_shift(img, 3), img], dim=1)
    loss = HierarchicalFeatureConsistencyLoss()
    out = net(x, return_all=True)
    zero = [torch.zeros_like(d) for d in out["level_ddfs"]]
    normal = loss(out["level_embeddings"], zero)
    net.head = _Collapsed(8)
    collapsed = net(x, return_all=True)
    assert loss(collapsed["level_embeddings"], zero) >= normal - 1e-6
    assert normal > 0


def test_registration_loss_terms_and_weights():
    torch.manual_seed(0)
    net = build_samir("tiny", cache_dir=False, levels=3, channels=(4, 8, 8), head_channels=8, head_blocks=1)
    moving, fixed = torch.rand(1, 1, 16, 16, 8), torch.rand(1, 1, 16, 16, 8)
    out = net(torch.cat([moving, fixed], 1), return_all=True)
    onehot = F.one_hot(torch.randint(0, 3, (1, 16, 16, 8)), 3).permute(0, 4, 1, 2, 3).float()
    terms = RegistrationLoss(hfc_weight=0.5, dice_weight=1.0)(moving, fixed, out, onehot, onehot)
    assert set(terms) == {"sim", "smooth", "hfc", "dice", "loss"}
    torch.testing.assert_close(terms["loss"], terms["sim"] + terms["smooth"] + terms["hfc"] + terms["dice"])
    no_hfc = RegistrationLoss(hfc_weight=0.0)(moving, fixed, out)
    assert "hfc" not in no_hfc
    with pytest.raises(ValueError, match="smooth_weight"):
        RegistrationLoss(smooth_weight=-1)
    with pytest.raises(ValueError, match="smoothness"):
        RegistrationLoss(smoothness="tv")
