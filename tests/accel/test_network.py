# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The kernel versions of the network's modules (``egeunet_monai/accel/network.py``, ``csrc/network_cpu.cpp``): the
same values and gradients as the reference modules they replace, the reference forward wherever the kernels do not
apply, and ``accelerate`` swapping them into EGEUNet without changing a parameter or a state dict key."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from egeunet_monai.accel import accelerate, is_accelerated, kernels
from egeunet_monai.accel.network import (
    BilinearResizeMatmul,
    ChannelLayerNormKernel,
    DepthwiseConv3x3Kernel,
    MaxPool2x2Kernel,
)
from egeunet_monai.networks import EGEUNet
from egeunet_monai.networks.blocks import BilinearResize, ChannelFirstLayerNorm
from tests.conftest import require_cpu_kernels


@pytest.fixture(scope="module", autouse=True)
def ops():
    return require_cpu_kernels()


def _compare(reference, kernel, leaves, atol_out=1e-12, rtol_grad=1e-11):
    """Outputs and float64 gradients of ``kernel()`` against ``reference()`` (the reference module)."""
    torch.manual_seed(3)
    y = reference()
    grad = torch.randn_like(y)
    expected = torch.autograd.grad(y, leaves, grad)
    y2 = kernel()
    got = torch.autograd.grad(y2, leaves, grad)
    torch.testing.assert_close(y2, y, rtol=0, atol=atol_out)
    for name, g, e in zip(("input", "weight", "bias"), got, expected):
        torch.testing.assert_close(g, e, rtol=rtol_grad, atol=rtol_grad * e.abs().max().item(), msg=f"{name} gradient")


def _kernel_version(module: nn.Module, cls: type) -> nn.Module:
    out = accelerate(copy.deepcopy(module))
    assert type(out) is cls
    return out


@pytest.mark.parametrize("channels,size", [(5, (33, 47)), (20, (16, 16)), (3, (1, 700))])
def test_channel_layer_norm(channels, size):
    norm = ChannelFirstLayerNorm(channels).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    kernel = _kernel_version(norm, ChannelLayerNormKernel)
    x = torch.randn(3, channels, *size, dtype=torch.float64, requires_grad=True)
    # the kernel's own parameters are the deep copy's: compare the gradients of the input only, then the parameters
    _compare(lambda: norm(x), lambda: kernel(x), [x])
    kernel.load_state_dict(norm.state_dict())
    _compare(
        lambda: ChannelFirstLayerNorm.forward(kernel, x), lambda: kernel(x), [x, kernel.weight, kernel.bias]
    )


@pytest.mark.parametrize("dilation", [1, 2, 5, 7])
@pytest.mark.parametrize("size", [(20, 18), (6, 5)])  # 6 x 5 is smaller than the dilated kernel: padding only
@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_conv(dilation, size, bias):
    torch.manual_seed(dilation)
    conv = _kernel_version(
        nn.Conv2d(5, 5, 3, padding=dilation, dilation=dilation, groups=5, bias=bias).double(), DepthwiseConv3x3Kernel
    )
    x = torch.randn(2, 5, *size, dtype=torch.float64, requires_grad=True)
    leaves = [x, conv.weight] + ([conv.bias] if bias else [])
    _compare(lambda: nn.Conv2d.forward(conv, x), lambda: conv(x), leaves)


def test_only_what_a_kernel_computes_is_swapped():
    others = [
        nn.Conv2d(5, 5, 3, padding=1, groups=5, stride=2),  # strided
        nn.Conv2d(5, 5, 5, padding=2, groups=5),  # 5x5
        nn.Conv2d(4, 8, 3, padding=1, groups=4),  # not depth-wise
        nn.Conv2d(5, 5, 3, padding=2, dilation=1, groups=5),  # padding is not the dilation
        nn.Conv2d(5, 5, 3, padding=1, groups=5, padding_mode="reflect"),
        nn.MaxPool2d(3, 2),
        nn.MaxPool2d(2, 2, return_indices=True),
        nn.MaxPool2d(2, 2, ceil_mode=True),
        nn.GroupNorm(4, 8),  # measured no gain: no kernel (docs/benchmarks.md)
    ]
    for module in others:
        assert accelerate(module) is module and type(module) in (nn.Conv2d, nn.MaxPool2d, nn.GroupNorm), module


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # float32 runs the AVX2 rows where built with them
def test_max_pool_values_and_first_maximum_gradient(ops, dtype):
    pool = _kernel_version(nn.MaxPool2d(2, 2), MaxPool2x2Kernel)
    x = torch.randn(2, 3, 8, 38, dtype=dtype)  # 19 outputs a row: two blocks of 8 and a tail of 3
    x[0, 0, :2, :2] = 1.0  # a 4-way tie
    x[0, 1, 2:4, 2:4] = torch.tensor([[0.0, 5.0], [5.0, 5.0]], dtype=dtype)  # a 3-way tie after position 0
    x[1, 2, 4:6, 4:6] = torch.tensor([[0.0, float("nan")], [9.0, 1.0]], dtype=dtype)  # NaN propagates
    x[1, 2, 4:6, 20:22] = torch.tensor([[float("nan"), 3.0], [float("nan"), 1.0]], dtype=dtype)  # the last NaN takes it
    x[1, 1, 0:2, 34:36] = torch.tensor([[-float("inf"), -float("inf")], [-1.0, 7.0]], dtype=dtype)  # in the tail
    x[0, 2, 2:4, 30:32] = torch.tensor([[2.0, 2.0], [float("nan"), 2.0]], dtype=dtype)  # NaN after a tie
    grad = torch.randn(2, 3, 4, 19, dtype=dtype)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected = F.max_pool2d(a, 2, 2)
    expected.backward(grad)
    out = pool(b)
    out.backward(grad)
    torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(a.grad, b.grad)
    _, index = ops.max_pool2x2_forward(x)
    assert index.dtype == torch.uint8 and index[0, 0, 0, 0] == 0 and index[0, 1, 1, 1] == 1 and index[1, 2, 2, 2] == 1
    assert index[1, 2, 2, 10] == 2 and index[1, 1, 0, 17] == 3 and index[0, 2, 1, 15] == 2


@pytest.mark.parametrize("in_size,out_size", [((4, 6), (8, 12)), ((1, 5), (3, 9)), ((7, 7), (7, 7))])
def test_bilinear_resize_same_forward_bits_and_gradients(in_size, out_size):
    resize = _kernel_version(BilinearResize(), BilinearResizeMatmul)
    x = torch.randn(2, 3, *in_size, dtype=torch.float64, requires_grad=True)
    assert torch.equal(resize(x, list(out_size)), BilinearResize()(x, list(out_size)))
    _compare(lambda: BilinearResize()(x, list(out_size)), lambda: resize(x, list(out_size)), [x], atol_out=0)


def test_float32_forward_within_rounding():
    torch.manual_seed(0)
    x = torch.randn(2, 20, 32, 32) * 30 + 5
    norm = ChannelFirstLayerNorm(20)
    # each is float32 rounding from the float64 result (measured <= 5.2e-7 at |y| <= 3.5), the two 4.8e-7 apart, on
    # Intel Xeon under ATEN_CPU_CAPABILITY unset/avx2/default: bound 2e-6 (4x)
    torch.testing.assert_close(_kernel_version(norm, ChannelLayerNormKernel)(x), norm(x), rtol=0, atol=2e-6)


def _pair(dtype: torch.dtype = torch.float64) -> tuple[EGEUNet, EGEUNet]:
    torch.manual_seed(0)
    plain = EGEUNet().to(dtype)
    return plain, accelerate(copy.deepcopy(plain))


def _images(dtype: torch.dtype) -> torch.Tensor:
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(7)).to(dtype) * 255
    x[:, :, :24, :24] = 0.0  # a black corner, as dermoscopy vignettes: max-pool windows with ties
    return x


def test_accelerate_swaps_modules_in_place_and_keeps_parameters_and_keys():
    net = EGEUNet()
    parameters = dict(net.named_parameters())
    keys = list(net.state_dict())
    assert not is_accelerated(net)
    assert accelerate(net) is net and is_accelerated(net)
    assert dict(net.named_parameters()) == parameters  # the same tensors: an optimizer built before still works
    assert list(net.state_dict()) == keys
    swapped = {type(m) for m in net.modules()}
    assert {MaxPool2x2Kernel, ChannelLayerNormKernel, DepthwiseConv3x3Kernel, BilinearResizeMatmul} <= swapped
    assert ChannelFirstLayerNorm not in swapped and BilinearResize not in swapped and nn.MaxPool2d not in swapped
    # every 3x3 depth-wise conv: the bridges' 4 dilated ones, GHPA's 3 (its 'dw', 'ldw' and the xy gate's mixer)
    assert sum(type(m) is DepthwiseConv3x3Kernel for m in net.modules()) == 4 * 5 + 3 * 6
    assert accelerate(net) is net  # again: nothing left to swap
    plain = EGEUNet()
    plain.load_state_dict(net.state_dict())  # checkpoints go both ways
    net.load_state_dict(plain.state_dict())


@pytest.mark.parametrize("enabled", [False, "false", "0"])
def test_accelerate_off_changes_nothing(enabled):
    net = EGEUNet()
    assert accelerate(net, enabled) is net and not is_accelerated(net)
    with pytest.raises(ValueError, match="--accelerate must be true or false"):
        accelerate(net, "fast")


def test_accelerated_network_matches_the_reference_in_float64():
    plain, fast = _pair()
    x = _images(torch.float64)
    for net in (plain, fast):
        outputs = net.train()(x)
        sum(o.square().mean() * (k + 1) for k, o in enumerate(outputs)).backward()
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        gap = ((p.grad - q.grad).abs().max() / p.grad.abs().max().clamp_min(1e-30)).item()
        assert gap < 1e-10, f"{name}: relative gradient gap {gap:.1e}"
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(x), plain.eval()(x), rtol=0, atol=1e-10)


def test_cpu_autocast_and_other_dtypes_run_the_reference_operators():
    plain, fast = _pair(torch.float32)
    x = _images(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = plain.train()(x), fast.train()(x)
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    sum(o.float().mean() for o in b).backward()  # a hand-written backward under autocast would see mixed dtypes
    assert all(p.grad is not None for p in fast.parameters())
    x16 = torch.randn(1, 4, 8, 8).to(torch.bfloat16)
    assert torch.equal(accelerate(nn.MaxPool2d(2, 2))(x16), F.max_pool2d(x16, 2, 2))


def test_bad_input_is_named(ops):
    with pytest.raises(RuntimeError, match="channel_layer_norm: expected an N x C x H x W tensor"):
        ops.channel_layer_norm_forward(torch.zeros(2, 3, 4), torch.ones(2), torch.zeros(2), 1e-6)
    with pytest.raises(RuntimeError, match="max_pool2x2: H and W must be even, got 5x4"):
        ops.max_pool2x2_forward(torch.zeros(1, 1, 5, 4))
    with pytest.raises(RuntimeError, match="depthwise3x3: expected a 3 x 1 x 3 x 3 weight"):
        ops.depthwise3x3_forward(torch.zeros(1, 3, 8, 8), torch.zeros(3, 1, 5, 5), None, 1)
    with pytest.raises(RuntimeError, match="expected float32 or float64"):
        ops.max_pool2x2_forward(torch.zeros(1, 1, 4, 4, dtype=torch.bfloat16))


def test_a_failed_build_warns_once_and_accelerate_changes_nothing(monkeypatch):
    monkeypatch.setitem(kernels._state, "loaded", None)
    monkeypatch.setattr(kernels, "_extension_name", lambda: "egeunet_cpu_test_failed_build")
    monkeypatch.setattr(kernels, "_build_flags", lambda: ["-fno-such-compiler-flag"])
    net = EGEUNet()
    with pytest.warns(RuntimeWarning, match="could not build the C.. CPU kernels .*training runs the PyTorch operators"):
        assert accelerate(net) is net
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not at every call
        assert kernels.load() is False
        assert accelerate(net) is net and not is_accelerated(net)
