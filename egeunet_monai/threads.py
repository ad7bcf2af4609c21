# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""A thread pool whose workers compute with their own, smaller intra-op thread count: what the inference runtime
(``egeunet_monai.inference.runtime``) and the split training batches (``egeunet_monai.accel.split``) use."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["ThreadPoolOwner", "intra_op_thread_pool"]


def _set_intra_op_threads(count: int) -> None:
    """Run in a new worker thread. With OpenMP the thread count is per thread, but a new thread takes the
    process-wide value on its first parallel operator; ``get_num_threads`` does that first, so the value set after
    it sticks (else each worker would start a full team of threads, all competing for the same cores)."""
    torch.get_num_threads()
    torch.set_num_threads(count)


def intra_op_thread_pool(workers: int, intra_op_threads: int, name: str) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads, all started now, each computing with ``intra_op_threads`` intra-op threads;
    the calling thread keeps its own count (``set_num_threads`` also sets the default of threads started later)."""
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(workers, name, initializer=_set_intra_op_threads, initargs=(intra_op_threads,))
    started = threading.Barrier(workers)  # start every worker now, while the value is theirs to take
    list(pool.map(lambda _: started.wait(), range(workers)))
    torch.set_num_threads(threads)
    return pool


class ThreadPoolOwner:
    """Mixin for an object that runs work on ``self.workers`` threads of ``self.intra_op_threads`` intra-op threads
    each: the pool starts on first use and is left out of copies and pickles (a thread pool can be neither copied
    nor pickled; a copy starts its own)."""

    workers: int = 1
    intra_op_threads: int = 1
    thread_name_prefix: str = "egeunet"
    _pool: ThreadPoolExecutor | None = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pool"] = None
        return state

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = intra_op_thread_pool(self.workers, self.intra_op_threads, self.thread_name_prefix)
        return self._pool
