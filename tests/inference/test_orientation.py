# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""One orientation everywhere: the network sees H x W (rows first), as the original code and every user of the
exported models feed it.

Three checks on real photographs, each through ``python -m monai.bundle run --config_file configs/inference.json``
as a user runs it:

- the released TorchScript (``bundle/models/model.ts``) and an ONNX export, fed an H x W array the way a user
  without MONAI does it (PIL -> numpy, min-max to [0, 255], resize to 256x256, sigmoid, resize back, 0.5),
  give the bundle's mask;
- the original implementation's own checkpoint through the bundle gives the original pipeline's mask;
- the masks the bundle and the predictor (CLI, viewer) write have the photo's H x W and cover the expert's lesion.

The PH2 photos are not square (765 x 572), so a transposed array cannot hide behind the shape; the ISIC images are
256x256, where no resize is involved and the masks agree exactly. All images are in the validation list of
``bundle/splits/isic2017_ph2_seed0.json`` (the released weights never trained on them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tests.conftest import require_original_checkpoint

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
RELEASED = REPO_ROOT / "bundle" / "models"
SPLIT = REPO_ROOT / "bundle" / "splits" / "isic2017_ph2_seed0.json"
PH2_IDS = ("IMD008", "IMD015", "IMD020")  # 765 x 572 photographs
ISIC_IDS = ("ISIC_0000004", "ISIC_0000010", "ISIC_0000016")  # 256 x 256
IMAGE_SIZE = 256

# Where two pipelines may disagree. At 256x256 nothing is resized, so only float32 rounding separates them (logits
# within ~1e-5): a pixel may differ only where the reference probability is within 1e-4 of the threshold
# (measured: no differing pixel at all, for both the released weights and the original checkpoint).
NEAR_THRESHOLD = 1e-4
# On PH2 the two pipelines resize differently (MONAI's Resized smooths with a Gaussian before a bilinear
# downsampling, PyTorch's/torchvision's antialias filters with a triangle), so boundary pixels may flip. Measured
# pixels that differ (IMD008, IMD015, IMD020; of about 438,000): weights released before 2026-12-06 60, 360, 155
# (TorchScript and ONNX alike), original checkpoint 65, 102, 83, every one on the boundary band of the bundle's mask
# (pixels whose 3x3 neighbourhood holds both classes), at most 0.12 of that band; the 0.2.0 weights 137, 469, 161,
# at most 0.16 of the band, 4 pixels off it (IMD015: a one-pixel crack in the reference's mask, its probability
# 0.491-0.496), and every differing pixel within 0.062 of the threshold in the reference's probability. Allowed: at
# most 0.25 of the band, every pixel within 0.1 of the threshold. Fed W x H instead, 218 to 9,334 pixels differ on
# these six images, 17 to 7,824 of them off the band, 0.31 to 3.0 of it, up to 0.44-0.47 from the threshold.
MAX_BAND_FRACTION = 0.25
NEAR_THRESHOLD_RESIZED = 0.1
# Dice of the bundle's masks against the expert masks, H x W input: weights released before 2026-12-06 IMD008 0.9439,
# IMD015 0.9310, IMD020 0.9333 (2-core Intel Xeon, 2026-12-01); the 0.2.0 weights 0.9383, 0.9455, 0.9349 (no hole
# filling; 2-core AMD EPYC, 2026-12-06); asserted 0.03 below the lowest of the first.
MIN_PH2_DICE = 0.90


def _validation_ids() -> set[str]:
    return {item["id"] for item in json.loads(SPLIT.read_text())["validation"]}


@pytest.fixture(scope="module")
def photos(shared_data_dir: Path, tmp_path_factory) -> Path:
    """A folder with the 3 PH2 photos and the 3 ISIC images, as a user would have them."""
    assert set(PH2_IDS + ISIC_IDS) <= _validation_ids(), "the test images must lie outside the training split"
    folder = tmp_path_factory.mktemp("photos")
    for image_id in PH2_IDS:
        src = shared_data_dir / "ph2" / "images" / f"{image_id}.jpg"
        (folder / src.name).write_bytes(src.read_bytes())
    for image_id in ISIC_IDS:
        src = shared_data_dir / "isic2017_train_256" / "images" / f"{image_id}.jpg"
        (folder / src.name).write_bytes(src.read_bytes())
    return folder


def _bundle_inference(photos: Path, weights: Path, out: Path) -> Path:
    """``python -m monai.bundle run`` with configs/inference.json from the repository root (NIfTI masks too);
    the masks' folder."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
           "--input_path", str(photos), "--output_dir", str(out), "--ckpt_path", str(weights),
           "--save_nifti", "true", "--fill_holes", "false"]  # fmt: skip
    # no hole filling: the pipelines compared with it (the original's, an exported model fed by hand) have none
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def released_masks(photos: Path, tmp_path_factory) -> Path:
    return _bundle_inference(photos, RELEASED / "model.pt", tmp_path_factory.mktemp("released_masks"))


@pytest.fixture(scope="module")
def original_checkpoint() -> Path:
    return require_original_checkpoint()


@pytest.fixture(scope="module")
def original_masks(photos: Path, original_checkpoint: Path, tmp_path_factory) -> Path:
    """The bundle's masks with the original's checkpoint, converted to the bundle's names as a user does."""
    from egeunet_monai.networks import convert_original_state_dict

    weights = tmp_path_factory.mktemp("original_weights") / "model.pt"
    torch.save(convert_original_state_dict(original_checkpoint), weights)
    return _bundle_inference(photos, weights, tmp_path_factory.mktemp("original_masks"))


def _rows_first_probability(network, path: Path, transpose: bool = False) -> np.ndarray:
    """The probability map (H x W) the way the original code, and a user of the exported models, computes it:
    ``numpy.asarray`` of the PIL image (rows first), per-image min-max to [0, 255] (what the original's
    normalisation reduces to), resized to 256x256 with bilinear interpolation and antialiasing
    (``torchvision.transforms.functional.resize`` on a tensor, as the original does), sigmoid, and the
    probability resized back to the photo's size. ``transpose`` feeds the network W x H instead (the bundle's
    order before this change), to show what the checks catch."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    rgb = (rgb - rgb.min()) / (rgb.max() - rgb.min()) * 255.0
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]  # 1 x 3 x H x W
    if transpose:
        x = x.transpose(2, 3)
    size = x.shape[-2:]
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        prob = torch.sigmoid(network(x).float())
    prob = F.interpolate(prob, size=size, mode="bilinear", align_corners=False)
    if transpose:
        prob = prob.transpose(2, 3)
    return prob[0, 0].numpy()


def _read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img) > 0


def _boundary_band(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds both lesion and background."""
    padded = np.pad(mask, 1, mode="edge")
    h, w = mask.shape
    windows = [padded[i : i + h, j : j + w] for i in range(3) for j in range(3)]
    return np.any(windows, axis=0) & ~np.all(windows, axis=0)


def _agreement(image_id: str, bundle_mask: np.ndarray, reference_prob: np.ndarray) -> tuple[bool, str]:
    """Whether the bundle's mask is the reference's up to what the two pipelines may differ by, and the figures."""
    assert bundle_mask.shape == reference_prob.shape, f"{image_id}: {bundle_mask.shape} vs {reference_prob.shape}"
    differ = bundle_mask != (reference_prob > 0.5)
    band = _boundary_band(bundle_mask)
    band_fraction = float(differ.sum() / max(int(band.sum()), 1))
    off_band = int((differ & ~band).sum())
    text = f"{image_id}: {int(differ.sum())} px differ, {off_band} off the boundary band, {band_fraction:.2f} of it"
    if image_id in ISIC_IDS:
        return bool(np.all(np.abs(reference_prob[differ] - 0.5) < NEAR_THRESHOLD)), text
    near = bool(np.all(np.abs(reference_prob[differ] - 0.5) < NEAR_THRESHOLD_RESIZED))
    return near and band_fraction <= MAX_BAND_FRACTION, text


def _check(network, photos: Path, masks: Path) -> str:
    """Every image: the bundle's mask is the H x W reference's; the first PH2 and ISIC image fed W x H is not."""
    report = []
    for image_id in PH2_IDS + ISIC_IDS:
        bundle_mask = _read_mask(masks / f"{image_id}_mask.png")
        with Image.open(photos / f"{image_id}.jpg") as photo:
            assert bundle_mask.shape == (photo.height, photo.width), image_id
        same, text = _agreement(image_id, bundle_mask, _rows_first_probability(network, photos / f"{image_id}.jpg"))
        assert same, text
        report.append(text)
    for image_id in (PH2_IDS[0], ISIC_IDS[0]):  # the check can tell the two orders apart
        transposed = _rows_first_probability(network, photos / f"{image_id}.jpg", transpose=True)
        same, text = _agreement(image_id, _read_mask(masks / f"{image_id}_mask.png"), transposed)
        assert not same, f"fed W x H, {text}: the check cannot see a transposition"
    return "; ".join(report)


@pytest.fixture(scope="module")
def exported_networks(tmp_path_factory) -> dict:
    """The released TorchScript as shipped, and the released weights exported to ONNX (run by ONNX Runtime)."""
    pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime (the onnx extra)")
    from egeunet_monai.export import export_onnx, load_onnx_predictor
    from egeunet_monai.networks import EGEUNet

    network = EGEUNet(in_channels=3, out_channels=1, deep_supervision=True)
    state = torch.load(RELEASED / "model.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(state.get("model", state))
    onnx_file = export_onnx(network.eval(), tmp_path_factory.mktemp("onnx") / "model.onnx")
    return {"torchscript": torch.jit.load(str(RELEASED / "model.ts"), map_location="cpu").eval(),
            "onnx": load_onnx_predictor(onnx_file)}  # fmt: skip


@pytest.mark.parametrize("export", ["torchscript", "onnx"])
def test_exported_model_fed_rows_first_gives_the_bundles_mask(export, exported_networks, photos, released_masks):
    print(f"{export}: {_check(exported_networks[export], photos, released_masks)}")


def test_original_checkpoint_through_the_bundle_gives_the_original_pipelines_mask(
    photos, original_checkpoint, original_masks
):
    from egeunet_monai.networks import EGEUNet, load_original_state_dict

    # the reference: the original's preprocessing written out above, on the network the checkpoint came from
    # (the port matches the original implementation to 1e-10 in float64: tests/networks/test_parity_with_original.py)
    network = load_original_state_dict(EGEUNet(in_channels=3, out_channels=1, deep_supervision=True),
                                       original_checkpoint).eval()  # fmt: skip
    print(f"original checkpoint: {_check(network, photos, original_masks)}")


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(2.0 * (pred & truth).sum() / (pred.sum() + truth.sum()))


def test_written_masks_line_up_with_the_photo_and_the_expert(shared_data_dir, photos, released_masks, tmp_path):
    from egeunet_monai.inference import LesionPredictor, load_photo

    predictor = LesionPredictor(RELEASED / "model.pt", output_dir=tmp_path / "predictor", device="cpu",
                                overrides={"fill_holes": False})  # as the bundle run above
    dices = {}
    for image_id in PH2_IDS:
        path = photos / f"{image_id}.jpg"
        with Image.open(path) as img:
            expected_photo = np.asarray(img.convert("RGB"))
        height, width = expected_photo.shape[:2]
        assert width != height
        np.testing.assert_array_equal(load_photo(path), expected_photo)  # what the CLI and the viewer draw on
        mask, probability, stats = predictor.predict(path)
        assert mask.shape == probability.shape == (height, width) and (stats.width, stats.height) == (width, height)
        written = np.asarray(Image.open(predictor.mask_path(path)))
        np.testing.assert_array_equal(written, mask)  # the PNG is the array, the right way round
        np.testing.assert_array_equal(written > 0, _read_mask(released_masks / f"{image_id}_mask.png"))
        truth = _read_mask(shared_data_dir / "ph2" / "masks" / f"{image_id}_segmentation.png")
        dices[image_id] = _dice(mask > 0, truth)
        assert max(_dice(mask[::-1] > 0, truth), _dice(mask[:, ::-1] > 0, truth)) < dices[image_id]  # not mirrored
    print(f"Dice against the expert masks: { {k: round(v, 4) for k, v in dices.items()} }")
    assert min(dices.values()) > MIN_PH2_DICE, dices


def test_nifti_mask_is_the_png_in_monais_x_y_order(photos, released_masks):
    """``--save_nifti true`` writes ``<id>_mask.nii.gz`` in NIfTI's and MONAI's (x, y) order, as MONAI Label's NIfTI
    results: axis 0 runs along the photo's width, axis 1 down its height (shape W x H x 1 x 1, 0/1)."""
    import nibabel as nib

    for image_id in (PH2_IDS[0], ISIC_IDS[0]):
        png = _read_mask(released_masks / f"{image_id}_mask.png")
        nifti = np.asarray(nib.load(released_masks / f"{image_id}_mask.nii.gz").dataobj)
        assert nifti.shape == (png.shape[1], png.shape[0], 1, 1) and set(np.unique(nifti).tolist()) <= {0, 1}
        np.testing.assert_array_equal(nifti[:, :, 0, 0], png.T)
