# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Checkpoints that survive a crash, a kill or a full disk: temporary file, fsync, rename, then delete the old one."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

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


class DurableDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` with :func:`save_durably` writes and removals that wait for the next good write.

    ignite's ``Checkpoint`` removes the checkpoint it no longer needs *before* it writes the new one, so with
    ``n_saved=1`` a failed write would leave no checkpoint at all. Here :meth:`remove` only notes the file; it
    is deleted after the next write has succeeded, and forgotten if that write fails.

    At start-up, ``.<name>.partial-XXXX`` files left in ``dirname`` by a write that was killed are deleted.

    Args:
        dirname: the checkpoint folder (created if needed).
        filename: a fixed file name that replaces ignite's (MONAI's ``key_metric_filename``/``final_filename``).
        save_func: ``save_func(obj, binary_file)``; ``torch.save`` by default.
    """

    def __init__(
        self,
        dirname: str | os.PathLike,
        filename: str | None = None,
        save_func: Callable[[Any, Any], None] = torch.save,
    ) -> None:
        super().__init__(dirname=dirname, atomic=True, create_dir=True, require_empty=False)
        self.filename = filename
        self.save_func = save_func
        self._to_remove: list[str] = []
        self._remove_partial_files()

    def _remove_partial_files(self) -> None:
        if self.save_on_rank != idist.get_rank():
            return
        for name in os.listdir(self.dirname):
            if _PARTIAL.match(name):
                try:
                    os.unlink(os.path.join(self.dirname, name))
                    logger.info(f"removed {name}, left in {self.dirname} by an interrupted checkpoint write")
                except OSError:
                    pass

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if self.save_on_rank != idist.get_rank():  # as ignite's DiskSaver: one process writes
            return
        if self.filename is not None:
            filename = self.filename
        to_remove, self._to_remove = self._to_remove, []
        save_durably(checkpoint, Path(self.dirname) / filename, self.save_func)
        for old in to_remove:
            if old != filename:
                try:
                    (Path(self.dirname) / old).unlink()
                except FileNotFoundError:
                    pass

    def remove(self, filename: str) -> None:
        if self.save_on_rank != idist.get_rank():
            return
        self._to_remove.append(self.filename if self.filename is not None else filename)


class DurableCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` writing every file with :class:`DurableDiskSaver`: same arguments, same file
    names, same ``_key_metric_checkpoint`` (the best-model tracker that checkpoints save and resume restores).

    MONAI's saver writes in place (``atomic=False``) after ignite has deleted the previous file, so a kill, a
    crash or a full disk during a write leaves a truncated newest checkpoint, or none. This one writes a
    temporary file, fsyncs it, renames it over the destination, and only then deletes the checkpoint it replaces.
    A failed write raises :class:`CheckpointWriteError` (logged, then propagated, which stops the run with the
    message; ``--resume true`` continues from the previous checkpoint, which is intact), and the tracker's list of
    saved files is put back as it was, as if the save had not been attempted.

    Args:
        args: as for ``monai.handlers.CheckpointSaver``.
        save_func: ``save_func(obj, binary_file)``; ``torch.save`` by default.
        kwargs: as for ``monai.handlers.CheckpointSaver``.
    """

    def __init__(self, *args: Any, save_func: Callable[[Any, Any], None] = torch.save, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in self._checkpoints():
            fixed = getattr(checkpoint.save_handler, "filename", None)
            checkpoint.save_handler = DurableDiskSaver(self.save_dir, filename=fixed, save_func=save_func)

    def _checkpoints(self) -> list:
        return [c for c in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint) if c]

    def _guarded(self, method: Callable, engine: Any, *args: Any) -> None:
        saved = {id(c): list(c._saved) for c in self._checkpoints()}
        try:
            method(engine, *args)
        except CheckpointWriteError as err:
            for c in self._checkpoints():
                c._saved = saved[id(c)]
            self.logger.error(f"checkpoint not saved: {err}")
            raise

    def interval_completed(self, engine: Any) -> None:
        self._guarded(super().interval_completed, engine)
        self._remove_superseded_interval_files()

    def _remove_superseded_interval_files(self) -> None:
        """After a resume the saver does not know the checkpoints of the interrupted run (``checkpoint_epoch=2.pt``
        next to the new ``checkpoint_epoch=3.pt``): once a newer one is safely on disk, delete the older ones that
        ``n_saved`` would have deleted had the run not been interrupted."""
        c = self._interval_checkpoint
        if c is None or c.n_saved is None or not c._saved or idist.get_rank() != 0:
            return
        kept = {item.filename for item in c._saved}
        numbered = re.compile(r"(.*=)(\d+)(\.[A-Za-z0-9]+)")
        m = numbered.fullmatch(next(iter(kept)))
        if m is None:
            return
        pattern = re.compile(re.escape(m.group(1)) + r"(\d+)" + re.escape(m.group(3)))
        oldest_kept = min(int(k.group(1)) for k in map(pattern.fullmatch, kept) if k)
        for name in os.listdir(self.save_dir):
            found = pattern.fullmatch(name)
            if found and name not in kept and int(found.group(1)) < oldest_kept:
                try:
                    os.unlink(os.path.join(self.save_dir, name))
                    self.logger.info(f"removed {name}: superseded by {sorted(kept)[-1]}")
                except OSError:
                    pass

    def metrics_completed(self, engine: Any) -> None:
        self._guarded(super().metrics_completed, engine)

    def completed(self, engine: Any) -> None:
        self._guarded(super().completed, engine)

    def exception_raised(self, engine: Any, e: Exception) -> None:
        self._guarded(super().exception_raised, engine, e)


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
