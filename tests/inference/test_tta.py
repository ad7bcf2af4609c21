# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Test-time augmentation over the dihedral group D4: the views, their inverses, the averaged prediction, the
per-image uncertainty and the MONAI inferer."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Resize, ScaleIntensity
from PIL import Image

from tests.conftest import REPO_ROOT, require_original_checkpoint, require_shared_data
from egeunet_monai.inference import (
    DIHEDRAL_VIEWS,
    DihedralTTAInferer,
    binary_entropy,
    dihedral_inverse,
    dihedral_transform,
    dihedral_views,
    inverse_dihedral_views,
    lesion_entropy,
    predict_with_tta,
)
from egeunet_monai.networks import EGEUNet, load_original_state_dict

# each view written independently with torch.rot90 / flip / transpose, in the order of DIHEDRAL_VIEWS
EXPECTED_VIEWS = {
    "identity": lambda x: x,
    "flip_left_right": lambda x: x.flip(-1),
    "flip_up_down": lambda x: x.flip(-2),
    "rotate_180": lambda x: torch.rot90(x, 2, dims=(-2, -1)),
    "transpose": lambda x: x.transpose(-2, -1),
    "rotate_90": lambda x: torch.rot90(x, 1, dims=(-2, -1)),
    "rotate_270": lambda x: torch.rot90(x, -1, dims=(-2, -1)),
    "anti_transpose": lambda x: torch.rot90(x, 2, dims=(-2, -1)).transpose(-2, -1),
}


class CountingNetwork(torch.nn.Module):
    """Wraps a network and records the batch shape of every forward call."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return self.network(x)


def random_egeunet() -> EGEUNet:
    torch.manual_seed(0)
    return EGEUNet().double().eval()


@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (2, 3, 4, 7)])
def test_views_match_rotations_and_flips_and_invert_exactly(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    views = dihedral_views(x)
    assert [v.name for v in DIHEDRAL_VIEWS] == list(EXPECTED_VIEWS)
    for view, y in zip(DIHEDRAL_VIEWS, views):
        assert torch.equal(y, EXPECTED_VIEWS[view.name](x)), view.name
        assert torch.equal(dihedral_inverse(y, view), x), view.name
        assert torch.equal(dihedral_inverse(dihedral_transform(x, view), view), x), view.name
    # eight different images: the views are the whole group, no element twice
    square = dihedral_views(torch.randn(1, 1, 6, 6))
    assert len({tuple(v.flatten().tolist()) for v in square}) == 8
    assert torch.equal(inverse_dihedral_views(views), x[:, None].expand(-1, 8, -1, -1, -1))


def test_inverse_dihedral_views_needs_eight_views():
    with pytest.raises(ValueError, match="expected 8 views"):
        inverse_dihedral_views([torch.zeros(1, 1, 4, 4)] * 7)


def test_equivariant_network_gives_its_plain_output():
    # a 1x1 convolution treats every pixel alike, so it commutes with every symmetry of the square
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 1, 1).double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        result = predict_with_tta(conv, x)
        plain = torch.sigmoid(conv(x))
    torch.testing.assert_close(result.probability, plain, rtol=0, atol=1e-15)
    assert result.view_probabilities.shape == (2, 8, 1, 16, 16)
    # the views agree, so the uncertainty is the plain prediction's own entropy over its mask
    mask = plain >= 0.5
    expected = torch.stack([binary_entropy(p)[m].mean() for p, m in zip(plain, mask)])
    torch.testing.assert_close(result.uncertainty, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size, forward_calls", [((32, 32), 1), ((32, 64), 2)])
def test_egeunet_tta_is_the_mean_of_eight_transformed_forward_passes(size, forward_calls):
    net = CountingNetwork(random_egeunet())
    x = torch.rand(2, 3, *size, dtype=torch.float64) * 255
    with torch.no_grad():
        result = predict_with_tta(net, x)
        batched_calls = list(net.calls)
        expected_views = []
        for name, transform in EXPECTED_VIEWS.items():
            prob = torch.sigmoid(net(transform(x)))
            # undo the view with the independent expressions: rotations back, flips and transposes are involutions
            undo = {"rotate_90": lambda y: torch.rot90(y, -1, dims=(-2, -1)),
                    "rotate_270": lambda y: torch.rot90(y, 1, dims=(-2, -1))}.get(name, transform)  # fmt: skip
            expected_views.append(undo(prob))
    expected = torch.stack(expected_views, dim=1)
    # float64: the batched and the one-by-one passes differ only by summation order (measured 1e-16)
    torch.testing.assert_close(result.view_probabilities, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.probability, expected.mean(dim=1), rtol=0, atol=1e-12)
    # the views share forward passes: one batch of 16 for a square input, 8 + 8 (H x W and W x H) otherwise
    assert len(batched_calls) == forward_calls
    assert sum(shape[0] for shape in batched_calls) == 16


def test_predict_with_tta_rejects_non_image_batches():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        predict_with_tta(torch.nn.Identity(), torch.zeros(3, 32, 32))


def test_lesion_entropy_on_hand_drawn_views():
    views = torch.zeros(3, 8, 1, 4, 4)
    # image 0: every view the same certain 2x2 square -> 0
    views[0, :, :, :2, :2] = 1.0
    # image 1: 2 pixels certain in all views, 2 pixels lesion in half of them (mean 0.5, entropy 1) -> 2 / 4
    views[1, :, :, 0, :2] = 1.0
    views[1, :4, :, 1, :2] = 1.0
    # image 2: all views hesitate alike on 2 pixels (p = 0.6) and see nothing elsewhere
    views[2, :, :, 2, 1:3] = 0.6
    h06 = float(binary_entropy(torch.tensor(0.6)))
    torch.testing.assert_close(lesion_entropy(views), torch.tensor([0.0, 0.5, h06]), rtol=0, atol=1e-6)
    # the threshold decides what a view calls lesion: at 0.75 image 2 has no lesion, which is no uncertainty
    torch.testing.assert_close(lesion_entropy(views, threshold=0.75), torch.tensor([0.0, 0.5, 0.0]), rtol=0, atol=1e-6)
    torch.manual_seed(0)
    random = lesion_entropy(torch.rand(16, 8, 1, 8, 8))
    assert bool(((random >= 0) & (random <= 1)).all()) and float(random.max()) > 0.5
    with pytest.raises(ValueError, match="N x V"):
        lesion_entropy(torch.zeros(8, 4))


def test_binary_entropy_in_bits():
    p = torch.tensor([0.0, 1.0, 0.5, 0.1, 0.9], dtype=torch.float64)
    h = binary_entropy(p)
    assert h[:3].tolist() == [0.0, 0.0, 1.0]
    expected = -(0.1 * np.log2(0.1) + 0.9 * np.log2(0.9))
    assert h[3].item() == pytest.approx(expected, rel=1e-12) and h[4].item() == pytest.approx(expected, rel=1e-12)


def test_uncertainty_map_is_the_entropy_of_the_mean_probability():
    net = random_egeunet()
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64) * 255
    with torch.no_grad():
        result = predict_with_tta(net, x)
    assert result.uncertainty_map.shape == result.probability.shape
    torch.testing.assert_close(result.uncertainty_map, binary_entropy(result.probability), rtol=0, atol=0)
    assert float(result.uncertainty_map.min()) >= 0 and float(result.uncertainty_map.max()) <= 1


def test_inferer_returns_the_logit_of_the_tta_probability():
    net = random_egeunet()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 255
    with torch.no_grad():
        logits = DihedralTTAInferer()(x, net)
        expected = predict_with_tta(net, x).probability
    eps = 1e-6
    torch.testing.assert_close(torch.sigmoid(logits), expected.clamp(eps, 1 - eps), rtol=0, atol=1e-12)


def test_with_uncertainty_returns_the_logits_and_the_views_uncertainty():
    net = random_egeunet()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 255
    inferer = DihedralTTAInferer(threshold=0.4)
    with torch.no_grad():
        logits, result = inferer.with_uncertainty(x, net)
        expected = predict_with_tta(net, x, threshold=0.4)
        plain_call = inferer(x, net)
    torch.testing.assert_close(logits, plain_call, rtol=0, atol=0)
    torch.testing.assert_close(result.uncertainty, expected.uncertainty, rtol=0, atol=0)
    torch.testing.assert_close(result.uncertainty, lesion_entropy(expected.view_probabilities, 0.4), rtol=0, atol=0)


@pytest.mark.parametrize("value, tta", [(True, True), ("true", True), ("Yes", True), (False, False), ("false", False),
                                        ("0", False)])
def test_the_configs_tta_option_picks_the_inferer(value, tta):
    # python -m monai.bundle run ... --tta false hands the config the string "false"
    parser = ConfigParser(json.loads((REPO_ROOT / "configs" / "inference.json").read_text()))
    parser["tta"] = value
    parser["threshold"] = 0.3
    inferer = parser.get_parsed_content("inferer")
    assert isinstance(inferer, DihedralTTAInferer) == tta
    assert isinstance(inferer, DihedralTTAInferer) or type(inferer).__name__ == "SimpleInferer"
    if tta:
        assert inferer.threshold == 0.3
    parser["tta"] = "maybe"
    with pytest.raises(RuntimeError) as error:  # MONAI's "Failed to evaluate ConfigExpression", caused by ours
        parser.get_parsed_content("inferer", lazy=False)
    assert "--tta must be true or false, got 'maybe'" in str(error.value.__cause__)


def test_inferer_keeps_saturated_probabilities_finite():
    # a network sure of every pixel: the mean probability is exactly 0 or 1 in float32, whose logit is infinite
    saturated = lambda x: torch.where(x[:, :1] > 0, 1e4, -1e4)  # noqa: E731
    x = torch.randn(1, 3, 32, 32)
    logits = DihedralTTAInferer()(x, saturated)
    assert bool(torch.isfinite(logits).all())
    assert torch.equal(logits > 0, x[:, :1] > 0)
    with pytest.raises(ValueError, match="eps"):
        DihedralTTAInferer(eps=0.5)


def test_inferer_keeps_the_metadata_of_a_meta_tensor():
    # Invertd and SaveImaged in the config's postprocessing read the prediction's metadata
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 1, 1)
    x = torch.randn(1, 3, 32, 32)
    meta_x = MetaTensor(x, meta={"filename_or_obj": "photo.jpg"})
    with torch.no_grad():
        out = DihedralTTAInferer()(meta_x, conv)
        plain = DihedralTTAInferer()(x, conv)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "photo.jpg"
    assert not isinstance(plain, MetaTensor)
    torch.testing.assert_close(out.as_tensor(), plain, rtol=0, atol=0)
    assert not isinstance(predict_with_tta(conv, meta_x).probability, MetaTensor)


def test_inferer_from_a_bundle_config_passes_network_arguments():
    parser = ConfigParser({"inferer": {"_target_": "egeunet_monai.inference.DihedralTTAInferer"}})
    inferer = parser.get_parsed_content("inferer")
    assert isinstance(inferer, DihedralTTAInferer)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 1, 1).double()
    scales = []

    def network(x, scale, shift=0.0):
        scales.append((scale, shift))
        return conv(x) * scale + shift

    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        out = inferer(x, network, 2.0, shift=-1.0)
        expected = torch.sigmoid(conv(x) * 2.0 - 1.0)
    torch.testing.assert_close(torch.sigmoid(out), expected.clamp(1e-6, 1 - 1e-6), rtol=0, atol=1e-12)
    assert scales == [(2.0, -1.0)]  # one forward pass of the eight views


def _load_ph2_photographs(ids: tuple[str, ...]) -> torch.Tensor:
    """PH2 photographs preprocessed as the bundle does: rows first, min-max scaled to [0, 255], 256 x 256."""
    data = require_shared_data("ph2", "images")
    scale, resize = ScaleIntensity(minv=0.0, maxv=255.0), Resize((256, 256), mode="bilinear", anti_aliasing=True)
    images = []
    for id_ in ids:
        rgb = torch.as_tensor(np.array(Image.open(data / f"{id_}.jpg").convert("RGB"))).permute(2, 0, 1).float()
        images.append(torch.as_tensor(np.asarray(resize(scale(rgb)))))
    return torch.stack(images)


def test_uncertainty_ranks_degraded_images_above_clean_ones():
    ids = ("IMD002", "IMD003", "IMD004", "IMD006")
    clean = _load_ph2_photographs(ids)
    generator = torch.Generator().manual_seed(0)
    noisy = (clean[:2] + 60 * torch.randn(clean[:2].shape, generator=generator)).clamp(0, 255)
    net = EGEUNet().eval()
    load_original_state_dict(net, require_original_checkpoint())  # weights that never change (the original's)
    with torch.inference_mode():
        clean_u = predict_with_tta(net, clean).uncertainty
        degraded_u = predict_with_tta(net, noisy).uncertainty
    # measured 2026-12-07: clean 0.13-0.25, noisy 0.65 and 0.52. Noise of 90 or more makes some images' views
    # all see no lesion (uncertainty 0, the `empty` flag), so it is not used
    assert float(degraded_u.min()) > float(clean_u.max()), (ids, clean_u.tolist(), degraded_u.tolist())


@pytest.mark.slow
def test_bundle_inference_with_the_tta_inferer_gives_the_tta_masks(tmp_path):
    # two PH2 validation photographs at their original, non-square size, through configs/inference.json with
    # --tta true (its sigmoid, resize back and threshold unchanged; the hole filling off, to compare the TTA masks)
    ph2 = require_shared_data("ph2")
    split = json.loads((REPO_ROOT / "bundle" / "splits" / "isic2017_ph2_seed0.json").read_text())
    ids = [e["id"] for e in split["validation"] if e["source"] == "ph2"][:2]
    photos, out = tmp_path / "photos", tmp_path / "masks"
    photos.mkdir()
    for i in ids:
        (photos / f"{i}.jpg").write_bytes((ph2 / "images" / f"{i}.jpg").read_bytes())
    weights = REPO_ROOT / "bundle" / "models" / "model.pt"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
           "--input_path", str(photos), "--output_dir", str(out), "--ckpt_path", str(weights),
           "--tta", "true", "--fill_holes", "false"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    net = EGEUNet().eval()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    scale, resize = ScaleIntensity(minv=0.0, maxv=255.0), Resize((256, 256), mode="bilinear", anti_aliasing=True)
    for i in ids:
        rgb = torch.as_tensor(np.array(Image.open(photos / f"{i}.jpg").convert("RGB"))).permute(2, 0, 1).float()
        with torch.inference_mode():
            prob = predict_with_tta(net, torch.as_tensor(np.asarray(resize(scale(rgb))))[None]).probability[0]
        back = np.asarray(Resize(tuple(rgb.shape[1:]), mode="bilinear")(prob))[0]
        bundle_mask = np.asarray(Image.open(out / f"{i}_mask.png")) > 0
        assert bundle_mask.shape == back.shape
        # the same prediction up to float32 rounding, whatever axis order the bundle reads images in (D4 holds
        # the transpose): pixels may differ only where the probability is within rounding of the threshold
        differ = bundle_mask != (back >= 0.5)
        assert differ.mean() < 1e-4 and np.abs(back[differ] - 0.5).max(initial=0.0) < 1e-3, (i, differ.sum())
