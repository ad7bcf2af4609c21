# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Inference on the user's own images with the bundle's pipeline (shared by the CLI and the web viewer)."""

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
from egeunet_monai.inference.runtime import RUNTIMES, InferenceRuntime, load_runtime, onnx_cache_dir

__all__ = [
    "ONNX_INSTALL_HINT",
    "LesionPredictor",
    "LesionStats",
    "Prediction",
    "default_bundle_root",
    "inference_config",
    "load_photo",
    "open_predictor",
]
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

__all__ += [
    "DIHEDRAL_VIEWS",
    "QUALITY_FLAGS",
    "DihedralTTAInferer",
    "DihedralView",
    "QualityThresholds",
    "TTAResult",
    "binary_entropy",
    "dihedral_inverse",
    "dihedral_transform",
    "dihedral_views",
    "format_flags",
    "inverse_dihedral_views",
    "lesion_entropy",
    "predict_with_tta",
    "quality_flags",
    "tta_inferer",
]
__all__ += [
    "RUNTIMES",
    "BatchPredictor",
    "ImageResult",
    "InferenceRuntime",
    "load_runtime",
    "onnx_cache_dir",
    "predict_folder",
    "prepare_image",
    "restore_mask",
]
