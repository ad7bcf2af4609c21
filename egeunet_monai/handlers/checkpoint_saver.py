# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Checkpoints that survive a crash, a kill or a full disk: temporary file, fsync, rename, then delete the old one."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.utils import is_scalar

__all__ = [
    "BestMetricState",
    "CheckpointWriteError",
    "DurableCheckpointSaver",
    "DurableDiskSaver",
    "resumable_state",
    "save_durably",
]

logger = logging.getLogger(__name__)

# `.checkpoint_epoch=3.pt.partial-k2j4h1x9`: what a write leaves behind when the process is killed during it
_PARTIAL_MARK = ".partial-"
_PARTIAL = re.compile(r"^\..+\.partial-[A-Za-z0-9_]+$")


class CheckpointWriteError(OSError):
    """A checkpoint file could not be written; the files written before it are untouched.

    An ``OSError`` with the errno of the cause, so ``except OSError`` still catches it; ``ENOSPC`` also when the
    folder was found full after a failure that lost its errno (``torch.save`` reports a full disk as a
    ``RuntimeError`` of its zip writer). The message names the file and says that the previous checkpoint was kept.
    """

    def __init__(self, path: str | os.PathLike, cause: BaseException, free_bytes: int | None = None) -> None:
        self.path = os.fspath(path)
        self.cause = cause
        self.free_bytes = free_bytes
        full = free_bytes is not None and free_bytes < _FULL_BELOW_BYTES
        if isinstance(cause, OSError) and cause.errno:
            code = cause.errno
        else:
            code = errno.ENOSPC if full else errno.EIO
        hint = f"; the disk is full ({free_bytes} bytes free)" if full else ""
        super().__init__(
            code,
            f"could not write checkpoint {self.path} ({type(cause).__name__}: {cause}{hint}); nothing was replaced "
            f"or deleted, the previous checkpoints in {os.path.dirname(self.path)} are intact",
        )

    def __str__(self) -> str:
        return str(self.args[1])

    def __reduce__(self):
        return (self.__class__, (self.path, self.cause, self.free_bytes))


_FULL_BELOW_BYTES = 1 << 20  # a folder with less than 1 MiB free after a failed write: a full disk


def _free_bytes(folder: str | os.PathLike) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _fsync_dir(dirname: str | os.PathLike) -> None:
    """Make a rename in ``dirname`` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(dirname, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the data itself was already synced
        pass
    finally:
        os.close(fd)


def save_durably(obj: Any, path: str | os.PathLike, save_func: Callable[[Any, Any], None] = torch.save) -> None:
    """Write ``obj`` to ``path`` so that ``path`` is always either the old file or the complete new one.

    ``save_func(obj, file)`` writes into a temporary file in the same folder (``.<name>.partial-XXXX``), which is
    flushed and ``fsync``-ed, made readable by group and others (as ignite's ``DiskSaver`` does), then renamed over
    ``path`` with ``os.replace`` (atomic on POSIX and Windows), and the folder is ``fsync``-ed so that the rename
    itself survives a power cut. On any failure the temporary file is removed and ``path`` is left as it was.

    Args:
        obj: what to save (a state dict).
        path: the destination file.
        save_func: called as ``save_func(obj, binary_file)``; ``torch.save`` by default.

    Raises:
        CheckpointWriteError: the write, the fsync or the rename failed (the cause is chained).
    """
    path = Path(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{_PARTIAL_MARK}", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            save_func(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as err:
        free = _free_bytes(path.parent)  # before the partial file goes: a full disk is still full now
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, Exception):
            raise CheckpointWriteError(path, err, free) from err
        raise  # KeyboardInterrupt, SystemExit: as they are, after the clean-up
    _fsync_dir(path.parent)


class DurableDiskSaver(BaseSaveHandler):
    """An ignite save handler that writes with :func:`save_durably` and removes a file only after the next good write.

    Ignite's ``DiskSaver(atomic=True)`` renames a temporary file but fsyncs neither it nor the folder, and ignite's
    ``Checkpoint`` asks for the removal of the checkpoint it no longer needs *before* it writes the new one, so
    with ``n_saved=1`` a failed write would leave no checkpoint at all. Here :meth:`remove` only notes the file; it
    is deleted after the next write has succeeded, and forgotten if that write fails.

    At start-up, ``.<name>.partial-XXXX`` files left in ``dirname`` by a write that was killed are deleted.

    Args:
        dirname: the checkpoint folder (created if needed).
        filename: a fixed file name that replaces ignite's (e.g. ``model.pt`` for the best model).
        save_func: ``save_func(obj, binary_file)``; ``torch.save`` by default.
        save_on_rank: the one process of a distributed run that writes, as for ignite's ``DiskSaver``.
    """

    def __init__(
        self,
        dirname: str | os.PathLike,
        filename: str | None = None,
        save_func: Callable[[Any, Any], None] = torch.save,
        save_on_rank: int = 0,
    ) -> None:
        self.dirname = Path(dirname)
        self.filename = filename
        self.save_func = save_func
        self.save_on_rank = save_on_rank
        self.written: set[str] = set()  # files of this process that are on disk now
        self._to_remove: list[str] = []
        if idist.get_rank() == self.save_on_rank:
            self.dirname.mkdir(parents=True, exist_ok=True)
            self._remove_partial_files()

    def _remove_partial_files(self) -> None:
        for name in os.listdir(self.dirname):
            if _PARTIAL.match(name):
                try:
                    os.unlink(self.dirname / name)
                    logger.info(f"removed {name}, left in {self.dirname} by an interrupted checkpoint write")
                except OSError:
                    pass

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != self.save_on_rank:
            return
        if self.filename is not None:
            filename = self.filename
        to_remove, self._to_remove = self._to_remove, []
        save_durably(checkpoint, self.dirname / filename, self.save_func)
        self.written.add(filename)
        for old in to_remove:
            if old != filename:
                try:
                    (self.dirname / old).unlink()
                except FileNotFoundError:
                    pass
                self.written.discard(old)

    def remove(self, filename: str) -> None:
        if idist.get_rank() == self.save_on_rank:
            self._to_remove.append(self.filename if self.filename is not None else filename)


class DurableCheckpointSaver:
    """Save an engine's objects with ignite's ``Checkpoint`` and :class:`DurableDiskSaver`: the best model by a key
    metric, a checkpoint every ``save_interval`` epochs (or iterations), and/or the model of the last epoch. Argument
    names and file names are those of ``monai.handlers.CheckpointSaver`` (``model.pt`` via ``key_metric_filename``
    or ``final_filename``, ``checkpoint_epoch=3.pt``).

    MONAI's saver writes in place (``atomic=False``) after ignite has deleted the previous file, so a kill, a crash
    or a full disk during a write leaves a truncated newest checkpoint, or none. This one writes a temporary file,
    fsyncs it, renames it over the destination, and only then deletes the checkpoint it replaces. A failed write
    raises :class:`CheckpointWriteError` (logged, then propagated, which stops the run with the message;
    ``--resume true`` continues from the previous checkpoint, which is intact), and the list of saved files is put
    back as it was (``Checkpoint.state_dict``/``load_state_dict``), as if the save had not been attempted.

    The saver's own :meth:`state_dict` is that of its best-model tracker (the key-metric ``Checkpoint``: which score
    the saved best model has); put the saver in the training checkpoint so that a resumed run does not replace the
    best model with a worse one.

    Args:
        save_dir: the folder of the files.
        save_dict: the objects to save, by name (``{"model": network}``: the file holds the model's state dict).
        save_key_metric: save when the key metric improves (``engine.state.metrics[key_metric_name]``).
        key_metric_name: the metric; ``None``: the engine's ``state.key_metric_name`` (MONAI's evaluators).
        key_metric_filename: a fixed file name for the best model (one file, replaced at each improvement).
        key_metric_negative_sign: lower is better.
        save_interval: save every ``save_interval`` epochs (``epoch_level``) or iterations; 0: never.
        epoch_level: count ``save_interval`` in epochs, else in iterations.
        n_saved: how many interval checkpoints to keep; ``None``: all.
        save_final: save at the end of the engine's last epoch (``max_epochs``), not at ``COMPLETED`` as MONAI's
            saver does: handlers of ``COMPLETED`` attached before this one (MLflow's artifacts) then find the file,
            and a run that is killed or fails saves nothing (``--resume true`` finishes it).
        final_filename: a fixed file name for the last epoch's save.
        file_prefix: prefix of ignite's file names.
        name: logger name; ``None``: the engine's logger.
        save_func: ``save_func(obj, binary_file)``; ``torch.save`` by default.
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: Mapping[str, Any],
        save_key_metric: bool = False,
        key_metric_name: str | None = None,
        key_metric_filename: str | None = None,
        key_metric_negative_sign: bool = False,
        save_interval: int = 0,
        epoch_level: bool = True,
        n_saved: int | None = None,
        file_prefix: str = "",
        name: str | None = None,
        save_func: Callable[[Any, Any], None] = torch.save,
        save_final: bool = False,
        final_filename: str | None = None,
    ) -> None:
        if not save_dict:
            raise ValueError("DurableCheckpointSaver: save_dict names nothing to save.")
        self.save_dir = save_dir
        self.key_metric_name = key_metric_name
        self.key_metric_sign = -1.0 if key_metric_negative_sign else 1.0
        self.save_interval = int(save_interval)
        self.epoch_level = epoch_level
        self.name = name
        self.logger = logging.getLogger(name)
        self.key_metric_checkpoint: Checkpoint | None = None
        self.interval_checkpoint: Checkpoint | None = None
        self.interval_saver: DurableDiskSaver | None = None
        self.final_checkpoint: Checkpoint | None = None
        if save_final:
            self.final_checkpoint = Checkpoint(
                to_save=save_dict,
                save_handler=DurableDiskSaver(save_dir, filename=final_filename, save_func=save_func),
                filename_prefix=file_prefix,
                n_saved=1,
            )
        if save_key_metric:
            self.key_metric_checkpoint = Checkpoint(
                to_save=save_dict,
                save_handler=DurableDiskSaver(save_dir, filename=key_metric_filename, save_func=save_func),
                filename_prefix=file_prefix,
                score_function=self._key_metric_score,
                score_name="key_metric",
                n_saved=1,
            )
        if self.save_interval > 0:
            self.interval_saver = DurableDiskSaver(save_dir, save_func=save_func)
            self.interval_checkpoint = Checkpoint(
                to_save=save_dict,
                save_handler=self.interval_saver,
                filename_prefix=file_prefix,
                score_function=lambda engine: engine.state.epoch if self.epoch_level else engine.state.iteration,
                score_name="epoch" if epoch_level else "iteration",
                n_saved=n_saved,
            )

    def _key_metric_score(self, engine: Engine) -> float:
        name = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
        if not name:
            raise ValueError("DurableCheckpointSaver: save_key_metric=True needs key_metric_name (or an evaluator's).")
        metric = engine.state.metrics[name]
        if not is_scalar(metric):
            warnings.warn(f"key metric {name}={metric} is not a scalar: no model saved", stacklevel=2)
            return -1
        return self.key_metric_sign * float(metric)

    def attach(self, engine: Engine) -> None:
        """Save at the events of ``engine``: the best model at each ``EPOCH_COMPLETED``, the interval checkpoints
        every ``save_interval`` epochs or iterations.

        Args:
            engine: the Ignite engine (an evaluator for the key metric, the trainer for the interval checkpoints).
        """
        if self.name is None:
            self.logger = engine.logger
        if self.key_metric_checkpoint is not None and not engine.has_event_handler(
            self.metrics_completed, Events.EPOCH_COMPLETED
        ):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.metrics_completed)
        if self.interval_checkpoint is not None:
            event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
            engine.add_event_handler(event(every=self.save_interval), self.interval_completed)
        if self.final_checkpoint is not None and not engine.has_event_handler(
            self.last_epoch_completed, Events.EPOCH_COMPLETED
        ):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.last_epoch_completed)

    def _save(self, checkpoint: Checkpoint, engine: Engine) -> None:
        saved = checkpoint.state_dict()
        try:
            checkpoint(engine)
        except CheckpointWriteError as err:
            checkpoint.load_state_dict(saved)
            self.logger.error(f"checkpoint not saved: {err}")
            raise

    def metrics_completed(self, engine: Engine) -> None:
        """Save the model if the key metric of ``engine`` is the best so far."""
        if self.key_metric_checkpoint is None:
            raise ValueError("DurableCheckpointSaver: save_key_metric is False.")
        self._save(self.key_metric_checkpoint, engine)

    def interval_completed(self, engine: Engine) -> None:
        """Save a checkpoint of the current epoch (or iteration), then remove those it supersedes."""
        if self.interval_checkpoint is None:
            raise ValueError("DurableCheckpointSaver: save_interval is 0.")
        self._save(self.interval_checkpoint, engine)
        if self.epoch_level:
            self.logger.info(f"Saved checkpoint at epoch: {engine.state.epoch}")
        else:
            self.logger.info(f"Saved checkpoint at iteration: {engine.state.iteration}")
        self._remove_superseded_interval_files()

    def last_epoch_completed(self, engine: Engine) -> None:
        """Save the objects if ``engine`` has just completed its last epoch."""
        if self.final_checkpoint is None:
            raise ValueError("DurableCheckpointSaver: save_final is False.")
        if engine.state.epoch >= (engine.state.max_epochs or 0):
            self._save(self.final_checkpoint, engine)
            self.logger.info(f"Saved the model of the last epoch ({engine.state.epoch})")

    def _remove_superseded_interval_files(self) -> None:
        """After a resume the saver does not know the checkpoints of the interrupted run (``checkpoint_epoch=2.pt``
        next to the new ``checkpoint_epoch=3.pt``): once a newer one is safely on disk, delete the older ones that
        ``n_saved`` would have deleted had the run not been interrupted."""
        kept = self.interval_saver.written if self.interval_saver is not None else set()
        numbered = re.compile(r"(.*=)(\d+)(\.[A-Za-z0-9]+)")
        m = numbered.fullmatch(next(iter(kept))) if kept else None
        if m is None:
            return
        pattern = re.compile(re.escape(m.group(1)) + r"(\d+)" + re.escape(m.group(3)))
        numbers = {int(k.group(1)): name for name, k in ((name, pattern.fullmatch(name)) for name in kept) if k}
        if not numbers:
            return
        newest = numbers[max(numbers)]
        for name in os.listdir(self.save_dir):
            found = pattern.fullmatch(name)
            if found and name not in kept and int(found.group(1)) < min(numbers):
                try:
                    os.unlink(os.path.join(self.save_dir, name))
                    self.logger.info(f"removed {name}: superseded by {newest}")
                except OSError:
                    pass

    def state_dict(self) -> dict:
        """The best-model tracker's state: ignite's ``Checkpoint.state_dict`` (the saved files and their scores)."""
        if self.key_metric_checkpoint is None:
            raise ValueError("DurableCheckpointSaver: no best-model tracker (save_key_metric=False) to save.")
        return self.key_metric_checkpoint.state_dict()

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore the best-model tracker (the state of :meth:`state_dict`, e.g. from a training checkpoint)."""
        if self.key_metric_checkpoint is None:
            raise ValueError("DurableCheckpointSaver: no best-model tracker (save_key_metric=False) to restore.")
        self.key_metric_checkpoint.load_state_dict(state_dict)


class BestMetricState:
    """The best key metric an evaluator has seen (``state.best_metric``, ``state.best_metric_epoch``), as an object
    with ``state_dict``/``load_state_dict`` for a checkpoint's ``save_dict``.

    MONAI's evaluator starts a resumed run with no best metric, so its first validation is logged as a new best
    (``Got new best metric``, ``Key metric: ... best value``) even when it is worse; with this in the checkpoint it
    continues from the real best. (Which model is *saved* as best is decided by the ``CheckpointSaver``'s tracker,
    ``best_model_tracker`` in the checkpoint, not by this.)

    Args:
        engine: the evaluator.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def state_dict(self) -> dict:
        best = self.engine.state.best_metric
        return {"best_metric": float(best), "best_metric_epoch": int(self.engine.state.best_metric_epoch)}

    def load_state_dict(self, state_dict: Mapping) -> None:
        self.engine.state.best_metric = float(state_dict["best_metric"])
        self.engine.state.best_metric_epoch = int(state_dict["best_metric_epoch"])


def resumable_state(
    load_dict: Mapping[str, Any],
    checkpoint_path: str | os.PathLike | None,
    optional: Sequence[str] = ("tracking", "validation_best"),
) -> dict[str, Any]:
    """The part of ``load_dict`` that ``checkpoint_path`` can restore: entries named in ``optional`` that the
    checkpoint lacks (it was written before they were added) are left out, with a log line; everything else
    must be there, as ``CheckpointLoader`` requires.

    Args:
        load_dict: the objects to restore, by checkpoint key (the ``save_dict`` of the checkpoints).
        checkpoint_path: the checkpoint; ``""``/``None`` (not resuming) returns ``load_dict`` unchanged.
        optional: keys that may be missing from older checkpoints.
    """
    load_dict = dict(load_dict)
    if not checkpoint_path or not any(k in load_dict for k in optional):
        return load_dict
    keys = torch.load(checkpoint_path, map_location="cpu", weights_only=True).keys()
    for key in optional:
        if key in load_dict and key not in keys:
            logger.info(f"{checkpoint_path} has no '{key}' (an older checkpoint): '{key}' starts afresh")
            del load_dict[key]
    return load_dict
