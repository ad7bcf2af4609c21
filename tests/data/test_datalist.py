"""Datalists: pairing images with masks by id, checks on dataset folders, the split, and inference listings."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from egeunet_monai.data import (
    IMAGE_SUFFIXES,
    SPLIT_FILE_NAME,
    DermoscopyInputError,
    build_datalists,
    list_images,
    pair_images_and_masks,
    split_datalist,
)

ISIC_IDS = ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]


# ----------------------------------------------------------------------------------------------------------------
# helpers


def copy_real(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)  # not copy(): the shared files are read-only
    return dst


def make_dataset(root: Path, isic: Path, ids: dict[str, str]) -> Path:
    """A dataset folder whose ``new id -> real ISIC id`` pairs are copies of real images and masks."""
    for new_id, real_id in ids.items():
        copy_real(isic / "images" / f"{real_id}.jpg", root / "images" / f"{new_id}.jpg")
        copy_real(isic / "masks" / f"{real_id}_segmentation.png", root / "masks" / f"{new_id}_segmentation.png")
    return root


@pytest.fixture
def isic(shared_data_dir: Path) -> Path:
    return shared_data_dir / "isic2017_train_256"


@pytest.fixture
def dataset(isic: Path, tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "isic_small", isic, {i: i for i in ISIC_IDS})


def fake_items(source: str, n: int) -> list[dict]:
    return [
        {
            "image": f"/d/{source}/images/{source}_{k:03d}.jpg",
            "label": f"/d/{source}/masks/{source}_{k:03d}_segmentation.png",
            "id": f"{source}_{k:03d}",
            "source": source,
        }
        for k in range(n)
    ]


# ----------------------------------------------------------------------------------------------------------------
# pairing


def test_pairs_real_files_sorted_by_id(dataset: Path) -> None:
    items = pair_images_and_masks(dataset)
    assert [d["id"] for d in items] == ISIC_IDS
    for d in items:
        assert set(d) == {"image", "label", "id", "source"}
        assert d["source"] == "isic_small"
        assert Path(d["image"]) == dataset / "images" / f"{d['id']}.jpg"
        assert Path(d["label"]) == dataset / "masks" / f"{d['id']}_segmentation.png"
        assert all(isinstance(v, str) for v in d.values())


def test_pairs_by_id_not_by_listing_order(isic: Path, tmp_path: Path) -> None:
    # sorted file names: images "a.jpg" < "a_b.jpg", masks "a_b_segmentation.png" < "a_segmentation.png"
    root = make_dataset(tmp_path / "ds", isic, {"a": ISIC_IDS[0], "a_b": ISIC_IDS[1]})
    items = {d["id"]: d for d in pair_images_and_masks(root)}
    assert Path(items["a"]["label"]).name == "a_segmentation.png"
    assert Path(items["a_b"]["label"]).name == "a_b_segmentation.png"
    with Image.open(items["a"]["label"]) as m, Image.open(isic / "masks" / f"{ISIC_IDS[0]}_segmentation.png") as real:
        np.testing.assert_array_equal(np.asarray(m), np.asarray(real))


def test_accepts_every_image_suffix_and_isic_2016_mask_spelling(isic: Path, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _mkdir(root / "images")
    real = Image.open(isic / "images" / f"{ISIC_IDS[0]}.jpg")
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".JPG": "JPEG"}
    for k, suffix in enumerate(formats):
        real.save(root / "images" / f"im{k}{suffix}", format=formats[suffix])
        mask_name = f"im{k}_Segmentation.png" if k == 0 else f"im{k}_segmentation.png"  # ISIC 2016: capital S
        copy_real(isic / "masks" / f"{ISIC_IDS[0]}_segmentation.png", root / "masks" / mask_name)
    assert set(formats) == {*IMAGE_SUFFIXES, ".JPG"}
    assert [d["id"] for d in pair_images_and_masks(root)] == [f"im{k}" for k in range(len(formats))]


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_hidden_and_other_files_are_ignored(dataset: Path) -> None:
    (dataset / "images" / "._ISIC_0000000.jpg").write_bytes(b"macOS resource fork")
    (dataset / "images" / "metadata.csv").write_text("id\n")
    (dataset / "masks" / ".DS_Store").write_bytes(b"")
    assert [d["id"] for d in pair_images_and_masks(dataset)] == ISIC_IDS


def test_names_with_spaces_and_non_ascii(isic: Path, tmp_path: Path) -> None:
    from monai.transforms import LoadImaged

    from egeunet_monai.data import DermoscopyImageReader

    root = make_dataset(tmp_path / "jeu de données", isic, {"lésion 日本 1": ISIC_IDS[0]})
    (item,) = pair_images_and_masks(root)
    assert item["id"] == "lésion 日本 1" and item["source"] == "jeu de données"
    loaded = LoadImaged(keys=["image", "label"], reader=DermoscopyImageReader(), image_only=True,
                        ensure_channel_first=True)(item)
    assert loaded["image"].shape[1:] == loaded["label"].shape[1:]


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        pair_images_and_masks(tmp_path / "nowhere")


def test_missing_masks_subfolder(dataset: Path) -> None:
    shutil.rmtree(dataset / "masks")
    with pytest.raises(FileNotFoundError, match="missing 'masks' subfolder"):
        pair_images_and_masks(dataset)


def test_missing_images_subfolder(tmp_path: Path) -> None:
    (tmp_path / "ds" / "masks").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="missing 'images' subfolder"):
        pair_images_and_masks(tmp_path / "ds")


def test_empty_images_folder(tmp_path: Path) -> None:
    for sub in ("images", "masks"):
        (tmp_path / "ds" / sub).mkdir(parents=True)
    with pytest.raises(DermoscopyInputError, match="no images") as info:
        pair_images_and_masks(tmp_path / "ds")
    assert info.value.path.endswith("images")


def test_masks_folder_without_proper_names(dataset: Path) -> None:
    for mask in (dataset / "masks").iterdir():
        mask.rename(mask.with_name(mask.name.replace("_segmentation", "")))
    with pytest.raises(DermoscopyInputError, match=r"no masks named <id>_segmentation\.png.*ISIC_0000000\.png"):
        pair_images_and_masks(dataset)


def test_image_without_mask_and_mask_without_image_are_listed(dataset: Path) -> None:
    (dataset / "masks" / "ISIC_0000001_segmentation.png").unlink()
    (dataset / "images" / "ISIC_0000003.jpg").unlink()
    with pytest.raises(DermoscopyInputError) as info:
        pair_images_and_masks(dataset)
    message = str(info.value)
    assert "images without a mask" in message and "ISIC_0000001" in message
    assert "masks without an image" in message and "ISIC_0000003" in message
    assert "ISIC_0000000" not in message


def test_many_unpaired_ids_are_shortened(isic: Path, tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", isic, {"paired": ISIC_IDS[0]})
    for k in range(12):
        copy_real(isic / "images" / f"{ISIC_IDS[0]}.jpg", root / "images" / f"lonely_{k:02d}.jpg")
    with pytest.raises(DermoscopyInputError, match=r"lonely_00, .*lonely_09, \.\.\. \(12 in all\)") as info:
        pair_images_and_masks(root)
    assert "lonely_10" not in str(info.value)


def test_two_images_with_the_same_id(dataset: Path) -> None:
    Image.open(dataset / "images" / "ISIC_0000002.jpg").save(dataset / "images" / "ISIC_0000002.png")
    with pytest.raises(DermoscopyInputError, match=r"several images share an id: ISIC_0000002.*ISIC_0000002\.jpg"):
        pair_images_and_masks(dataset)


def test_mask_of_another_size_names_both_files(dataset: Path) -> None:
    mask = dataset / "masks" / "ISIC_0000001_segmentation.png"
    Image.open(mask).resize((128, 100), Image.Resampling.NEAREST).save(mask)
    with pytest.raises(DermoscopyInputError, match="mask size differs") as info:
        pair_images_and_masks(dataset)
    message = str(info.value)
    assert "ISIC_0000001.jpg is 256x256" in message and "ISIC_0000001_segmentation.png is 128x100" in message
    assert len(pair_images_and_masks(dataset, check_sizes=False)) == len(ISIC_IDS)


def test_size_check_follows_exif_orientation(shared_data_dir: Path, tmp_path: Path) -> None:
    ph2 = shared_data_dir / "ph2"
    root = tmp_path / "rotated"
    stored = Image.open(ph2 / "images" / "IMD002.jpg")  # 765x572
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned by 90 degrees: 572x765
    _mkdir(root / "images")
    stored.save(root / "images" / "IMD002.jpg", exif=exif.tobytes())
    mask = Image.open(ph2 / "masks" / "IMD002_segmentation.png")
    _mkdir(root / "masks")
    mask.transpose(Image.Transpose.ROTATE_270).save(root / "masks" / "IMD002_segmentation.png")  # drawn on the display
    (item,) = pair_images_and_masks(root)

    from monai.transforms import LoadImaged

    from egeunet_monai.data import DermoscopyImageReader

    loaded = LoadImaged(keys=["image", "label"], reader=DermoscopyImageReader(), image_only=True,
                        ensure_channel_first=True)(item)
    # rows x columns as displayed: 765 rows of 572 pixels
    assert tuple(loaded["image"].shape) == (3, 765, 572) and tuple(loaded["label"].shape) == (1, 765, 572)
    gray, lesion = loaded["image"].numpy().mean(0), loaded["label"][0].numpy() > 0
    assert gray[lesion].mean() < gray[~lesion].mean() - 40  # image and mask line up once both are displayed

    mask.save(root / "masks" / "IMD002_segmentation.png")  # the stored (unrotated) size no longer matches
    with pytest.raises(DermoscopyInputError, match="IMD002.jpg is 572x765 but .* is 765x572"):
        pair_images_and_masks(root)


# ----------------------------------------------------------------------------------------------------------------
# split


def test_split_is_deterministic_and_independent_of_order() -> None:
    items = fake_items("isic", 40) + fake_items("ph2", 15)
    first = split_datalist(items, 0.2, seed=3)
    shuffled = list(reversed(items))
    np.random.default_rng(1).shuffle(shuffled)
    assert split_datalist(shuffled, 0.2, seed=3) == first
    assert split_datalist(items, 0.2, seed=4) != first


def test_split_is_stratified_by_source() -> None:
    items = fake_items("a", 10) + fake_items("b", 7) + fake_items("c", 2) + fake_items("d", 1)
    training, validation = split_datalist(items, 0.2, seed=0)
    counts = {s: sum(d["source"] == s for d in validation) for s in "abcd"}
    assert counts == {"a": 2, "b": 2, "c": 1, "d": 0}
    assert sorted(d["id"] for d in training + validation) == sorted(d["id"] for d in items)
    assert not {d["id"] for d in training} & {d["id"] for d in validation}


def test_adding_a_source_keeps_the_others_split() -> None:
    _, alone = split_datalist(fake_items("a", 30), 0.2, seed=0)
    _, together = split_datalist(fake_items("a", 30) + fake_items("b", 30), 0.2, seed=0)
    assert [d for d in together if d["source"] == "a"] == alone


def test_split_without_validation_and_bad_fractions() -> None:
    training, validation = split_datalist(fake_items("a", 5), 0.0)
    assert len(training) == 5 and validation == []
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="val_fraction"):
            split_datalist(fake_items("a", 5), bad)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    fraction=st.floats(0.01, 0.95),
    seed=st.integers(0, 2**31),
)
def test_split_counts_property(sizes: list[int], fraction: float, seed: int) -> None:
    items = [d for k, n in enumerate(sizes) for d in fake_items(f"s{k}", n)]
    training, validation = split_datalist(items, fraction, seed)
    for k, n in enumerate(sizes):
        n_val = sum(d["source"] == f"s{k}" for d in validation)
        n_train = sum(d["source"] == f"s{k}" for d in training)
        assert n_val + n_train == n
        if n >= 2:
            assert min(n - 1, math.ceil(fraction * n)) <= n_val <= n - 1 and n_val >= 1
        else:
            assert n_val == 0


# ----------------------------------------------------------------------------------------------------------------
# build_datalists


def test_build_writes_and_reuses_the_split(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    lists = build_datalists(str(dataset), str(out), val_fraction=0.25, seed=0)
    assert set(lists) == {"training", "validation"}
    assert len(lists["validation"]) == 1 and len(lists["training"]) == 3
    saved = json.loads((out / SPLIT_FILE_NAME).read_text())
    assert saved["seed"] == 0 and saved["val_fraction"] == 0.25
    assert saved["training"] == lists["training"] and saved["validation"] == lists["validation"]

    # a resumed run gets the saved split, even one the current code would not draw
    saved["training"], saved["validation"] = saved["training"][1:], saved["validation"] + saved["training"][:1]
    (out / SPLIT_FILE_NAME).write_text(json.dumps(saved))
    again = build_datalists(str(dataset), str(out), val_fraction=0.25, seed=0)
    assert [d["id"] for d in again["validation"]] == sorted(d["id"] for d in saved["validation"])

    # another seed is another split, and replaces the file
    other = build_datalists(str(dataset), str(out), val_fraction=0.25, seed=1)
    assert json.loads((out / SPLIT_FILE_NAME).read_text())["seed"] == 1
    _, expected = split_datalist(pair_images_and_masks(dataset), 0.25, 1)
    assert [d["id"] for d in other["validation"]] == [d["id"] for d in expected]


def test_reused_split_follows_a_moved_dataset(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = build_datalists(str(dataset), str(out), seed=5)
    moved = Path(shutil.move(str(dataset), str(tmp_path / "elsewhere" / dataset.name)))
    second = build_datalists(str(moved), str(out), seed=5)
    assert [d["id"] for d in second["validation"]] == [d["id"] for d in first["validation"]]
    assert all(Path(d["image"]).is_file() and str(moved) in d["image"] for d in second["training"])


def test_new_ids_make_a_new_split(dataset: Path, isic: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build_datalists(str(dataset), str(out))
    make_dataset(dataset, isic, {"ISIC_0000004": "ISIC_0000004"})
    lists = build_datalists(str(dataset), str(out))
    ids = {d["id"] for d in lists["training"] + lists["validation"]}
    assert "ISIC_0000004" in ids
    saved = json.loads((out / SPLIT_FILE_NAME).read_text())
    assert "ISIC_0000004" in {d["id"] for d in saved["training"] + saved["validation"]}


def test_build_from_several_folders_comma_separated(dataset: Path, isic: Path, tmp_path: Path) -> None:
    second = make_dataset(tmp_path / "second", isic, {f"x{k}": ISIC_IDS[k] for k in range(3)})
    lists = build_datalists(f"{dataset}, {second}", str(tmp_path / "out"), val_fraction=0.2)
    assert {d["source"] for d in lists["validation"]} == {"isic_small", "second"}
    assert len(lists["training"]) + len(lists["validation"]) == 7
    assert build_datalists([str(dataset), str(second)], str(tmp_path / "out"), val_fraction=0.2) == lists


def test_same_folder_twice_is_refused(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(DermoscopyInputError, match="appears twice"):
        build_datalists([str(dataset), str(dataset)], str(tmp_path / "out"))


def test_build_from_a_datalist_file(dataset: Path, tmp_path: Path) -> None:
    rel = [{"image": f"isic_small/images/{i}.jpg", "label": f"isic_small/masks/{i}_segmentation.png"} for i in ISIC_IDS]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": rel[:3], "validation": rel[3:]}))
    lists = build_datalists("", str(tmp_path / "out"), datalist_file=str(datalist))
    assert [d["id"] for d in lists["validation"]] == ["ISIC_0000003"]
    assert all(Path(d["image"]).is_file() and Path(d["label"]).is_file() for d in lists["training"])
    assert lists["training"][0]["source"] == "isic_small"
    assert not (tmp_path / "out" / SPLIT_FILE_NAME).exists()

    datalist.write_text(json.dumps({"training": rel}))  # no validation list: the training list is split
    lists = build_datalists("", str(tmp_path / "out"), val_fraction=0.25, datalist_file=str(datalist))
    assert len(lists["validation"]) == 1 and len(lists["training"]) == 3


def test_missing_datalist_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="datalist file not found"):
        build_datalists("", str(tmp_path), datalist_file=str(tmp_path / "none.json"))


def test_no_folder_given(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no dataset folder"):
        build_datalists(" , ", str(tmp_path))


# ----------------------------------------------------------------------------------------------------------------
# list_images


def test_list_images_of_a_file_a_folder_and_a_dataset_folder(dataset: Path, tmp_path: Path) -> None:
    one = dataset / "images" / "ISIC_0000002.jpg"
    assert list_images(one) == [{"image": str(one), "id": "ISIC_0000002"}]
    assert [d["id"] for d in list_images(dataset / "images")] == ISIC_IDS
    assert [d["id"] for d in list_images(dataset)] == ISIC_IDS  # through images/
    flat = tmp_path / "flat"
    copy_real(one, flat / "b.jpg")
    copy_real(one, flat / "a.png")
    copy_real(dataset / "masks" / "ISIC_0000002_segmentation.png", flat / "b_segmentation.png")
    copy_real(one, flat / "b_superpixels.png")
    (flat / "notes.txt").write_text("x")
    assert [d["id"] for d in list_images(flat)] == ["a", "b"]


def test_list_images_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such image file or folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DermoscopyInputError, match="no images"):
        list_images(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DermoscopyInputError, match="not a supported image file"):
        list_images(tmp_path / "notes.txt")
