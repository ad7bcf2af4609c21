"""``EGEUNet(fused_ops=True)`` against the plain network. Its PyTorch compositions (C++ kernels off): the same forward
bits and the same float64 gradients. Its C++ kernels (``cpu_kernels``): see tests/networks/test_cpu_kernels.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from egeunet_monai.networks import EGEUNet
from egeunet_monai.networks.blocks import ChannelFirstLayerNorm, cpu_kernels, fused_ops


@pytest.fixture(autouse=True)
def pytorch_compositions():
    """These tests hold the PyTorch tier of fused_ops to bit-identity: the C++ kernels are off while they run."""
    previous = cpu_kernels.set_enabled(False)
    yield
    cpu_kernels.set_enabled(previous)


def _pair(dtype: torch.dtype = torch.float32) -> tuple[EGEUNet, EGEUNet]:
    torch.manual_seed(0)
    plain = EGEUNet().to(dtype)
    fused = EGEUNet(fused_ops=True).to(dtype)
    fused.load_state_dict(plain.state_dict())
    return plain, fused


def _images(dtype: torch.dtype, height: int = 64, width: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    x = torch.rand(2, 3, height, width, generator=g).to(dtype) * 255
    x[:, :, :24, :24] = 0.0  # a constant (black) corner, as dermoscopy vignettes: max-pool windows with ties
    return x


def _relative_grad_gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    gaps = []
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert p.grad is not None and q.grad is not None, name
        gaps.append(((p.grad - q.grad).abs().max() / p.grad.abs().max().clamp_min(1e-30)).item())
    return max(gaps)


def test_same_state_dict_keys():
    plain, fused = _pair()
    assert list(plain.state_dict()) == list(fused.state_dict())


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_forward_is_bit_identical(mode):
    plain, fused = _pair()
    plain.train(mode == "train")
    fused.train(mode == "train")
    x = _images(torch.float32)
    with torch.set_grad_enabled(mode == "train"):
        a, b = plain(x), fused(x)
    a = a if isinstance(a, list) else [a]
    b = b if isinstance(b, list) else [b]
    assert len(a) == len(b) == (6 if mode == "train" else 1)
    for i, (p, q) in enumerate(zip(a, b)):
        assert torch.equal(p, q), f"output {i} differs by {(p - q).abs().max().item()}"


def test_network_gradients_match_in_float64():
    plain, fused = _pair(torch.float64)
    x = _images(torch.float64)
    for net in (plain, fused):
        outputs = net.train()(x)
        sum(o.square().mean() * (k + 1) for k, o in enumerate(outputs)).backward()
    assert _relative_grad_gap(plain, fused) < 1e-10  # measured <= 3.7e-15 under the three dispatch levels


def test_max_pool_gradient_goes_to_the_first_maximum_as_max_pool2d():
    x = torch.randn(2, 3, 8, 10, dtype=torch.float64)
    x[0, 0, :2, :2] = 1.0  # a 4-way tie
    x[0, 1, 2:4, 2:4] = torch.tensor([[0.0, 5.0], [5.0, 5.0]], dtype=torch.float64)  # a 3-way tie after position 0
    grad = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    F.max_pool2d(a, 2, 2).backward(grad)
    out = fused_ops.max_pool2x2(b)
    out.backward(grad)
    assert torch.equal(out, F.max_pool2d(x, 2, 2))
    assert torch.equal(a.grad, b.grad)


def _assert_same_output_and_gradients(plain, fused, leaves: list[torch.Tensor]) -> None:
    """``plain()`` and ``fused()`` give the same output bits and the same float64 gradients for ``leaves``."""
    y = plain()
    grad = torch.randn_like(y)
    expected = torch.autograd.grad(y, leaves, grad)
    y2 = fused()
    got = torch.autograd.grad(y2, leaves, grad)
    assert torch.equal(y, y2)
    # float64 rounding of another summation order: measured <= 3.7e-15 of the largest gradient on Intel Xeon under
    # ATEN_CPU_CAPABILITY unset/avx2/default; relative to the largest, as an element that cancels keeps the others'
    # absolute error
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12 * e.abs().max().item())


@pytest.mark.parametrize("dilation", [1, 2, 5, 7])
def test_depthwise_conv_matches_conv2d(dilation):
    torch.manual_seed(dilation)
    conv = torch.nn.Conv2d(5, 5, 3, padding=dilation, dilation=dilation, groups=5).double()
    x = torch.randn(2, 5, 20, 18, dtype=torch.float64, requires_grad=True)
    _assert_same_output_and_gradients(
        lambda: conv(x), lambda: fused_ops.depthwise_conv3x3(x, conv), [x, conv.weight, conv.bias]
    )


def test_channel_layer_norm_matches_the_module():
    norm = ChannelFirstLayerNorm(20).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 20, 9, 7, dtype=torch.float64, requires_grad=True)
    _assert_same_output_and_gradients(
        lambda: norm(x), lambda: fused_ops.channel_layer_norm(x, norm.weight, norm.bias, norm.eps), [x, norm.weight, norm.bias]
    )


@pytest.mark.parametrize("in_size,out_size", [((8, 8), (256, 256)), ((16, 12), (64, 96)), ((1, 1), (8, 8))])
def test_upsample_matches_interpolate(in_size, out_size):
    x = torch.randn(2, 3, *in_size, dtype=torch.float64, requires_grad=True)
    _assert_same_output_and_gradients(
        lambda: F.interpolate(x, size=out_size, mode="bilinear", align_corners=True),
        lambda: fused_ops.upsample_bilinear(x, list(out_size)),
        [x],
    )


def test_scripted_network_with_fused_ops_runs_the_plain_operators():
    plain, fused = _pair()
    scripted = torch.jit.script(fused.eval())
    x = _images(torch.float32)
    with torch.no_grad():
        assert torch.equal(scripted(x), plain.eval()(x))


def test_cpu_autocast_runs_the_plain_operators():
    plain, fused = _pair()
    x = _images(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = plain.train()(x), fused.train()(x)
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    sum(o.float().mean() for o in b).backward()  # a hand-written backward under autocast would see mixed dtypes
    assert all(p.grad is not None for p in fused.parameters())
