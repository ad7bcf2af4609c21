"""The synthetic dataset: layout, lesion statistics, determinism, idempotence, speed, and an easy task."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from egeunet_monai.data import (
    DermoscopyInputError,
    ensure_dataset_dir,
    generate_synthetic_dataset,
    pair_images_and_masks,
)
from egeunet_monai.data.synthetic import MANIFEST_NAME


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(generate_synthetic_dataset(tmp_path_factory.mktemp("syn") / "ds", num_images=12, size=128, seed=0))


def arrays(item: dict) -> tuple[np.ndarray, np.ndarray]:
    with Image.open(item["image"]) as img, Image.open(item["label"]) as mask:
        assert img.mode == "RGB" and mask.mode == "L"
        return np.asarray(img), np.asarray(mask)


def otsu_threshold(values: np.ndarray) -> float:
    hist = np.bincount(values.astype(np.int64).ravel(), minlength=256).astype(float)
    p = hist / hist.sum()
    omega, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    between = (mu[-1] * omega - mu) ** 2 / np.maximum(omega * (1 - omega), 1e-12)
    return float(np.argmax(between))


def test_layout_pairs_and_loads(small_dataset: Path) -> None:
    from monai.transforms import LoadImaged

    from egeunet_monai.data import DermoscopyImageReader

    items = pair_images_and_masks(small_dataset)
    assert [d["id"] for d in items] == [f"syn_{k:04d}" for k in range(12)]
    loaded = LoadImaged(keys=["image", "label"], reader=DermoscopyImageReader(), image_only=True,
                        ensure_channel_first=True)(items[0])
    assert tuple(loaded["image"].shape) == (3, 128, 128) and tuple(loaded["label"].shape) == (1, 128, 128)


def is_one_blob(lesion: np.ndarray) -> bool:
    """Whether the True pixels form one 4-connected region (flood fill from one of them reaches them all)."""
    canvas = Image.fromarray(lesion.astype(np.uint8) * 255).copy()  # copy: fromarray may share read-only memory
    row, col = np.argwhere(lesion)[0]
    ImageDraw.floodfill(canvas, (int(col), int(row)), 128)
    return not (np.asarray(canvas) == 255).any()


def test_one_lesion_of_10_to_40_percent_darker_than_the_skin(small_dataset: Path) -> None:
    for item in pair_images_and_masks(small_dataset):
        image, mask = arrays(item)
        assert set(np.unique(mask)) == {0, 255}
        lesion = mask > 0
        assert 0.09 <= lesion.mean() <= 0.41, item["id"]
        assert is_one_blob(lesion), item["id"]
        gray = image.astype(float).mean(-1)
        grown = np.asarray(Image.fromarray(mask).filter(ImageFilter.MaxFilter(13))) > 0
        ring = grown & ~lesion  # the skin right around the lesion
        assert gray[lesion].mean() < gray[ring].mean() - 25, item["id"]


def test_blob_check_can_fail() -> None:
    two = np.zeros((10, 10), bool)
    two[1:3, 1:3] = two[6:8, 6:8] = True
    assert not is_one_blob(two) and is_one_blob(two[:5, :5])


def test_same_seed_same_images_other_seed_other_images(small_dataset: Path, tmp_path: Path) -> None:
    again = generate_synthetic_dataset(tmp_path / "again", num_images=12, size=128, seed=0)
    other = generate_synthetic_dataset(tmp_path / "other", num_images=12, size=128, seed=1)
    listings = [pair_images_and_masks(d) for d in (small_dataset, again, other)]
    for a, b, c in zip(*listings):
        np.testing.assert_array_equal(arrays(a)[0], arrays(b)[0])
        np.testing.assert_array_equal(arrays(a)[1], arrays(b)[1])
        assert not np.array_equal(arrays(a)[1], arrays(c)[1])


def test_images_vary(small_dataset: Path) -> None:
    items = pair_images_and_masks(small_dataset)
    fractions = [float((arrays(d)[1] > 0).mean()) for d in items]
    skin = [float(np.median(arrays(d)[0][arrays(d)[1] == 0], axis=0).mean()) for d in items]
    assert max(fractions) - min(fractions) > 0.1 and max(skin) - min(skin) > 10


def test_idempotent_and_repairs_itself(tmp_path: Path) -> None:
    root = Path(generate_synthetic_dataset(tmp_path / "ds", num_images=4, size=64))
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    time.sleep(0.01)
    assert generate_synthetic_dataset(root, num_images=4, size=64) == str(root)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png")} == stamps  # nothing rewritten

    (root / "images" / "syn_0002.png").unlink()
    generate_synthetic_dataset(root, num_images=4, size=64)
    assert (root / "images" / "syn_0002.png").is_file()

    generate_synthetic_dataset(root, num_images=2, size=64)  # a smaller dataset leaves no stale pairs behind
    assert [d["id"] for d in pair_images_and_masks(root)] == ["syn_0000", "syn_0001"]
    assert json.loads((root / MANIFEST_NAME).read_text())["num_images"] == 2


def test_refuses_a_folder_with_other_images(tmp_path: Path) -> None:
    (tmp_path / "real" / "images").mkdir(parents=True)
    (tmp_path / "real" / "images" / "ISIC_0000000.jpg").write_bytes(b"x")
    with pytest.raises(DermoscopyInputError, match="not synthetic"):
        generate_synthetic_dataset(tmp_path / "real", num_images=2, size=64)
    assert (tmp_path / "real" / "images" / "ISIC_0000000.jpg").read_bytes() == b"x"


def test_48_images_in_under_3_seconds(tmp_path: Path) -> None:
    # CPU time of this process, so that other jobs on a shared machine do not make the test flaky
    start = time.process_time()
    root = generate_synthetic_dataset(tmp_path / "ds")
    assert time.process_time() - start < 3.0
    assert len(pair_images_and_masks(root)) == 48
    with Image.open(Path(root) / "images" / "syn_0000.png") as img:
        assert img.size == (256, 256)


def test_ensure_dataset_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import egeunet_monai.data.synthetic as synthetic

    calls = []
    monkeypatch.setattr(synthetic, "generate_synthetic_dataset", lambda d: calls.append(str(d)) or str(d))
    for empty in (None, "", "  ", "synthetic"):
        assert synthetic.ensure_dataset_dir(empty, str(tmp_path / "syn")) == str(tmp_path / "syn")
    assert calls == [str(tmp_path / "syn")] * 4
    assert synthetic.ensure_dataset_dir("/data/isic", str(tmp_path / "syn")) == "/data/isic"
    assert len(calls) == 4


def test_ensure_dataset_dir_generates_for_real(tmp_path: Path) -> None:
    root = ensure_dataset_dir(None, str(tmp_path / "syn"))
    assert len(pair_images_and_masks(root)) == 48


def test_the_task_is_easy(small_dataset: Path) -> None:
    # a per-image Otsu threshold on the red channel, no learning at all, already finds the lesions: a small
    # network has an easy task (hairs, vignette and texture keep it from being trivial)
    dices = []
    for item in pair_images_and_masks(small_dataset):
        image, mask = arrays(item)
        red = image[..., 0]
        lit = red > 60  # leave out the black corners of the lens vignette
        predicted = (red < otsu_threshold(red[lit])) & lit
        truth = mask > 0
        dices.append(2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))
    assert np.mean(dices) > 0.85, dices
