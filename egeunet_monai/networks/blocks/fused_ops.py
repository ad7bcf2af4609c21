# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Faster CPU versions of the operators that dominate an EGE-UNet training step, for ``EGEUNet(fused_ops=True)``.

Two tiers. Where the C++ kernels of :mod:`cpu_kernels` build (float32/float64), max-pooling, the channel LayerNorm
and the bridges' depth-wise convs run there, forward and backward, and GroupNorm's backward (the same results up to
float rounding: 4e-7 on float32 outputs, 1e-13 relative in float64). Otherwise, or with
``cpu_kernels.set_enabled(False)``, the PyTorch compositions below run: each forward **bit-identical** to the
operator it replaces, each backward the same gradient in fewer passes over memory (equal up to float rounding,
first-maximum semantics of ``max_pool2d`` included). They exist
because PyTorch's CPU kernels for these cases are slow for a network this small and this wide at full resolution:
``max_pool2d_with_indices`` (index bookkeeping), the backward of depth-wise and dilated depth-wise convolutions, the
backward of bilinear upsampling (a scatter), and the dozen autograd nodes of a LayerNorm written out over the channel
axis. ``tests/networks/test_fused_ops.py`` checks forward bits and float64 gradients against the plain operators;
``scripts/benchmark.py`` measures the gain. On other devices, under autocast and in TorchScript the plain operators run.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from egeunet_monai.networks.blocks import cpu_kernels

__all__ = ["channel_layer_norm", "depthwise_conv3x3", "group_norm", "max_pool2x2", "upsample_bilinear", "use_fused_ops"]


def use_fused_ops(x: torch.Tensor) -> bool:
    """Whether the operators of this module replace the plain ones for ``x`` (CPU, eager, no autocast)."""
    # not under CPU autocast: its per-operator casts would not reach inside the hand-written backwards
    return (
        x.device.type == "cpu"
        and not torch.jit.is_scripting()
        and not torch.jit.is_tracing()
        and not torch.is_autocast_enabled("cpu")
    )


def _pool_rows_then_columns(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    rows = x.reshape(n, c, h // 2, 2 * w)
    rows = torch.maximum(rows[..., :w], rows[..., w:])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.kernel = cpu_kernels.runs_for(x)
        if ctx.kernel:  # the maximum and which of the four it was (one byte per output)
            out, index = torch.ops.egeunet_cpu.max_pool2x2_forward(x)
            ctx.save_for_backward(index)
            return out
        out = _pool_rows_then_columns(x)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        if ctx.kernel:
            return torch.ops.egeunet_cpu.max_pool2x2_backward(grad, ctx.saved_tensors[0])
        x, out = ctx.saved_tensors
        n, c, h, w = x.shape
        window = x.reshape(n, c, h // 2, 2, w // 2, 2)
        # as max_pool2d: the first maximum in scan order (top-left, top-right, bottom-left, bottom-right) takes it
        top_left = window[:, :, :, 0, :, 0] == out
        top_right = (window[:, :, :, 0, :, 1] == out) & ~top_left
        taken = top_left | top_right
        bottom_left = (window[:, :, :, 1, :, 0] == out) & ~taken
        bottom_right = ~(taken | bottom_left)
        zero = grad.new_zeros(())
        parts = [torch.where(m, grad, zero) for m in (top_left, top_right, bottom_left, bottom_right)]
        top = torch.stack(parts[:2], dim=-1).reshape(n, c, h // 2, w)
        bottom = torch.stack(parts[2:], dim=-1).reshape(n, c, h // 2, w)
        return torch.stack([top, bottom], dim=3).reshape(n, c, h, w)


def max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2, 2)`` for even H and W: the maximum of row pairs then of column pairs (bit-identical,
    several times faster on CPU than ``max_pool2d_with_indices``)."""
    if not use_fused_ops(x) or x.shape[2] % 2 or x.shape[3] % 2:
        return F.max_pool2d(x, 2, 2)
    return _MaxPool2x2.apply(x)


def _shifted_depthwise3x3(x: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """A bias-free 3x3 depth-wise conv (zero padding, same size) as nine shifted multiply-adds: oneDNN runs
    dilations above 2 on a slow reference path (5-7x slower here)."""
    n, channels, height, width = x.shape
    d = dilation
    padded = F.pad(x, (d, d, d, d))
    out = torch.zeros_like(x)
    for i in range(3):
        for j in range(3):
            out.addcmul_(padded[:, :, i * d : i * d + height, j * d : j * d + width], weight[:, :, i, j].view(1, channels, 1, 1))
    return out


class _DepthwiseConv3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        ctx.has_bias = bias is not None
        ctx.kernel = cpu_kernels.runs_for(x)
        if ctx.kernel:
            return torch.ops.egeunet_cpu.depthwise3x3_forward(x, weight, bias, dilation)
        return F.conv2d(x, weight, bias, padding=dilation, dilation=dilation, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        d, channels = ctx.dilation, x.shape[1]
        if ctx.kernel:
            need = ctx.needs_input_grad
            grad_x, grad_w, grad_b = torch.ops.egeunet_cpu.depthwise3x3_backward(
                grad, x, weight, d, need[0], need[1], ctx.has_bias and need[2]
            )
            return grad_x, grad_w, grad_b, None
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # the transposed depth-wise conv is the same conv with the kernel flipped: a forward kernel
            flipped = weight.flip(2, 3)
            if d > 2:
                grad_x = _shifted_depthwise3x3(grad, flipped, d)
            else:
                grad_x = F.conv2d(grad, flipped, None, padding=d, dilation=d, groups=channels)
        if ctx.needs_input_grad[1]:
            height, width = x.shape[2], x.shape[3]
            padded = F.pad(x, (d, d, d, d))
            taps = [
                (padded[:, :, i * d : i * d + height, j * d : j * d + width] * grad).sum((0, 2, 3))
                for i in range(3)
                for j in range(3)
            ]
            grad_w = torch.stack(taps, 1).view_as(weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def depthwise_conv3x3(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a 3x3 depth-wise ``conv`` with padding equal to its dilation; on CPU its backward runs as
    convolutions and reductions (PyTorch's depth-wise backward kernels are 2-4x slower here)."""
    if not use_fused_ops(x):
        return conv(x)
    return _DepthwiseConv3x3.apply(x, conv.weight, conv.bias, int(conv.dilation[0]))


class _ChannelLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.kernel = cpu_kernels.runs_for(x)
        if ctx.kernel:  # one pass per block of pixels; the backward recomputes the normalised values from x
            out, mean, std = torch.ops.egeunet_cpu.channel_layer_norm_forward(x, weight, bias, eps)
            ctx.save_for_backward(x, mean, std, weight)
            return out
        # the operations of ChannelFirstLayerNorm.forward, in its order: the same bits
        mean = x.mean(1, keepdim=True)
        centred = x - mean
        std = torch.sqrt(centred.pow(2).mean(1, keepdim=True) + eps)
        normalized = centred / std
        ctx.save_for_backward(normalized, std, weight)
        return weight[:, None, None] * normalized + bias[:, None, None]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.kernel:
            grad_x, grad_w, grad_b = torch.ops.egeunet_cpu.channel_layer_norm_backward(grad, *ctx.saved_tensors)
            return grad_x, grad_w, grad_b, None
        normalized, std, weight = ctx.saved_tensors
        grad_w = (grad * normalized).sum((0, 2, 3))
        grad_b = grad.sum((0, 2, 3))
        grad_n = grad * weight[:, None, None]
        mean_grad = grad_n.mean(1, keepdim=True)
        mean_proj = (grad_n * normalized).mean(1, keepdim=True)
        grad_x = (grad_n - mean_grad).sub_(normalized * mean_proj).div_(std)
        return grad_x, grad_w, grad_b, None


def channel_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the channel axis of N x C x H x W, as ``ChannelFirstLayerNorm``, with a one-node backward."""
    return _ChannelLayerNorm.apply(x, weight, bias, eps)


@lru_cache(maxsize=64)
def _interpolation_matrix(out_size: int, in_size: int, dtype: torch.dtype) -> torch.Tensor:
    """out_size x in_size weights of 1-D linear interpolation with align_corners=True."""
    if in_size == 1 or out_size == 1:
        m = torch.zeros(out_size, in_size, dtype=torch.float64)
        m[:, 0] = 1.0
        return m.to(dtype)
    position = torch.arange(out_size, dtype=torch.float64) * (in_size - 1) / (out_size - 1)
    low = position.floor().clamp(max=in_size - 2).long()
    frac = position - low
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    m[rows, low] = 1 - frac
    m[rows, low + 1] += frac
    return m.to(dtype)


class _UpsampleBilinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        ctx.in_size = (x.shape[2], x.shape[3])
        return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=True)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # bilinear interpolation is rows @ x @ columns^T: its adjoint is two small matrix products (GEMMs) instead
        # of PyTorch's scatter-add backward kernel
        rows = _interpolation_matrix(grad.shape[2], ctx.in_size[0], grad.dtype)
        cols = _interpolation_matrix(grad.shape[3], ctx.in_size[1], grad.dtype)
        return rows.T @ grad @ cols, None, None


def upsample_bilinear(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=True)`` with a matrix-product backward on CPU."""
    if not use_fused_ops(x):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    return _UpsampleBilinear.apply(x, int(size[0]), int(size[1]))


class _GroupNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
        n, c, h, w = x.shape
        out, mean, rstd = torch.native_group_norm(x, weight, bias, n, c, h * w, groups, eps)  # F.group_norm's kernel
        ctx.save_for_backward(x, mean, rstd, weight)
        ctx.groups = groups
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, mean, rstd, weight = ctx.saved_tensors
        grad_x, grad_w, grad_b = torch.ops.egeunet_cpu.group_norm_backward(grad, x, mean, rstd, weight, ctx.groups)
        return grad_x, grad_w, grad_b, None, None


def group_norm(x: torch.Tensor, norm: torch.nn.GroupNorm) -> torch.Tensor:
    """``norm(x)`` (an affine ``nn.GroupNorm``): PyTorch's forward, the C++ kernel's backward (1.07-1.2x forward and
    backward at 4 x 8 x 256 x 256 on one thread here)."""
    if not (use_fused_ops(x) and norm.affine and x.dim() == 4 and cpu_kernels.runs_for(x)):
        return F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return _GroupNorm.apply(x.contiguous(), norm.weight, norm.bias, norm.num_groups, norm.eps)
