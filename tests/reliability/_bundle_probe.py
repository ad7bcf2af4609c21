"""Test-only pieces loaded *inside* a bundle training subprocess (via PYTHONPATH and a config overlay).

``Probe`` records what the trainer really restored and which epochs it ran, and can hold the run at a chosen
iteration so that a test can kill it, or stop a server under it, at an exact point of an epoch. ``WorseMeanDice``
is a key metric that is always worse than any real Dice, to check that a resumed run keeps the best model.
"""

from __future__ import annotations

import os
import time

import torch
from ignite.engine import Events
from monai.handlers import MeanDice


def _append_line(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


class Probe:
    """Attach after the trainer handlers (so after ``CheckpointLoader`` at ``STARTED``).

    Args:
        out_dir: where ``started.pt``, ``epochs.txt`` and the ``paused`` marker go.
        optimizer, lr_scheduler, tracker: the objects whose state ``started.pt`` records.
        pause_epoch: hold the run in this epoch (0: never), after its ``pause_iteration``-th iteration.
        pause_iteration: iteration within the epoch (1-based).
        resume_file: the run goes on when this file appears; ``""``: hold until killed.
    """

    def __init__(self, out_dir, optimizer, lr_scheduler, tracker, pause_epoch=0, pause_iteration=1, resume_file=""):
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir = out_dir
        self.optimizer, self.lr_scheduler, self.tracker = optimizer, lr_scheduler, tracker
        self.pause_epoch, self.pause_iteration = int(pause_epoch), int(pause_iteration)
        self.resume_file = resume_file

    def attach(self, trainer) -> None:
        trainer.add_event_handler(Events.STARTED, self.started)
        trainer.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)

    def started(self, engine) -> None:
        state = {
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "best_model_tracker": self.tracker.state_dict(),
        }
        torch.save(state, os.path.join(self.out_dir, "started.pt"))

    def epoch_started(self, engine) -> None:
        _append_line(os.path.join(self.out_dir, "epochs.txt"), str(engine.state.epoch))

    def iteration_completed(self, engine) -> None:
        in_epoch = (engine.state.iteration - 1) % engine.state.epoch_length + 1
        if engine.state.epoch != self.pause_epoch or in_epoch != self.pause_iteration:
            return
        _append_line(os.path.join(self.out_dir, "paused"), f"epoch {engine.state.epoch} iteration {in_epoch}")
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.resume_file and os.path.exists(self.resume_file):
                return
            time.sleep(0.2)


class WorseMeanDice(MeanDice):
    """``MeanDice`` minus 2: lower than any real Dice (0..1), so never a new best."""

    def compute(self):
        return super().compute() - 2.0
