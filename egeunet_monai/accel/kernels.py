# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Build and load the C++ CPU kernels of ``csrc/`` on first use.

Three sources, one library (``torch.ops.egeunet_cpu``):

- ``network_cpu.cpp``, the network's operators (:mod:`egeunet_monai.accel.network`): channel LayerNorm, 3x3
  depth-wise convolution at any dilation, 2x2 max-pooling, forward and backward. One or two passes over cache-sized
  blocks where the PyTorch operators make one pass over the whole tensor per operator. PyTorch has no CPU kernel for
  a LayerNorm over the channel axis of N x C x H x W, and oneDNN runs dilated depth-wise convolutions on a slow
  reference path.
- ``loss_cpu.cpp``, the training loss (:mod:`egeunet_monai.accel.loss`): Dice + binary cross-entropy on logits in
  one pass forward and one backward per output.
- ``augment_cpu.cpp``, the trainer's batch augmentation (:mod:`egeunet_monai.accel.augment`): flips and rotation
  of images and masks in one pass.

As MONAI does for its own C++ extensions (``monai._extensions``), the sources ship with the package and
``torch.utils.cpp_extension`` compiles them once (about 30-60 s) into ``TORCH_EXTENSIONS_DIR`` (by default
``~/.cache/torch_extensions``), in a folder named by a digest of what the library is built from
(:func:`library_path`): the sources' contents, the compile flags, the torch version and build, the CPU's vector
instructions and the Python ABI. Checkouts with the same sources share one build; changed sources get their own.
Each build runs in a temporary folder of its own and the finished library is renamed into place, so processes
building or loading at once never see a half-written file. Without a C++ compiler or ninja, :func:`load` warns once
and returns False, and :func:`egeunet_monai.accel.accelerate` leaves everything as it is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sysconfig
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

__all__ = ["can_run", "library_path", "load"]

CSRC = Path(__file__).parent / "csrc"
# the network's operators, the training loss, the training augmentation: one library, torch.ops.egeunet_cpu
SOURCES = [CSRC / "network_cpu.cpp", CSRC / "loss_cpu.cpp", CSRC / "augment_cpu.cpp"]
# a build takes about a minute: a temporary build folder older than this belongs to an interrupted build
STALE_BUILD_S = 3600
_lock = threading.Lock()
_state: dict[str, bool | None] = {"loaded": None}
logger = logging.getLogger(__name__)


def _build_flags() -> list[str]:
    flags = ["-O3"]
    # the kernels split their loops with OpenMP pragmas (run by PyTorch's own OpenMP library): without -fopenmp they
    # would run on one thread
    if torch.backends.openmp.is_available():
        flags.append("-fopenmp")
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):  # where PyTorch itself found them here
        flags += ["-mavx2", "-mfma"]
    return flags


def _extension_name() -> str:
    """``egeunet_cpu_<digest>`` of everything the library is built from, and nothing of where it lies."""
    digest = hashlib.sha256()
    for part in (
        torch.__version__,
        torch.version.git_version,  # two torch builds of one version (a CPU and a CUDA wheel) differ in ABI
        torch.backends.cpu.get_cpu_capability(),
        sysconfig.get_config_var("SOABI") or "",  # the library links libtorch_python: one build per Python ABI
        os.environ.get("CXX", ""),  # torch.utils.cpp_extension compiles with $CXX where set
        *_build_flags(),
    ):
        digest.update(part.encode() + b"\0")
    for source in sorted([*CSRC.glob("*.cpp"), *CSRC.glob("*.h")]):
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    return f"egeunet_cpu_{digest.hexdigest()[:16]}"


def library_path() -> Path:
    """Where the finished library of these sources lies on this machine (or will, once built):
    ``$TORCH_EXTENSIONS_DIR/egeunet_cpu_<digest>/egeunet_cpu_<digest>.so``."""
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    name = _extension_name()
    return root / name / f"{name}.so"


def _build(target: Path) -> None:
    """Compile and load the library in a temporary folder next to ``target``, then rename it to ``target``.

    Two processes may build at once: each in its own folder, and the second rename replaces the first's identical
    file (a process that loaded that one keeps it open). A loader finds either no file or a complete one.
    """
    from torch.utils.cpp_extension import load

    target.parent.mkdir(parents=True, exist_ok=True)
    for old in target.parent.glob("tmp*"):  # left by an interrupted build (Ctrl-C, a killed job)
        try:
            if time.time() - old.stat().st_mtime > STALE_BUILD_S:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:  # another process removed it first
            pass
    logger.info("egeunet_monai: building the C++ CPU kernels (once, about half a minute) into %s", target.parent)
    folder = Path(tempfile.mkdtemp(dir=target.parent))
    try:
        name = target.stem
        sources = [str(p) for p in SOURCES]
        load(name, sources, extra_cflags=_build_flags(), build_directory=str(folder), is_python_module=False)
        os.replace(folder / f"{name}.so", target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load() -> bool:
    """Whether the kernels are loaded into ``torch.ops.egeunet_cpu``, compiling them the first time; False (with one
    warning saying why) where they cannot be built."""
    if _state["loaded"] is not None:
        return bool(_state["loaded"])
    with _lock:
        if _state["loaded"] is None:
            try:
                target = library_path()
                if target.is_file():
                    torch.ops.load_library(str(target))
                else:
                    _build(target)
                _state["loaded"] = True
            except Exception as e:  # no compiler, no ninja, read-only cache: the PyTorch operators still work
                warnings.warn(
                    f"egeunet_monai.accel: could not build the C++ CPU kernels ({type(e).__name__}: {str(e)[:300]}); "
                    "training runs the PyTorch operators (slower).",
                    RuntimeWarning,
                    stacklevel=2,
                )
                _state["loaded"] = False
    return bool(_state["loaded"])


def can_run(x: torch.Tensor) -> bool:
    """Whether the kernels compute for ``x``: a float32/float64 CPU tensor in eager mode (not traced, scripted or under
    CPU autocast, whose per-operator casts would not reach inside a hand-written backward), the kernels loaded."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and not torch.jit.is_scripting()
        and not torch.jit.is_tracing()
        and not torch.is_autocast_enabled("cpu")
        and load()
    )
