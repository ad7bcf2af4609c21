# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""A training iteration for MONAI's ``SupervisedTrainer`` that splits each batch across CPU threads.

On a small CPU, PyTorch's own parallelism splits every operator of a step across the cores, and most of
EGE-UNet's ~1,700 operators per training step are too small to gain from it (two cores run a batch-8 step only
about 1.3x faster than one). :class:`SplitBatchIteration` instead runs the forward, loss and backward of each part
of the batch on its own thread (one intra-op thread per part on two cores): the autograd engine runs a CPU
backward on the thread that calls it, and it adds the parts' parameter gradients under a lock. The optimizer then
steps once, on the main thread, with the sum.

The parts' losses are weighted by their share of the batch, so for a loss that is a mean over samples (as
:class:`~egeunet_monai.losses.EGEUNetLoss`: per-image Dice and per-pixel cross-entropy, both averaged) the
gradient is the whole batch's, up to float32 summation order. It is deterministic: each part computes on one
thread, and the sum of two gradients does not depend on which thread adds first. A loss that couples the images
of a batch (Dice pooled over the batch, batch normalisation in the network) would change: do not use it there.

Nothing here is in MONAI or Ignite: ``torch.nn.DataParallel`` replicates over GPUs, and
``DistributedDataParallel`` over processes (the ``torchrun`` recipe in ``configs/multi_gpu_train.json``, which also
works on CPU but pays for a second process, its own data loading and an all-reduce).

Where the split cannot help or would change behaviour, the trainer's own iteration runs instead: on a GPU, with
``amp``, ``compile`` or gradient accumulation, under ``DistributedDataParallel``, with extra network arguments from
``prepare_batch``, with one worker, or for a batch smaller than two images.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys

from egeunet_monai.threads import ThreadPoolOwner

__all__ = ["SplitBatchIteration"]


class SplitBatchIteration(ThreadPoolOwner):
    """``SupervisedTrainer(iteration_update=SplitBatchIteration(workers))``: each batch is cut into ``workers``
    parts whose forward, loss and backward run concurrently, one thread each; one optimizer step follows.

    Args:
        workers: parts (and threads) per batch; ``None`` takes 2 when the process has at least two intra-op
            threads (``torch.get_num_threads()``, the number of cores by default), else 1 (no split). Measured on a
            2-core CPU only; more parts may pay on a larger CPU.
        intra_op_threads: intra-op threads of each worker; ``None`` shares the process's among them
            (``torch.get_num_threads() // workers``, at least 1).
    """

    def __init__(self, workers: int | None = None, intra_op_threads: int | None = None) -> None:
        threads = torch.get_num_threads()
        self.workers = max(1, int(workers if workers is not None else min(threads, 2)))
        self.intra_op_threads = max(1, int(intra_op_threads or threads // self.workers))
        self.thread_name_prefix = "egeunet-train"

    def applies_to(self, engine) -> bool:
        """Whether this trainer's batches are split (see the module docstring for when its own iteration runs).
        Checked before ``prepare_batch``, so that the fall-back does not move each batch to the device twice."""
        return (
            self.workers > 1
            and torch.device(engine.state.device).type == "cpu"
            and not engine.amp
            and not getattr(engine, "compile", False)
            and getattr(engine, "accumulation_steps", 1) == 1
            and not isinstance(engine.network, torch.nn.parallel.DistributedDataParallel)  # its hooks expect one backward
        )

    def __call__(self, engine, batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        if not self.applies_to(engine):
            return engine._iteration(engine, batchdata)
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[0], batch[1]
        if inputs.shape[0] < 2 or (len(batch) > 2 and (batch[2] or batch[3])):  # one image, or extra network args
            # the trainer's iteration prepares the batch again: on CPU the move is a no-op (an augmenting
            # prepare_batch draws anew, and the first draw is dropped)
            return engine._iteration(engine, batchdata)

        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        parts = list(zip(torch.tensor_split(inputs, self.workers), torch.tensor_split(targets, self.workers)))
        parts = [(x, y) for x, y in parts if x.shape[0] > 0]
        total = inputs.shape[0]

        def forward_backward(part: tuple[torch.Tensor, torch.Tensor]) -> tuple[Any, torch.Tensor]:
            x, y = part
            pred = engine.inferer(x, engine.network)
            loss = engine.loss_function(pred, y).mean() * (x.shape[0] / total)
            loss.backward()
            return _detach(pred), loss.detach()

        results = list(self._thread_pool().map(forward_backward, parts))
        engine.state.output[Keys.PRED] = _concatenate([pred for pred, _ in results])
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.state.output[Keys.LOSS] = torch.stack([loss for _, loss in results]).sum()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _detach(pred: Any) -> Any:
    if isinstance(pred, torch.Tensor):
        return pred.detach()
    if isinstance(pred, (list, tuple)):
        return type(pred)(_detach(p) for p in pred)
    if isinstance(pred, dict):
        return {k: _detach(v) for k, v in pred.items()}
    return pred


def _concatenate(preds: list[Any]) -> Any:
    """The parts' predictions as one batch, in the structure the network returns (a tensor, or for deep
    supervision a list of tensors)."""
    first = preds[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(preds)
    if isinstance(first, (list, tuple)):
        return type(first)(_concatenate(list(group)) for group in zip(*preds))
    if isinstance(first, dict):
        return {k: _concatenate([p[k] for p in preds]) for k in first}
    raise TypeError(f"SplitBatchIteration cannot join predictions of type {type(first).__name__}")
