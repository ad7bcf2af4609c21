# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Build and load the C++ CPU kernels of ``csrc/`` on first use.

Three sources, one library (``torch.ops.egeunet_cpu``):

- ``fused_cpu.cpp``, the network's operators under :mod:`fused_ops`: channel LayerNorm, 3x3 depth-wise convolution
  at any dilation, 2x2 max-pooling (forward and backward), GroupNorm's backward. One or two passes over cache-sized
  blocks where the PyTorch compositions make one pass over the whole tensor per operator: 1.8-7x faster each on one
  thread of a 2-core EPYC, GroupNorm 0.97-1.2x, no clear gain (docs/benchmarks.md). PyTorch has no fused CPU kernel
  for a LayerNorm over the channel axis of N x C x H x W or for dilated depth-wise convolutions (oneDNN runs those on
  a slow reference path).
- ``loss_cpu.cpp``, the training loss (:mod:`egeunet_monai.losses.dice_ce_kernel`): Dice + binary cross-entropy on
  logits in one pass forward and one backward per output, 2.7-2.8x MONAI's operators on the six outputs.
- ``augment_cpu.cpp``, the trainer's batch augmentation (:class:`~egeunet_monai.transforms.RandFlipRotateBatch`):
  flips and rotation of images and masks in one pass, about 3x the PyTorch operators.

As MONAI does for its own C++ extensions (``monai._extensions``), the sources ship with the package and
``torch.utils.cpp_extension`` compiles them once (about 30-60 s; cached under ``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``). Without a C++ compiler or ninja, or with ``EGEUNET_CPU_KERNELS=0``, each caller runs
its PyTorch (or MONAI) operators instead (one warning says why).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

__all__ = ["available", "enabled", "runs_for", "set_enabled"]

CSRC = Path(__file__).parent / "csrc"
# the network's operators, the training loss, the training augmentation: one library, torch.ops.egeunet_cpu
SOURCES = [CSRC / "fused_cpu.cpp", CSRC / "loss_cpu.cpp", CSRC / "augment_cpu.cpp"]
_lock = threading.Lock()
_state: dict[str, object] = {"loaded": None, "enabled": os.environ.get("EGEUNET_CPU_KERNELS", "1").lower() not in ("0", "false", "no", "off")}
logger = logging.getLogger(__name__)


def _build_flags() -> list[str]:
    # vector instructions only where PyTorch itself found them on this CPU; the build is named after them (and the
    # torch version: the C++ ABI changes between releases), so a cache shared between machines never mixes builds
    capability = torch.backends.cpu.get_cpu_capability()
    # the kernels split their loops with OpenMP pragmas (run by PyTorch's own OpenMP library): without -fopenmp they
    # would run on one thread
    flags = ["-O3"] + (["-fopenmp"] if torch.backends.openmp.is_available() else [])
    if capability in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    # torch rebuilds when a source or a flag changes, not a header: the headers' digest as a flag covers them
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(CSRC.glob("*.h")))).hexdigest()[:12]
    return flags + [f"-DEGEUNET_HEADERS_{digest}"]


def _extension_name() -> str:
    version = re.sub(r"\W", "_", torch.__version__)
    return f"egeunet_cpu_{version}_{torch.backends.cpu.get_cpu_capability().lower()}"


def _build_directory(name: str) -> Path:
    """Where torch.utils.cpp_extension builds it (its own default place), made here so that a stale lock can go."""
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / "lock"
    # a build interrupted (Ctrl-C, a killed job) leaves its lock, and torch would wait on it forever; a build
    # takes well under a minute, so a lock older than ten minutes belongs to no running build
    if lock.exists() and time.time() - lock.stat().st_mtime > 600:
        lock.unlink(missing_ok=True)
    return directory


def available() -> bool:
    """Whether the kernels are enabled and loaded into ``torch.ops.egeunet_cpu``, compiling them the first time;
    False if disabled or impossible."""
    if not _state["enabled"]:
        return False
    if _state["loaded"] is not None:
        return bool(_state["loaded"])
    with _lock:  # two SplitBatchIteration threads may get here at once
        if _state["loaded"] is None:
            try:
                from torch.utils.cpp_extension import load as build

                logger.info("egeunet_monai: building the C++ CPU kernels (once, about half a minute)")
                name = _extension_name()
                build(
                    name,
                    sources=[str(p) for p in SOURCES],
                    extra_cflags=_build_flags(),
                    build_directory=str(_build_directory(name)),
                    is_python_module=False,
                )
                _state["loaded"] = True
            except Exception as e:  # no compiler, no ninja, read-only cache: the PyTorch compositions still work
                warnings.warn(
                    f"egeunet_monai: could not build the C++ CPU kernels ({type(e).__name__}: {str(e)[:300]}); "
                    "using the slower PyTorch operators. Set EGEUNET_CPU_KERNELS=0 to skip the attempt.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                _state["loaded"] = False
    return bool(_state["loaded"])


def runs_for(x: torch.Tensor) -> bool:
    """Whether the kernels compute for ``x``: a float32/float64 CPU tensor, the kernels enabled and loaded."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and available()


def set_enabled(enabled: bool) -> bool:
    """Turn the kernels on or off for this process (tests compare both paths); returns the previous setting."""
    previous = bool(_state["enabled"])
    _state["enabled"] = bool(enabled)
    return previous


@contextmanager
def enabled(flag: bool) -> Iterator[None]:
    """The kernels on (``True``) or off inside the ``with`` block, the previous setting restored after it."""
    previous = set_enabled(flag)
    try:
        yield
    finally:
        set_enabled(previous)
