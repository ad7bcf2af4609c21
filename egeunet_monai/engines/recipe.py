# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The few decisions of configs/train.json that take more than a line: the ``"auto"`` values of ``max_epochs`` and
``loader_workers``, where the random augmentation runs (``augment_on_device``), and the tracked description of the
objects the recipe built (read from the objects, so that an override such as ``--lr_cosine_period 16`` shows)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.engines.utils import PrepareBatch, PrepareBatchDefault

from egeunet_monai.engines.prepare_batch import PrepareBatchAugmented
from egeunet_monai.flags import flag

if TYPE_CHECKING:
    from ignite.handlers import EMAHandler

__all__ = ["AUTO", "augmentation_prepare_batch", "described", "ema_model", "loader_workers", "per_sample_transforms",
           "set_intra_op_threads", "training_epochs"]

AUTO = "auto"
# max_epochs "auto": the paper's 300 epochs on a real dataset; a short quick start on the synthetic default data
REAL_DATA_EPOCHS = 300
SYNTHETIC_DATA_EPOCHS = 12


def training_epochs(max_epochs: int | str, on_synthetic_data: bool) -> int:
    """``max_epochs`` as given, or for ``"auto"`` 300 epochs (the paper's) on a real dataset and 12 on the
    synthetic quick-start data."""
    if max_epochs == AUTO:
        return SYNTHETIC_DATA_EPOCHS if on_synthetic_data else REAL_DATA_EPOCHS
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"--max_epochs must be a positive whole number or 'auto', got {max_epochs!r}.")
    return max_epochs


def augmentation_prepare_batch(
    augment_on_device: bool | str, augmentation: Callable, replaces: Sequence[Callable]
) -> PrepareBatch:
    """The trainer's ``prepare_batch``: with ``augment_on_device`` (the yes/no option, read here once),
    :class:`PrepareBatchAugmented` applies ``augmentation`` to each batch on the trainer's device in place of the
    per-sample ``replaces``; otherwise MONAI's default, and ``replaces`` run per sample in the loader."""
    if flag(augment_on_device, "augment_on_device"):
        return PrepareBatchAugmented(augmentation, replaces=replaces)
    return PrepareBatchDefault()


def per_sample_transforms(
    deterministic: Sequence[Callable],
    random: Sequence[Callable],
    drop_metadata: Callable,
    prepare_batch: PrepareBatch,
    intensity: Sequence[Callable] = (),
    scale: Sequence[Callable] = (),
) -> list[Callable]:
    """The training loader's transforms: ``deterministic`` (cached), then the random ``intensity`` (colour) and
    ``scale`` (zoom) transforms, then the spatial ``random`` ones unless ``prepare_batch`` does those on the device;
    ``drop_metadata`` after each part (plain tensors batch and cache faster). Colour comes first on both paths, so
    that the zeros a zoom or a rotation pads with stay zeros; the zoom runs per sample on both paths (the batch
    augmentation has no zoom)."""
    if isinstance(prepare_batch, PrepareBatchAugmented):
        return [*deterministic, drop_metadata, *intensity, *scale, drop_metadata]
    return [*deterministic, drop_metadata, *intensity, *scale, *random, drop_metadata]


def ema_model(ema: EMAHandler) -> torch.nn.Module:
    """``ema.ema_model`` as a config component: ``train#checkpoint_state`` disables it when EMA is off, and MONAI
    leaves a disabled component out of its dict (a ``$@ema.ema_model`` expression would put a ``None`` there)."""
    return ema.ema_model


def loader_workers(loader_workers: int | str, num_workers: int, prepare_batch: PrepareBatch, device: Any) -> int:
    """The loaders' worker processes: ``loader_workers`` as given, or for ``"auto"`` none on a CPU when
    ``prepare_batch`` augments the batches (the loader only collates cached tensors there, and worker processes
    would take CPU time from the training step: 24.1 vs 26.7 images/s on 2 cores, docs/benchmarks.md), else
    ``num_workers``."""
    if loader_workers == AUTO:
        on_cpu = torch.device(device).type == "cpu"
        return 0 if on_cpu and isinstance(prepare_batch, PrepareBatchAugmented) else num_workers
    if isinstance(loader_workers, bool) or not isinstance(loader_workers, int) or loader_workers < 0:
        raise ValueError(f"--loader_workers must be a whole number >= 0 or 'auto', got {loader_workers!r}.")
    return loader_workers


def set_intra_op_threads(threads: int | str | None) -> int:
    """Set PyTorch's intra-op thread count to ``threads`` (``--intra_op_threads 1``); ``None`` keeps PyTorch's default
    (one per core, or ``OMP_NUM_THREADS``). Returns the count in effect.

    Why an option: PyTorch's OpenMP threads wait for each other by spinning, so on cores that other processes keep
    busy a 2-thread training step can run several times slower than a 1-thread one (docs/benchmarks.md); on an idle
    machine 2 threads are faster. Which holds depends on the machine's load, which the recipe cannot know.
    """
    if threads is None or threads == "":
        return torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--intra_op_threads must be a whole number >= 1 or null (PyTorch's default), got {threads!r}.")
    torch.set_num_threads(threads)
    return threads


def _value(obj: Any, name: str) -> Any:
    defaults = getattr(obj, "defaults", None)  # an optimizer keeps its hyper-parameters in ``defaults``
    if isinstance(obj, torch.optim.Optimizer) and isinstance(defaults, dict) and name in defaults:
        return defaults[name]
    return getattr(obj, name)


def described(obj: Any, attributes: Sequence[str] = (), **values: Any) -> str:
    """``"Type(a=1, b=2)"``: the class of ``obj`` with its ``attributes`` as the object holds them (an optimizer's
    from its ``defaults``), then ``values`` for what the object does not keep; an MLflow param that cannot go stale.
    """
    parts = [f"{name}={_value(obj, name)!r}" for name in attributes]
    parts += [f"{name}={value!r}" for name, value in values.items()]
    return f"{type(obj).__name__}({', '.join(parts)})"
