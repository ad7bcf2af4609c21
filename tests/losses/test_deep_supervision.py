"""The bundle's loss is DiceCE under DeepSupervisionLoss with the original weights and output order."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from egeunet_monai.accel import accelerate
from egeunet_monai.losses import ORIGINAL_DEEP_SUPERVISION_WEIGHTS, EGEUNetLoss
from egeunet_monai.networks import EGEUNet


def test_weights_are_the_originals_main_first_then_shallowest_to_deepest():
    assert ORIGINAL_DEEP_SUPERVISION_WEIGHTS == (1.0, 0.5, 0.4, 0.3, 0.2, 0.1)
    assert EGEUNetLoss().weights == [1.0, 0.5, 0.4, 0.3, 0.2, 0.1]


# EGEUNetLoss computes in float32 (MONAI's DeepSupervisionLoss casts each output to float32), here against the same
# formula in float64: measured <= 1.2e-7 relative (2 ulps) on Intel Xeon under ATEN_CPU_CAPABILITY unset/avx2/
# default, C++ kernel and MONAI's operators: bound 5e-7 (4x).
FLOAT32_LOSS_RTOL = 5e-7


def test_total_is_the_weighted_sum_of_dice_ce_per_output():
    torch.manual_seed(0)
    outs = [torch.randn(2, 1, 32, 32) for _ in range(6)]
    label = (torch.rand(2, 1, 32, 32) > 0.6).float()
    single = DiceCELoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0)
    expected = sum(w * single(o.double(), label.double()) for w, o in zip((1.0, 0.5, 0.4, 0.3, 0.2, 0.1), outs))
    for loss in (EGEUNetLoss(), accelerate(EGEUNetLoss())):  # MONAI's operators, the C++ kernel where it builds
        got = loss(outs, label)
        torch.testing.assert_close(got.double(), expected, rtol=FLOAT32_LOSS_RTOL, atol=0)


def test_the_deepest_side_head_weighs_least():
    label = torch.ones(1, 1, 32, 32)
    good, bad = torch.full((1, 1, 32, 32), 10.0), torch.full((1, 1, 32, 32), -10.0)
    loss = EGEUNetLoss()
    bad_shallowest = loss([good, bad, good, good, good, good], label)
    bad_deepest = loss([good, good, good, good, good, bad], label)
    assert bad_shallowest > bad_deepest


def test_dice_part_matches_the_originals_smooth_one_per_sample():
    pred = torch.tensor([[[[10.0, 10.0], [-10.0, -10.0]]]])
    label = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    p = torch.sigmoid(pred.double())
    dice = 1 - (2 * (p * label).sum() + 1) / (p.sum() + label.sum() + 1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(pred.double(), label.double())
    for loss in (EGEUNetLoss(), accelerate(EGEUNetLoss())):
        got = loss(pred, label)
        torch.testing.assert_close(got.double(), dice + bce, rtol=FLOAT32_LOSS_RTOL, atol=0)


@pytest.mark.parametrize("out_channels", [1, 3])
def test_trains_the_network_end_to_end(out_channels):
    torch.manual_seed(0)
    net = EGEUNet(out_channels=out_channels).train()
    x = torch.rand(2, 3, 64, 64) * 255
    label = torch.randint(0, 2 if out_channels == 1 else out_channels, (2, 1, 64, 64)).float()
    loss = EGEUNetLoss(out_channels=out_channels)(net(x), label)
    loss.backward()
    assert torch.isfinite(loss) and net.side_head5.weight.grad.abs().sum() > 0
