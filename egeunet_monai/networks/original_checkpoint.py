# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Load checkpoints written by the original EGE-UNet code into :class:`EGEUNet`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["OriginalCheckpointError", "original_to_monai_key", "convert_original_state_dict", "load_original_state_dict"]

# Original names -> ours. The original numbers decoders and side heads from the deepest level
# (decoder1, gt_conv1, dbn1 at H/32); we number every part by level from the shallowest.
_PATTERNS: list[tuple[re.Pattern[str], object]] = [
    (re.compile(r"^encoder([1-3])\.0\."), lambda m: f"encoder{m[1]}.conv."),
    (re.compile(r"^encoder([4-6])\.0\."), lambda m: f"encoder{m[1]}."),
    (re.compile(r"^decoder([1-3])\.0\."), lambda m: f"decoder{6 - int(m[1])}."),
    (re.compile(r"^decoder([4-5])\.0\."), lambda m: f"decoder{6 - int(m[1])}.conv."),
    (re.compile(r"^GAB([1-5])\."), lambda m: f"bridge{m[1]}."),
    (re.compile(r"^gt_conv([1-5])\.0\."), lambda m: f"side_head{6 - int(m[1])}."),
    (re.compile(r"^ebn([1-5])\."), lambda m: f"encoder_norm{m[1]}."),
    (re.compile(r"^dbn([1-5])\."), lambda m: f"decoder_norm{6 - int(m[1])}."),
    (re.compile(r"^final\."), lambda m: "final_conv."),
]


class OriginalCheckpointError(ValueError):
    """A checkpoint that is not an original EGE-UNet state dict matching the target network."""


def original_to_monai_key(key: str) -> str:
    """Our parameter name for the original implementation's ``key``; raises ``KeyError`` if it is not one."""
    key = key.removeprefix("module.")  # checkpoints saved from DataParallel/DDP
    for pattern, repl in _PATTERNS:
        new, n = pattern.subn(repl, key, count=1)  # type: ignore[arg-type]
        if n:
            return new
    raise KeyError(key)


def _read(state_dict_or_path: Mapping[str, torch.Tensor] | str | os.PathLike) -> tuple[Mapping, str]:
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        path = os.fspath(state_dict_or_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such checkpoint file.")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise OriginalCheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({e}).") from e
        source = path
    else:
        obj, source = state_dict_or_path, "the given state dict"
    if isinstance(obj, Mapping) and "model_state_dict" in obj:  # the original train.py's checkpoints
        obj = obj["model_state_dict"]
    if not isinstance(obj, Mapping):
        raise OriginalCheckpointError(f"{source}: expected a state dict, got {type(obj).__name__}.")
    return obj, source


def convert_original_state_dict(
    state_dict_or_path: Mapping[str, torch.Tensor] | str | os.PathLike,
) -> dict[str, torch.Tensor]:
    """The original's state dict (or a path to it, or its ``{'model_state_dict': ...}`` checkpoint) renamed
    to :class:`EGEUNet`'s parameter names."""
    state_dict, source = _read(state_dict_or_path)
    converted, unknown = {}, []
    for key, value in state_dict.items():
        try:
            converted[original_to_monai_key(key)] = value
        except KeyError:
            unknown.append(key)
    if unknown:
        raise OriginalCheckpointError(
            f"{source} is not an original EGE-UNet checkpoint: {len(unknown)} unknown keys, e.g. {unknown[:5]}."
        )
    return converted


def load_original_state_dict(
    model: nn.Module, state_dict_or_path: Mapping[str, torch.Tensor] | str | os.PathLike
) -> nn.Module:
    """Load an original EGE-UNet checkpoint into ``model`` (an :class:`EGEUNet`), strictly: every parameter
    must be present with the right shape. Returns the model."""
    converted = convert_original_state_dict(state_dict_or_path)
    source = os.fspath(state_dict_or_path) if isinstance(state_dict_or_path, (str, os.PathLike)) else "the state dict"
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong_shape = [
        f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in converted and converted[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        raise OriginalCheckpointError(
            f"{source} does not match this EGEUNet: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), wrong shapes {wrong_shape[:3]} ({len(wrong_shape)})."
        )
    model.load_state_dict(converted, strict=True)
    return model
