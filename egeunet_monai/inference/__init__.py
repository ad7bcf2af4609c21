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

__all__ = ["ONNX_INSTALL_HINT", "LesionPredictor", "LesionStats", "Prediction", "default_bundle_root", "load_photo"]
