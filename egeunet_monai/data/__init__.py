# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Dermoscopy data: a checked MONAI image reader and its PNG writer, datalists from dataset folders, a synthetic
dataset."""

from __future__ import annotations

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
from egeunet_monai.data.reader import DEFAULT_MAX_PIXELS, DermoscopyImageReader, is_mask_path, oriented_size
from egeunet_monai.data.synthetic import ensure_dataset_dir, generate_synthetic_dataset
from egeunet_monai.data.writer import RowsFirstPILWriter

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "MASK_SUFFIX",
    "SPLIT_FILE_NAME",
    "DermoscopyImageReader",
    "DermoscopyInputError",
    "DermoscopyInputWarning",
    "RowsFirstPILWriter",
    "build_datalists",
    "ensure_dataset_dir",
    "generate_synthetic_dataset",
    "is_mask_path",
    "list_images",
    "oriented_size",
    "pair_images_and_masks",
    "split_datalist",
]
