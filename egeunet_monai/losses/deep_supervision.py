# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The EGE-UNet training loss, built from MONAI's DiceCELoss and DeepSupervisionLoss."""

from __future__ import annotations

from collections.abc import Sequence

from monai.losses import DeepSupervisionLoss, DiceCELoss

__all__ = ["ORIGINAL_DEEP_SUPERVISION_WEIGHTS", "EGEUNetLoss"]

# Weights of the original loss for [main, side1 (H/2), side2, side3, side4, side5 (H/32)]:
# total = main + 0.5*d1 + 0.4*d2 + 0.3*d3 + 0.2*d4 + 0.1*d5, with d1 the shallowest side head.
ORIGINAL_DEEP_SUPERVISION_WEIGHTS: tuple[float, ...] = (1.0, 0.5, 0.4, 0.3, 0.2, 0.1)


class EGEUNetLoss(DeepSupervisionLoss):
    """Dice + cross-entropy on the main output and each side head, weighted as in the original.

    Takes what :class:`~egeunet_monai.networks.nets.EGEUNet` returns: the list ``[main, side1, ..., side5]`` in
    training mode, or a single tensor (then only the main term, weight 1). Per-sample Dice with smoothing 1 in
    the numerator and denominator, as the original's ``BceDiceLoss``.

    Args:
        out_channels: the network's output channels: 1 uses sigmoid (binary cross-entropy), more use softmax
            with one-hot labels.
        weights: the weight of each output, main first.
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.

    For faster CPU training, :func:`egeunet_monai.accel.accelerate` swaps its ``DiceCELoss`` for a C++-kernel version.
    """

    def __init__(
        self,
        out_channels: int = 1,
        weights: Sequence[float] = ORIGINAL_DEEP_SUPERVISION_WEIGHTS,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
    ) -> None:
        binary = out_channels == 1
        dice_ce = DiceCELoss(
            sigmoid=binary,
            softmax=not binary,
            to_onehot_y=not binary,
            smooth_nr=1.0,
            smooth_dr=1.0,
            lambda_dice=lambda_dice,
            lambda_ce=lambda_ce,
        )
        super().__init__(dice_ce, weights=list(weights))
