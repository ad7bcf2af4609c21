# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Kernel versions of the network's modules that dominate a CPU training step; :func:`egeunet_monai.accel.accelerate`
swaps them in. Each is a subclass of the module it replaces, with the same parameters and state dict keys, whose
forward runs the C++ kernels of ``csrc/network_cpu.cpp`` where :func:`~egeunet_monai.accel.kernels.can_run` says so
and the parent's forward everywhere else (other devices or dtypes, TorchScript, tracing, CPU autocast).

Why these: PyTorch's CPU operators are slow for a network this small and this wide at full resolution:
``max_pool2d_with_indices`` (index bookkeeping), the backward of (dilated) depth-wise convolutions (oneDNN's
reference path for dilations above 2), the backward of bilinear upsampling (a scatter) and the dozen autograd nodes of
a LayerNorm written out over the channel axis. Each kernel makes one or two passes over cache-sized blocks instead;
outputs and gradients equal PyTorch's up to float rounding (tests/accel/test_network.py).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from egeunet_monai.accel.kernels import can_run
from egeunet_monai.networks.blocks import BilinearResize, ChannelFirstLayerNorm

__all__ = ["BilinearResizeMatmul", "ChannelLayerNormKernel", "DepthwiseConv3x3Kernel", "MaxPool2x2Kernel"]


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out, index = torch.ops.egeunet_cpu.max_pool2x2_forward(x)  # and which of the four was the maximum: a byte
        ctx.save_for_backward(index)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return torch.ops.egeunet_cpu.max_pool2x2_backward(grad, ctx.saved_tensors[0])


class MaxPool2x2Kernel(nn.MaxPool2d):
    """``nn.MaxPool2d(2, 2)`` whose forward and backward run the C++ kernel (for even H and W); the gradient goes where
    ``max_pool2d`` sends it (NaN windows included)."""

    @staticmethod
    def replaces(module: nn.Module) -> bool:
        """Whether ``module`` is a plain 2x2, stride-2 max-pool without padding, dilation or indices."""
        size = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
        return (
            type(module) is nn.MaxPool2d
            and size(module.kernel_size) == (2, 2)
            and size(module.stride) == (2, 2)
            and size(module.padding) == (0, 0)
            and size(module.dilation) == (1, 1)
            and not module.return_indices
            and not module.ceil_mode
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0 and can_run(x):
            return _MaxPool2x2.apply(x)
        return super().forward(x)


class _DepthwiseConv3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        ctx.has_bias = bias is not None
        return torch.ops.egeunet_cpu.depthwise3x3_forward(x, weight, bias, dilation)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        grad_x, grad_w, grad_b = torch.ops.egeunet_cpu.depthwise3x3_backward(
            grad, x, weight, ctx.dilation, need[0], need[1], ctx.has_bias and need[2]
        )
        return grad_x, grad_w, grad_b, None


class DepthwiseConv3x3Kernel(nn.Conv2d):
    """A 3x3 depth-wise ``nn.Conv2d`` with zero padding equal to its dilation (the bridges' convs), forward and
    backward in the C++ kernel."""

    @staticmethod
    def replaces(module: nn.Module) -> bool:
        """Whether ``module`` is such a conv: groups = in = out channels, 3x3, stride 1, padding = dilation."""
        return (
            type(module) is nn.Conv2d
            and module.groups == module.in_channels == module.out_channels
            and tuple(module.kernel_size) == (3, 3)
            and tuple(module.stride) == (1, 1)
            and module.padding_mode == "zeros"
            and isinstance(module.padding, tuple)
            and module.padding[0] == module.padding[1] == module.dilation[0] == module.dilation[1]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if can_run(x):
            return _DepthwiseConv3x3.apply(x, self.weight, self.bias, int(self.dilation[0]))
        return super().forward(x)


class _ChannelLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        # one pass per block of pixels; the backward recomputes the normalised values from x
        out, mean, std = torch.ops.egeunet_cpu.channel_layer_norm_forward(x, weight, bias, eps)
        ctx.save_for_backward(x, mean, std, weight)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_x, grad_w, grad_b = torch.ops.egeunet_cpu.channel_layer_norm_backward(grad, *ctx.saved_tensors)
        return grad_x, grad_w, grad_b, None


class ChannelLayerNormKernel(ChannelFirstLayerNorm):
    """:class:`~egeunet_monai.networks.blocks.ChannelFirstLayerNorm` in one kernel pass forward and one backward."""

    @staticmethod
    def replaces(module: nn.Module) -> bool:
        return type(module) is ChannelFirstLayerNorm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if can_run(x):
            return _ChannelLayerNorm.apply(x, self.weight, self.bias, self.eps)
        return super().forward(x)


@lru_cache(maxsize=64)
def _interpolation_matrix(out_size: int, in_size: int, dtype: torch.dtype) -> torch.Tensor:
    """out_size x in_size weights of 1-D linear interpolation with align_corners=True."""
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    if in_size == 1 or out_size == 1:
        m[:, 0] = 1.0
        return m.to(dtype)
    position = torch.arange(out_size, dtype=torch.float64) * (in_size - 1) / (out_size - 1)
    low = position.floor().clamp(max=in_size - 2).long()
    frac = position - low
    rows = torch.arange(out_size)
    m[rows, low] = 1 - frac
    m[rows, low + 1] += frac
    return m.to(dtype)


class _BilinearResize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        ctx.in_size = (x.shape[2], x.shape[3])
        return torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=True)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # bilinear interpolation is rows @ x @ columns^T: its adjoint is two small matrix products (GEMMs) instead
        # of PyTorch's scatter-add backward kernel
        rows = _interpolation_matrix(grad.shape[2], ctx.in_size[0], grad.dtype)
        cols = _interpolation_matrix(grad.shape[3], ctx.in_size[1], grad.dtype)
        return rows.T @ grad @ cols, None, None


class BilinearResizeMatmul(BilinearResize):
    """:class:`~egeunet_monai.networks.blocks.BilinearResize` with the same forward (``F.interpolate``, the same bits)
    and its backward as two matrix products (no C++ kernel: PyTorch's GEMM)."""

    @staticmethod
    def replaces(module: nn.Module) -> bool:
        return type(module) is BilinearResize

    def forward(self, x: torch.Tensor, size: list[int]) -> torch.Tensor:
        if can_run(x):
            return _BilinearResize.apply(x, int(size[0]), int(size[1]))
        return super().forward(x, size)
