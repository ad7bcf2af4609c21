"""EGEUNet behaves like the original EGE-UNet and like a MONAI network."""

from __future__ import annotations

import pytest
import torch

from egeunet_monai.networks import EGEUNet


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_default_parameter_count_is_the_papers():
    assert _count(EGEUNet()) == 53_374


def test_train_mode_returns_main_then_sides_shallowest_to_deepest():
    torch.manual_seed(0)
    net = EGEUNet().train()
    outs = net(torch.rand(2, 3, 64, 96) * 255)
    assert isinstance(outs, list) and len(outs) == 6
    assert all(o.shape == (2, 1, 64, 96) for o in outs)
    # side1 is computed at H/2, side5 at H/32: upsampling a 2x3 map leaves a much smoother result than a 32x48 one
    roughness = [(o[..., 1:, :] - o[..., :-1, :]).abs().mean().item() / (o.std().item() + 1e-8) for o in outs[1:]]
    assert roughness[0] > roughness[-1]


def test_side_head_order_matches_the_heads():
    net = EGEUNet().train()
    with torch.no_grad():
        net.side_head5.bias.fill_(100.0)  # only the deepest head's logits jump
        outs = net(torch.rand(1, 3, 64, 64))
    assert outs[5].min() > 50 and outs[1].max() < 50


def test_eval_mode_returns_logits_tensor_only():
    net = EGEUNet().eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 64) * 255)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 64, 64)
    assert out.min() < 0 or out.max() > 1  # logits, not probabilities


def test_no_deep_supervision_returns_main_in_training():
    out = EGEUNet(deep_supervision=False).train()(torch.rand(1, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 32, 32)


def test_same_checkpoint_loads_with_or_without_deep_supervision():
    state = EGEUNet(deep_supervision=True).state_dict()
    EGEUNet(deep_supervision=False).load_state_dict(state, strict=True)


@pytest.mark.parametrize("in_channels,out_channels", [(1, 1), (3, 3), (4, 2)])
def test_other_channel_counts(in_channels, out_channels):
    net = EGEUNet(in_channels=in_channels, out_channels=out_channels).train()
    outs = net(torch.rand(2, in_channels, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, out_channels, 64, 64)] * 6
    sum(o.mean() for o in outs).backward()
    assert net.encoder1.conv.weight.grad is not None


@pytest.mark.parametrize("shape", [(1, 3, 250, 256), (1, 3, 256, 100)])
def test_size_not_divisible_by_32_is_a_clear_error(shape):
    with pytest.raises(ValueError, match=r"divisible by 32.*got \d+x\d+"):
        EGEUNet()(torch.rand(*shape))


def test_wrong_channel_count_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\), got \[1, 1, 64, 64\]"):
        EGEUNet()(torch.rand(1, 1, 64, 64))


def test_eval_mode_follows_new_weights():
    """Weights loaded into a network already used in eval mode give the outputs of a fresh network with those
    weights. A cache of the gate maps in eval mode once broke this: the outputs stayed those of the old weights."""
    torch.manual_seed(0)
    net = EGEUNet().double().eval()
    torch.manual_seed(1)
    other = EGEUNet().double().eval()
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64) * 255
    with torch.no_grad():
        before = net(x)
        net.load_state_dict(other.state_dict())
        after, expected = net(x), other(x)
    assert not torch.allclose(before, expected)
    assert torch.equal(after, expected)


def test_gradients_reach_every_parameter():
    net = EGEUNet().train()
    outs = net(torch.rand(1, 3, 64, 64) * 255)
    sum(o.mean() for o in outs).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
