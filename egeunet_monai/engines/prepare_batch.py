# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""A ``prepare_batch`` for MONAI's trainers that augments each batch after moving it to the device."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch, default_prepare_batch

__all__ = ["PrepareBatchAugmented"]


class PrepareBatchAugmented(PrepareBatch):
    """``SupervisedTrainer(prepare_batch=PrepareBatchAugmented(augmentation))``: MONAI's default preparation (image
    and label of a dictionary batch, moved to the trainer's device), then ``augmentation(image, label)`` on that
    device, e.g. :class:`~egeunet_monai.transforms.RandFlipRotateBatch` (``configs/train.json``, with
    ``augment_on_device``).

    Args:
        augmentation: called with the image and label batches, returns them augmented.
        replaces: the per-sample random transforms it stands in for (``train#random_transforms``); when given, an
            ``augmentation`` with a ``differences(transforms)`` method must reproduce them, else a ``ValueError``
            says what differs (so that an edited ``random_transforms`` is never silently ignored).
    """

    def __init__(
        self,
        augmentation: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        replaces: Sequence[Callable] | None = None,
    ) -> None:
        if replaces is not None and hasattr(augmentation, "differences"):
            found = augmentation.differences(replaces)
            if found:
                raise ValueError(
                    "augment_on_device: the batch augmentation would replace train#random_transforms, which it does "
                    "not reproduce:\n  - " + "\n  - ".join(found) + "\nPass --augment_on_device false to run "
                    "train#random_transforms per sample in the loader, or change flip_prob/rotate_prob/rotate_range."
                )
        self.augmentation = augmentation

    def __call__(
        self, batchdata: Any, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        if label is None:
            raise ValueError("PrepareBatchAugmented needs batches with a label: got an image without one.")
        return self.augmentation(image, label)
