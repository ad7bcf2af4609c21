# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""``accelerate(RandFlipRotateBatch())``'s C++ kernel (accel/csrc/augment_cpu.cpp) against the reference PyTorch path
(the one a GPU runs)."""

from __future__ import annotations

import pytest
import torch

from egeunet_monai.accel import accelerate
from egeunet_monai.accel.augment import FlipRotateBatchKernel
from egeunet_monai.transforms import RandFlipRotateBatch
from tests.conftest import require_cpu_kernels
from tests.transforms.test_batch_augmentation import FLOAT32_UNIT, _batch, rotation_tolerance


@pytest.fixture(autouse=True)
def kernels():
    return require_cpu_kernels()


def test_the_kernel_and_the_pytorch_operators_agree():
    """The same draws give the same batch on both paths: flips and copies exactly, rotated images to float rounding
    of the PyTorch path run in float64 (the kernel samples at float64 coordinates, so only its float32 bilinear sums
    round: 8 u, measured 1.6e-7; grid_sample samples at float32 coordinates: :func:`rotation_tolerance`), masks but
    for nearest-rounding ties (measured: none)."""
    for size in [(64, 64), (48, 80), (37, 50), (256, 256)]:  # 37 rows: a band of the thread split cut short
        image, label = _batch(12, *size, seed=1)
        for flip_prob, rotate_prob in [(0.5, 0.5), (1.0, 0.0), (0.0, 1.0)]:
            accelerated = accelerate(RandFlipRotateBatch(flip_prob=flip_prob, rotate_prob=rotate_prob, seed=4))
            assert type(accelerated) is FlipRotateBatchKernel
            kernel = accelerated(image, label)
            pytorch = RandFlipRotateBatch(flip_prob=flip_prob, rotate_prob=rotate_prob, seed=4)(image, label)
            exact = RandFlipRotateBatch(flip_prob=flip_prob, rotate_prob=rotate_prob, seed=4)(
                image.double(), label.double()
            )
            if rotate_prob == 0:
                assert torch.equal(kernel[0], pytorch[0]) and torch.equal(kernel[1], pytorch[1])
            torch.testing.assert_close(kernel[0].double(), exact[0], rtol=0, atol=8 * FLOAT32_UNIT)
            torch.testing.assert_close(pytorch[0].double(), exact[0], rtol=0, atol=rotation_tolerance(*size))
            assert (kernel[1].double() != exact[1]).float().mean() < 1e-4


def test_the_kernel_names_bad_input():
    image, label = _batch(2, 16, 16)
    flips, rotate, theta = torch.zeros(2, 2, dtype=torch.bool), torch.ones(2, dtype=torch.bool), torch.zeros(2, 2, 3)
    with pytest.raises(RuntimeError, match="flip_rotate_batch: a mask batch of shape"):
        torch.ops.egeunet_cpu.flip_rotate_batch(image, label[:1], flips, rotate, theta)
    with pytest.raises(RuntimeError, match="flip_rotate_batch: a Double mask batch for Float images"):
        torch.ops.egeunet_cpu.flip_rotate_batch(image, label.double(), flips, rotate, theta)
    with pytest.raises(RuntimeError, match="flip_rotate_batch: need N x 2 flips"):
        torch.ops.egeunet_cpu.flip_rotate_batch(image, label, flips[:1], rotate, theta)
