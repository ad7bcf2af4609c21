# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Helpers for tests that start a real server (``mlflow server``, ``egeunet-monai serve``) on 127.0.0.1 in a
process group of its own: a free port, waiting until it answers, and stopping the whole group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

__all__ = ["free_port", "stop_process_group", "wait_until_answering"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answering(url: str, proc: subprocess.Popen, log: Path, timeout_s: float, what: str) -> None:
    """Poll ``url`` until it answers 200; fail the test, with the server's log, if ``proc`` exits or
    ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not answer within {timeout_s} s:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


def stop_process_group(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM to the process group of ``proc`` (started with ``start_new_session=True``), then SIGKILL."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)
