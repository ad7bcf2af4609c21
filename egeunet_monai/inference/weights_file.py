# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Checks of a weights file that need no PyTorch (``predict`` makes them before it imports it), and the one-line
error for an ``.onnx`` file that ONNX Runtime does not open."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["WEIGHT_SUFFIXES", "check_weights_file", "not_an_onnx_model"]

WEIGHT_SUFFIXES = (".pt", ".pth", ".ts", ".onnx")


def check_weights_file(weights: str | os.PathLike) -> Path:
    """``weights`` as a ``Path`` if it is a non-empty file of a known format, else the error that names it."""
    path = Path(weights)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a weights file.")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ValueError(f"{path}: unknown weights format; expected one of {', '.join(WEIGHT_SUFFIXES)}.")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found.")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes).")
    return path


def not_an_onnx_model(path: Path, err: Exception) -> ValueError:
    """The error for an ``.onnx`` file that ONNX Runtime does not open (``err``), in one line."""
    # "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from <path> failed:Protobuf parsing failed." gives
    # "Protobuf parsing failed"; a message of another shape is kept whole
    reason = str(err).split(" : ")[-1].split("failed:", 1)[-1].strip().rstrip(".")
    return ValueError(f"{path} is not an ONNX model that ONNX Runtime can run ({type(err).__name__}: {reason}).")
