"""Three checkpoint writes with ``DurableCheckpointSaver`` into a folder where the second one cannot fit: 200 KB (fits),
400 KB (refused by the kernel half way), then 120 KB (fits). What happened is returned as a dict for the test to check.

Imported by test_checkpoint_faults.py (a tmpfs of 512 KiB: the disk is full) and run *as a script* in a child process
there (``python _checkpoint_writer.py FOLDER LIMIT``), which first lowers its own ``RLIMIT_FSIZE`` to ``LIMIT`` bytes
so that writing past it fails with ``EFBIG`` ("File too large"): a real failed ``write()``, needing no privileges.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys

import torch
from ignite.engine import Engine

from egeunet_monai.handlers import CheckpointWriteError, DurableCheckpointSaver


def _errnos(err: BaseException | None) -> list[int]:
    """The errno of each exception in the chain of ``err`` (causes and contexts), as far as it goes."""
    codes, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno:
            codes.append(err.errno)
        err = err.__cause__ or err.__context__
    return codes


def write_three_checkpoints(folder: str) -> dict:
    model = torch.nn.Module()
    model.register_buffer("payload", torch.zeros(50_000))  # 200 KB
    saver = DurableCheckpointSaver(folder, {"model": model}, save_interval=1, n_saved=1)
    trainer = Engine(lambda e, b: None)
    trainer.state.epoch = 1
    saver.interval_completed(trainer)
    model.payload = torch.ones(100_000)  # 400 KB: does not fit
    trainer.state.epoch = 2
    error = None
    try:
        saver.interval_completed(trainer)
    except CheckpointWriteError as err:
        error = {"errno": err.errno, "message": str(err), "chain_errnos": _errnos(err)}
    after_failure = sorted(os.listdir(folder))
    kept = torch.load(os.path.join(folder, "model_epoch=1.pt"), weights_only=True)["payload"]
    model.payload = torch.full((30_000,), 2.0)  # 120 KB: fits, then the old one goes
    saver.interval_completed(trainer)
    return {"error": error, "after_failure": after_failure, "kept_is_epoch_1": bool(kept.eq(0).all()),
            "after_next_write": sorted(os.listdir(folder))}


if __name__ == "__main__":
    folder, limit = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead of failing the write
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    print(json.dumps(write_three_checkpoints(folder)))
