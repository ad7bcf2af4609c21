# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Every speed-up of CPU training, in one optional layer applied from outside: :func:`accelerate`.

The network (:class:`~egeunet_monai.networks.nets.EGEUNet`), the loss (:class:`~egeunet_monai.losses.EGEUNetLoss`)
and the batch augmentation (:class:`~egeunet_monai.transforms.RandFlipRotateBatch`) are the reference versions, made of
PyTorch's and MONAI's operators. ``accelerate(obj)`` swaps the parts of ``obj`` that have a C++-kernel version
(``csrc/``, built on first use by :mod:`~egeunet_monai.accel.kernels`) for that version, in place, as
``monai.networks.utils.replace_modules_by_type`` does, but keeping each module's own parameters, so parameter names,
state dicts and checkpoints stay the same:

==========================================================  ===============================================
reference                                                   kernel version
==========================================================  ===============================================
``nn.MaxPool2d(2, 2)`` (the encoder's pooling)              :class:`~.network.MaxPool2x2Kernel`
``ChannelFirstLayerNorm`` (GHPA, GAB)                       :class:`~.network.ChannelLayerNormKernel`
3x3 depth-wise ``nn.Conv2d`` (the bridges' dilated convs)   :class:`~.network.DepthwiseConv3x3Kernel`
``BilinearResize`` (decoder, bridges)                       :class:`~.network.BilinearResizeMatmul` (GEMM backward)
MONAI's ``DiceCELoss(sigmoid=True)`` (inside the loss)       :class:`~.loss.DiceCELossKernel`
``RandFlipRotateBatch``                                     :class:`~.augment.FlipRotateBatchKernel`
==========================================================  ===============================================

Each kernel version computes what it replaces up to float rounding, and falls back to the reference forward where the
kernels do not apply (GPU tensors, other dtypes, TorchScript, tracing, CPU autocast).

The trainer's step has one more speed-up, :func:`~egeunet_monai.accel.split.split_batch_iteration`: each CPU batch
split over two threads of one intra-op thread each (``SupervisedTrainer``'s ``iteration_update``).

``configs/train.json`` applies both with ``--accelerate true`` (the default); docs/benchmarks.md has the measurements.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["accelerate", "is_accelerated", "split_batch_iteration"]

T = TypeVar("T")


def split_batch_iteration(*args, **kwargs):
    """:func:`egeunet_monai.accel.split.split_batch_iteration` (imported on use)."""
    from egeunet_monai.accel.split import split_batch_iteration

    return split_batch_iteration(*args, **kwargs)


def _kernel_versions() -> list[type]:
    # imported on use: `import egeunet_monai.accel` should not cost MONAI's import
    from egeunet_monai.accel.augment import FlipRotateBatchKernel
    from egeunet_monai.accel.loss import DiceCELossKernel
    from egeunet_monai.accel.network import (
        BilinearResizeMatmul,
        ChannelLayerNormKernel,
        DepthwiseConv3x3Kernel,
        MaxPool2x2Kernel,
    )

    return [
        MaxPool2x2Kernel,
        ChannelLayerNormKernel,
        DepthwiseConv3x3Kernel,
        BilinearResizeMatmul,
        DiceCELossKernel,
        FlipRotateBatchKernel,
    ]


def _swapped(obj: T, versions: list[type]) -> T:
    """``obj`` as an instance of its kernel version, sharing its state (parameters, buffers, attributes): the kernel
    versions are subclasses that add no state of their own; ``obj`` itself where none replaces it."""
    for cls in versions:
        if cls.replaces(obj):
            new = cls.__new__(cls)
            new.__dict__.update(obj.__dict__)
            return new
    return obj


def accelerate(obj: T, enabled: bool | str = True) -> T:
    """``obj`` (a network, a loss, the batch augmentation) with its parts swapped for their C++-kernel versions.

    Modules are swapped in place (``obj`` itself is returned, unless ``obj`` is itself one of the swapped types);
    parameters stay the same objects, so an optimizer built before or after sees the same tensors and a checkpoint has
    the same keys. Without a C++ compiler the kernels cannot be built: one warning says so and ``obj`` is returned
    unchanged, as it is with ``enabled`` false.

    Args:
        obj: what to accelerate; anything without a kernel version is returned as it is.
        enabled: ``False`` (or ``"false"``, as a bundle's command line gives it) returns ``obj`` unchanged.
    """
    import torch

    from egeunet_monai.accel import kernels
    from egeunet_monai.flags import flag

    if not flag(enabled, "accelerate") or not kernels.load():
        return obj
    versions = _kernel_versions()
    if isinstance(obj, torch.nn.Module):
        for parent in list(obj.modules()):
            for name, child in list(parent.named_children()):
                swapped = _swapped(child, versions)
                if swapped is not child:
                    setattr(parent, name, swapped)
    return _swapped(obj, versions)


def is_accelerated(obj: object) -> bool:
    """Whether ``obj`` or one of its modules is a kernel version (what ``configs/train.json`` tracks: an override or
    a machine without a compiler shows)."""
    import torch

    parts = obj.modules() if isinstance(obj, torch.nn.Module) else [obj]
    return any(type(part).__module__.startswith(__name__ + ".") for part in parts)
