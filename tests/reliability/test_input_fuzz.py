"""Hostile and odd input files, generated and mutated by hypothesis, through the loaders the bundle, the CLI and the
viewer use: ``LoadImaged`` with ``DermoscopyImageReader``, ``pair_images_and_masks`` and ``list_images``.

The property, for every input: it loads (photo: 3 x H x W in 0..255; mask: 1 x H x W in {0, 1}), or it raises
``DermoscopyInputError`` whose ``path`` is the file; within ``TIME_BOUND_S`` of CPU time; never another exception, a
crash or a hang (a CPU-time alarm turns a hang into a failure). The seeds are real ISIC 2017 and PH2 files from
``../shared/data``.

The plain cases (one truncated file, one bomb, one CMYK JPEG, EXIF orientation 6...) are unit tests in
``tests/data/test_reader.py``; this file is the randomised layer on top of them.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import tempfile
import time
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from egeunet_monai.data import (
    IMAGE_SUFFIXES,
    DermoscopyImageReader,
    DermoscopyInputError,
    DermoscopyInputWarning,
    list_images,
    pair_images_and_masks,
)

# CPU seconds (this process, all threads), not wall time: a shared 2-core machine stretches wall time, never the work.
# Measured on the 2-core Xeon at load 12: the slowest load or refusal, 40 examples per property, 0.024 CPU s (mutated
# real files); the bound is 200x that.
TIME_BOUND_S = 5.0  # per input file, load included
HANG_ALARM_S = 30  # CPU seconds: a load still running after this is a hang, failed instead of blocking CI
EXAMPLES = int(os.environ.get("EGEUNET_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # hypothesis' deadline is wall time; the CPU-time assertion in load_one is the bound
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ISIC_ID = "ISIC_0000000"
PH2_ID = "IMD002"

SLOWEST: dict[str, float] = {}  # slowest load per property, reported at the end of the module


# ----------------------------------------------------------------------------------------------------------------
# seeds and oracle


@pytest.fixture(scope="module")
def seeds(shared_data_dir: Path) -> dict[str, bytes]:
    data = shared_data_dir
    isic, ph2 = data / "isic2017_train_256", data / "ph2"
    seeds = {
        "isic.jpg": (isic / "images" / f"{ISIC_ID}.jpg").read_bytes(),
        "ph2.jpg": (ph2 / "images" / f"{PH2_ID}.jpg").read_bytes(),
        "mask.png": (isic / "masks" / f"{ISIC_ID}_segmentation.png").read_bytes(),
    }
    with Image.open(io.BytesIO(seeds["isic.jpg"])) as img:
        buf = io.BytesIO()
        img.save(buf, format="PNG")  # a real photo as PNG, to mutate PNG pixel data too
        seeds["isic.png"] = buf.getvalue()
    return seeds


@pytest.fixture(scope="module", autouse=True)
def report_slowest():
    yield
    if SLOWEST:
        print("\nslowest load per property (CPU s): " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(SLOWEST.items())))


@contextmanager
def hang_guard(seconds: int = HANG_ALARM_S):
    def on_alarm(signum, frame):
        raise TimeoutError(f"still loading after {seconds} s of CPU time: a hang")

    previous = signal.signal(signal.SIGPROF, on_alarm)
    signal.setitimer(signal.ITIMER_PROF, seconds)  # counts the process's CPU time, not the wall clock
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def load_one(path: Path, kind: str, prop: str) -> np.ndarray | None:
    """Load ``path`` as the bundle does and check the property. Returns the array (C, H, W) or None on our error."""
    from monai.transforms import LoadImaged

    key = "label" if kind == "mask" else "image"
    load = LoadImaged(keys=key, reader=DermoscopyImageReader(kind=kind), image_only=True, ensure_channel_first=True)
    start = time.process_time()
    result = None
    with hang_guard(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DermoscopyInputWarning)
        try:
            out = load({key: str(path)})
        except DermoscopyInputError as err:
            assert err.path == str(path), f"the error names {err.path!r}, not the file {path}"
            assert str(path) in str(err)
        else:
            result = np.asarray(out[key])
    elapsed = time.process_time() - start
    SLOWEST[prop] = max(SLOWEST.get(prop, 0.0), elapsed)
    assert elapsed < TIME_BOUND_S, f"{path}: {elapsed:.1f} s of CPU time to load or refuse"
    if result is not None:
        assert result.ndim == 3 and result.shape[1] > 0 and result.shape[2] > 0
        assert np.isfinite(result).all()
        if kind == "mask":
            assert result.shape[0] == 1 and set(np.unique(result).tolist()) <= {0.0, 1.0}
        else:
            assert result.shape[0] == 3 and result.min() >= 0 and result.max() <= 255
    return result


# ----------------------------------------------------------------------------------------------------------------
# strategies


@st.composite
def mutations(draw, size: int):
    """A list of edits of a file of ``size`` bytes: flips, overwrites, insertions, deletions, a truncation."""
    edits = []
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, size - 1))
        if op == "flip":
            edits.append((op, pos, draw(st.integers(0, 7))))
        elif op == "set":
            edits.append((op, pos, draw(st.binary(min_size=1, max_size=16))))
        elif op == "insert":
            edits.append((op, pos, draw(st.binary(min_size=1, max_size=64))))
        elif op == "delete":
            edits.append((op, pos, draw(st.integers(1, 256))))
        else:
            edits.append((op, pos, None))
    return edits


def mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for op, pos, arg in edits:
        pos = min(pos, max(len(buf) - 1, 0))
        if op == "flip" and buf:
            buf[pos] ^= 1 << arg
        elif op == "set":
            buf[pos : pos + len(arg)] = arg
        elif op == "insert":
            buf[pos:pos] = arg
        elif op == "delete":
            del buf[pos : pos + arg]
        elif op == "truncate":
            del buf[pos:]
    return bytes(buf)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_file(width: int, height: int, bit_depth: int, color_type: int, idat: bytes, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


# ----------------------------------------------------------------------------------------------------------------
# properties: damaged files


@FUZZ
@given(seed=st.sampled_from(["isic.jpg", "ph2.jpg", "isic.png", "mask.png"]), data=st.data())
def test_mutated_real_files_load_or_name_the_file(seeds, seed: str, data) -> None:
    original = seeds[seed]
    edits = data.draw(mutations(len(original)), label="edits")
    kind = "mask" if seed == "mask.png" else "image"
    with tempfile.TemporaryDirectory() as tmp:
        name = f"{ISIC_ID}_segmentation.png" if kind == "mask" else f"photo{Path(seed).suffix}"
        path = Path(tmp) / name
        path.write_bytes(mutate(original, edits))
        load_one(path, kind, "mutated real files")


@FUZZ
@given(
    seed=st.sampled_from(["isic.jpg", "ph2.jpg", "isic.png", "mask.png"]),
    fraction=st.floats(0.0, 1.0, exclude_max=True),
)
@example(seed="isic.jpg", fraction=0.0)  # a zero-byte file
@example(seed="isic.jpg", fraction=0.5)
@example(seed="mask.png", fraction=0.999)
def test_truncated_real_files(seeds, seed: str, fraction: float) -> None:
    original = seeds[seed]
    kind = "mask" if seed == "mask.png" else "image"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (f"x_segmentation.png" if kind == "mask" else f"photo{Path(seed).suffix}")
        path.write_bytes(original[: int(len(original) * fraction)])
        out = load_one(path, kind, "truncated files")
        if fraction < 0.5:
            # half a file cannot be a whole image: refusing it is the only right answer (PIL would pad it)
            assert out is None, f"{path}: {fraction:.0%} of the file was loaded as if complete"


@FUZZ
@given(content=st.binary(max_size=4096), suffix=st.sampled_from(IMAGE_SUFFIXES + (".JPG", ".PNG")))
@example(content=b"", suffix=".jpg")
@example(content=b"\xff\xd8\xff", suffix=".jpg")  # a JPEG start marker and nothing else
@example(content=b"\x89PNG\r\n\x1a\n", suffix=".png")
@example(content=b"BM" + b"\x00" * 60, suffix=".bmp")
def test_random_bytes_with_an_image_suffix(content: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for kind, name in (("image", f"img{suffix}"), ("mask", f"img_segmentation{suffix}")):
            path = Path(tmp) / name
            path.write_bytes(content)
            load_one(path, kind, "random bytes")


@FUZZ
@given(
    width=st.integers(0, 2**31 - 1),
    height=st.integers(0, 2**31 - 1),
    mode=st.sampled_from([(8, 0), (8, 2), (16, 0), (1, 0), (8, 3), (8, 6), (16, 2)]),
)
@example(width=50_000, height=50_000, mode=(8, 2))  # 2.5 gigapixels in 80 bytes
@example(width=0, height=0, mode=(8, 0))
@example(width=1, height=2**31 - 1, mode=(8, 0))
def test_png_headers_claiming_any_size(width: int, height: int, mode: tuple[int, int]) -> None:
    depth, color = mode
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "header.png"
        path.write_bytes(png_file(width, height, depth, color, zlib.compress(b"")))
        with pytest.raises(DermoscopyInputError) as info:  # no pixel data for that size: never a success
            DermoscopyImageReader(kind="image").get_data(DermoscopyImageReader(kind="image").read(str(path)))
        if width * height > DermoscopyImageReader().max_pixels:
            # refused from the header, before any decoding (a decompression bomb costs nothing)
            assert "too many pixels" in str(info.value) or "zero-size" in str(info.value)
        load_one(path, "image", "png headers")


def test_pixel_data_bomb_under_a_small_header(tmp_path: Path) -> None:
    """A 64x64 PNG whose IDAT inflates to 64 MB: the decoder must stop at what the header needs."""
    comp = zlib.compressobj(1)
    zeros = bytes(1 << 20)
    idat = b"".join(comp.compress(zeros) for _ in range(64)) + comp.flush()
    assert len(idat) < 1 << 20
    path = tmp_path / "idat_bomb.png"
    path.write_bytes(png_file(64, 64, 8, 0, idat))
    out = load_one(path, "image", "idat bomb")
    assert out is None or out.shape == (3, 64, 64)


def test_text_chunk_bomb(tmp_path: Path) -> None:
    """A 16x16 PNG with a zTXt chunk inflating to 64 MB (PIL's limit for text is 1 MB)."""
    text = zlib.compress(b"A" * (64 << 20), 9)
    extra = png_chunk(b"zTXt", b"comment\x00\x00" + text)
    raw = b"".join(b"\x00" + b"\x80" * 16 for _ in range(16))
    path = tmp_path / "ztxt_bomb.png"
    path.write_bytes(png_file(16, 16, 8, 0, zlib.compress(raw), extra))
    out = load_one(path, "image", "text chunk bomb")
    assert out is None or out.shape == (3, 16, 16)


# ----------------------------------------------------------------------------------------------------------------
# properties: valid but unusual files


PHOTO_FORMATS = {  # PIL mode -> file formats that can hold it
    "1": ["PNG", "BMP"],
    "L": ["PNG", "JPEG", "BMP"],
    "LA": ["PNG"],
    "P": ["PNG", "BMP"],
    "PT": ["PNG"],  # palette with a transparent entry
    "RGB": ["PNG", "JPEG", "BMP"],
    "RGBA": ["PNG"],
    "CMYK": ["JPEG"],
    "I;16": ["PNG"],  # (PIL cannot write 32-bit "I" as PNG, JPEG or BMP)
}
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp"}


def make_photo(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "PT":
        img = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        img.info["transparency"] = 0
        return img
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=int(rng.integers(2, 256)))
    return rgb.convert(mode)


@FUZZ
@given(
    mode=st.sampled_from(sorted(PHOTO_FORMATS)),
    width=st.integers(1, 96),
    height=st.integers(1, 96),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_every_valid_photo_mode_loads_as_rgb(mode: str, width: int, height: int, seed: int, data) -> None:
    assume((width, height) != (1, 1))  # a single pixel is refused by rule (tests/data/test_reader.py)
    fmt = data.draw(st.sampled_from(PHOTO_FORMATS[mode]), label="format")
    img = make_photo(mode, width, height, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"photo {mode}{SUFFIX[fmt]}"
        img.save(path, format=fmt, **({"transparency": 0} if mode == "PT" else {}))
        out = load_one(path, "image", "photo modes")
        assert out is not None, f"a valid {mode} {fmt} photo was refused"
        assert out.shape == (3, height, width)


@FUZZ
@given(
    encoding=st.sampled_from(["L 0/255", "L 0/1", "1", "I;16 0/65535", "RGB equal", "P gray", "LA"]),
    width=st.integers(1, 96),
    height=st.integers(1, 96),
    seed=st.integers(0, 2**16),
)
def test_every_binary_mask_encoding_gives_the_same_mask(encoding: str, width: int, height: int, seed: int) -> None:
    assume((width, height) != (1, 1))  # a single pixel is refused by rule (tests/data/test_reader.py)
    truth = (np.random.default_rng(seed).random((height, width)) < 0.4).astype(np.uint8)
    if encoding == "L 0/255":
        img = Image.fromarray(truth * 255)
    elif encoding == "L 0/1":
        img = Image.fromarray(truth)
    elif encoding == "1":
        img = Image.fromarray(truth * 255).convert("1")
    elif encoding == "I;16 0/65535":
        img = Image.fromarray(truth.astype(np.uint16) * 65535)
    elif encoding == "RGB equal":
        img = Image.fromarray(np.repeat(truth[..., None] * 255, 3, axis=-1))
    elif encoding == "P gray":
        img = Image.fromarray(truth * 255).convert("P")
    else:
        img = Image.fromarray(np.stack([truth * 255, np.full_like(truth, 255)], axis=-1))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m_segmentation.png"
        img.save(path)
        out = load_one(path, "mask", "mask encodings")
        assert out is not None, f"a valid {encoding} mask was refused"
        np.testing.assert_array_equal(out[0], truth)


# ----------------------------------------------------------------------------------------------------------------
# EXIF orientation: the mask follows the displayed photo

# PIL transposition that turns the stored pixels into the displayed ones, per EXIF orientation (as exif_transpose)
_TO_DISPLAY = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_INVERSE = {  # the stored pixels of a displayed photo
    Image.Transpose.FLIP_LEFT_RIGHT: Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.ROTATE_180: Image.Transpose.ROTATE_180,
    Image.Transpose.FLIP_TOP_BOTTOM: Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.TRANSPOSE: Image.Transpose.TRANSPOSE,
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
    Image.Transpose.TRANSVERSE: Image.Transpose.TRANSVERSE,
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
}


@FUZZ
@given(
    orientation=st.integers(1, 8),
    width=st.integers(24, 80),
    height=st.integers(24, 80),
    box=st.tuples(st.floats(0, 0.5), st.floats(0, 0.5), st.floats(0.3, 0.5), st.floats(0.3, 0.5)),
    suffix=st.sampled_from([".jpg", ".png"]),
)
def test_exif_rotated_photo_lines_up_with_its_mask(orientation, width, height, box, suffix) -> None:
    """The lesion of a photo stored turned, with an EXIF tag saying how to display it, lies under the mask drawn
    on the displayed photo (the reader applies the tag; the mask, a PNG without EXIF, is used as stored)."""
    x0, y0 = int(box[0] * width), int(box[1] * height)
    x1, y1 = x0 + max(2, int(box[2] * width)), y0 + max(2, int(box[3] * height))
    truth = np.zeros((height, width), dtype=np.uint8)  # displayed: rows = height
    truth[y0:y1, x0:x1] = 1
    displayed = np.where(truth[..., None] == 1, np.uint8(40), np.uint8(220)) * np.ones(3, dtype=np.uint8)
    photo = Image.fromarray(displayed)
    if orientation != 1:
        photo = photo.transpose(_INVERSE[_TO_DISPLAY[orientation]])
    exif = Image.Exif()
    exif[0x0112] = orientation
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "set"
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        image_path = root / "images" / f"turned{suffix}"
        save_args = {"quality": 100, "subsampling": 0} if suffix == ".jpg" else {}
        photo.save(image_path, exif=exif.tobytes(), **save_args)
        Image.fromarray(truth * 255).save(root / "masks" / "turned_segmentation.png")
        items = pair_images_and_masks(root)  # sizes are compared as displayed: must not refuse orientations 5-8
        image = load_one(Path(items[0]["image"]), "image", "exif orientation")
        label = load_one(Path(items[0]["label"]), "mask", "exif orientation")
    assert image is not None and label is not None
    assert image.shape[1:] == label.shape[1:] == (height, width)
    dark = image.mean(axis=0) < 130  # the lesion, as the loader oriented the photo
    np.testing.assert_array_equal(label[0], truth)
    assert (dark == (label[0] == 1)).mean() > 0.98, f"orientation {orientation}: the mask misses the lesion"


# ----------------------------------------------------------------------------------------------------------------
# file names

NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")


def usable_stem(stem: str) -> bool:
    lowered = stem.lower()
    return (
        not stem.startswith(".")  # hidden files are ignored on purpose
        and not lowered.endswith(("_segmentation", "_superpixels"))  # reserved for masks and ISIC superpixels
        and len(stem.encode("utf-8")) + len("_segmentation.png") <= 255  # the file system's name limit
    )


@FUZZ
@given(
    stem=st.text(NAME_CHARS, min_size=1, max_size=60).filter(usable_stem),
    suffix=st.sampled_from(IMAGE_SUFFIXES + (".JPG", ".Png")),
)
@example(stem="lésion n° 1 (copie)", suffix=".jpg")
@example(stem="皮肤 病变 ٣", suffix=".JPG")
@example(stem=" leading and trailing ", suffix=".png")
@example(stem="line\nbreak\ttab", suffix=".jpeg")
@example(stem="-rf *", suffix=".bmp")
def test_any_file_name_pairs_lists_and_loads(seeds, stem: str, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / f"data {stem[:10]}"
        try:
            (root / "images").mkdir(parents=True)
        except OSError:
            assume(False)  # a name this file system refuses (e.g. too long once encoded)
        (root / "masks").mkdir()
        image = root / "images" / f"{stem}{suffix}"
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[suffix.lower()]
        Image.open(io.BytesIO(seeds["isic.jpg"])).save(image, format=fmt)
        (root / "masks" / f"{stem}_segmentation.png").write_bytes(seeds["mask.png"])
        items = pair_images_and_masks(root)
        assert [(i["id"], Path(i["image"]).name) for i in items] == [(stem, image.name)]
        assert [i["image"] for i in list_images(root)] == [str(image)]
        assert [i["image"] for i in list_images(image)] == [str(image)]
        photo = load_one(Path(items[0]["image"]), "image", "file names")
        mask = load_one(Path(items[0]["label"]), "mask", "file names")
        assert photo is not None and mask is not None and photo.shape[1:] == mask.shape[1:]


@FUZZ
@given(stem=st.text(NAME_CHARS, min_size=1, max_size=40).filter(usable_stem), cut=st.floats(0.05, 0.6))
def test_a_damaged_file_with_an_odd_name_is_named_in_the_error(seeds, stem: str, cut: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{stem}.jpg"
        try:
            path.write_bytes(seeds["isic.jpg"][: int(len(seeds["isic.jpg"]) * cut)])
        except OSError:
            assume(False)
        assert load_one(path, "image", "odd names, damaged") is None


def test_fuzz_oracle_can_fail(tmp_path: Path, monkeypatch) -> None:
    """The oracle fails a loader that raises anything but our error, or names another file."""
    path = tmp_path / "x.jpg"
    path.write_bytes(b"not an image")
    assert load_one(path, "image", "oracle") is None

    def other_file(self, img):
        raise DermoscopyInputError("/somewhere/else.jpg", "not an image")

    monkeypatch.setattr(DermoscopyImageReader, "get_data", other_file)
    with pytest.raises(AssertionError, match="names"):
        load_one(path, "image", "oracle")

    def crash(self, img):
        raise ValueError("a bug")

    monkeypatch.setattr(DermoscopyImageReader, "get_data", crash)
    with pytest.raises(ValueError, match="a bug"):
        load_one(path, "image", "oracle")
