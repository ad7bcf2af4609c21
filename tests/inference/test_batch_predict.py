# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Batched, pipelined prediction over files: the same masks as the bundle's configs/inference.json, bad files
named and skipped."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from egeunet_monai.inference.batch import BatchPredictor, predict_folder, prepare_image, resize_matrix
from egeunet_monai.inference.runtime import ONNX_CACHE_ENV, load_eager_network, load_runtime
from tests.conftest import require_original_checkpoint, require_shared_data

REPO_ROOT = Path(__file__).resolve().parents[2]
RELEASED = REPO_ROOT / "bundle" / "models" / "model.pt"
# 2 full-size PH2 photographs (765 x 572 and 765 x 574: resized both ways) and 2 ISIC 2017 images (256 x 256: not)
IMAGES = ("ph2/images/IMD002.jpg", "ph2/images/IMD003.jpg", "isic2017_train_256/images/ISIC_0000000.jpg",
          "isic2017_train_256/images/ISIC_0000001.jpg")  # fmt: skip
# MONAI's Resize as two matrices against MONAI's Resize itself, on the [0, 255] scale: measured at most 7.6e-5 on
# 3 PH2 photographs and their crops (float32 rounding of sums taken in another order); bound with a 6x margin.
RESIZE_ATOL = 5e-4
# Probabilities of this pipeline (ONNX Runtime, resize matrices) against the bundle's (eager network, MONAI
# transforms) at the images' own size: measured 8.9e-6 on IMAGES and 10 more PH2 photographs; the bound is the
# runtime's accuracy contract.
PROBABILITY_ATOL = 1e-4
# Mask pixels allowed to differ per image (probabilities this close to 0.5 may fall either side): measured 0 on the
# same 14 images.
MAX_DIFFERING_PIXELS = 20

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv(ONNX_CACHE_ENV, str(tmp_path_factory.getbasetemp() / "onnx_cache"))


@pytest.fixture(scope="module")
def image_files() -> list[Path]:
    data = require_shared_data()
    return [data / name for name in IMAGES]


def _bundle_pipeline(tmp_path: Path):
    """configs/inference.json's preprocessing and postprocessing, read with rows first (H x W) as the config's reader
    does by default (set explicitly: the network is not transpose-invariant)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "configs" / "inference.json"))
    parser["bundle_root"] = str(REPO_ROOT)
    parser["output_dir"] = str(tmp_path / "bundle_out")
    parser["datalist"] = []
    parser["input_path"] = ""
    transforms = parser["preprocessing"]["transforms"]
    (load,) = [i for i, t in enumerate(transforms) if t["_target_"] == "LoadImaged"]
    parser[f"preprocessing#transforms#{load}#reader"] = (
        "$egeunet_monai.data.DermoscopyImageReader(kind='image', reverse_indexing=False)"
    )
    return parser.get_parsed_content("preprocessing"), parser.get_parsed_content("postprocessing")


def _bundle_prediction(path: Path, preprocessing, postprocessing, network):
    """(probability before the threshold, mask) of the bundle's pipeline for one image, both H x W."""
    from monai.data import decollate_batch, list_data_collate
    from monai.transforms import AsDiscreted

    item = preprocessing({"image": str(path)})
    batch = list_data_collate([item])
    with torch.inference_mode():
        batch["pred"] = network(batch["image"])
    result = decollate_batch(batch)[0]
    probability = mask = None
    # read both where the threshold is applied: the config's last transform turns the mask to MONAI's (x, y) order
    # for MONAI Label's writer
    for transform in postprocessing.transforms:
        if isinstance(transform, AsDiscreted):
            probability = np.asarray(result["pred"])[0].copy()
        result = transform(result)
        if isinstance(transform, AsDiscreted):
            mask = np.asarray(result["pred"])[0].copy()
    return probability, mask


def test_resize_matrices_are_monais_resize(image_files):
    from monai.transforms import Resize

    array = np.asarray(Image.open(image_files[0]).convert("RGB"))
    x = torch.from_numpy(array.transpose(2, 0, 1).copy()).float()
    scaled = (x - x.min()) / (x.max() - x.min()) * 255
    expected = torch.as_tensor(Resize((256, 256), mode="bilinear", anti_aliasing=True)(scaled))
    got = prepare_image(array)
    assert got.shape == (3, 256, 256) and got.dtype == np.float32
    assert np.abs(got - expected.numpy()).max() <= RESIZE_ATOL
    assert resize_matrix(array.shape[0], 256).shape == (256, array.shape[0])

    # an image of the network's size is only scaled (MONAI's Resize leaves it as it is); one axis of that size is
    # left alone, the other resized, also when it is smaller than the network's (upsampled, no smoothing)
    small = np.asarray(Image.open(image_files[2]).convert("RGB"))
    assert small.shape == (256, 256, 3)
    for part in (small, array[:256], array[:200, :256]):
        x = torch.from_numpy(part.transpose(2, 0, 1).copy()).float()
        expected = torch.as_tensor(Resize((256, 256), mode="bilinear", anti_aliasing=True)(
            (x - x.min()) / (x.max() - x.min()) * 255))  # fmt: skip
        assert np.abs(prepare_image(part) - expected.numpy()).max() <= RESIZE_ATOL
    assert np.abs(prepare_image(np.full((300, 400, 3), 7, np.uint8))).max() == 0  # constant: MONAI gives 0


def test_masks_match_the_bundle_inference_config(image_files, tmp_path):
    pytest.importorskip("onnxruntime")
    preprocessing, postprocessing = _bundle_pipeline(tmp_path)
    network = load_eager_network(RELEASED)
    runtime = load_runtime(RELEASED, threads=1)
    assert runtime.name == "onnxruntime"
    out = tmp_path / "masks"
    # the mask at the config's threshold, as _bundle_prediction reads it: before the hole filling
    predictor = BatchPredictor(runtime, out, batch_size=3, workers=2, save_probabilities=True, save_overlays=True,
                               fill_holes=False)
    results = list(predictor.predict(image_files))
    assert [r.path for r in results] == image_files
    for path, result in zip(image_files, results):
        expected_prob, expected_mask = _bundle_prediction(path, preprocessing, postprocessing, network)
        with Image.open(path) as img:
            width, height = img.size
        mask = np.asarray(Image.open(result.mask_path))
        assert mask.shape == expected_mask.shape == (height, width)  # rows first, the photograph's own size
        assert (result.height, result.width) == (height, width)
        assert set(np.unique(mask)) <= {0, 255}
        differing = int(((mask > 0) != (expected_mask > 0)).sum())
        assert differing <= MAX_DIFFERING_PIXELS, f"{path.name}: {differing} pixels differ"
        assert result.area_px == int((mask > 0).sum()) > 0
        # the probability map as the bundle's SaveImaged writes it: p x 255 truncated to uint8
        prob = np.asarray(Image.open(result.probability_path)).astype(np.int32)
        expected_png = (np.clip(expected_prob, 0, 1) * 255).astype(np.int32)
        assert np.abs(prob - expected_png).max() <= 1
        assert np.isclose(result.mean_confidence, expected_prob[mask > 0].mean(), atol=PROBABILITY_ATOL)
        overlay = np.asarray(Image.open(result.overlay_path))
        assert overlay.shape == (height, width, 3)
        photo = np.asarray(Image.open(path).convert("RGB"))
        # the outline and tint are drawn inside the lesion only
        assert np.array_equal(overlay[mask == 0], photo[mask == 0])
        assert not np.array_equal(overlay[mask > 0], photo[mask > 0])


def test_bad_files_are_named_and_skipped(image_files, tmp_path):
    pytest.importorskip("onnxruntime")
    folder = tmp_path / "photos"
    folder.mkdir()
    good = [shutil.copy(image_files[i], folder) for i in (0, 2, 3)]
    whole = image_files[1].read_bytes()
    (folder / "cut_short.jpg").write_bytes(whole[: len(whole) // 3])  # a download cut short
    (folder / "notes.png").write_text("not an image")
    out = tmp_path / "masks"
    results = predict_folder(folder, out, RELEASED, batch_size=2, workers=2, progress=False)
    by_name = {r.path.name: r for r in results}
    assert sorted(by_name) == sorted(["cut_short.jpg", "notes.png"] + [Path(g).name for g in good])
    assert "cut_short.jpg" in by_name["cut_short.jpg"].error and "truncated" in by_name["cut_short.jpg"].error
    assert "notes.png" in by_name["notes.png"].error and by_name["notes.png"].mask_path is None
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{Path(g).stem}_mask.png" for g in good)
    for name in good:
        result = by_name[Path(name).name]
        assert result.error is None and result.mask_path.is_file()


def test_the_predict_command_s_masks_are_the_viewer_s(image_files, tmp_path):
    """``egeunet-monai predict`` (batches of 8, the network on one thread, the others decoding) and the viewer
    (``predict_one``: one image per call, the network on every core) give the same mask files, byte for byte, and
    the same statistics: the same steps. ONNX Runtime's probabilities differ between batch sizes and thread counts
    by float32 rounding only (mean confidence: 6e-8 measured on these images; bound 1e-6), which moved no mask
    pixel here."""
    pytest.importorskip("onnxruntime")
    from egeunet_monai.inference import open_predictor

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in image_files:
        shutil.copy(path, folder)
    command = open_predictor(RELEASED, output_dir=tmp_path / "cli", device="cpu", threads=1, batch_size=8)
    viewer = open_predictor(RELEASED, output_dir=tmp_path / "viewer", device="cpu")
    assert command.runtime.name == viewer.runtime.name == "onnxruntime"
    results = list(command.predict(sorted(folder.iterdir())))
    for result in results:
        mask, _, stats = viewer.predict_one(result.path)
        assert viewer.mask_path(result.path).read_bytes() == result.mask_path.read_bytes()
        assert np.array_equal(np.asarray(Image.open(result.mask_path)), mask)
        got, expected = stats.as_dict(), result.stats.as_dict()
        assert got.pop("mean_confidence") == pytest.approx(expected.pop("mean_confidence"), abs=1e-6)
        assert got == expected


def test_the_viewer_s_flags_are_the_predict_command_s_with_the_clean_up(tmp_path):
    """``LesionPredictor`` (the config's pipeline, image by image) and the ``BatchPredictor`` of ``open_predictor``
    measure the quality flags on the thresholded mask, before the clean-up: the same flags with
    ``largest_component`` on. At threshold 0.2 the original implementation's 17-epoch checkpoint gives IMD162 a
    second piece of 3249 pixels that ``largest_component`` removes (``multiple_components``, measured 2026-12-07);
    MONAI's clean-up transforms change their input in place, so a flag read from the config's tensor after them had
    lost it."""
    pytest.importorskip("onnxruntime")
    from egeunet_monai.inference import LesionPredictor, open_predictor

    photos = [require_shared_data("ph2", "images", f"{i}.jpg") for i in ("IMD162", "IMD044", "IMD002")]
    weights = require_original_checkpoint()
    overrides = {"largest_component": True, "threshold": 0.2}
    command = open_predictor(weights, output_dir=tmp_path / "cli", device="cpu", overrides=overrides)
    config = LesionPredictor(weights, output_dir=tmp_path / "config", device="cpu", overrides=overrides)
    assert isinstance(command, BatchPredictor) and command.largest_component and command.threshold == 0.2
    flags = {}
    for photo in photos:
        flags[photo.stem] = command.predict_one(photo).stats.flags
        assert config.predict(photo).stats.flags == flags[photo.stem], photo.name
    assert flags == {"IMD162": ("multiple_components",), "IMD044": ("touches_border",), "IMD002": ()}
