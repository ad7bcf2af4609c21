"""The C++ CPU kernels behind ``EGEUNet(fused_ops=True)`` (``egeunet_monai/networks/blocks/csrc/fused_cpu.cpp``):
the same values and gradients as PyTorch's own operators, and a clear fall-back when they cannot be built."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from egeunet_monai.networks import EGEUNet
from egeunet_monai.networks.blocks import ChannelFirstLayerNorm, cpu_kernels, fused_ops
from tests.conftest import require_cpu_kernels


@pytest.fixture(scope="module", autouse=True)
def kernels():
    with cpu_kernels.enabled(True):
        yield require_cpu_kernels()


def _grads(fn, leaves, grad):
    y = fn()
    return y, torch.autograd.grad(y, leaves, grad)


def _compare(reference, kernel, leaves, atol_out=1e-12, rtol_grad=1e-11):
    """Outputs and float64 gradients of ``kernel()`` against ``reference()`` (the plain PyTorch operators)."""
    torch.manual_seed(3)
    y = reference()
    grad = torch.randn_like(y)
    expected = torch.autograd.grad(y, leaves, grad)
    cpu_kernels.set_enabled(True)
    y2, got = _grads(kernel, leaves, grad)
    torch.testing.assert_close(y2, y, rtol=0, atol=atol_out)
    for name, g, e in zip(("input", "weight", "bias"), got, expected):
        torch.testing.assert_close(g, e, rtol=rtol_grad, atol=rtol_grad * e.abs().max().item(), msg=f"{name} gradient")


@pytest.mark.parametrize("channels,size", [(5, (33, 47)), (20, (16, 16)), (3, (1, 700))])
def test_channel_layer_norm(channels, size):
    norm = ChannelFirstLayerNorm(channels).double()  # the plain module: the original's formula
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, channels, *size, dtype=torch.float64, requires_grad=True)
    _compare(lambda: norm(x), lambda: fused_ops.channel_layer_norm(x, norm.weight, norm.bias, norm.eps), [x, norm.weight, norm.bias])


@pytest.mark.parametrize("dilation", [1, 2, 5, 7])
@pytest.mark.parametrize("size", [(20, 18), (6, 5)])  # 6 x 5 is smaller than the dilated kernel: padding only
def test_depthwise_conv(dilation, size):
    torch.manual_seed(dilation)
    conv = torch.nn.Conv2d(5, 5, 3, padding=dilation, dilation=dilation, groups=5).double()
    x = torch.randn(2, 5, *size, dtype=torch.float64, requires_grad=True)
    _compare(lambda: conv(x), lambda: fused_ops.depthwise_conv3x3(x, conv), [x, conv.weight, conv.bias])


def test_depthwise_conv_without_bias():
    conv = torch.nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4, bias=False).double()
    x = torch.randn(2, 4, 10, 12, dtype=torch.float64, requires_grad=True)
    _compare(lambda: conv(x), lambda: fused_ops.depthwise_conv3x3(x, conv), [x, conv.weight])


@pytest.mark.parametrize("groups,channels", [(4, 8), (4, 24), (1, 3)])
def test_group_norm_backward(groups, channels):
    norm = torch.nn.GroupNorm(groups, channels).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = (torch.randn(3, channels, 19, 26, dtype=torch.float64) * 4 + 2).requires_grad_()
    _compare(lambda: norm(x), lambda: fused_ops.group_norm(x, norm), [x, norm.weight, norm.bias], atol_out=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # float32 runs the AVX2 rows where built with them
def test_max_pool_values_and_first_maximum_gradient(kernels, dtype):
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
    out = fused_ops.max_pool2x2(b)
    out.backward(grad)
    torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(a.grad, b.grad)
    _, index = kernels.max_pool2x2_forward(x)
    assert index.dtype == torch.uint8 and index[0, 0, 0, 0] == 0 and index[0, 1, 1, 1] == 1 and index[1, 2, 2, 2] == 1
    assert index[1, 2, 2, 10] == 2 and index[1, 1, 0, 17] == 3 and index[0, 2, 1, 15] == 2


def test_float32_forward_within_rounding():
    torch.manual_seed(0)
    x = torch.randn(2, 20, 32, 32) * 30 + 5
    norm = ChannelFirstLayerNorm(20)
    cpu_kernels.set_enabled(False)
    expected = fused_ops.channel_layer_norm(x, norm.weight, norm.bias, norm.eps)
    cpu_kernels.set_enabled(True)
    # each is float32 rounding from the float64 result (measured <= 5.2e-7 at |y| <= 3.5), the two 4.8e-7 apart, on
    # Intel Xeon under ATEN_CPU_CAPABILITY unset/avx2/default: bound 2e-6 (4x)
    torch.testing.assert_close(fused_ops.channel_layer_norm(x, norm.weight, norm.bias, norm.eps), expected, rtol=0, atol=2e-6)


def test_network_with_kernels_matches_the_plain_network():
    torch.manual_seed(0)
    plain = EGEUNet().double().train()
    fused = EGEUNet(fused_ops=True).double().train()
    fused.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 64, 96, dtype=torch.float64) * 255
    x[:, :, :24, :24] = 0.0  # a black corner: max-pool windows with ties
    for net in (plain, fused):
        outputs = net(x)
        sum(o.square().mean() * (k + 1) for k, o in enumerate(outputs)).backward()
    for (name, p), q in zip(plain.named_parameters(), fused.parameters()):
        gap = ((p.grad - q.grad).abs().max() / p.grad.abs().max().clamp_min(1e-30)).item()
        assert gap < 1e-10, f"{name}: relative gradient gap {gap:.1e}"
    with torch.no_grad():
        torch.testing.assert_close(fused.eval()(x), plain.eval()(x), rtol=0, atol=1e-10)


def test_bad_input_is_named(kernels):
    with pytest.raises(RuntimeError, match="channel_layer_norm: expected an N x C x H x W tensor"):
        kernels.channel_layer_norm_forward(torch.zeros(2, 3, 4), torch.ones(2), torch.zeros(2), 1e-6)
    with pytest.raises(RuntimeError, match="max_pool2x2: H and W must be even, got 5x4"):
        kernels.max_pool2x2_forward(torch.zeros(1, 1, 5, 4))
    with pytest.raises(RuntimeError, match="depthwise3x3: expected a 3 x 1 x 3 x 3 weight"):
        kernels.depthwise3x3_forward(torch.zeros(1, 3, 8, 8), torch.zeros(3, 1, 5, 5), None, 1)
    with pytest.raises(RuntimeError, match="expected float32 or float64"):
        kernels.max_pool2x2_forward(torch.zeros(1, 1, 4, 4, dtype=torch.bfloat16))


def test_other_dtypes_run_the_pytorch_operators():
    x = torch.randn(1, 4, 8, 8).to(torch.bfloat16)
    assert torch.equal(fused_ops.max_pool2x2(x), F.max_pool2d(x, 2, 2))


def test_a_failed_build_warns_and_falls_back(monkeypatch):
    monkeypatch.setitem(cpu_kernels._state, "loaded", None)
    monkeypatch.setattr(cpu_kernels, "_extension_name", lambda: "egeunet_cpu_test_failed_build")
    monkeypatch.setattr(cpu_kernels, "_build_flags", lambda: ["-fno-such-compiler-flag"])
    with pytest.warns(RuntimeWarning, match="could not build the C.. CPU kernels .*using the slower PyTorch operators"):
        assert cpu_kernels.available() is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not at every call
        assert cpu_kernels.available() is False
        x = torch.randn(1, 2, 4, 4, requires_grad=True)
        fused_ops.max_pool2x2(x).sum().backward()  # the PyTorch composition
    assert torch.equal(x.grad.sum((2, 3)), torch.full((1, 2), 4.0))


def test_kernels_keep_the_calling_threads_intra_op_count():
    """SplitBatchIteration's workers compute with one intra-op thread each; a kernel must not reset that (a build
    through at::parallel_for with OpenMP did, on each thread's first call: the split step ran 1.6x slower)."""
    from egeunet_monai.threads import intra_op_thread_pool

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    pool = intra_op_thread_pool(1, 1, "kernel-test")
    try:

        def work() -> int:
            x = torch.randn(2, 8, 32, 32, requires_grad=True)
            norm = ChannelFirstLayerNorm(8, fused=True)
            conv = torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
            y = fused_ops.max_pool2x2(fused_ops.depthwise_conv3x3(norm(x), conv))
            fused_ops.group_norm(y, torch.nn.GroupNorm(4, 8)).sum().backward()
            return torch.get_num_threads()

        assert pool.submit(work).result() == 1
        assert torch.get_num_threads() == 2
    finally:
        pool.shutdown()
        torch.set_num_threads(threads)
