# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The trainer's batch augmentation in one pass of a C++ kernel (``csrc/augment_cpu.cpp``) on a CPU:
:class:`FlipRotateBatchKernel`, which :func:`egeunet_monai.accel.accelerate` swaps in for
:class:`~egeunet_monai.transforms.RandFlipRotateBatch`. The same random draws and flips; rotations with
``grid_sample``'s arithmetic in float64 coordinates (tests/accel/test_augment.py holds it to the PyTorch path), where the
PyTorch operators make a dozen passes over the batch."""

from __future__ import annotations

import torch

from egeunet_monai.accel.kernels import can_run
from egeunet_monai.transforms import RandFlipRotateBatch

__all__ = ["FlipRotateBatchKernel"]


class FlipRotateBatchKernel(RandFlipRotateBatch):
    """:class:`~egeunet_monai.transforms.RandFlipRotateBatch` whose :meth:`apply` runs the C++ kernel for CPU batches
    of one float dtype, the parent's PyTorch operators otherwise (GPUs)."""

    @staticmethod
    def replaces(obj: object) -> bool:
        return type(obj) is RandFlipRotateBatch

    def apply(
        self, image: torch.Tensor, label: torch.Tensor, flips: torch.Tensor, rotate: torch.Tensor, angles: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if can_run(image) and label.dtype == image.dtype and label.device == image.device:
            theta = self.rotation_theta(angles, int(image.shape[2]), int(image.shape[3]))
            return tuple(torch.ops.egeunet_cpu.flip_rotate_batch(image, label, flips, rotate, theta))
        return super().apply(image, label, flips, rotate, angles)
