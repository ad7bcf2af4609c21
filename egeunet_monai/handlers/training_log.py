# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Small Ignite handlers for the training log: the learning rate of each epoch as a metric, and a per-rank log for
distributed (``torchrun``) training."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["EmptyState", "EpochLearningRate", "RankLogger"]


class EpochLearningRate:
    """Put the learning rate an epoch trains with into ``engine.state.metrics[name]``.

    Set at ``EPOCH_STARTED``, i.e. before any ``LrScheduleHandler`` steps the schedule at ``EPOCH_COMPLETED``,
    so the value is the one used during the epoch, whatever the order of the handlers. Epoch-level handlers then
    report it with the other metrics: ``MLFlowHandler`` logs it as a per-epoch metric (step = epoch), and
    ``StatsHandler`` prints it in its ``Epoch[N] Metrics`` line. (``MLFlowHandler``'s own ``optimizer_param_names``
    logs ``lr_group_0`` at every iteration.)

    Args:
        optimizer: the optimizer whose learning rate is reported.
        name: the metric name.
        param_group: which parameter group of the optimizer.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, name: str = "lr", param_group: int = 0) -> None:
        self.optimizer = optimizer
        self.name = name
        self.param_group = param_group

    def attach(self, engine: Engine) -> None:
        """Register the handler on ``engine`` (a trainer).

        Args:
            engine: the Ignite engine.
        """
        if not engine.has_event_handler(self, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        engine.state.metrics[self.name] = float(self.optimizer.param_groups[self.param_group]["lr"])


class EmptyState:
    """An object with an empty ``state_dict`` whose ``load_state_dict`` ignores what it is given.

    Stands in, in a checkpoint's ``save_dict``/``load_dict``, for an object that exists on rank 0 only (e.g. the
    best-model tracker of a ``CheckpointSaver`` that is disabled on the other ranks of a distributed training), so
    that every rank can load the same checkpoint.
    """

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: Any) -> None:
        pass


def _rank_and_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class RankLogger:
    """Log from every rank of a distributed training, which the rank-0-only ``StatsHandler`` does not.

    At ``STARTED``: the rank, the world size, how many batches of how many samples this rank trains on per epoch,
    and the names of the handlers active on this rank (``handlers``; ``None`` entries, i.e. handlers disabled on
    this rank, are left out). Every ``interval`` iterations: the epoch, iteration and loss of this rank. Messages
    go to the logger ``<name>.rank<r>`` and start with ``rank r/w:``.

    Args:
        handlers: the handlers to report as active on this rank (e.g. the trainer's and the validator's).
        output_transform: the loss from ``engine.state.output`` (as for ``StatsHandler``).
        interval: log every ``interval`` iterations.
        name: logger name prefix.
    """

    def __init__(
        self,
        handlers: Sequence[Any] | None = None,
        output_transform: Callable[[Any], Any] = lambda output: output,
        interval: int = 1,
        name: str = "egeunet_monai.ddp",
    ) -> None:
        self.handlers = [h for h in (handlers or []) if h is not None]
        self.output_transform = output_transform
        self.interval = max(int(interval), 1)
        self.name = name

    def _log(self, message: str) -> None:
        rank, world = _rank_and_world()
        logging.getLogger(f"{self.name}.rank{rank}").info(f"rank {rank}/{world}: {message}")

    def attach(self, engine: Engine) -> None:
        """Register the handler on ``engine`` (a trainer).

        Args:
            engine: the Ignite engine.
        """
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self.iteration_completed)

    def started(self, engine: Engine) -> None:
        loader = engine.state.dataloader
        sampler = getattr(loader, "sampler", None)
        samples = len(sampler) if sampler is not None and hasattr(sampler, "__len__") else "?"
        names = ", ".join(type(h).__name__ for h in self.handlers) or "none"
        self._log(
            f"starting at epoch {engine.state.epoch + 1}/{engine.state.max_epochs}, {engine.state.epoch_length} "
            f"batches per epoch from {samples} samples ({type(sampler).__name__}); handlers on this rank: {names}"
        )

    def iteration_completed(self, engine: Engine) -> None:
        loss = self.output_transform(engine.state.output)
        if isinstance(loss, torch.Tensor):
            loss = loss.item()
        epoch_iter = (engine.state.iteration - 1) % engine.state.epoch_length + 1
        self._log(
            f"epoch {engine.state.epoch}/{engine.state.max_epochs}, iteration {epoch_iter}/{engine.state.epoch_length}"
            f" (global {engine.state.iteration}), train_loss {loss:.4f}"
        )
