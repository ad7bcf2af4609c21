# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""RandFlipRotateBatch (the on-device augmentation of configs/train.json) against MONAI's per-sample transforms, as it
is (PyTorch's operators, as on a GPU) and accelerated (``egeunet_monai.accel``: the C++ kernel on CPU)."""

from __future__ import annotations

import math

import pytest
import torch
from monai.transforms import Rotate

from egeunet_monai.engines import PrepareBatchAugmented
from egeunet_monai.accel import accelerate
from egeunet_monai.transforms import RandFlipRotateBatch
from tests.conftest import require_cpu_kernels


@pytest.fixture(params=[True, False], ids=["kernel", "pytorch"])
def Augmentation(request):  # noqa: N802 (stands for the class)
    """Every test on both paths; the kernel's must run where it is built (always under CI=true)."""
    if not request.param:
        return RandFlipRotateBatch
    require_cpu_kernels()
    return lambda **kwargs: accelerate(RandFlipRotateBatch(**kwargs))


FLOAT32_UNIT = 2.0**-24


def rotation_tolerance(height: int, width: int) -> float:
    """How far a rotated float32 image in [0, 1] may be from the float64 resampling of the same rotation: its
    sampling coordinates (up to max(H, W) pixels) rounded a few times in float32 (affine_grid, grid_sample's
    unnormalisation) move a sample by <= 8 u max(H, W) pixels, which moves a bilinear value by at most that (the
    image changes by at most 1 per pixel); the interpolation's own rounding (~4 u) is below it. Measured on Intel Xeon
    under ATEN_CPU_CAPABILITY unset/avx2/default: <= 9.1e-6 at 96 px (bound 4.6e-5), 2.8e-5 at 256 px (bound
    1.2e-4), the C++ kernel (float64 coordinates) <= 1.8e-7."""
    return 8 * FLOAT32_UNIT * max(height, width)


def _batch(n: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, height, width, generator=g)
    # a blob-shaped mask, so that nearest resampling has edges to keep
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    centre = torch.rand(n, 2, generator=g) * torch.tensor([height, width]) * 0.5 + torch.tensor([height, width]) * 0.25
    radius = min(height, width) / 4
    label = ((yy[None] - centre[:, :1, None]) ** 2 + (xx[None] - centre[:, 1:, None]) ** 2 < radius**2).float()
    return image, label[:, None]


@pytest.mark.parametrize("size", [(64, 64), (64, 96), (96, 64)])
def test_each_rotation_is_monai_rotate_of_that_image(Augmentation, size):
    """Rotation only: every image is MONAI's ``Rotate`` by the angle drawn for it, resampled in float64 (bilinear
    image; the mask nearest, binary, equal but for the odd pixel where nearest rounding ties: measured none),
    non-square images included."""
    image, label = _batch(6, *size)
    aug = Augmentation(flip_prob=0.0, rotate_prob=1.0, seed=3)
    _, _, angles = Augmentation(flip_prob=0.0, rotate_prob=1.0, seed=3).draw(6)
    out_image, out_label = aug(image, label)
    assert angles.abs().max() <= math.pi and len(set(angles.tolist())) == 6
    for i, angle in enumerate(angles.tolist()):
        exact = dict(keep_size=True, padding_mode="zeros", dtype=torch.float64)  # float64 coordinates and sums
        ref_image = Rotate(angle=angle, mode="bilinear", **exact)(image[i].double())
        ref_label = Rotate(angle=angle, mode="nearest", **exact)(label[i].double())
        torch.testing.assert_close(out_image[i].double(), torch.as_tensor(ref_image).double(), rtol=0,
                                   atol=rotation_tolerance(*size))
        assert set(out_label[i].unique().tolist()) <= {0.0, 1.0}
        assert (out_label[i] != torch.as_tensor(ref_label)).float().mean() < 2e-3


def test_flips_are_exact_and_nothing_is_an_identity_copy_in_place(Augmentation):
    image, label = _batch(4, 32, 48)
    before = image.clone(), label.clone()
    flipped = Augmentation(flip_prob=1.0, rotate_prob=0.0)(image, label)
    assert torch.equal(flipped[0], image.flip(2, 3)) and torch.equal(flipped[1], label.flip(2, 3))
    unchanged = Augmentation(flip_prob=0.0, rotate_prob=0.0)(image, label)
    assert torch.equal(unchanged[0], image) and torch.equal(unchanged[1], label)
    Augmentation(seed=1)(image, label)
    assert torch.equal(image, before[0]) and torch.equal(label, before[1])  # the caller's batch is not modified


def test_each_choice_is_drawn_per_image_with_its_probability(Augmentation):
    flips, rotate, angles = Augmentation(flip_prob=0.5, rotate_prob=0.5, rotate_range=math.pi, seed=0).draw(8000)
    assert flips.float().mean(0).sub(0.5).abs().max() < 0.02 and abs(rotate.float().mean() - 0.5) < 0.02
    # the two flips and the rotation are independent: all 8 combinations occur about equally often
    combos = torch.bincount(flips[:, 0].long() * 4 + flips[:, 1].long() * 2 + rotate.long(), minlength=8)
    assert combos.min() > 0.11 * 8000 and combos.max() < 0.14 * 8000
    assert torch.all(angles[~rotate] == 0)
    rotated = angles[rotate]
    assert rotated.abs().max() <= math.pi and rotated.min() < -3.0 and rotated.max() > 3.0
    assert abs(rotated.mean()) < 0.1 and abs((rotated > 0).float().mean() - 0.5) < 0.03


def test_seeded_draws_repeat_and_differ_between_seeds(Augmentation):
    image, label = _batch(8, 32, 32)
    a = Augmentation(seed=5)(image, label)
    b = Augmentation(seed=5)(image, label)
    c = Augmentation(seed=6)(image, label)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_bad_input_and_options_are_refused_with_the_reason(Augmentation):
    image, label = _batch(2, 32, 32)
    with pytest.raises(ValueError, match=r"same N, H and W.*\[2, 3, 32, 32\].*\[2, 1, 16, 32\]"):
        Augmentation()(image, label[:, :, :16])
    with pytest.raises(ValueError, match="N x C x H x W"):
        Augmentation()(image[0], label[0])
    with pytest.raises(ValueError, match="rotate_prob must be a probability"):
        Augmentation(rotate_prob=1.5)


def test_prepare_batch_moves_then_augments_a_dictionary_batch(Augmentation):
    image, label = _batch(4, 32, 32)
    prepare = PrepareBatchAugmented(Augmentation(flip_prob=1.0, rotate_prob=0.0))
    out_image, out_label = prepare({"image": image.double(), "label": label}, torch.device("cpu"), False, dtype=torch.float32)
    assert out_image.dtype == torch.float32  # Tensor.to kwargs reach the default preparation
    assert torch.equal(out_image, image.flip(2, 3)) and torch.equal(out_label, label.flip(2, 3))
    with pytest.raises(ValueError, match="needs batches with a label"):
        prepare({"image": image}, torch.device("cpu"))


def test_differences_name_what_the_batch_augmentation_would_not_reproduce(Augmentation):
    from monai.transforms import RandFlipd, RandGaussianNoised, RandRotated

    keys = ["image", "label"]
    stock = [
        RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys=keys, prob=0.5, spatial_axis=1),
        RandRotated(keys=keys, range_x=math.pi, prob=0.5, mode=["bilinear", "nearest"]),
    ]
    augmentation = Augmentation(flip_prob=0.5, rotate_prob=0.5, rotate_range=math.pi)
    assert augmentation.differences(stock) == []
    found = augmentation.differences(stock[1:] + [RandGaussianNoised(keys="image")])
    assert found == [
        "RandGaussianNoised: not something the batch augmentation does",
        "flips on spatial axes [1], the batch augmentation flips axes 0 and 1",
    ]
    assert augmentation.differences(stock[:2] + [RandRotated(keys=keys, range_x=0.3, prob=0.5)]) == [
        f"RandRotated(range_x=(-0.3, 0.3)) but rotate_range={math.pi}"
    ]
    assert "2 RandRotated" in augmentation.differences(stock + stock[2:])[0]
    assert Augmentation(flip_prob=0.0, rotate_prob=0.0).differences([]) == []

