# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The C++ DiceCE kernel that ``accelerate(EGEUNetLoss())`` runs on CPU: MONAI's DiceCELoss values and gradients,
more precise where float32 sigmoids lose them, the same result on any number of threads, and MONAI's own loss where it
does not apply."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from egeunet_monai.accel import accelerate
from egeunet_monai.accel.loss import DiceCELossKernel, dice_ce_with_logits
from egeunet_monai.losses import EGEUNetLoss
from tests.conftest import require_cpu_kernels

# Float32 losses (the kernel's and MONAI's operators) against MONAI's DiceCELoss in float64 on the inputs below:
# measured <= 1.3e-7 relative on the value (2 float32 ulps) and <= 2.7e-7 of the largest gradient, on Intel Xeon
# under ATEN_CPU_CAPABILITY unset/avx2/default (the kernel's AVX2 and its scalar build): bounds 5e-7 and 1e-6 (4x).
FLOAT32_LOSS_RTOL = 5e-7
FLOAT32_GRAD_TOL = 1e-6


@pytest.fixture(autouse=True)
def kernels():
    return require_cpu_kernels()


def _inputs(dtype, shape=(3, 1, 37, 45), scale=4.0, soft=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_()
    target = torch.rand(shape, generator=g, dtype=torch.float64)
    target = (target if soft else (target > 0.6).double()).to(dtype)
    return logits, target


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("smooth,lambdas", [((1.0, 1.0), (1.0, 1.0)), ((1e-5, 1e-5), (0.3, 1.7))])
def test_float64_equals_monai(soft, smooth, lambdas):
    logits, target = _inputs(torch.float64, soft=soft)
    monai_loss = DiceCELoss(sigmoid=True, smooth_nr=smooth[0], smooth_dr=smooth[1], lambda_dice=lambdas[0], lambda_ce=lambdas[1])
    expected = monai_loss(logits, target)
    (grad_expected,) = torch.autograd.grad(expected * 1.7, logits)
    got = dice_ce_with_logits(logits, target, *smooth, *lambdas)
    (grad_got,) = torch.autograd.grad(got * 1.7, logits)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad_got, grad_expected, rtol=0, atol=1e-12 * grad_expected.abs().max().item())


@pytest.mark.parametrize("shape", [(3, 1, 37, 45), (2, 1, 256, 256), (1, 1, 1, 7)])  # vector blocks and tails
def test_float32_within_rounding_of_float64(shape):
    logits, target = _inputs(torch.float32, shape=shape, scale=8.0)
    reference_logits = logits.detach().double().requires_grad_()
    expected = DiceCELoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0)(reference_logits, target.double())
    (grad_expected,) = torch.autograd.grad(expected, reference_logits)
    got = dice_ce_with_logits(logits, target, 1.0, 1.0)
    (grad_got,) = torch.autograd.grad(got, logits)
    assert got.dtype == torch.float32 and abs(got.item() - expected.item()) <= FLOAT32_LOSS_RTOL * expected.item()
    tolerance = FLOAT32_GRAD_TOL * grad_expected.abs().max().item()
    torch.testing.assert_close(grad_got.double(), grad_expected, rtol=0, atol=tolerance)


def test_confident_predictions_keep_their_small_gradients():
    """Where sigmoid(x) rounds to 1 in float32, MONAI's float32 gradient is 0 (and float64's keeps ~6 digits); the
    kernel's is the true one: (sigmoid(x) - y) / n, taken as -sigmoid(-x) / n for y = 1."""
    logits = torch.tensor([20.0, 25.0, -20.0, -25.0, 3.0, -3.0, 0.0, 1e-3]).view(1, 1, 1, 8).requires_grad_()
    target = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 8)
    x = logits.detach().double()
    expected = torch.where(target == 1, -torch.sigmoid(-x), torch.sigmoid(x)) / 8
    (got,) = torch.autograd.grad(dice_ce_with_logits(logits, target, lambda_dice=0.0), logits)
    assert got[0, 0, 0, 1] < 0  # -(1 - sigmoid(25)) / 8 = -1.7e-12
    # each gradient is a few float32 operations (exp within 2 ulps, a division, products): 8 ulps bound them
    # (measured: 1.5 ulps, 8.7e-8)
    torch.testing.assert_close(got.double(), expected, rtol=8 * 2.0**-24, atol=0)
    (monai_float32,) = torch.autograd.grad(DiceCELoss(sigmoid=True, lambda_dice=0.0)(logits, target), logits)
    assert monai_float32[0, 0, 0, 1] == 0  # what the kernel improves on


def test_same_result_on_one_and_two_threads():
    logits, target = _inputs(torch.float32, shape=(4, 1, 128, 128))
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            loss = dice_ce_with_logits(logits, target, 1.0, 1.0)
            results.append((loss, torch.autograd.grad(loss, logits)[0]))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def _six_output_loss_in_float64(logits: list[torch.Tensor], target: torch.Tensor):
    """EGEUNetLoss's definition (the original's weights on MONAI's DiceCELoss) in float64, and its gradients.
    (MONAI's DeepSupervisionLoss itself computes in float32 whatever the outputs' dtype.)"""
    logits64 = [x.detach().double().requires_grad_() for x in logits]
    single = DiceCELoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0)
    loss = sum(w * single(x, target.double()) for w, x in zip(EGEUNetLoss().weights, logits64))
    return loss, torch.autograd.grad(loss, logits64)


def test_egeunet_loss_runs_the_kernel_and_equals_monai():
    logits = [_inputs(torch.float32, seed=k)[0] for k in range(6)]
    target = _inputs(torch.float32)[1]
    kernel, plain = accelerate(EGEUNetLoss()), EGEUNetLoss()
    assert type(kernel.loss) is DiceCELossKernel and type(plain.loss) is DiceCELoss
    expected, grads_expected = _six_output_loss_in_float64(logits, target)
    for loss in (kernel, plain):  # the kernel, and MONAI's operators, as close to the float64 loss
        got = loss(logits, target)
        assert abs(got.item() - expected.item()) <= FLOAT32_LOSS_RTOL * expected.item()
        for g, e in zip(torch.autograd.grad(got, logits), grads_expected):
            torch.testing.assert_close(g.double(), e, rtol=0, atol=FLOAT32_GRAD_TOL * e.abs().max().item())
        # a single output (the network in eval mode) goes through the kernel too
        single = DiceCELoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0)(logits[0].detach().double(), target.double())
        assert abs(loss(logits[0], target).item() - single.item()) <= FLOAT32_LOSS_RTOL * single.item()


def test_where_the_kernel_does_not_apply_monai_computes(monkeypatch):
    logits, target = _inputs(torch.float32)
    loss = accelerate(DiceCELoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0))
    assert type(loss) is DiceCELossKernel

    def kernel_called(*_):
        raise AssertionError("the kernel ran")

    monkeypatch.setattr("egeunet_monai.accel.loss.dice_ce_with_logits", kernel_called)
    reference = DiceCELoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0)
    for x, y in (
        (logits.detach().repeat(1, 3, 1, 1), target.repeat(1, 3, 1, 1)),  # more channels
        (logits.double(), target.double().requires_grad_()),  # a target that needs a gradient
        (logits.bfloat16(), target.bfloat16()),  # a dtype the kernel does not compute
    ):
        torch.testing.assert_close(loss(x, y), reference(x, y))
    # settings the kernel does not reproduce: accelerate leaves MONAI's loss as it is
    for other in (DiceCELoss(softmax=True), DiceCELoss(sigmoid=True, squared_pred=True), DiceCELoss(sigmoid=True, batch=True)):
        assert type(accelerate(other)) is DiceCELoss
    monkeypatch.undo()
    with pytest.raises(ValueError, match="dice_ce_with_logits: needs N x 1 x H x W"):
        dice_ce_with_logits(logits, target[:, :, :-1])
    with pytest.raises(RuntimeError, match="dice_bce_sums: targets of shape"):
        torch.ops.egeunet_cpu.dice_bce_sums(logits.detach(), target[:, :, :-1])
