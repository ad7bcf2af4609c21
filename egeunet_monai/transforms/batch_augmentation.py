# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The training augmentation of the bundle, applied to a whole batch on the device that trains.

With ``--augment_on_device false``, ``configs/train.json`` augments each cached sample with MONAI's dictionary
transforms in the loader's worker processes: ``RandFlipd`` on each spatial axis, then ``RandRotated`` by any angle.
That costs a few milliseconds of CPU per image, which a GPU training at a thousand images per second cannot wait
for, and on a 2-core CPU a fifth of the training. :class:`RandFlipRotateBatch` (the default) draws the same random
choices per image and applies them to the N x C x H x W batch where it already is, so the loader only collates
cached tensors, with one ``grid_sample`` for the rotated images (through MONAI's ``AffineTransform``);
:func:`egeunet_monai.accel.accelerate` swaps in a version that runs one pass of a C++ kernel on a CPU. MONAI's array transforms work on one image at a time: applying them in a loop on
the GPU would launch a dozen small kernels and a Python round trip per image.
"""

from __future__ import annotations

import math

import torch
from monai.networks.layers import AffineTransform

__all__ = ["RandFlipRotateBatch"]


class RandFlipRotateBatch:
    """Random flips and rotations of a batch of images and their masks, each image drawn on its own.

    In the order of the per-sample pipeline: flip the first spatial axis (H) with probability ``flip_prob``, flip
    the second (W) with ``flip_prob``, then rotate about the image centre by an angle uniform in
    [-``rotate_range``, ``rotate_range``] with probability ``rotate_prob``: bilinear for the image, nearest for the
    mask (which stays binary), zeros outside, pixel grid as ``RandRotated`` (``align_corners=False``, rotation in
    pixel units, so non-square images are not sheared).

    Args:
        flip_prob: probability of each of the two flips.
        rotate_prob: probability of the rotation.
        rotate_range: largest rotation angle, in radians (pi: any angle).
        seed: seed of the random choices; under ``torch.distributed`` each rank adds its rank, so that ranks do not
            draw the same augmentations.
    """

    def __init__(self, flip_prob: float = 0.5, rotate_prob: float = 0.5, rotate_range: float = math.pi, seed: int = 0):
        for name, p in (("flip_prob", flip_prob), ("rotate_prob", rotate_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}.")
        self.flip_prob = float(flip_prob)
        self.rotate_prob = float(rotate_prob)
        self.rotate_range = float(rotate_range)
        self.seed = int(seed)
        self._generator: torch.Generator | None = None
        self._image_sampler = AffineTransform(normalized=True, mode="bilinear", padding_mode="zeros", align_corners=False)
        self._mask_sampler = AffineTransform(normalized=True, mode="nearest", padding_mode="zeros", align_corners=False)

    def differences(self, transforms) -> list[str]:
        """How the per-sample ``transforms`` (configs/train.json's ``train#random_transforms``) differ from what this
        batch augmentation does: empty when it reproduces them (a ``RandFlipd`` on each spatial axis with
        ``flip_prob``, a ``RandRotated`` over ``rotate_range`` with ``rotate_prob``), else one line per difference."""
        from monai.transforms import RandFlipd, RandRotated

        found: list[str] = []
        axes: set[int] = set()
        rotations = 0
        for t in transforms:
            if isinstance(t, RandFlipd):
                axis = t.flipper.spatial_axis
                axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
                if axis not in (0, 1) or axis in axes:
                    found.append(f"RandFlipd(spatial_axis={axis}): the batch augmentation flips axes 0 and 1 once each")
                else:
                    axes.add(int(axis))
                if not math.isclose(t.prob, self.flip_prob):
                    found.append(f"RandFlipd(prob={t.prob}) but flip_prob={self.flip_prob}")
            elif isinstance(t, RandRotated):
                rotations += 1
                low, high = t.rand_rotate.range_x
                if not (math.isclose(-low, self.rotate_range) and math.isclose(high, self.rotate_range)):
                    found.append(f"RandRotated(range_x=({low}, {high})) but rotate_range={self.rotate_range}")
                if not math.isclose(t.prob, self.rotate_prob):
                    found.append(f"RandRotated(prob={t.prob}) but rotate_prob={self.rotate_prob}")
            else:
                found.append(f"{type(t).__name__}: not something the batch augmentation does")
        if axes != {0, 1} and self.flip_prob > 0:
            found.append(f"flips on spatial axes {sorted(axes)}, the batch augmentation flips axes 0 and 1")
        if rotations > 1 or (rotations == 0 and self.rotate_prob > 0):
            found.append(f"{rotations} RandRotated, the batch augmentation rotates once (rotate_prob={self.rotate_prob})")
        return found

    def _rng(self) -> torch.Generator:
        if self._generator is None:  # seeded at first use: torch.distributed is initialised by then
            rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
            self._generator = torch.Generator().manual_seed(self.seed + rank)
        return self._generator

    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The random choices for ``n`` images, on the CPU (so that indexing a GPU batch never waits for it):
        (flips: n x 2 bool, rotate: n bool, angles: n float64 radians, 0 where not rotated)."""
        g = self._rng()
        flips = torch.rand(n, 2, generator=g) < self.flip_prob
        rotate = torch.rand(n, generator=g) < self.rotate_prob
        angles = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * self.rotate_range
        return flips, rotate, torch.where(rotate, angles, torch.zeros_like(angles))

    @staticmethod
    def rotation_theta(angles: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """n x 2 x 3 matrices for MONAI's ``AffineTransform(normalized=True)`` (normalised coordinates in array
        order, H then W) rotating by ``angles`` about the centre in pixel units, as ``monai.transforms.Rotate``:
        S^-1 R S with S the half-extents (H/2, W/2) of ``align_corners=False``."""
        cos, sin = torch.cos(angles), torch.sin(angles)
        aspect = width / height
        theta = torch.zeros(len(angles), 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * aspect
        theta[:, 1, 0], theta[:, 1, 1] = sin / aspect, cos
        return theta

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.dim() != 4 or label.dim() != 4 or image.shape[0] != label.shape[0] or image.shape[2:] != label.shape[2:]:
            raise ValueError(
                "expected an N x C x H x W image batch and a mask batch of the same N, H and W, got "
                f"{list(image.shape)} and {list(label.shape)}."
            )
        return self.apply(image, label, *self.draw(image.shape[0]))

    def apply(
        self, image: torch.Tensor, label: torch.Tensor, flips: torch.Tensor, rotate: torch.Tensor, angles: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The flips and rotations drawn by :meth:`draw`, applied to the batch (a new batch; the input stays)."""
        height, width = int(image.shape[2]), int(image.shape[3])
        if flips.any():
            image, label = image.clone(), label.clone()  # the caller's batch stays as it was
            for axis in range(2):
                chosen = torch.nonzero(flips[:, axis]).flatten().to(image.device)
                image[chosen] = image[chosen].flip(2 + axis)
                label[chosen] = label[chosen].flip(2 + axis)
        chosen = torch.nonzero(rotate).flatten()
        if len(chosen):
            theta = self.rotation_theta(angles[chosen], height, width).to(device=image.device, dtype=image.dtype)
            index = chosen.to(image.device)
            image = image.index_copy(0, index, self._image_sampler(image[index], theta))
            label = label.index_copy(0, index, self._mask_sampler(label[index], theta.to(label.dtype)))
        return image, label
