# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""An inference-only EGE-UNet that computes the same function as :class:`~egeunet_monai.networks.nets.EGEUNet`
in eval mode with fewer, cheaper passes over memory on CPU.

``fast = optimize_for_inference(net)`` copies the network; ``fast(images)`` returns the main logits, within float32
rounding of ``net.eval()(images)`` (about 1e-6 on probabilities with trained weights, asserted at 1e-5 in
``tests/networks/test_fast_paths.py``). What it does differently, each exact in real arithmetic:

- the three GHPA gates are resized, mixed and **multiplied by the preceding LayerNorm's affine weight** once per
  input size (``x * (w * gate) + (b * gate)`` instead of ``(w * x + b) * gate``), one fused pass per group;
- the LayerNorm affine in front of a 1x1 convolution (GHPA's fourth group, GAB's tail) is **folded into that
  convolution's weight and bias**;
- channel LayerNorms take one subtraction instead of two and multiply by ``rsqrt`` instead of dividing;
- 2x2 max-pooling is the maximum of row pairs then of column pairs (bit-identical to ``max_pool2d``, without its
  index bookkeeping, one of the slowest kernels of the network on CPU);
- the first convolution (3 channels at full resolution) runs image by image, which oneDNN does three times faster
  than a whole batch (bit-identical);
- on CPU the two full-resolution levels (first two encoder stages, last decoder stage, first bridge) run two images
  at a time, so that what one stage writes is still in cache when the next reads it and the tensors stay small
  enough for the allocator to reuse them instead of page-faulting fresh memory (bit-identical; the largest single
  gain at batch 8 and above);
- the channel LayerNorms (with their affine, where it is not folded) and GAB's depth-wise convolutions run in the
  C++ kernels of :mod:`~egeunet_monai.networks.blocks.cpu_kernels` (one pass over cache-sized blocks; oneDNN runs
  the dilation 5 and 7 convolutions on a slow reference path). Where those kernels cannot be built, the dilated
  convolutions are nine shifted multiply-adds and GAB's four group LayerNorms one grouped normalisation after one
  concatenation.

With ``workers=2`` or more, a batch is split into that many parts run concurrently, each on its own thread with
one intra-op thread: on a small multi-core CPU this uses the cores better than PyTorch's per-operator parallelism,
whose tiny operators barely scale (same results as ``workers=1`` up to oneDNN's batch-size-dependent rounding).

It is for inference only (no gradients, no deep-supervision outputs). After changing the source network's weights,
call :func:`optimize_for_inference` again.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from egeunet_monai.networks.blocks import ChannelFirstLayerNorm, GroupAggregationBridge, GroupedMultiAxisHadamardAttention, cpu_kernels
from egeunet_monai.networks.nets import EGEUNet
from egeunet_monai.networks.nets.egeunet import check_input_shape
from egeunet_monai.threads import ThreadPoolOwner

__all__ = ["EGEUNetInference", "optimize_for_inference"]


def _normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the channel axis of N x C x H x W, without the affine part."""
    mean = x.mean(1, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(1, keepdim=True)
    return centred * torch.rsqrt(var + eps)


def _affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(bias[:, None, None], x, weight[:, None, None])


def _layer_norm(x: torch.Tensor, eps: float, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
    """Channel LayerNorm of N x C x H x W, with an affine if given: one C++ kernel where it is built."""
    if cpu_kernels.runs_for(x):
        c = x.shape[1]
        weight = torch.ones(c, dtype=x.dtype) if weight is None else weight
        bias = torch.zeros(c, dtype=x.dtype) if bias is None else bias
        return torch.ops.egeunet_cpu.channel_layer_norm_forward(x, weight, bias, eps)[0]
    y = _normalize(x, eps)
    return y if weight is None else _affine(y, weight, bias)


def _maxpool2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2, 2)`` for even H and W, bit for bit: the maximum of row pairs (contiguous, vectorised),
    then of column pairs."""
    n, c, h, w = x.shape
    rows = x.reshape(n, c, h // 2, 2 * w)
    rows = torch.maximum(rows[..., :w], rows[..., w:])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


class _PerImageConv(nn.Module):
    """A convolution run on chunks of the batch: for the 3-channel full-resolution first layer, oneDNN is about
    three times faster per image on small batches than on the whole batch (bit-identical results)."""

    def __init__(self, conv: nn.Module, chunk: int = 1) -> None:
        super().__init__()
        self.conv = conv
        self.chunk = chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= self.chunk or x.device.type != "cpu":
            return self.conv(x)
        return torch.cat([self.conv(part) for part in torch.split(x, self.chunk)])


def _up(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _fold_affine_into_pointwise(norm: ChannelFirstLayerNorm, conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of ``conv(norm.weight * x + norm.bias)`` as one 1x1 conv of ``x``."""
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    folded_w = w * norm.weight.detach()[None, :, None, None]
    folded_b = b + (w[:, :, 0, 0] * norm.bias.detach()[None, :]).sum(1)
    return folded_w.contiguous(), folded_b.contiguous()


class _DepthwiseConv(nn.Module):
    """A 3x3 depth-wise conv (zero padding, "same" size): oneDNN for dilations 1 and 2, nine shifted multiply-adds
    on CPU for larger dilations (which oneDNN runs on a slow reference path: about 4x slower)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.dilation = int(conv.dilation[0])
        self.padding = int(conv.padding[0])
        if conv.kernel_size != (3, 3) or conv.groups != conv.in_channels or self.padding != self.dilation:
            raise ValueError("expected a 3x3 depth-wise conv with padding equal to its dilation")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_kernels.runs_for(x):
            return torch.ops.egeunet_cpu.depthwise3x3_forward(x, self.conv.weight, self.conv.bias, self.dilation)
        if x.device.type != "cpu" or self.dilation <= 2:
            return self.conv(x)
        height, width = x.shape[2], x.shape[3]
        d = self.dilation
        channels = x.shape[1]
        padded = F.pad(x, (d, d, d, d))
        weight = self.conv.weight
        bias = self.conv.bias
        out = (
            bias.view(1, channels, 1, 1).expand(x.shape[0], channels, height, width).contiguous()
            if bias is not None
            else torch.zeros_like(x)
        )
        for i in range(3):
            for j in range(3):
                tap = padded[:, :, i * d : i * d + height, j * d : j * d + width]
                out.addcmul_(tap, weight[:, :, i, j].view(1, channels, 1, 1))
        return out


class _FastGHPA(nn.Module):
    def __init__(self, block: GroupedMultiAxisHadamardAttention) -> None:
        super().__init__()
        self.block = block
        self.eps1, self.eps2 = block.norm1.eps, block.norm2.eps
        group = block.params_xy.shape[1]
        self.group = group
        w4, b4 = _fold_affine_into_pointwise(_slice_norm(block.norm1, 3 * group, 4 * group), block.dw[0])
        self.register_buffer("dw0_weight", w4, persistent=False)
        self.register_buffer("dw0_bias", b4, persistent=False)
        self._gates: dict[str, list[torch.Tensor]] = {}

    @torch.no_grad()
    def _folded_gates(self, x: torch.Tensor) -> list[torch.Tensor]:
        height, width = int(x.shape[2]), int(x.shape[3])
        key = f"{height}x{width}:{x.device}:{x.dtype}"
        if key not in self._gates:
            gates = self.block.gate_maps(height, width)
            w = self.block.norm1.weight.detach()
            b = self.block.norm1.bias.detach()
            g = self.group
            folded: list[torch.Tensor] = []
            for k, gate in enumerate(gates):
                wk = w[k * g : (k + 1) * g][None, :, None, None]
                bk = b[k * g : (k + 1) * g][None, :, None, None]
                folded += [(wk * gate).to(x.dtype).contiguous(), (bk * gate).to(x.dtype).contiguous()]
            self._gates[key] = folded
        return self._gates[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a1, c1, a2, c2, a3, c3 = self._folded_gates(x)
        x = _layer_norm(x, self.eps1)
        x1, x2, x3, x4 = torch.chunk(x, 4, dim=1)
        dw = self.block.dw
        x4 = dw[2](dw[1](F.conv2d(x4, self.dw0_weight, self.dw0_bias)))
        x = torch.cat([torch.addcmul(c1, x1, a1), torch.addcmul(c2, x2, a2), torch.addcmul(c3, x3, a3), x4], dim=1)
        norm2 = self.block.norm2
        return self.block.ldw(_layer_norm(x, self.eps2, norm2.weight, norm2.bias))


def _slice_norm(norm: ChannelFirstLayerNorm, start: int, stop: int) -> ChannelFirstLayerNorm:
    part = ChannelFirstLayerNorm(stop - start, eps=norm.eps)
    with torch.no_grad():
        part.weight.copy_(norm.weight[start:stop])
        part.bias.copy_(norm.bias[start:stop])
    return part


class _FastGAB(nn.Module):
    def __init__(self, block: GroupAggregationBridge) -> None:
        super().__init__()
        self.block = block
        self.groups = nn.ModuleList(_DepthwiseConv(getattr(block, f"g{i}")[1]) for i in range(4))
        norms = [getattr(block, f"g{i}")[0] for i in range(4)]
        self.group_eps = norms[0].eps
        if any(n.eps != self.group_eps for n in norms):
            raise ValueError("the four GAB group norms must share one eps")
        # the four group norms' affines, in the order of the concatenated groups
        self.register_buffer("group_weight", torch.cat([n.weight.detach() for n in norms]), persistent=False)
        self.register_buffer("group_bias", torch.cat([n.bias.detach() for n in norms]), persistent=False)
        tail_norm, tail_conv = block.tail_conv[0], block.tail_conv[1]
        self.tail_eps = tail_norm.eps
        w, b = _fold_affine_into_pointwise(tail_norm, tail_conv)
        self.register_buffer("tail_weight", w, persistent=False)
        self.register_buffer("tail_bias", b, persistent=False)

    def forward(self, xh: torch.Tensor, xl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        xh = self.block.pre_project(xh)
        xh = _up(xh, [int(xl.shape[2]), int(xl.shape[3])])
        xh_groups = torch.chunk(xh, 4, dim=1)
        xl_groups = torch.chunk(xl, 4, dim=1)
        if cpu_kernels.runs_for(xl):  # each group's LayerNorm with its affine, then its conv: one kernel each
            g = self.group_weight.shape[0] // 4
            outs = [
                self.groups[i](
                    _layer_norm(
                        torch.cat((xh_groups[i], xl_groups[i], mask), dim=1),
                        self.group_eps,
                        self.group_weight[i * g : (i + 1) * g],
                        self.group_bias[i * g : (i + 1) * g],
                    )
                )
                for i in range(4)
            ]
            return F.conv2d(_layer_norm(torch.cat(outs, dim=1), self.tail_eps), self.tail_weight, self.tail_bias)
        # one concatenation and one grouped LayerNorm for the four groups instead of four of each
        parts: list[torch.Tensor] = []
        for i in range(4):
            parts += [xh_groups[i], xl_groups[i], mask]
        z = torch.cat(parts, dim=1)
        n, c, h, w = z.shape
        z = _normalize(z.view(n * 4, c // 4, h, w), self.group_eps).view(n, c, h, w)
        z = _affine(z, self.group_weight, self.group_bias)
        g = c // 4
        outs = [self.groups[i](z[:, i * g : (i + 1) * g]) for i in range(4)]
        return F.conv2d(_normalize(torch.cat(outs, dim=1), self.tail_eps), self.tail_weight, self.tail_bias)


class EGEUNetInference(ThreadPoolOwner, nn.Module):
    """The eval-mode forward of an :class:`EGEUNet`, rewritten for speed (see the module docstring).
    Build it with :func:`optimize_for_inference`. Returns the main logits, N x out_channels x H x W."""

    def __init__(self, model: EGEUNet, chunk: int = 2, workers: int = 1) -> None:
        super().__init__()
        self.chunk = max(1, int(chunk))
        self.workers = max(1, int(workers))
        self.intra_op_threads = 1
        self.thread_name_prefix = "egeunet-fast"
        self._pool = None
        net = copy.deepcopy(model).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net
        self.in_channels = net.in_channels
        self.out_channels = net.out_channels
        self.size_divisor = net.size_divisor
        self.encoder1 = _PerImageConv(net.encoder1)
        for name in ("encoder4", "encoder5", "encoder6", "decoder5", "decoder4", "decoder3"):
            setattr(self, name, _FastGHPA(getattr(net, name)))
        for i in range(1, 6):
            setattr(self, f"bridge{i}", _FastGAB(getattr(net, f"bridge{i}")))
        self.eval()

    def train(self, mode: bool = True) -> EGEUNetInference:
        if mode:
            raise RuntimeError("EGEUNetInference is for inference only; train the EGEUNet it was built from.")
        return super().train(False)

    def _apply(self, fn, recurse=True):  # moving to another device/dtype: rebuild the per-size gate constants
        for m in self.modules():
            if isinstance(m, _FastGHPA):
                m._gates = {}
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_shape(x, self.in_channels, self.size_divisor)
        parts = min(self.workers, math.ceil(x.shape[0] / self.chunk))
        if parts <= 1 or x.device.type != "cpu":
            return self._forward(x)
        return torch.cat(list(self._thread_pool().map(self._forward, torch.chunk(x, parts))))

    @torch.no_grad()  # grad mode is per thread: the workers need it too
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        height, width = int(x.shape[2]), int(x.shape[3])
        # The two shallowest levels (full and half resolution) run a few images at a time, so that each stage's
        # output is still in cache when the next stage reads it: on CPU this is the largest single gain.
        chunk = self.chunk if x.device.type == "cpu" else x.shape[0]
        parts = [self._top(p) for p in torch.split(x, chunk)]
        t1 = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        t2 = torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        t3 = F.gelu(_maxpool2(n.encoder_norm3(n.encoder3(t2))))
        t4 = F.gelu(_maxpool2(n.encoder_norm4(self.encoder4(t3))))
        t5 = F.gelu(_maxpool2(n.encoder_norm5(self.encoder5(t4))))
        t6 = F.gelu(self.encoder6(t5))

        out5 = F.gelu(n.decoder_norm5(self.decoder5(t6)))
        t5 = self.bridge5(t6, t5, n.side_head5(out5))
        out5 = out5 + t5

        out4 = F.gelu(_up(n.decoder_norm4(self.decoder4(out5)), [t4.shape[2], t4.shape[3]]))
        t4 = self.bridge4(t5, t4, n.side_head4(out4))
        out4 = out4 + t4

        out3 = F.gelu(_up(n.decoder_norm3(self.decoder3(out4)), [t3.shape[2], t3.shape[3]]))
        t3 = self.bridge3(t4, t3, n.side_head3(out3))
        out3 = out3 + t3

        out2 = F.gelu(_up(n.decoder_norm2(n.decoder2(out3)), [t2.shape[2], t2.shape[3]]))
        t2 = self.bridge2(t3, t2, n.side_head2(out2))
        out2 = out2 + t2

        outs = [
            self._bottom(o2, b2, b1, [height, width])
            for o2, b2, b1 in zip(torch.split(out2, chunk), torch.split(t2, chunk), torch.split(t1, chunk))
        ]
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def _top(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        t1 = F.gelu(_maxpool2(n.encoder_norm1(self.encoder1(x))))
        t2 = F.gelu(_maxpool2(n.encoder_norm2(n.encoder2(t1))))
        return t1, t2

    def _bottom(self, out2: torch.Tensor, t2: torch.Tensor, t1: torch.Tensor, full: list[int]) -> torch.Tensor:
        n = self.net
        out1 = F.gelu(_up(n.decoder_norm1(n.decoder1(out2)), [t1.shape[2], t1.shape[3]]))
        t1 = self.bridge1(t2, t1, n.side_head1(out1))
        out1 = out1 + t1
        return _up(n.final_conv(out1), full)


def optimize_for_inference(model: EGEUNet, chunk: int = 2, workers: int = 1) -> EGEUNetInference:
    """An inference-only copy of ``model`` that computes its eval-mode logits faster on CPU (see the module
    docstring for what is folded). ``model`` itself is not changed.

    Args:
        model: the network.
        chunk: images processed together at the two full-resolution levels on CPU (small keeps them in cache).
        workers: CPU threads that each run a part of the batch (one intra-op thread each); 2 on a 2-core machine
            gave about 1.4x over ``workers=1`` with 2 intra-op threads at batch 8 (docs/benchmarks.md).
    """
    if not isinstance(model, EGEUNet):
        raise TypeError(f"optimize_for_inference takes an EGEUNet, got {type(model).__name__}.")
    return EGEUNetInference(model, chunk=chunk, workers=workers)
