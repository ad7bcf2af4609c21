# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""A MONAI image reader for dermoscopy photographs and their lesion masks."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import numpy as np
from monai.data import PILReader
from monai.utils import ensure_tuple
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from egeunet_monai.data.errors import DermoscopyInputError, DermoscopyInputWarning

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MASK_FOLDER_NAME",
    "MASK_STEM_SUFFIX",
    "DermoscopyImageReader",
    "is_mask_path",
    "oriented_size",
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


@dataclass(frozen=True)
class _FailedRead:
    """What ``read`` returns for a file that failed its checks; ``get_data`` raises the error."""

    error: Exception


class DermoscopyImageReader(PILReader):
    """Read dermoscopy photographs (RGB) and lesion masks (0/1), with checks that name the faulty file.

    A :class:`monai.data.PILReader` (the same metadata: ``spatial_shape``, ``original_channel_dim``...), so
    ``LoadImaged``, ``Invertd`` and ``SaveImage`` work as with MONAI's own reader. One instance serves both keys of a
    dictionary pipeline::

        LoadImaged(keys=["image", "label"], reader=DermoscopyImageReader(), image_only=True,
                   ensure_channel_first=True)

    gives an image of shape (3, H, W) (float RGB 0..255) and a label of shape (1, H, W) with values 0/1.

    Axis order: rows first (H x W), as ``numpy.asarray(PIL.Image.open(path))``, the original EGE-UNet code, and
    anyone feeding the exported TorchScript or ONNX model have it. This is **not** ``PILReader``'s default
    (``reverse_indexing=True`` swaps the axes to W x H): a network trained on one order and fed the other
    sees every image transposed, which costs accuracy (the network is not symmetric under transposition).
    Write these arrays as PNG with :class:`~egeunet_monai.data.RowsFirstPILWriter`
    (``SaveImage(writer="egeunet_monai.data.RowsFirstPILWriter")``); MONAI's ``PILWriter`` would swap the axes back
    and transpose the picture. The metadata keeps MONAI's (x, y) order whatever ``reverse_indexing``:
    ``spatial_shape`` is ``(width, height)``, as ``PILReader`` records it, and what MONAI Label's ``Restored``
    compares with a result handed over in (x, y) order (``configs/inference.json`` ends with that transposition).

    What it does to each file:

    - Opens it and decodes **all** its pixels in :meth:`read`, turning any failure into a
      :class:`~egeunet_monai.data.DermoscopyInputError` that names the file and the problem: missing file,
      not an image, truncated file (unless ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` was set elsewhere), zero-size
      image, more than ``max_pixels`` pixels (checked from the header before decoding, against decompression
      bombs). The error is **raised by** :meth:`get_data`: MONAI's
      ``LoadImage``, when given a reader, catches any exception of ``read()`` and silently falls back to its
      default readers (``PILReader`` would then hand over the unchecked file, e.g. a grey-level mask), whereas it
      lets ``get_data()`` errors through. Use ``reader.get_data(reader.read(path))``, as ``LoadImage`` does.
    - Applies the EXIF orientation (``PIL.ImageOps.exif_transpose``), so that the array follows the photo as a
      viewer displays it, which is how masks are drawn. Files without an orientation tag are unaffected.
    - Photographs: converts anything else to 8-bit RGB, with a
      :class:`~egeunet_monai.data.DermoscopyInputWarning` naming the file and the conversion: grayscale is copied
      to the 3 channels, 16-bit grayscale is scaled by ``>> 8`` (not clipped), alpha is dropped, palette and
      CMYK images are converted with PIL.
    - Masks: single channel with values {0, 255} or {0, 1} (or a subset), returned as 0/1 ``uint8``. RGB(A)
      masks with three equal channels are accepted (one channel is kept); any other value, e.g. the grey levels of
      a JPEG-compressed mask, is an error that lists the values found. An all-zero mask only warns.

    Args:
        kind: ``"image"`` (photographs), ``"mask"`` (lesion masks) or ``"auto"`` (decided per file with
            :func:`is_mask_path`: a stem ending in ``_segmentation`` or a file directly in a ``masks`` folder is a
            mask). ``"auto"`` lets one reader instance serve both the image and the label key of ``LoadImaged``.
        max_pixels: largest accepted width x height; ``None`` disables the check (PIL's own limit of about 179
            megapixels still applies).
        converter: function applied to each PIL image after this reader's own conversions, as in ``PILReader``.
        reverse_indexing: ``True`` swaps the two spatial axes to (width, height), as ``PILReader`` does by default;
            the bundle keeps ``False`` (rows first) everywhere, in training, evaluation and inference.
        kwargs: passed to ``PIL.Image.open``.
    """

    def __init__(
        self,
        kind: str = "auto",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        converter: Callable | None = None,
        reverse_indexing: bool = False,
        **kwargs: Any,
    ) -> None:
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}.")
        if max_pixels is not None and max_pixels <= 0:
            raise ValueError(f"max_pixels must be a positive number of pixels or None, got {max_pixels}.")
        super().__init__(converter=converter, reverse_indexing=reverse_indexing, **kwargs)
        self.kind = kind
        self.max_pixels = max_pixels

    def kind_of(self, filename: str | os.PathLike) -> str:
        """``"image"`` or ``"mask"``: how this reader treats ``filename``.

        Args:
            filename: the file to be read.
        """
        if self.kind != "auto":
            return self.kind
        return "mask" if is_mask_path(filename) else "image"

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any):  # type: ignore[override]
        """Read, check and convert one file or a list of files, for :meth:`get_data`.

        Conversions warn here; a file that fails its checks gives a placeholder whose
        :class:`~egeunet_monai.data.DermoscopyInputError` is raised by :meth:`get_data` (see the class docstring
        for why not here).

        Args:
            data: a file name, or a list of file names (stacked as channels by ``get_data``).
            kwargs: passed to ``PIL.Image.open``, overriding the constructor's ``kwargs``.
        """
        filenames = ensure_tuple(data)
        open_kwargs = {**self.kwargs, **kwargs}
        images: list[Image.Image | _FailedRead] = []
        for name in filenames:
            try:
                images.append(self._read_one(os.fspath(name), open_kwargs))
            except Exception as err:  # anything, even a bug: a raise here would make LoadImage fall back silently
                images.append(_FailedRead(err))
        return images if len(filenames) > 1 else images[0]

    def _read_one(self, fname: str, open_kwargs: dict) -> Image.Image:
        kind = self.kind_of(fname)
        img = _open_decoded(fname, self.max_pixels, open_kwargs)
        info = {k: img.info[k] for k in (_INFO_FORMAT, _INFO_MODE)}
        if kind == "mask":
            out, note = _to_binary_mask(img, fname)
            if not np.asarray(out).any():
                warnings.warn(f"{fname}: empty mask (no lesion pixel)", DermoscopyInputWarning, stacklevel=3)
        else:
            out, note = _to_rgb(img)
        if note is not None:
            warnings.warn(f"{fname}: {note}", DermoscopyInputWarning, stacklevel=3)
        out.info.update(info)
        out.info[_INFO_KIND] = kind
        if callable(self.converter):
            out = self.converter(out)
        return out

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        """The array (``uint8``; (H, W, 3) for photographs, (H, W) 0/1 for masks; (W, H, ...) with
        ``reverse_indexing``) and PILReader's metadata, for what :meth:`read` returned.

        Args:
            img: the return value of :meth:`read`.

        Raises:
            DermoscopyInputError: a file that is missing, unreadable, truncated, empty, too large, or a mask that
                is not binary.
        """
        for item in ensure_tuple(img):
            if isinstance(item, _FailedRead):
                raise item.error
        return super().get_data(img)

    def _get_meta_dict(self, img: Image.Image) -> dict:
        """PILReader's metadata, with the format and mode of the file rather than of the converted image.

        Args:
            img: an image returned by :meth:`read`.
        """
        meta = super()._get_meta_dict(img)
        meta["format"] = img.info.get(_INFO_FORMAT, meta["format"])
        meta["original_mode"] = img.info.get(_INFO_MODE, img.mode)
        meta["dermoscopy_kind"] = img.info.get(_INFO_KIND, self.kind)
        return meta
