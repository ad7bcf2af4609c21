# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Opening, checking and converting dermoscopy photographs and masks with PIL alone: what
:class:`~egeunet_monai.data.DermoscopyImageReader` (the MONAI reader) does to each file, and :func:`read_photo`, the
same checks and conversions for a photograph without MONAI (the ``predict`` command starts without importing it)."""

from __future__ import annotations

import os
import warnings
from pathlib import PurePath

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from egeunet_monai.data.errors import DermoscopyInputError, DermoscopyInputWarning

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MASK_FOLDER_NAME",
    "MASK_STEM_SUFFIX",
    "is_mask_path",
    "oriented_size",
    "read_photo",
]

DEFAULT_MAX_PIXELS = 100_000_000
MASK_STEM_SUFFIX = "_segmentation"
MASK_FOLDER_NAME = "masks"

_KINDS = ("image", "mask", "auto")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# EXIF orientations 5-8 include a 90 degree turn: the displayed width is the stored height
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
# keys under which the reader keeps what the file held before conversion (PIL's own `format` is lost on convert)
_INFO_FORMAT = "egeunet_original_format"
_INFO_MODE = "egeunet_original_mode"
_INFO_KIND = "egeunet_kind"


def is_mask_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a lesion mask rather than a photograph, by its name alone.

    The rule (used by ``DermoscopyImageReader(kind="auto")``): a file is a mask when its stem ends with
    ``_segmentation`` (case-insensitive, so the ISIC 2016 ``_Segmentation.png`` counts too), or when the folder
    that directly holds it is named ``masks``. Only the direct parent counts, so that a project folder that
    happens to be called ``masks`` higher up does not turn every photograph into a mask.

    Args:
        path: a file path; it need not exist.
    """
    p = PurePath(os.fspath(path))
    return p.stem.lower().endswith(MASK_STEM_SUFFIX) or p.parent.name.lower() == MASK_FOLDER_NAME


def _open_error(fname: str, err: BaseException) -> DermoscopyInputError:
    """Translate an exception of ``PIL.Image.open`` into a message a user can act on."""
    if isinstance(err, FileNotFoundError):
        return DermoscopyInputError(fname, "file not found")
    if isinstance(err, IsADirectoryError):
        return DermoscopyInputError(fname, "is a folder, not an image file")
    if isinstance(err, Image.DecompressionBombError):
        return DermoscopyInputError(fname, f"too many pixels, a possible decompression bomb ({err})")
    if isinstance(err, UnidentifiedImageError):
        return DermoscopyInputError(
            fname, "not a readable image: PIL cannot identify its format (corrupt file, or not an image at all?)"
        )
    return DermoscopyInputError(fname, f"cannot open the image ({type(err).__name__}: {err})")


def _header_orientation(img: Image.Image) -> int:
    """EXIF orientation from what ``Image.open`` already parsed, without decoding the pixels."""
    if img.format == "PNG" and "exif" not in img.info:
        # PIL's PNG getexif() decodes the whole image to look for an eXIf chunk after the pixel data: too costly
        # for a header check, and such files are rare (cameras write JPEG)
        return 1
    try:
        return int(img.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # a malformed EXIF block must not make an otherwise fine image unusable
        return 1


def oriented_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image as displayed, read from its header only (no pixel decoding).

    EXIF orientations 5 to 8 (a quarter turn) swap the stored width and height, as
    ``DermoscopyImageReader`` does when it applies the orientation. Used to check image/mask pairs cheaply.

    Args:
        path: the image file.

    Raises:
        DermoscopyInputError: the file is missing or not a readable image.
    """
    fname = os.fspath(path)
    try:
        with warnings.catch_warnings():
            # a header check only; the reader applies its own pixel limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fname) as img:
                width, height = img.size
                orientation = _header_orientation(img)
    except Exception as err:  # PIL plugins raise more than OSError on corrupt headers
        raise _open_error(fname, err) from err
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return width, height


def _open_decoded(fname: str, max_pixels: int | None, open_kwargs: dict) -> Image.Image:
    """Open and fully decode one file, in its displayed orientation, or raise ``DermoscopyInputError``."""
    if os.path.isdir(fname):
        raise DermoscopyInputError(fname, "is a folder, not an image file")
    if not os.path.exists(fname):
        raise DermoscopyInputError(fname, "file not found")
    if os.path.getsize(fname) == 0:
        raise DermoscopyInputError(fname, "empty file (0 bytes): a zero-size image")
    try:
        with warnings.catch_warnings():
            # PIL warns above ~89 megapixels; `max_pixels` below is the limit that applies here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fname, **open_kwargs)
    except Exception as err:  # not only OSError: e.g. ValueError for a PNG text chunk that inflates past 1 MB
        raise _open_error(fname, err) from err

    with img:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise DermoscopyInputError(fname, f"zero-size image ({width}x{height} pixels)")
        if width == height == 1:
            # nothing to segment, and MONAI's SaveImage cannot write a 1x1 mask back (it squeezes it to a scalar)
            raise DermoscopyInputError(fname, "too small to segment (1x1 pixels: a single pixel)")
        # checked from the header, before decoding: a tiny file can claim billions of pixels
        if max_pixels is not None and width * height > max_pixels:
            raise DermoscopyInputError(
                fname,
                f"too many pixels: {width}x{height} = {width * height / 1e6:.1f} megapixels exceeds the limit of "
                f"{max_pixels / 1e6:g} megapixels (a possible decompression bomb); if the image is genuine, raise "
                "`max_pixels` of DermoscopyImageReader",
            )
        try:
            img.load()  # decode everything now, so that a truncated file fails here and not in a later transform
        except OSError as err:
            problem = "truncated file" if "truncated" in str(err).lower() else "cannot decode the image"
            raise DermoscopyInputError(fname, f"{problem} ({err})") from err
        except Exception as err:  # PIL plugins raise SyntaxError, ValueError, struct.error... on corrupt data
            raise DermoscopyInputError(fname, f"cannot decode the image ({type(err).__name__}: {err})") from err
        original_format = img.format
        try:
            # pixels follow the photo as displayed: phones and some dermatoscopes store the sensor's orientation
            # and an EXIF tag; the masks were drawn on the displayed photo
            ImageOps.exif_transpose(img, in_place=True)
        except Exception as err:
            warnings.warn(
                f"{fname}: unreadable EXIF orientation ({err}); using the stored pixel orientation",
                DermoscopyInputWarning,
                stacklevel=3,
            )
    img.info[_INFO_FORMAT] = original_format
    img.info[_INFO_MODE] = img.mode
    return img


def _gray_to_uint8(arr: np.ndarray, mode: str) -> tuple[np.ndarray, str]:
    """8-bit version of a high bit-depth grayscale array, with a description of how it was made."""
    if mode in _SIXTEEN_BIT_MODES:
        # keep the 16-bit value range (0..65535 -> 0..255) instead of clipping everything above 255 to white
        return (arr.astype(np.uint16) >> 8).astype(np.uint8), f"16-bit grayscale ({mode}) scaled to 8 bits (value >> 8)"
    if mode == "I":
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 65535:  # 16-bit data in a 32-bit container (how older PIL opened 16-bit PNGs)
            how = "32-bit integer grayscale (I) with 16-bit values scaled to 8 bits (value >> 8)"
            return (arr.astype(np.uint32) >> 8).astype(np.uint8), how
        return _rescale(arr.astype(np.float64), lo, hi), f"32-bit integer grayscale (I) rescaled from [{lo}, {hi}]"
    # "F": floating point
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return np.round(arr * 255.0).astype(np.uint8), "floating-point grayscale (F) in [0, 1] scaled to 8 bits"
    return _rescale(arr, lo, hi), f"floating-point grayscale (F) rescaled from [{lo:g}, {hi:g}]"


def _rescale(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _to_rgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    """An RGB version of a photograph and a description of the conversion (``None`` when already RGB)."""
    mode = img.mode
    if mode == "RGB":
        return img, None
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        gray, how = _gray_to_uint8(np.asarray(img), mode)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1)), f"{how} and copied to the 3 RGB channels"
    if mode in ("L", "1"):
        return img.convert("RGB"), f"grayscale ({mode}) copied to the 3 RGB channels"
    if mode in ("LA", "La"):
        return img.convert("RGB"), f"grayscale with alpha ({mode}): alpha channel dropped, gray copied to RGB"
    if mode in ("RGBA", "RGBa", "RGBX"):
        return img.convert("RGB"), f"{mode} converted to RGB (4th channel dropped, colours kept as stored)"
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        # via RGBA: PIL warns when a palette image with transparency goes straight to RGB
        rgb = img.convert("RGBA").convert("RGB") if has_alpha else img.convert("RGB")
        return rgb, f"palette image ({mode}) converted to RGB" + (", transparency dropped" if has_alpha else "")
    if mode == "CMYK":
        return img.convert("RGB"), "CMYK converted to RGB (PIL's plain conversion, no colour profile)"
    return img.convert("RGB"), f"{mode} converted to RGB"


def _describe_values(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values[:limit].tolist())
    more = f", ... ({len(values)} distinct values)" if len(values) > limit else ""
    return "{" + shown + more + "}"


def _to_binary_mask(img: Image.Image, fname: str) -> tuple[Image.Image, str | None]:
    """A 0/1 ``uint8`` single-channel mask, and a description of the conversion (``None`` when plain)."""
    mode = img.mode
    note = None
    if mode == "1":
        arr = np.asarray(img).astype(np.uint8)
    elif mode in ("L", "I", "F") or mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img)
    elif mode in ("LA", "La"):
        arr = np.asarray(img)[..., 0]
        note = f"mask with alpha ({mode}): alpha channel ignored"
    else:
        # colour masks (RGB, RGBA, palette...) are accepted only when they are gray, i.e. R == G == B
        rgb = np.asarray(img if mode in ("RGB", "RGBA") else img.convert("RGBA"))[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DermoscopyInputError(
                fname,
                f"colour mask ({mode}) whose R, G and B channels differ: a lesion mask must be single channel "
                "(or RGB with three equal channels)",
            )
        arr = rgb[..., 0]
        note = f"{mode} mask with equal channels: one channel taken"
    values = np.unique(arr)
    if np.isin(values, (0, 1)).all():
        out = arr.astype(np.uint8)
    elif np.isin(values, (0, 255)).all():
        out = (arr == 255).astype(np.uint8)
    elif mode in _SIXTEEN_BIT_MODES and np.isin(values, (0, 65535)).all():
        out = (arr == 65535).astype(np.uint8)
    else:
        raise DermoscopyInputError(
            fname,
            f"not a binary mask: expected values {{0, 255}} or {{0, 1}}, found {_describe_values(values)}. A mask "
            "saved as JPEG or resized with interpolation has grey levels; save masks as PNG and resize them with "
            "nearest neighbour",
        )
    return Image.fromarray(out, mode="L"), note



def read_photo(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A photograph as H x W x 3 ``uint8`` (EXIF orientation applied, converted to RGB with a warning), with the
    checks and messages of ``DermoscopyImageReader(kind="image").get_data(reader.read(path))[0]`` (the bundle's
    reader; the same array), without MONAI.

    Raises:
        DermoscopyInputError: the file is missing, not an image, truncated, empty or too large.
    """
    fname = os.fspath(path)
    out, note = _to_rgb(_open_decoded(fname, max_pixels, {}))
    if note is not None:
        warnings.warn(f"{fname}: {note}", DermoscopyInputWarning, stacklevel=2)
    return np.asarray(out)
