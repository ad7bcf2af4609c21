# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The ONNX export cache and ONNX Runtime sessions on NumPy arrays, without PyTorch.

:func:`~egeunet_monai.inference.runtime.load_runtime` exports a weights file to ONNX once (that needs PyTorch) and
caches it under the file's sha256 (:func:`cached_onnx_path`). Once the export is cached, ``egeunet-monai predict``
runs it with :func:`open_cached_session` (through :func:`open_runtime`) and never imports PyTorch: its import alone took 1-2 s of a 7-10 s run on
300 photographs (``python -X importtime``, 2-core EPYC).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "ONNX_CACHE_ENV",
    "ONNX_INSTALL_HINT",
    "OPSET",
    "OnnxSession",
    "RuntimeDescription",
    "cached_onnx_path",
    "file_sha256",
    "onnx_cache_dir",
    "onnx_reason",
    "open_cached_session",
    "open_runtime",
    "session_options",
]

ONNX_CACHE_ENV = "EGEUNET_ONNX_CACHE"
ONNX_INSTALL_HINT = "pip install 'egeunet-monai[onnx]'"
OPSET = 17
logger = logging.getLogger("egeunet_monai.inference.runtime")  # one logger for every runtime's announcement


def onnx_cache_dir() -> Path:
    """Where exported ONNX models are kept: ``$EGEUNET_ONNX_CACHE``, else ``~/.cache/egeunet-monai/onnx``."""
    return Path(os.environ.get(ONNX_CACHE_ENV) or Path.home() / ".cache" / "egeunet-monai" / "onnx")


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_onnx_path(
    weights: str | os.PathLike, image_size: Sequence[int] = (256, 256), cache_dir: str | os.PathLike | None = None
) -> Path:
    """Where the ONNX export of ``weights`` is (or will be) cached: named by the weights file's sha256, the image
    size and the opset, so changed weights get a new export and any copy of the same weights shares one."""
    height, width = (int(s) for s in image_size)
    folder = Path(cache_dir) if cache_dir is not None else onnx_cache_dir()
    return folder / f"{file_sha256(weights)}-{height}x{width}-opset{OPSET}.onnx"


def onnx_reason(weights: Path, onnx_file: Path) -> str:
    """Why ONNX Runtime runs ``weights``, in words (the runtime's ``reason``)."""
    why = "as given" if weights.suffix.lower() == ".onnx" else f"exported once and cached as {onnx_file}"
    return f"fastest measured; {why}"


def session_options(threads: int | None = None):
    """The ``onnxruntime.SessionOptions`` of every session the runtimes make (measured in runtime.py's docstring)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
    # spinning threads wait for work by burning a core: on shared cores measured 1.8x slower at 2 threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: e.g. a float16 model's unfoldable nodes warn once per node
    return options


class RuntimeDescription:
    """What a runtime says about itself: ``name``, ``reason``, ``weights``, ``threads`` and :attr:`description`."""

    name: str
    reason: str
    weights: str
    threads: int | None

    @property
    def description(self) -> str:
        """One line: which runtime runs which weights, and why."""
        threads = f", {self.threads} thread{'s' if self.threads != 1 else ''}" if self.threads else ""
        return f"inference runtime: {self.name}{threads} for {self.weights} ({self.reason})"

    def announce(self):
        """Log :attr:`description` at INFO level; returns ``self``."""
        logger.info(self.description)
        return self


class OnnxSession(RuntimeDescription):
    """An ONNX Runtime session on the CPU, run on NumPy arrays: ``logits = session.logits(images)`` (N x 3 x h x w
    float32 in [0, 255]; N x 1 x h x w float32 out), the call :class:`~egeunet_monai.inference.batch.BatchPredictor`
    makes of every runtime.

    Args:
        path: the ``.onnx`` file to run.
        weights: the weights file it was made from (``path`` itself for an ``.onnx`` file).
        threads: intra-op threads (default: ONNX Runtime's own, one per core).
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, weights: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.weights = os.fspath(weights)
        self.threads = threads
        self.reason = onnx_reason(Path(weights), self.path)
        self.session = ort.InferenceSession(os.fspath(path), session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(images, np.float32)})[0]


def open_cached_session(
    weights: str | os.PathLike,
    threads: int | None = None,
    image_size: Sequence[int] = (256, 256),
    cache_dir: str | os.PathLike | None = None,
) -> OnnxSession | None:
    """The ONNX Runtime session ``load_runtime(weights)`` would run, when it can be had without PyTorch: an
    ``.onnx`` file, or a ``.pt``/``.pth``/``.ts`` file whose export is cached, with ONNX Runtime installed.
    ``None`` otherwise: then ``load_runtime`` exports, or falls back, and says why."""
    path = Path(weights)
    suffix = path.suffix.lower()
    if suffix not in (".pt", ".pth", ".ts", ".onnx") or not path.is_file():
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    onnx_file = path if suffix == ".onnx" else cached_onnx_path(path, image_size, cache_dir)
    if not onnx_file.is_file():
        return None
    if suffix == ".onnx":  # the user's file: its errors are theirs to see, as load_runtime raises them
        return OnnxSession(onnx_file, path, threads).announce()
    try:
        return OnnxSession(onnx_file, path, threads).announce()
    except Exception:  # a cached export that does not load: load_runtime makes it again or falls back, and says why
        return None


def open_runtime(
    weights: str | os.PathLike,
    runtime: str = "auto",
    threads: int | None = None,
    device: object = "cpu",
    image_size: Sequence[int] = (256, 256),
):
    """:func:`~egeunet_monai.inference.runtime.load_runtime`'s choice for ``weights``, as
    :class:`~egeunet_monai.inference.batch.BatchPredictor` runs it: the cached ONNX Runtime session without
    importing PyTorch when there is one (:func:`open_cached_session`; ONNX Runtime runs on the CPU), else
    ``load_runtime`` itself (which exports the first time, or falls back)."""
    if runtime in ("auto", "onnxruntime") and str(device).split(":")[0] == "cpu":
        session = open_cached_session(weights, threads, image_size)
        if session is not None:
            return session
    from egeunet_monai.inference.runtime import load_runtime

    return load_runtime(weights, runtime, threads=threads, device=device, image_size=image_size)
