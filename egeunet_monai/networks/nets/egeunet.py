# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""EGE-UNet as a MONAI network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from egeunet_monai.networks.blocks import BilinearResize, GroupAggregationBridge, GroupedMultiAxisHadamardAttention

if TYPE_CHECKING:
    from monai.networks.blocks import Convolution

__all__ = ["EGEUNet", "EgeUNet", "check_input_shape"]

DOWNSAMPLING = 32  # five 2x max-pools


def check_input_shape(x: torch.Tensor, in_channels: int, size_divisor: int) -> tuple[int, int]:
    """(H, W) of an N x ``in_channels`` x H x W input, or a ``ValueError`` saying what is wrong with it."""
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected input of shape (N, {in_channels}, H, W), got {list(x.shape)}.")
    height, width = int(x.shape[2]), int(x.shape[3])
    if height % size_divisor or width % size_divisor:
        raise ValueError(
            f"EGE-UNet needs H and W divisible by {size_divisor}, got {height}x{width}; "
            "resize or pad the image first (e.g. monai.transforms.DivisiblePad(k=32))."
        )
    return height, width


def _conv3x3(in_channels: int, out_channels: int) -> Convolution:
    # imported when a network is built, not with the module: `import monai` also imports every optional package
    # MONAI knows that is installed (MLflow, matplotlib...), which `import egeunet_monai.networks` should not cost
    from monai.networks.blocks import Convolution

    return Convolution(2, in_channels, out_channels, kernel_size=3, conv_only=True)


class EGEUNet(nn.Module):
    """EGE-UNet: an Efficient Group Enhanced UNet for skin lesion segmentation.

    J. Ruan, M. Xie, J. Gao, T. Liu, Y. Fu, "EGE-UNet: an Efficient Group Enhanced UNet for skin lesion
    segmentation", MICCAI 2023, https://arxiv.org/abs/2307.08473.

    Six encoder stages (plain 3x3 convs in the first three, GHPA in the last three), five group aggregation
    bridges (GAB) on the skips, a mirrored decoder, and five side heads whose predictions feed the bridges.
    At the defaults it has the original's 53,374 trainable parameters and reproduces its outputs; original
    checkpoints load with :func:`egeunet_monai.networks.load_original_state_dict`.

    The network returns **logits** (the original applies a sigmoid itself):

    - ``eval()`` mode, or ``deep_supervision=False``: the main logits, N x out_channels x H x W.
    - ``train()`` mode with ``deep_supervision=True``: a list ``[main, side1, side2, side3, side4, side5]`` of
      full-resolution logits, the side heads ordered from the shallowest (H/2) to the deepest (H/32). This is
      the order in which MONAI's ``DeepSupervisionLoss`` applies its weights.

    Levels are numbered from the shallowest: ``encoder{i}``, ``bridge{i}``, ``decoder{i}`` and ``side_head{i}``
    work at 1/2**i of the input size (``encoder6`` and ``decoder5`` share the deepest level).

    Args:
        in_channels: input channels (3 for RGB dermoscopy; 1 for grayscale works too).
        out_channels: output channels (1 for a binary lesion mask; more for multi-class, with softmax).
        channels: the six stage widths; the last five must be divisible by 4 (GHPA/GAB groups).
        deep_supervision: return the side heads' logits as well in training mode.
        gab_dilations: dilations of the four groups in every bridge.

    This is the reference network, computed with PyTorch's operators only. For faster CPU training,
    :func:`egeunet_monai.accel.accelerate` swaps some of its modules for C++-kernel versions in place (the same
    parameters and state dict keys; ``configs/train.json``'s ``accelerate`` option).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        channels: Sequence[int] = (8, 16, 24, 32, 48, 64),
        deep_supervision: bool = True,
        gab_dilations: Sequence[int] = (1, 2, 5, 7),
    ) -> None:
        super().__init__()
        if len(channels) != 6:
            raise ValueError(f"channels must have 6 stage widths, got {len(channels)}: {list(channels)}.")
        c = list(channels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.deep_supervision = deep_supervision
        self.size_divisor = DOWNSAMPLING

        self.encoder1 = _conv3x3(in_channels, c[0])
        self.encoder2 = _conv3x3(c[0], c[1])
        self.encoder3 = _conv3x3(c[1], c[2])
        self.encoder4 = GroupedMultiAxisHadamardAttention(c[2], c[3])
        self.encoder5 = GroupedMultiAxisHadamardAttention(c[3], c[4])
        self.encoder6 = GroupedMultiAxisHadamardAttention(c[4], c[5])
        self.encoder_norm1, self.encoder_norm2, self.encoder_norm3, self.encoder_norm4, self.encoder_norm5 = (
            nn.GroupNorm(4, c[i]) for i in range(5)
        )

        # bridge{i} merges the deeper level's feature into the level-i skip (c[i-1] channels)
        self.bridge1, self.bridge2, self.bridge3, self.bridge4, self.bridge5 = (
            GroupAggregationBridge(c[i], c[i - 1], out_channels, gab_dilations) for i in range(1, 6)
        )
        self.side_head1, self.side_head2, self.side_head3, self.side_head4, self.side_head5 = (
            nn.Conv2d(c[i], out_channels, 1) for i in range(5)
        )

        self.decoder5 = GroupedMultiAxisHadamardAttention(c[5], c[4])
        self.decoder4 = GroupedMultiAxisHadamardAttention(c[4], c[3])
        self.decoder3 = GroupedMultiAxisHadamardAttention(c[3], c[2])
        self.decoder2 = _conv3x3(c[2], c[1])
        self.decoder1 = _conv3x3(c[1], c[0])
        self.decoder_norm1, self.decoder_norm2, self.decoder_norm3, self.decoder_norm4, self.decoder_norm5 = (
            nn.GroupNorm(4, c[i]) for i in range(5)
        )
        self.final_conv = nn.Conv2d(c[0], out_channels, 1)
        # modules rather than F.max_pool2d / F.interpolate calls, so that egeunet_monai.accel can swap them
        self.pool = nn.MaxPool2d(2, 2)
        self.resize = BilinearResize()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # The original's initialisation: normal with std sqrt(2 / fan_out) for convs, zero conv biases in 2-D.
        if isinstance(m, nn.Conv1d):
            n = m.kernel_size[0] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, (2.0 / n) ** 0.5)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        height, width = check_input_shape(x, self.in_channels, self.size_divisor)
        full = [height, width]

        # encoder: conv -> GroupNorm -> 2x max-pool -> GELU, keeping each level's output as a skip
        t1 = F.gelu(self.pool(self.encoder_norm1(self.encoder1(x))))
        t2 = F.gelu(self.pool(self.encoder_norm2(self.encoder2(t1))))
        t3 = F.gelu(self.pool(self.encoder_norm3(self.encoder3(t2))))
        t4 = F.gelu(self.pool(self.encoder_norm4(self.encoder4(t3))))
        t5 = F.gelu(self.pool(self.encoder_norm5(self.encoder5(t4))))
        t6 = F.gelu(self.encoder6(t5))

        # decoder: at each level a side head predicts the mask, the bridge fuses the deeper bridge output,
        # the skip and that prediction, and the result is added to the decoder feature.
        out5 = F.gelu(self.decoder_norm5(self.decoder5(t6)))
        side5 = self.side_head5(out5)
        t5 = self.bridge5(t6, t5, side5)
        out5 = out5 + t5

        out4 = F.gelu(self.resize(self.decoder_norm4(self.decoder4(out5)), list(t4.shape[2:])))
        side4 = self.side_head4(out4)
        t4 = self.bridge4(t5, t4, side4)
        out4 = out4 + t4

        out3 = F.gelu(self.resize(self.decoder_norm3(self.decoder3(out4)), list(t3.shape[2:])))
        side3 = self.side_head3(out3)
        t3 = self.bridge3(t4, t3, side3)
        out3 = out3 + t3

        out2 = F.gelu(self.resize(self.decoder_norm2(self.decoder2(out3)), list(t2.shape[2:])))
        side2 = self.side_head2(out2)
        t2 = self.bridge2(t3, t2, side2)
        out2 = out2 + t2

        out1 = F.gelu(self.resize(self.decoder_norm1(self.decoder1(out2)), list(t1.shape[2:])))
        side1 = self.side_head1(out1)
        t1 = self.bridge1(t2, t1, side1)
        out1 = out1 + t1

        main = self.resize(self.final_conv(out1), full)
        if self.training and self.deep_supervision:
            return [main] + [self.resize(s, full) for s in (side1, side2, side3, side4, side5)]
        return main


EgeUNet = EGEUNet
