# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""MONAI's ``DiceCELoss(sigmoid=True)`` on one channel of logits, computed by the C++ CPU kernels in two passes:
:class:`DiceCELossKernel`, which :func:`egeunet_monai.accel.accelerate` swaps in for the ``DiceCELoss`` inside
:class:`~egeunet_monai.losses.EGEUNetLoss`.

The loss of a training step is six DiceCE terms at full resolution (the main output and five upsampled side heads):
through MONAI's operators (sigmoid, products, sums, ``log_sigmoid``, their backwards) it took about a sixth of a
CPU training step. The kernels (``dice_bce_sums``/``dice_bce_backward`` in
``egeunet_monai/accel/csrc/loss_cpu.cpp``) make one pass forward and one backward per output, 2.7x
faster on the six outputs (docs/benchmarks.md); the value equals MONAI's up to float rounding (per-plane sums are
added in float64), and the gradient of a confident pixel, which MONAI's float32 operators round to 0, keeps its
precision.
"""

from __future__ import annotations

import torch

from monai.losses import DiceCELoss

from egeunet_monai.accel.kernels import can_run

__all__ = ["DiceCELossKernel", "dice_ce_with_logits"]


def _kernel_applies(logits: torch.Tensor, target: torch.Tensor) -> bool:
    """One channel of N x 1 x H x W CPU logits, a float target of the same shape that needs no gradient."""
    return (
        logits.dim() == 4
        and logits.shape[1] == 1
        and target.shape == logits.shape
        and target.is_floating_point()
        and not target.requires_grad
        and can_run(logits)
    )


class _DiceCEWithLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, smooth_nr: float, smooth_dr: float, lambda_dice: float, lambda_ce: float):
        sums = torch.ops.egeunet_cpu.dice_bce_sums(logits, target)  # N x C x (bce, p y, p, y), float64
        bce, intersection, predicted, truth = sums.unbind(-1)
        denominator = predicted + truth + smooth_dr
        dice = (1.0 - (2.0 * intersection + smooth_nr) / denominator).mean()
        ctx.save_for_backward(logits, target, intersection, denominator)
        ctx.constants = (smooth_nr, lambda_dice, lambda_ce)
        return (lambda_dice * dice + lambda_ce * bce.sum() / logits.numel()).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad):
        logits, target, intersection, denominator = ctx.saved_tensors
        smooth_nr, lambda_dice, lambda_ce = ctx.constants
        g, planes = grad.double(), intersection.numel()
        # dL/dx = A (p - y) + p (1 - p) (B y + C) per plane: cross-entropy's A, the Dice quotient's B and C
        a = (g * lambda_ce / logits.numel()).expand_as(intersection)
        b = -2.0 * g * lambda_dice / planes / denominator
        c = g * lambda_dice / planes * (2.0 * intersection + smooth_nr) / denominator.square()
        grad_logits = torch.ops.egeunet_cpu.dice_bce_backward(logits, target, torch.stack([a, b, c], dim=-1))
        return grad_logits, None, None, None, None, None


def dice_ce_with_logits(
    logits: torch.Tensor,
    target: torch.Tensor,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    lambda_dice: float = 1.0,
    lambda_ce: float = 1.0,
) -> torch.Tensor:
    """``DiceCELoss(sigmoid=True, smooth_nr=..., smooth_dr=..., lambda_dice=..., lambda_ce=...)(logits, target)``
    for N x 1 x H x W float CPU logits and a float target of the same shape (per-sample Dice, mean reduction)."""
    if not _kernel_applies(logits, target):
        raise ValueError(
            f"dice_ce_with_logits: needs N x 1 x H x W float CPU logits and a target of the same shape with the C++ "
            f"kernels loaded, got {tuple(logits.shape)} {logits.dtype} on {logits.device} and {tuple(target.shape)}"
        )
    return _DiceCEWithLogits.apply(logits, target, smooth_nr, smooth_dr, lambda_dice, lambda_ce)


class DiceCELossKernel(DiceCELoss):
    """``DiceCELoss`` whose value and gradient come from :func:`dice_ce_with_logits` where it computes the same thing
    (sigmoid Dice + binary cross-entropy, per-sample Dice, mean reduction, one channel of CPU logits); the parent's
    forward everywhere else."""

    @staticmethod
    def replaces(module: torch.nn.Module) -> bool:
        """Whether ``module`` is a ``DiceCELoss`` the kernel reproduces: sigmoid, no other activation, no one-hot,
        no class weights, plain (not squared, not Jaccard) per-sample Dice, mean reduction."""
        if type(module) is not DiceCELoss:
            return False
        dice = module.dice
        return (
            dice.sigmoid
            and not dice.softmax
            and dice.other_act is None
            and not dice.to_onehot_y
            and dice.include_background
            and not dice.squared_pred
            and not dice.jaccard
            and not dice.batch
            and dice.reduction == "mean"
            and getattr(dice, "class_weight", None) is None
            and getattr(dice, "ignore_index", None) is None
            and module.binary_cross_entropy.pos_weight is None
            and module.binary_cross_entropy.reduction == "mean"
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if _kernel_applies(input, target):
            return dice_ce_with_logits(
                input, target, self.dice.smooth_nr, self.dice.smooth_dr, self.lambda_dice, self.lambda_ce
            )
        return super().forward(input, target)
