"""scripts/prepare_isic.py on small fake ISIC and PH2 downloads built from a few real images."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "prepare_isic.py"
IDS = ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]
PH2_IDS = ["IMD002", "IMD003"]


@pytest.fixture(scope="module")
def prepare():
    spec = importlib.util.spec_from_file_location("prepare_isic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["prepare_isic"] = module  # worker processes find the functions by module name
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def isic(shared_data_dir: Path) -> Path:
    return shared_data_dir / "isic2017_train_256"


def copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def fake_isic2017(root: Path, isic: Path) -> tuple[Path, Path]:
    """ISIC-2017_Training_Data/ + ISIC-2017_Training_Part1_GroundTruth/ as in the official zips, with the extras."""
    images, masks = root / "ISIC-2017_Training_Data", root / "ISIC-2017_Training_Part1_GroundTruth"
    for i in IDS:
        copy(isic / "images" / f"{i}.jpg", images / f"{i}.jpg")
        copy(isic / "masks" / f"{i}_segmentation.png", masks / f"{i}_segmentation.png")
        Image.new("RGB", (256, 256), (1, 2, 3)).save(images / f"{i}_superpixels.png")
    (images / "ISIC-2017_Training_Data_metadata.csv").write_text("image_id,age_approximate,sex\n")
    copy(isic / "images" / "ISIC_0000003.jpg", images / "ISIC_0000099.jpg")  # no mask
    copy(isic / "masks" / "ISIC_0000003_segmentation.png", masks / "ISIC_0000098_segmentation.png")  # no image
    return images, masks


def gray(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def test_isic2017_folders_copied_and_unpaired_reported(prepare, isic: Path, tmp_path: Path, capsys) -> None:
    images, masks = fake_isic2017(tmp_path / "download", isic)
    out = tmp_path / "out"
    assert prepare.main(["isic", "--images", str(images), "--masks", str(masks), "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "3 pairs written" in report
    assert "images without a mask (skipped): ISIC_0000099" in report
    assert "masks without an image (skipped): ISIC_0000098" in report
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i}.jpg" for i in IDS]  # no superpixels
    for i in IDS:
        assert (out / "images" / f"{i}.jpg").read_bytes() == (isic / "images" / f"{i}.jpg").read_bytes()
        np.testing.assert_array_equal(gray(out / "masks" / f"{i}_segmentation.png"),
                                      gray(isic / "masks" / f"{i}_segmentation.png"))

    from egeunet_monai.data import pair_images_and_masks

    assert [d["id"] for d in pair_images_and_masks(out)] == IDS
    # --strict turns the unpaired files into a failure
    assert prepare.main(["isic", "--images", str(images), "--masks", str(masks), "--out", str(out), "--strict"]) == 1


def test_isic_zip_holding_both_folders_resized(prepare, isic: Path, tmp_path: Path) -> None:
    images, masks = fake_isic2017(tmp_path / "download", isic)
    archive = tmp_path / "ISIC-2017.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(images.rglob("*")) + sorted(masks.rglob("*")):
            z.write(path, path.relative_to(tmp_path / "download").as_posix())
        z.writestr("__MACOSX/ISIC-2017_Training_Data/._ISIC_0000000.jpg", b"resource fork")
    out = tmp_path / "out"
    assert prepare.main(["isic", "--images", str(archive), "--out", str(out), "--size", "64"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i}.jpg" for i in IDS]
    for i in IDS:
        with Image.open(out / "images" / f"{i}.jpg") as img:
            assert img.size == (64, 64) and img.mode == "RGB"
            expected = Image.open(isic / "images" / f"{i}.jpg").resize((64, 64), Image.Resampling.BILINEAR)
            assert np.abs(np.asarray(img, float) - np.asarray(expected, float)).mean() < 4
        mask = gray(out / "masks" / f"{i}_segmentation.png")
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255} and mask.max() == 255
        original = Image.open(isic / "masks" / f"{i}_segmentation.png").resize((64, 64), Image.Resampling.NEAREST)
        np.testing.assert_array_equal(mask, np.asarray(original))


def test_isic2016_names_and_png_output(prepare, isic: Path, tmp_path: Path) -> None:
    images = tmp_path / "ISBI2016_ISIC_Part1_Training_Data"
    masks = tmp_path / "ISBI2016_ISIC_Part1_Training_GroundTruth"
    for i in IDS[:2]:
        copy(isic / "images" / f"{i}.jpg", images / f"{i}.jpg")
        copy(isic / "masks" / f"{i}_segmentation.png", masks / f"{i}_Segmentation.png")
    out = tmp_path / "out"
    assert prepare.main(["isic", "--images", str(images), "--masks", str(masks), "--out", str(out),
                         "--image-format", "png"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i}.png" for i in IDS[:2]]
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i}_segmentation.png" for i in IDS[:2]]
    # a later run in another format replaces the files instead of leaving two images per id
    assert prepare.main(["isic", "--images", str(images), "--masks", str(masks), "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i}.jpg" for i in IDS[:2]]


def fake_ph2(root: Path, ph2: Path) -> Path:
    """PH2Dataset/PH2 Dataset images/IMDxxx/{IMDxxx_Dermoscopic_Image,IMDxxx_lesion,IMDxxx_roi}/ with BMPs."""
    base = root / "PH2Dataset" / "PH2 Dataset images"
    for k, i in enumerate(PH2_IDS):
        folder = base / i
        (folder / f"{i}_Dermoscopic_Image").mkdir(parents=True)
        (folder / f"{i}_lesion").mkdir()
        (folder / f"{i}_roi").mkdir()
        Image.open(ph2 / "images" / f"{i}.jpg").save(folder / f"{i}_Dermoscopic_Image" / f"{i}.bmp")
        mask = Image.open(ph2 / "masks" / f"{i}_segmentation.png")
        (mask.convert("1") if k == 0 else mask).save(folder / f"{i}_lesion" / f"{i}_lesion.bmp")  # 1-bit and 8-bit
        mask.convert("RGB").save(folder / f"{i}_roi" / f"{i}_R1_Label4.bmp")
    (root / "PH2Dataset" / "PH2_dataset.txt").write_text("|| Name || Histological Diagnosis ||\n")
    return root / "PH2Dataset"


def test_ph2_folder_keeps_size_and_orientation(prepare, shared_data_dir: Path, tmp_path: Path) -> None:
    ph2 = shared_data_dir / "ph2"
    source = fake_ph2(tmp_path / "download", ph2)
    out = tmp_path / "out"
    assert prepare.main(["ph2", "--input", str(source), "--out", str(out), "--image-format", "jpg"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i}.jpg" for i in PH2_IDS]
    for i in PH2_IDS:
        original = gray(ph2 / "masks" / f"{i}_segmentation.png")
        np.testing.assert_array_equal(gray(out / "masks" / f"{i}_segmentation.png"), original)
        with Image.open(out / "images" / f"{i}.jpg") as img:
            assert img.size == (original.shape[1], original.shape[0])  # 765 wide: not transposed

    from egeunet_monai.data import pair_images_and_masks

    assert [d["id"] for d in pair_images_and_masks(out)] == PH2_IDS


def test_ph2_zip_with_workers(prepare, shared_data_dir: Path, tmp_path: Path) -> None:
    source = fake_ph2(tmp_path / "download", shared_data_dir / "ph2")
    archive = tmp_path / "PH2Dataset.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(source.rglob("*")):
            z.write(path, path.relative_to(source.parent).as_posix())
    out = tmp_path / "out"
    assert prepare.main(["ph2", "--input", str(archive), "--out", str(out), "--size", "96", "--workers", "2"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i}.png" for i in PH2_IDS]  # bmp -> png
    for i in PH2_IDS:
        assert gray(out / "masks" / f"{i}_segmentation.png").shape == (96, 96)


def test_bad_pairs_are_reported_and_fail_the_run(prepare, isic: Path, tmp_path: Path, capsys) -> None:
    images, masks = fake_isic2017(tmp_path / "download", isic)
    Image.open(masks / "ISIC_0000001_segmentation.png").resize((100, 80)).save(masks / "ISIC_0000001_segmentation.png")
    (images / "ISIC_0000002.jpg").write_bytes(b"broken")
    grey = Image.open(masks / "ISIC_0000000_segmentation.png")
    grey.save(masks / "ISIC_0000000_segmentation.png")
    grey.convert("RGB").save(tmp_path / "grey.jpg", quality=60)
    shutil.copyfile(tmp_path / "grey.jpg", masks / "ISIC_0000000_segmentation.png")  # JPEG bytes, grey edges
    out = tmp_path / "out"
    assert prepare.main(["isic", "--images", str(images), "--masks", str(masks), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "1 pairs written" in captured.out
    assert "masks had grey levels and were thresholded at 128: ISIC_0000000" in captured.out
    assert "ISIC_0000001: image" in captured.err and "is 256x256 but mask" in captured.err and "100x80" in captured.err
    assert "ISIC_0000002: unreadable" in captured.err
    assert set(np.unique(gray(out / "masks" / "ISIC_0000000_segmentation.png"))) == {0, 255}


def test_missing_input_and_nothing_found(prepare, tmp_path: Path, capsys) -> None:
    assert prepare.main(["isic", "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    (tmp_path / "empty").mkdir()
    assert prepare.main(["ph2", "--input", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 1
    assert "no image/mask pair" in capsys.readouterr().err


def test_suffixes_match_the_package(prepare) -> None:
    from egeunet_monai.data import IMAGE_SUFFIXES

    assert prepare.IMAGE_SUFFIXES == IMAGE_SUFFIXES


def test_help_runs_as_a_script() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "examples:" in result.stdout and "--images ISIC-2017_Training_Data.zip" in result.stdout
