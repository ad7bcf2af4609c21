"""DermoscopyImageReader: real files decoded from disk, damaged or converted copies, and MONAI round trips."""

from __future__ import annotations

import io
import pickle
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from egeunet_monai.data import DermoscopyImageReader, DermoscopyInputError, DermoscopyInputWarning, is_mask_path

ISIC_ID = "ISIC_0000000"
PH2_ID = "IMD002"  # 765x572: not square, so a transposed array would have the wrong shape


# ----------------------------------------------------------------------------------------------------------------
# helpers


def copy_real(src: Path, dst: Path) -> Path:
    """Copy a real file into the test's folder (copyfile: the shared files are read-only, the copies must not be)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels, with no real pixel data: cheap to make, and any
    attempt to decode it fails, which shows whether a size check came before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def load(path: Path, **reader_args) -> tuple[np.ndarray, dict]:
    """What LoadImage does with a reader: ``get_data(read(path))``."""
    reader = DermoscopyImageReader(**reader_args)
    return reader.get_data(reader.read(path))


def read_array(path: Path, **reader_args) -> tuple[np.ndarray, dict]:
    """Read through the reader as LoadImage does (rows first, as PIL and numpy lay out an image)."""
    return load(path, **reader_args)


def no_warning_read(path: Path, **reader_args) -> tuple[np.ndarray, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DermoscopyInputWarning)
        return read_array(path, **reader_args)


@pytest.fixture
def isic_image(shared_data_dir: Path, tmp_path: Path) -> Path:
    src = shared_data_dir / "isic2017_train_256" / "images" / f"{ISIC_ID}.jpg"
    return copy_real(src, tmp_path / "images" / f"{ISIC_ID}.jpg")


@pytest.fixture
def isic_mask(shared_data_dir: Path, tmp_path: Path) -> Path:
    src = shared_data_dir / "isic2017_train_256" / "masks" / f"{ISIC_ID}_segmentation.png"
    return copy_real(src, tmp_path / "masks" / f"{ISIC_ID}_segmentation.png")


@pytest.fixture
def ph2_pair(shared_data_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    ph2 = shared_data_dir / "ph2"
    image = copy_real(ph2 / "images" / f"{PH2_ID}.jpg", tmp_path / "ph2" / "images" / f"{PH2_ID}.jpg")
    mask = copy_real(
        ph2 / "masks" / f"{PH2_ID}_segmentation.png", tmp_path / "ph2" / "masks" / f"{PH2_ID}_segmentation.png"
    )
    return image, mask


def load_pair(image: Path, label: Path) -> dict:
    """The bundle's way of loading: one LoadImaged, one reader instance for both keys."""
    from monai.transforms import LoadImaged

    load = LoadImaged(
        keys=["image", "label"], reader=DermoscopyImageReader(), image_only=True, ensure_channel_first=True
    )
    return load({"image": str(image), "label": str(label)})


def rgb_of(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


# ----------------------------------------------------------------------------------------------------------------
# plain files


def test_real_photo_is_rgb_uint8_with_pil_reader_metadata(isic_image: Path) -> None:
    array, meta = no_warning_read(isic_image)
    assert array.shape == (256, 256, 3) and array.dtype == np.uint8
    np.testing.assert_array_equal(array, rgb_of(isic_image))
    assert meta["format"] == "JPEG" and meta["original_mode"] == "RGB" and meta["dermoscopy_kind"] == "image"
    np.testing.assert_array_equal(meta["spatial_shape"], [256, 256])
    assert meta["original_channel_dim"] == -1


def test_real_mask_becomes_0_1_single_channel(isic_mask: Path) -> None:
    array, meta = no_warning_read(isic_mask)
    with Image.open(isic_mask) as img:
        original = np.asarray(img)
    assert array.shape == original.shape and array.dtype == np.uint8
    assert set(np.unique(array)) == {0, 1}
    np.testing.assert_array_equal(array, original // 255)
    assert np.isnan(meta["original_channel_dim"]) and meta["dermoscopy_kind"] == "mask"


def test_non_square_real_pair_is_not_transposed_through_load_imaged(ph2_pair: tuple[Path, Path]) -> None:
    image_path, mask_path = ph2_pair
    data = load_pair(image_path, mask_path)
    image, label = data["image"], data["label"]
    with Image.open(mask_path) as m:
        width, height = m.size
        expected_label = np.asarray(m) > 0  # rows first, as PIL, numpy and the exported models' users have it
    assert tuple(image.shape) == (3, height, width) and tuple(label.shape) == (1, height, width)
    np.testing.assert_array_equal(label[0].numpy(), expected_label)
    np.testing.assert_array_equal(image.numpy(), np.moveaxis(rgb_of(image_path), -1, 0))
    np.testing.assert_array_equal(image.meta["spatial_shape"], [width, height])  # MONAI's (x, y), as PILReader
    # the mask covers the lesion: the lesion is much darker than the skin around it
    gray = image.numpy().mean(0)
    inside, outside = gray[expected_label].mean(), gray[~expected_label].mean()
    assert inside < outside - 40, (inside, outside)


def test_save_image_round_trip_gives_the_original_mask_back(ph2_pair: tuple[Path, Path], tmp_path: Path) -> None:
    from monai.transforms import LoadImaged, SaveImage

    _, mask_path = ph2_pair
    data = LoadImaged(keys="label", reader=DermoscopyImageReader(), image_only=True, ensure_channel_first=True)(
        {"label": str(mask_path)}
    )
    saved = {}
    for writer in ("egeunet_monai.data.RowsFirstPILWriter", "PILWriter"):
        out_dir = tmp_path / writer
        SaveImage(output_dir=out_dir, output_ext=".png", output_dtype=np.uint8, scale=255, separate_folder=False,
                  output_postfix="copy", print_log=False, writer=writer)(data["label"])
        (path,) = out_dir.glob("*.png")
        with Image.open(path) as s:
            saved[writer] = np.asarray(s)
    with Image.open(mask_path) as m:
        original = np.asarray(m)
    np.testing.assert_array_equal(saved["egeunet_monai.data.RowsFirstPILWriter"], original)
    # MONAI's own PILWriter swaps the axes back, as for PILReader's (width, height) arrays: a transposed picture
    np.testing.assert_array_equal(saved["PILWriter"], original.T)


def test_rows_first_by_default_and_pil_readers_order_on_request(ph2_pair: tuple[Path, Path]) -> None:
    image_path, _ = ph2_pair
    rows_first, meta = load(image_path)
    swapped, swapped_meta = load(image_path, reverse_indexing=True)
    assert rows_first.shape == (572, 765, 3)  # IMD002 is 765 pixels wide
    np.testing.assert_array_equal(swapped, np.moveaxis(rows_first, 0, 1))
    # the metadata keeps MONAI's (x, y) order either way, as PILReader's: (width, height)
    np.testing.assert_array_equal(meta["spatial_shape"], [765, 572])
    np.testing.assert_array_equal(swapped_meta["spatial_shape"], [765, 572])


def test_file_names_with_spaces_and_non_ascii(isic_image: Path, isic_mask: Path, tmp_path: Path) -> None:
    image = copy_real(isic_image, tmp_path / "données" / "images" / "lésion 日本 1.jpg")
    mask = copy_real(isic_mask, tmp_path / "données" / "masks" / "lésion 日本 1_segmentation.png")
    data = load_pair(image, mask)
    assert tuple(data["image"].shape) == (3, 256, 256) and tuple(data["label"].shape) == (1, 256, 256)
    assert set(np.unique(data["label"].numpy())) == {0.0, 1.0}


# ----------------------------------------------------------------------------------------------------------------
# broken files


def test_truncated_jpeg_names_the_file(isic_image: Path) -> None:
    content = isic_image.read_bytes()
    isic_image.write_bytes(content[: len(content) // 2])
    with pytest.raises(DermoscopyInputError, match="truncated") as info:
        load(isic_image)
    assert info.value.path == str(isic_image) and str(isic_image) in str(info.value)


def test_random_bytes_with_jpg_suffix(tmp_path: Path) -> None:
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(DermoscopyInputError, match="not a readable image") as info:
        load(path)
    assert info.value.path == str(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DermoscopyInputError, match="file not found"):
        load(tmp_path / "nowhere.jpg")


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(DermoscopyInputError, match="0 bytes"):
        load(path)


def test_png_claiming_zero_width(tmp_path: Path) -> None:
    path = tmp_path / "zero.png"
    path.write_bytes(png_header_only(0, 10))
    with pytest.raises(DermoscopyInputError) as info:
        load(path)
    assert info.value.path == str(path)


def test_single_pixel_is_refused_and_a_single_row_is_not(tmp_path: Path) -> None:
    path = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1), (120, 80, 60)).save(path)
    with pytest.raises(DermoscopyInputError, match=r"too small to segment \(1x1 pixels") as info:
        load(path)
    assert info.value.path == str(path)
    row = tmp_path / "row.png"
    Image.new("RGB", (20, 1), (120, 80, 60)).save(row)
    assert load(row)[0].shape == (1, 20, 3)  # rows first, channels last as PILReader gives them


def test_decompression_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(12000, 10000))  # 120 megapixels in 100 bytes: above our 100 MP default
    assert path.stat().st_size < 200
    with pytest.raises(DermoscopyInputError, match=r"too many pixels: 12000x10000 = 120\.0 megapixels"):
        load(path)
    # without the limit the same file reaches the decoder and fails there: the check did come first
    with pytest.raises(DermoscopyInputError) as info:
        load(path, max_pixels=None)
    assert "too many pixels" not in str(info.value)


def test_huge_decompression_bomb_beyond_pil_limit(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(30000, 30000))
    with pytest.raises(DermoscopyInputError, match="too many pixels"):
        load(path)


def test_max_pixels_applies_to_real_images(isic_image: Path) -> None:
    with pytest.raises(DermoscopyInputError, match="too many pixels"):
        load(isic_image, max_pixels=256 * 255)
    assert load(isic_image, max_pixels=256 * 256)[0].shape == (256, 256, 3)


def test_load_imaged_raises_our_error_instead_of_falling_back(isic_image: Path, isic_mask: Path) -> None:
    # LoadImage catches errors of read() and retries with its default readers; PILReader would open both files
    from monai.transforms import LoadImaged

    isic_image.write_bytes(isic_image.read_bytes()[:1000])
    load_both = LoadImaged(keys="image", reader=DermoscopyImageReader(), image_only=True)
    with pytest.raises(DermoscopyInputError, match="truncated") as info:
        load_both({"image": str(isic_image)})
    assert info.value.path == str(isic_image)
    grey_mask = isic_mask.with_name("grey_segmentation.png")
    Image.fromarray((np.asarray(Image.open(isic_mask)) // 2).astype(np.uint8)).save(grey_mask)  # values 0 and 127
    with pytest.raises(DermoscopyInputError, match=r"found \{0, 127\}"):
        LoadImaged(keys="label", reader=DermoscopyImageReader(), image_only=True)({"label": str(grey_mask)})


def test_error_inside_compose_keeps_the_cause(isic_image: Path) -> None:
    from monai.transforms import Compose, LoadImaged

    isic_image.write_bytes(b"not a jpeg")
    with pytest.raises(RuntimeError) as info:
        Compose([LoadImaged(keys="image", reader=DermoscopyImageReader(), image_only=True)])({"image": str(isic_image)})
    causes = []
    err: BaseException | None = info.value
    while err is not None:
        causes.append(err)
        err = err.__cause__
    assert any(isinstance(e, DermoscopyInputError) and e.path == str(isic_image) for e in causes)


def test_error_is_a_picklable_value_error() -> None:
    err = DermoscopyInputError("/data/x.jpg", "truncated file")
    assert isinstance(err, ValueError) and str(err) == "/data/x.jpg: truncated file"
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.problem, str(again)) == (err.path, err.problem, str(err))


# ----------------------------------------------------------------------------------------------------------------
# photographs in other modes: a warning naming the file and the conversion, and the right values


def test_grayscale_photo_is_copied_to_rgb(isic_image: Path, tmp_path: Path) -> None:
    gray = Image.open(isic_image).convert("L")
    path = tmp_path / "gray.png"
    gray.save(path)
    with pytest.warns(DermoscopyInputWarning, match=r"gray\.png: grayscale \(L\)"):
        array, meta = read_array(path)
    assert array.shape == (256, 256, 3) and meta["original_mode"] == "L"
    for c in range(3):
        np.testing.assert_array_equal(array[..., c], np.asarray(gray))


def test_rgba_photo_drops_alpha_and_keeps_colours(isic_image: Path, tmp_path: Path) -> None:
    rgb = rgb_of(isic_image)
    alpha = np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(path)
    with pytest.warns(DermoscopyInputWarning, match=r"rgba\.png: RGBA converted to RGB"):
        array, _ = read_array(path)
    np.testing.assert_array_equal(array, rgb)


def test_16_bit_photo_is_scaled_not_clipped(isic_image: Path, tmp_path: Path) -> None:
    gray8 = np.asarray(Image.open(isic_image).convert("L")).astype(np.uint16)
    gray16 = gray8 * 257 + (np.arange(gray8.size, dtype=np.uint16).reshape(gray8.shape) % 200)
    path = tmp_path / "gray16.png"
    Image.fromarray(gray16).save(path)
    with pytest.warns(DermoscopyInputWarning, match=r"gray16\.png: 16-bit grayscale"):
        array, _ = read_array(path)
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array[..., 1], (gray16 >> 8).astype(np.uint8))
    assert np.abs(array[..., 0].astype(int) - gray8).max() <= 1  # the picture survives, not a white sheet


def test_palette_photo_uses_its_palette(isic_image: Path, tmp_path: Path) -> None:
    quantized = Image.open(isic_image).convert("RGB").quantize(colors=32)
    path = tmp_path / "palette.png"
    quantized.save(path)
    palette = np.asarray(quantized.getpalette(), dtype=np.uint8).reshape(-1, 3)
    expected = palette[np.asarray(quantized)]
    with pytest.warns(DermoscopyInputWarning, match=r"palette\.png: palette image \(P\) converted to RGB$"):
        array, _ = read_array(path)
    np.testing.assert_array_equal(array, expected)


def test_palette_photo_with_transparency(isic_image: Path, tmp_path: Path) -> None:
    quantized = Image.open(isic_image).convert("RGB").quantize(colors=32)
    path = tmp_path / "palette_alpha.png"
    quantized.save(path, transparency=0)
    palette = np.asarray(quantized.getpalette(), dtype=np.uint8).reshape(-1, 3)
    with pytest.warns(DermoscopyInputWarning, match="transparency dropped"):
        array, _ = read_array(path)
    np.testing.assert_array_equal(array, palette[np.asarray(quantized)])


def test_cmyk_jpeg_is_converted_to_similar_rgb(isic_image: Path, tmp_path: Path) -> None:
    rgb = rgb_of(isic_image)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=98)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    with pytest.warns(DermoscopyInputWarning, match=r"cmyk\.jpg: CMYK converted to RGB"):
        array, meta = read_array(path)
    assert array.shape == rgb.shape and meta["original_mode"] == "CMYK"
    assert np.abs(array.astype(float) - rgb).mean() < 4.0


def test_exif_orientation_6_gives_the_displayed_photo(ph2_pair: tuple[Path, Path], tmp_path: Path) -> None:
    image_path, _ = ph2_pair
    stored = rgb_of(image_path)  # rows x columns = 572 x 765
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, quality=98, exif=exif.tobytes())
    array, meta = no_warning_read(path)
    displayed = np.rot90(stored, k=-1)  # 765 x 572
    assert array.shape == displayed.shape
    assert np.abs(array.astype(float) - displayed).mean() < 3.0
    assert np.abs(array.astype(float) - np.rot90(stored, k=1)).mean() > 10.0  # the other way round is wrong
    np.testing.assert_array_equal(meta["spatial_shape"], [572, 765])  # (width, height) as displayed


# ----------------------------------------------------------------------------------------------------------------
# masks


def save_mask(array: np.ndarray, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def real_mask01(isic_mask: Path) -> np.ndarray:
    with Image.open(isic_mask) as m:
        return (np.asarray(m) > 0).astype(np.uint8)


def test_mask_with_values_0_1(isic_mask: Path, tmp_path: Path) -> None:
    expected = real_mask01(isic_mask)
    path = save_mask(expected, tmp_path / "masks" / "a_segmentation.png")
    array, _ = no_warning_read(path)
    np.testing.assert_array_equal(array, expected)


def test_bilevel_mode_1_mask(isic_mask: Path, tmp_path: Path) -> None:
    expected = real_mask01(isic_mask)
    path = tmp_path / "masks" / "b_segmentation.png"
    Image.fromarray(expected * 255).convert("1").save(path)
    array, _ = no_warning_read(path)
    np.testing.assert_array_equal(array, expected)


def test_16_bit_mask_0_65535(isic_mask: Path, tmp_path: Path) -> None:
    expected = real_mask01(isic_mask)
    path = save_mask(expected.astype(np.uint16) * 65535, tmp_path / "masks" / "c_segmentation.png")
    array, _ = no_warning_read(path)
    np.testing.assert_array_equal(array, expected)


def test_jpeg_compressed_mask_is_refused_with_its_values(isic_mask: Path, tmp_path: Path) -> None:
    path = save_mask(real_mask01(isic_mask) * 255, tmp_path / "masks" / "d_segmentation.jpg", quality=75)
    with pytest.raises(DermoscopyInputError, match=r"not a binary mask: .*found \{0, 1, 2, .*distinct values") as info:
        load(path)
    assert info.value.path == str(path)


def test_mask_mixing_0_1_and_255_is_refused(tmp_path: Path) -> None:
    array = np.zeros((8, 8), np.uint8)
    array[1, 1], array[2, 2] = 1, 255
    path = save_mask(array, tmp_path / "e_segmentation.png")
    with pytest.raises(DermoscopyInputError, match=r"found \{0, 1, 255\}"):
        load(path)


def test_rgb_mask_with_equal_channels_is_accepted(isic_mask: Path, tmp_path: Path) -> None:
    expected = real_mask01(isic_mask)
    path = save_mask(np.repeat(expected[..., None] * 255, 3, -1), tmp_path / "masks" / "f_segmentation.png")
    with pytest.warns(DermoscopyInputWarning, match="RGB mask with equal channels"):
        array, _ = read_array(path)
    assert array.ndim == 2
    np.testing.assert_array_equal(array, expected)


def test_rgba_mask_with_equal_colour_channels_is_accepted(isic_mask: Path, tmp_path: Path) -> None:
    expected = real_mask01(isic_mask)
    rgba = np.dstack([expected * 255] * 3 + [np.full_like(expected, 255)])
    path = save_mask(rgba, tmp_path / "masks" / "g_segmentation.png")
    with pytest.warns(DermoscopyInputWarning):
        array, _ = read_array(path)
    np.testing.assert_array_equal(array, expected)


def test_colour_mask_is_refused(isic_mask: Path, tmp_path: Path) -> None:
    rgb = np.zeros((*real_mask01(isic_mask).shape, 3), np.uint8)
    rgb[..., 0] = real_mask01(isic_mask) * 255  # a red lesion
    path = save_mask(rgb, tmp_path / "masks" / "h_segmentation.png")
    with pytest.raises(DermoscopyInputError, match="channels differ"):
        load(path)


def test_empty_mask_warns_but_loads(tmp_path: Path) -> None:
    path = save_mask(np.zeros((20, 30), np.uint8), tmp_path / "masks" / "i_segmentation.png")
    with pytest.warns(DermoscopyInputWarning, match=r"i_segmentation\.png: empty mask"):
        array, _ = read_array(path)
    assert array.shape == (20, 30) and not array.any()


def test_full_mask_of_255_only_is_all_ones(tmp_path: Path) -> None:
    path = save_mask(np.full((5, 7), 255, np.uint8), tmp_path / "masks" / "j_segmentation.png")
    array, _ = no_warning_read(path)
    assert array.shape == (5, 7) and (array == 1).all()


# ----------------------------------------------------------------------------------------------------------------
# which files are masks


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data/masks/ISIC_0000000_segmentation.png", True),
        ("ISIC_0000000_Segmentation.png", True),  # ISIC 2016 spelling
        ("data/masks/IMD002.png", True),
        ("data/Masks/IMD002.png", True),
        ("data/images/ISIC_0000000.jpg", False),
        ("masks/project/images/ISIC_0000000.jpg", False),  # only the direct parent folder counts
        ("data/images/segmentation.jpg", False),
        ("data/images/ISIC_0000000_segmentation_preview.jpg", False),
    ],
)
def test_auto_kind_rule(path: str, expected: bool) -> None:
    assert is_mask_path(path) is expected
    assert DermoscopyImageReader().kind_of(path) == ("mask" if expected else "image")


def test_explicit_kind_overrides_the_name(isic_mask: Path, tmp_path: Path) -> None:
    with pytest.warns(DermoscopyInputWarning, match="grayscale"):
        as_image, _ = read_array(isic_mask, kind="image")
    assert as_image.shape == (256, 256, 3) and as_image.max() == 255
    plain = copy_real(isic_mask, tmp_path / "elsewhere" / "lesion.png")
    as_mask, _ = no_warning_read(plain, kind="mask")
    assert as_mask.shape == (256, 256) and as_mask.max() == 1


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="kind"):
        DermoscopyImageReader(kind="label")
    with pytest.raises(ValueError, match="max_pixels"):
        DermoscopyImageReader(max_pixels=0)


def test_a_list_of_files_is_stacked(isic_image: Path, tmp_path: Path) -> None:
    second = copy_real(isic_image, tmp_path / "images" / "copy.jpg")
    reader = DermoscopyImageReader()
    array, meta = reader.get_data(reader.read([isic_image, second]))
    assert array.shape == (256, 256, 6)  # concatenated along the channels, as MONAI's PILReader does
    np.testing.assert_array_equal(array[..., :3], array[..., 3:])
    np.testing.assert_array_equal(array[..., :3], rgb_of(isic_image))


def test_a_bad_file_in_a_list_is_named(isic_image: Path, tmp_path: Path) -> None:
    bad = tmp_path / "images" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 broken")
    with pytest.raises(DermoscopyInputError) as info:
        load([isic_image, bad])
    assert info.value.path == str(bad)


def test_png_header_helper_is_a_real_png_header() -> None:
    # guards the bomb tests: PIL must read the crafted size, or those tests would pass for the wrong reason
    with Image.open(io.BytesIO(png_header_only(640, 480))) as img:
        assert img.size == (640, 480) and img.format == "PNG"
