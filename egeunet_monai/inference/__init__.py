# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Inference on the user's own images with the bundle's pipeline (shared by the CLI and the web viewer)."""

from egeunet_monai.inference.predictor import (
    ONNX_INSTALL_HINT,
    LesionPredictor,
    LesionStats,
    Prediction,
    default_bundle_root,
    load_photo,
)
from egeunet_monai.inference.batch import BatchPredictor, ImageResult, predict_folder, prepare_image, restore_mask
from egeunet_monai.inference.runtime import RUNTIMES, InferenceRuntime, load_runtime, onnx_cache_dir

__all__ = ["ONNX_INSTALL_HINT", "LesionPredictor", "LesionStats", "Prediction", "default_bundle_root", "load_photo"]
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
