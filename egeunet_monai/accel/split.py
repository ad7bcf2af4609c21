# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""A training iteration for MONAI's ``SupervisedTrainer`` that splits each batch across CPU threads.

On a small CPU, PyTorch's own parallelism splits every operator of a step across the cores: most of EGE-UNet's ~1,700
operators per training step are too small to gain from it, and its OpenMP threads wait for each other by spinning, so
a core that another process keeps busy stalls every operator. :class:`SplitBatchIteration` instead runs the forward,
loss and backward of each part of the batch on its own thread with one intra-op thread each: the autograd engine runs
a CPU backward on the thread that calls it and adds the parts' parameter gradients under a lock; the optimizer then
steps once, on the calling thread, with the sum. Measured on the 2-core development machine: see docs/benchmarks.md.

The parts' losses are weighted by their share of the batch, so for a loss that is a mean over samples (as
:class:`~egeunet_monai.losses.EGEUNetLoss`: per-image Dice and per-pixel cross-entropy, both averaged) the gradient is
the whole batch's, up to float32 summation order. It is deterministic: each part computes on one thread, and the sum
of two gradients does not depend on which thread adds first. A loss that couples the images of a batch (Dice pooled
over the batch, batch normalisation) would change: do not use it there.

Nothing like it is in MONAI or Ignite (``DataParallel`` replicates over GPUs, ``DistributedDataParallel`` over
processes). :func:`split_batch_iteration` decides once, from the recipe's settings, whether it applies: where it does
not (a GPU, ``amp``, ``compile``, ``DistributedDataParallel``, a single intra-op thread) it returns ``None`` and the
trainer runs its own iteration (MONAI's ``iteration_update`` is the public hook; its default iteration is not).
"""

from __future__ import annotations

from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys

from egeunet_monai.flags import flag
from egeunet_monai.threads import ThreadPoolOwner

__all__ = ["SplitBatchIteration", "split_batch_iteration"]


class SplitBatchIteration(ThreadPoolOwner):
    """``SupervisedTrainer(iteration_update=SplitBatchIteration(workers))`` on a CPU, without ``amp`` or ``compile``:
    each batch is cut into ``workers`` parts whose forward, loss and backward run concurrently, one thread each; one
    optimizer step follows. A batch of fewer than ``workers`` images runs in fewer parts.

    Args:
        workers: parts (and threads) per batch, at least 1.
        intra_op_threads: intra-op threads of each worker (1: no OpenMP team to wait for).
    """

    def __init__(self, workers: int = 2, intra_op_threads: int = 1) -> None:
        for name, value in (("workers", workers), ("intra_op_threads", intra_op_threads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
        self.workers = workers
        self.intra_op_threads = intra_op_threads
        self.thread_name_prefix = "egeunet-train"

    def __call__(self, engine, batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[0], batch[1]
        args, kwargs = (batch[2], batch[3]) if len(batch) > 2 else ((), {})
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        parts = [p for p in zip(torch.tensor_split(inputs, self.workers), torch.tensor_split(targets, self.workers))
                 if p[0].shape[0] > 0]  # fmt: skip
        total = inputs.shape[0]

        def forward_backward(part: tuple[torch.Tensor, torch.Tensor]) -> tuple[Any, torch.Tensor]:
            x, y = part
            pred = engine.inferer(x, engine.network, *args, **kwargs)
            loss = engine.loss_function(pred, y).mean() * (x.shape[0] / total)
            loss.backward()
            return _detach(pred), loss.detach()

        if len(parts) == 1:
            results = [forward_backward(parts[0])]
        else:
            results = list(self._thread_pool().map(forward_backward, parts))
        engine.state.output[Keys.PRED] = _concatenate([pred for pred, _ in results])
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.state.output[Keys.LOSS] = torch.stack([loss for _, loss in results]).sum()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def split_batch_iteration(
    enabled: bool | str, network: torch.nn.Module, device: Any, amp: bool, compile: bool
) -> SplitBatchIteration | None:
    """The trainer's ``iteration_update``: a :class:`SplitBatchIteration` of 2 workers sharing ``torch.get_num_threads()``
    intra-op threads (measured on 2 cores only) where it applies (``enabled``, a CPU ``device``, no ``amp``, no ``compile``, a ``network`` that is not
    ``DistributedDataParallel``, whose hooks expect one backward per step), else ``None`` (the trainer's own)."""
    threads = torch.get_num_threads()
    applies = (
        flag(enabled, "accelerate")
        and torch.device(device).type == "cpu"
        and not amp
        and not compile
        and not isinstance(network, torch.nn.parallel.DistributedDataParallel)
        and threads > 1
    )
    return SplitBatchIteration(2, threads // 2) if applies else None


def _detach(pred: Any) -> Any:
    if isinstance(pred, torch.Tensor):
        return pred.detach()
    if isinstance(pred, (list, tuple)):
        return type(pred)(_detach(p) for p in pred)
    if isinstance(pred, dict):
        return {k: _detach(v) for k, v in pred.items()}
    return pred


def _concatenate(preds: list[Any]) -> Any:
    """The parts' predictions as one batch, in the structure the network returns (a tensor, or for deep supervision
    a list of tensors)."""
    first = preds[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(preds)
    if isinstance(first, (list, tuple)):
        return type(first)(_concatenate(list(group)) for group in zip(*preds))
    if isinstance(first, dict):
        return {k: _concatenate([p[k] for p in preds]) for k in first}
    raise TypeError(f"SplitBatchIteration cannot join predictions of type {type(first).__name__}")
