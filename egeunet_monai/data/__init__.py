# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Dermoscopy data: a checked MONAI image reader and its PNG writer, datalists from dataset folders, a synthetic
dataset.

The names are imported on first use (PEP 562): ``egeunet-monai predict`` lists and reads photographs with
:func:`list_images` and :func:`read_photo` without importing MONAI (several seconds and hundreds of MiB), which the
reader and the writer subclass."""

from __future__ import annotations

from typing import TYPE_CHECKING

from egeunet_monai.lazy import lazy_exports

if TYPE_CHECKING:  # for type checkers, and for scripts/build_bundle.py, which follows import statements
    from egeunet_monai.data.datalist import (
        IMAGE_SUFFIXES,
        MASK_SUFFIX,
        SPLIT_FILE_NAME,
        build_datalists,
        list_images,
        pair_images_and_masks,
        split_datalist,
    )
    from egeunet_monai.data.errors import DermoscopyInputError, DermoscopyInputWarning
    from egeunet_monai.data.photo import DEFAULT_MAX_PIXELS, is_mask_path, oriented_size, read_photo
    from egeunet_monai.data.reader import DermoscopyImageReader
    from egeunet_monai.data.repeats import lesion_share, repeat_large_lesions
    from egeunet_monai.data.synthetic import ensure_dataset_dir, generate_synthetic_dataset
    from egeunet_monai.data.writer import RowsFirstPILWriter

# name -> the module that defines it
_EXPORTS = {
    "IMAGE_SUFFIXES": "datalist",
    "MASK_SUFFIX": "datalist",
    "SPLIT_FILE_NAME": "datalist",
    "build_datalists": "datalist",
    "list_images": "datalist",
    "pair_images_and_masks": "datalist",
    "split_datalist": "datalist",
    "DermoscopyInputError": "errors",
    "DermoscopyInputWarning": "errors",
    "DEFAULT_MAX_PIXELS": "photo",
    "is_mask_path": "photo",
    "oriented_size": "photo",
    "read_photo": "photo",
    "DermoscopyImageReader": "reader",
    "lesion_share": "repeats",
    "repeat_large_lesions": "repeats",
    "ensure_dataset_dir": "synthetic",
    "generate_synthetic_dataset": "synthetic",
    "RowsFirstPILWriter": "writer",
}

__all__ = sorted(_EXPORTS, key=lambda n: (not n.isupper(), n[0].islower(), n))


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
