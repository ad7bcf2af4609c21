# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Inference on the user's own images with the bundle's pipeline (shared by the CLI and the web viewer).

The names are imported on first use (PEP 562), so that ``.batch`` and ``.ort_session`` (what ``egeunet-monai
predict`` runs) import neither MONAI, which the predictor's TTA pipeline needs, nor PyTorch, which ``.runtime``
needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from egeunet_monai.lazy import lazy_exports

if TYPE_CHECKING:  # for type checkers, and for scripts/build_bundle.py, which follows import statements
    from egeunet_monai.inference.predictor import (
        ONNX_INSTALL_HINT,
        LesionPredictor,
        LesionStats,
        Prediction,
        default_bundle_root,
        inference_config,
        load_photo,
        open_predictor,
    )
    from egeunet_monai.inference.batch import BatchPredictor, ImageResult, predict_folder, prepare_image, restore_mask
    from egeunet_monai.inference.ort_session import onnx_cache_dir, open_runtime
    from egeunet_monai.inference.runtime import RUNTIMES, InferenceRuntime, load_runtime
    from egeunet_monai.inference.quality import QUALITY_FLAGS, QualityThresholds, format_flags, quality_flags
    from egeunet_monai.inference.tta import (
        DIHEDRAL_VIEWS,
        DihedralTTAInferer,
        DihedralView,
        TTAResult,
        binary_entropy,
        dihedral_inverse,
        dihedral_transform,
        dihedral_views,
        inverse_dihedral_views,
        lesion_entropy,
        predict_with_tta,
        tta_inferer,
    )

# name -> the module that defines it
_EXPORTS = {
    "ONNX_INSTALL_HINT": "predictor",
    "LesionPredictor": "predictor",
    "LesionStats": "predictor",
    "Prediction": "predictor",
    "default_bundle_root": "predictor",
    "inference_config": "predictor",
    "load_photo": "predictor",
    "open_predictor": "predictor",
    "BatchPredictor": "batch",
    "ImageResult": "batch",
    "predict_folder": "batch",
    "prepare_image": "batch",
    "restore_mask": "batch",
    "RUNTIMES": "runtime",
    "InferenceRuntime": "runtime",
    "load_runtime": "runtime",
    "onnx_cache_dir": "ort_session",
    "open_runtime": "ort_session",
    "QUALITY_FLAGS": "quality",
    "QualityThresholds": "quality",
    "format_flags": "quality",
    "quality_flags": "quality",
    "DIHEDRAL_VIEWS": "tta",
    "DihedralTTAInferer": "tta",
    "DihedralView": "tta",
    "TTAResult": "tta",
    "binary_entropy": "tta",
    "dihedral_inverse": "tta",
    "dihedral_transform": "tta",
    "dihedral_views": "tta",
    "inverse_dihedral_views": "tta",
    "lesion_entropy": "tta",
    "predict_with_tta": "tta",
    "tta_inferer": "tta",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
