# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Building blocks of EGE-UNet (Ruan et al., MICCAI 2023) that MONAI does not already provide."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BilinearResize", "ChannelFirstLayerNorm", "GroupAggregationBridge", "GroupedMultiAxisHadamardAttention"]


class BilinearResize(nn.Module):
    """Bilinear resizing to a given size with ``align_corners=True``, as the original's ``F.interpolate`` calls."""

    def forward(self, x: torch.Tensor, size: list[int]) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ChannelFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an N x C x H x W tensor, computed exactly as the original.

    Args:
        num_channels: number of channels C.
        eps: added to the variance before the square root.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Written out rather than F.layer_norm on a permuted tensor: the same formula as the
        # original keeps parity with its outputs to float32 rounding.
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def _depthwise_gate_mixer(channels: int, conv: type[nn.Module]) -> nn.Sequential:
    """Depth-wise 3-tap conv, GELU, point-wise conv: what GHPA applies to each learnable gate."""
    return nn.Sequential(
        conv(channels, channels, kernel_size=3, padding=1, groups=channels), nn.GELU(), conv(channels, channels, 1)
    )


class GroupedMultiAxisHadamardAttention(nn.Module):
    """GHPA: Hadamard products with learnable gates along the (H, W), (C, H) and (C, W) planes of three channel
    groups, a depth-wise conv on the fourth, then a depth-wise separable projection to ``out_channels``.

    The gates do not depend on the input, but they are resized and mixed on every call, as in the original: a cache
    of them in eval mode gave stale outputs after ``load_state_dict`` (and saved 2.6 ms per eager call at batch 1,
    nothing at batch 8: docs/benchmarks.md, "Multiply-adds").

    Args:
        in_channels: input channels, divisible by 4.
        out_channels: output channels.
        gate_size: (x, y) size of the learnable gates before they are resized to the feature map.
    """

    def __init__(self, in_channels: int, out_channels: int, gate_size: Sequence[int] = (8, 8)) -> None:
        super().__init__()
        if in_channels % 4:
            raise ValueError(f"GHPA splits channels into 4 groups: in_channels must be divisible by 4, got {in_channels}.")
        group = in_channels // 4
        gx, gy = gate_size
        self.params_xy = nn.Parameter(torch.ones(1, group, gx, gy))
        self.conv_xy = _depthwise_gate_mixer(group, nn.Conv2d)
        self.params_zx = nn.Parameter(torch.ones(1, 1, group, gx))
        self.conv_zx = _depthwise_gate_mixer(group, nn.Conv1d)
        self.params_zy = nn.Parameter(torch.ones(1, 1, group, gy))
        self.conv_zy = _depthwise_gate_mixer(group, nn.Conv1d)
        self.dw = nn.Sequential(
            nn.Conv2d(group, group, 1), nn.GELU(), nn.Conv2d(group, group, kernel_size=3, padding=1, groups=group)
        )
        self.norm1 = ChannelFirstLayerNorm(in_channels)
        self.norm2 = ChannelFirstLayerNorm(in_channels)
        self.ldw = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1, groups=in_channels),
            nn.GELU(),
            nn.Conv2d(in_channels, out_channels, 1),
        )

    @staticmethod
    def _resize(gate: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return F.interpolate(gate, size=(height, width), mode="bilinear", align_corners=True)

    def gate_maps(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three gates resized to a feature map of ``height`` x ``width`` and passed through their mixers,
        shaped to broadcast against a (N, C/4, H, W) group: (1, C/4, H, W), (1, C/4, H, 1), (1, C/4, 1, W)."""
        group = self.params_xy.shape[1]
        xy = self.conv_xy(self._resize(self.params_xy, height, width))
        # As in the original (which permutes the features instead): the "zx" gate spans (C, H) and the
        # "zy" gate (C, W); each is mixed by a Conv1d whose channels are the C/4 rows of the resized map.
        zx = self.conv_zx(self._resize(self.params_zx, group, height).squeeze(0)).reshape(1, group, height, 1)
        zy = self.conv_zy(self._resize(self.params_zy, group, width).squeeze(0)).reshape(1, group, 1, width)
        return xy, zx, zy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x1, x2, x3, x4 = torch.chunk(x, 4, dim=1)
        gate_xy, gate_zx, gate_zy = self.gate_maps(x.shape[2], x.shape[3])
        x = torch.cat([x1 * gate_xy, x2 * gate_zx, x3 * gate_zy, self.dw(x4)], dim=1)
        return self.ldw(self.norm2(x))


class GroupAggregationBridge(nn.Module):
    """GAB: fuses a deeper decoder feature ``xh``, an encoder skip ``xl`` and the side head's mask prediction,
    in four channel groups with dilated depth-wise convs (dilations 1, 2, 5, 7).

    Args:
        high_channels: channels of ``xh`` (the deeper feature).
        low_channels: channels of ``xl`` (the skip), divisible by 4; also the output channels.
        mask_channels: channels of the side head's prediction (1 in the original).
        dilations: dilation of each group's depth-wise conv.
        kernel_size: kernel size of those convs.
    """

    def __init__(
        self,
        high_channels: int,
        low_channels: int,
        mask_channels: int = 1,
        dilations: Sequence[int] = (1, 2, 5, 7),
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if len(dilations) != 4:
            raise ValueError(f"GAB has four channel groups: give 4 dilations, got {list(dilations)}.")
        if low_channels % 4:
            raise ValueError(f"GAB splits channels into 4 groups: low_channels must be divisible by 4, got {low_channels}.")
        self.pre_project = nn.Conv2d(high_channels, low_channels, 1)
        self.resize = BilinearResize()
        group = low_channels // 2 + mask_channels
        for i, d in enumerate(dilations):
            padding = (kernel_size + (kernel_size - 1) * (d - 1)) // 2
            self.add_module(
                f"g{i}",
                nn.Sequential(
                    ChannelFirstLayerNorm(group),
                    nn.Conv2d(group, group, kernel_size=kernel_size, padding=padding, dilation=d, groups=group),
                ),
            )
        self.tail_conv = nn.Sequential(
            ChannelFirstLayerNorm(4 * group), nn.Conv2d(4 * group, low_channels, 1)
        )

    def forward(self, xh: torch.Tensor, xl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        xh = self.resize(self.pre_project(xh), [int(xl.shape[2]), int(xl.shape[3])])
        xh_groups = torch.chunk(xh, 4, dim=1)
        xl_groups = torch.chunk(xl, 4, dim=1)
        x0 = self.g0(torch.cat((xh_groups[0], xl_groups[0], mask), dim=1))
        x1 = self.g1(torch.cat((xh_groups[1], xl_groups[1], mask), dim=1))
        x2 = self.g2(torch.cat((xh_groups[2], xl_groups[2], mask), dim=1))
        x3 = self.g3(torch.cat((xh_groups[3], xl_groups[3], mask), dim=1))
        return self.tail_conv(torch.cat((x0, x1, x2, x3), dim=1))
