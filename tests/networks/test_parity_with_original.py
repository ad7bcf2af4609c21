"""Outputs match the original implementation's for its fixed weights and inputs (../shared/reference)."""

from __future__ import annotations

import json

import pytest
import torch

from egeunet_monai.networks import (
    EGEUNet,
    OriginalCheckpointError,
    convert_original_state_dict,
    load_original_state_dict,
    original_to_monai_key,
)


@pytest.fixture(scope="module")
def golden(shared_reference_dir):
    return torch.load(shared_reference_dir / "official_egeunet_golden.pt", map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def ported(golden):
    return load_original_state_dict(EGEUNet(), golden["state_dict"])


def test_every_original_key_maps_to_one_of_ours(shared_reference_dir):
    shapes = json.loads((shared_reference_dir / "official_state_dict_shapes.json").read_text())
    ours = {k: tuple(v.shape) for k, v in EGEUNet().state_dict().items()}
    mapped = {original_to_monai_key(k): tuple(v) for k, v in shapes.items()}
    assert mapped == ours


def test_main_and_side_outputs_match_the_original(golden, ported):
    assert len(golden["cases"]) >= 2
    for case in golden["cases"]:
        ported.eval()
        with torch.no_grad():
            main = ported(case["input"])
        assert main.shape == case["final_prob"].shape
        assert (torch.sigmoid(main) - case["final_prob"]).abs().max() <= 1e-5
        ported.train()  # sides are returned in training mode; no dropout/batch-norm, so same math
        with torch.no_grad():
            outs = ported(case["input"])
        # the original returns the deepest side head first; we return the shallowest first
        for ours, theirs in zip(outs[1:], reversed(case["side_probs"])):
            assert (torch.sigmoid(ours) - theirs).abs().max() <= 1e-5
    assert any(c["input"].shape[-2:] == (192, 320) for c in golden["cases"])


def test_torchscript_script_and_trace_match_eager(golden, ported):
    ported.eval()
    scripted = torch.jit.script(ported)
    for case in golden["cases"]:  # a scripted module handles any size divisible by 32
        x = case["input"]
        with torch.no_grad():
            eager = ported(x)
            assert (scripted(x) - eager).abs().max() <= 1e-5
            # a trace bakes the gate sizes in: valid for the size it was traced at
            assert (torch.jit.trace(ported, x)(x) - eager).abs().max() <= 1e-5


def test_loads_the_original_training_scripts_checkpoint(shared_reference_dir, tmp_path):
    path = shared_reference_dir / "original_trained_isic2017_17ep.pth"
    net = load_original_state_dict(EGEUNet(), path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(net.final_conv.weight, raw["final.weight"])
    # the original train.py also writes {'model_state_dict': ..., 'optimizer_state_dict': ...}
    wrapped = tmp_path / "latest.pth"
    torch.save({"epoch": 17, "model_state_dict": raw, "optimizer_state_dict": {}}, wrapped)
    again = load_original_state_dict(EGEUNet(), wrapped)
    assert torch.equal(again.side_head5.weight, raw["gt_conv1.0.weight"])


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    with pytest.raises(OriginalCheckpointError, match="not an original EGE-UNet checkpoint"):
        convert_original_state_dict({"conv1.weight": torch.zeros(1)})
    ours_already = EGEUNet().state_dict()
    with pytest.raises(OriginalCheckpointError, match="unknown keys"):
        load_original_state_dict(EGEUNet(), ours_already)


def test_a_checkpoint_of_another_width_is_refused(golden):
    with pytest.raises(OriginalCheckpointError, match="wrong shapes"):
        load_original_state_dict(EGEUNet(channels=(8, 16, 24, 32, 48, 96)), golden["state_dict"])


def test_a_missing_or_corrupt_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_original_state_dict(EGEUNet(), tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(OriginalCheckpointError, match="bad.pth"):
        load_original_state_dict(EGEUNet(), bad)
