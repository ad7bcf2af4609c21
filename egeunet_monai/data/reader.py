# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""A MONAI image reader for dermoscopy photographs and their lesion masks."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from monai.data import PILReader
from monai.utils import ensure_tuple
from PIL import Image

from egeunet_monai.data.errors import DermoscopyInputWarning
from egeunet_monai.data.photo import (  # noqa: F401  (re-exported: the reader's public names)
    DEFAULT_MAX_PIXELS,
    MASK_STEM_SUFFIX,
    MASK_FOLDER_NAME,
    _KINDS,
    _SIXTEEN_BIT_MODES,
    _SWAPPING_ORIENTATIONS,
    _INFO_FORMAT,
    _INFO_MODE,
    _INFO_KIND,
    is_mask_path,
    _open_error,
    _header_orientation,
    oriented_size,
    _open_decoded,
    _gray_to_uint8,
    _rescale,
    _to_rgb,
    _describe_values,
    _to_binary_mask,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MASK_FOLDER_NAME",
    "MASK_STEM_SUFFIX",
    "DermoscopyImageReader",
    "is_mask_path",
    "oriented_size",
]

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
        ``reverse_indexing``) and PILReader's metadata, for what :meth:`read` returned; ``format`` and
        ``original_mode`` are the file's (before conversion), ``dermoscopy_kind`` is ``"image"`` or ``"mask"``.

        Args:
            img: the return value of :meth:`read`.

        Raises:
            DermoscopyInputError: a file that is missing, unreadable, truncated, empty, too large, or a mask that
                is not binary.
        """
        images = ensure_tuple(img)
        for item in images:
            if isinstance(item, _FailedRead):
                raise item.error
        array, meta = super().get_data(img)
        # PILReader keeps the first image's metadata when given several
        first = images[0]
        meta["format"] = first.info.get(_INFO_FORMAT, meta["format"])
        meta["original_mode"] = first.info.get(_INFO_MODE, first.mode)
        meta["dermoscopy_kind"] = first.info.get(_INFO_KIND, self.kind)
        return array, meta
