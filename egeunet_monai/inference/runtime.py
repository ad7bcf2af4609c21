# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The fastest exact way to run a weights file: ONNX Runtime, else TorchScript, else the PyTorch network.

``runtime = load_runtime("model.pt")`` gives a module with ``logits = runtime(images)`` (N x 3 x 256 x 256 float32
in [0, 255], as the bundle feeds the network) that says which runtime it is and why (``runtime.description``, also
logged once at INFO level):

- ``.pt``/``.pth`` (this project's state dict, a MONAI ``CheckpointSaver`` checkpoint, or an original EGE-UNet
  checkpoint with its own key names) and ``.ts`` (TorchScript, as the bundle's ``ckpt_export`` writes it): exported
  to ONNX with a dynamic batch axis by :func:`~egeunet_monai.export.export_onnx` **once per weights file**, cached
  under the file's sha256 in :func:`onnx_cache_dir`, and run with ONNX Runtime. Without ONNX Runtime (the ``onnx``
  extra), or if the export fails: TorchScript (the ``.ts`` itself, or the scripted network), and if that fails too
  the PyTorch network (eager).
- ``.onnx`` (e.g. the edge exports of ``scripts/export_edge.py``, ``model_int8.onnx``): run as it is.

``runtime="eager"`` forces the PyTorch network (for debugging, or a GPU), ``"torchscript"``/``"onnxruntime"``
require that runtime. The ONNX Runtime path gives probabilities within 1e-4 of the eager network in float32
(``tests/inference/test_runtime.py``; measured on real images: see there).

Why ONNX Runtime, and with which options (``scripts/benchmarks/network_paths.py``, 2-core Xeon shared with other
jobs, so CPU time is the steadier figure; images/s of CPU time, real images, 1 intra-op thread): at batch 8 ONNX
Runtime 92, ``optimize_for_inference`` 95, TorchScript 64, eager 51; at batch 1 ONNX Runtime 95,
``optimize_for_inference`` 47, TorchScript 52, eager 31. A second thread cost CPU time on every path; in wall time
it helped ONNX Runtime's single calls (median 33 against 18 images/s at batch 8, with a wide spread), while
PyTorch's OpenMP threads collapsed to a few images/s (they wait for a busy core by spinning). ONNX Runtime's own
spinning cost 1.8x at 2 threads, so sessions are made with it off; the thread count is ONNX Runtime's default (one
per core) unless given, and the batch pipeline asks for one and gives the other cores to decoding. The graph
optimisation level made no measurable difference (basic, extended, all: within 5%).
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from egeunet_monai.inference.ort_session import (
    ONNX_CACHE_ENV,
    ONNX_INSTALL_HINT,
    OPSET,
    RuntimeDescription,
    cached_onnx_path,
    file_sha256,
    onnx_cache_dir,
    onnx_reason,
    session_options,
)
from egeunet_monai.inference.weights_file import check_weights_file, not_an_onnx_model
from egeunet_monai.threads import ThreadPoolOwner

__all__ = [
    "ONNX_CACHE_ENV",
    "RUNTIMES",
    "InferenceRuntime",
    "cached_onnx_export",
    "file_sha256",
    "load_eager_network",
    "load_runtime",
    "onnx_cache_dir",
]

RUNTIMES = ("auto", "onnxruntime", "torchscript", "eager")


def _first_sentence(err: BaseException) -> str:
    # PyTorch's messages go on with advice ("internal miniz error", "re-run with weights_only=False"): not ours
    return str(err).split("WeightsUnpickler error: ")[-1].split(". ")[0].split("\n")[0].rstrip(".")


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated in recent PyTorch: nothing a user of the fall-back can act on
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as err:
        raise ValueError(f"{path} is not a TorchScript archive (torch.jit.load: {_first_sentence(err)}).") from err


def _state_dict_of(path: Path) -> Mapping[str, torch.Tensor]:
    if path.suffix.lower() == ".ts":
        return _load_torchscript(path).state_dict()
    try:
        # weights_only=True is deliberate (a checkpoint runs no code), so PyTorch's advice to drop it is left out
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        with open(path, "rb") as f:
            pickle = f.read(1) == b"\x80"  # torch.save writes a zip archive, or a pickle (protocol 2) before 1.6
        if not (pickle or zipfile.is_zipfile(path)):
            raise ValueError(f"{path}: cannot be read, it is not a PyTorch checkpoint (neither a zip archive nor a "
                             "pickle).") from err
        raise ValueError(f"{path}: cannot be read as a PyTorch checkpoint ({_first_sentence(err)}).") from err
    # MONAI's CheckpointSaver writes {"model": state_dict, "optimizer": ..., ...}
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}.")
    return obj


def load_eager_network(weights: str | os.PathLike, network: nn.Module | None = None) -> nn.Module:
    """The PyTorch network with the weights of a ``.pt``/``.pth``/``.ts`` file, on CPU in eval mode.

    Args:
        weights: this project's state dict or ``CheckpointSaver`` checkpoint, an original EGE-UNet checkpoint
            (original key names, or its ``{"model_state_dict": ...}``), or a TorchScript file of an EGEUNet.
        network: the network to load them into (e.g. the bundle config's ``network_def``); default ``EGEUNet()``.

    Raises:
        ValueError: the file is not a checkpoint of this network (the message names the file).
    """
    from egeunet_monai.networks import EGEUNet, OriginalCheckpointError, load_original_state_dict

    path = check_weights_file(weights)
    if path.suffix.lower() == ".onnx":
        raise ValueError(f"{path}: an ONNX file runs with ONNX Runtime only; there is no PyTorch network in it.")
    net = (network if network is not None else EGEUNet()).cpu()
    state = _state_dict_of(path)
    ours = set(net.state_dict())
    if "model_state_dict" in state or not ours & set(state):
        try:  # the original implementation's key names
            load_original_state_dict(net, state)
        except OriginalCheckpointError as err:
            raise ValueError(f"{path} is neither a checkpoint of this network nor an original one: {err}") from err
    else:
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{path} does not match this network: {err}") from err
    return net.eval()


def cached_onnx_export(
    weights: str | os.PathLike,
    network: nn.Module | None = None,
    image_size: Sequence[int] = (256, 256),
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The ONNX export of ``weights`` (dynamic batch), made on first use and then read from the cache.

    The file is :func:`~egeunet_monai.inference.ort_session.cached_onnx_path` (the weights file's sha256, the image
    size and the opset), where ``predict`` finds it without importing PyTorch. It is written to a temporary file in the cache folder and
    renamed into place: processes exporting at the same time each write a whole file, and a reader never sees a
    half-written one.

    Args:
        weights: a ``.pt``/``.pth``/``.ts`` file (see :func:`load_eager_network`).
        network: the network the weights belong to; default ``EGEUNet()``.
        image_size: (height, width) of the exported graph.
        cache_dir: default :func:`onnx_cache_dir`.
    """
    from egeunet_monai.export import export_onnx

    path = check_weights_file(weights)
    height, width = (int(s) for s in image_size)
    target = cached_onnx_path(path, (height, width), cache_dir)
    if target.is_file():
        return target
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    net = load_eager_network(path, network)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp.onnx", dir=folder)
    os.close(fd)
    try:
        export_onnx(net, tmp, opset=OPSET, image_size=(height, width), dynamic_batch=True, check=True)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


class InferenceRuntime(RuntimeDescription, ThreadPoolOwner, nn.Module):
    """``logits = runtime(images)`` with the runtime :func:`load_runtime` chose: an ONNX Runtime session, a
    TorchScript module or the PyTorch network, all in eval mode and without gradients; :meth:`logits` runs it on
    NumPy arrays, as :class:`~egeunet_monai.inference.ort_session.OnnxSession` does.

    Args:
        network: the module that computes the logits.
        name: ``"onnxruntime"``, ``"torchscript"`` or ``"eager"``.
        reason: why this runtime, in words.
        weights: the weights file it was made from.
        threads: intra-op threads; PyTorch modules then run on a thread of their own with this count (PyTorch's
            count is per thread), ONNX Runtime sessions are made with it. ``None``: the library's default.
        device: where the network computes (where :meth:`logits` puts its input).
    """

    def __init__(self, network: nn.Module, name: str, reason: str, weights: str, threads: int | None = None,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.device = torch.device(device)
        self.network = network.eval()
        self.name = name
        self.reason = reason
        self.weights = weights
        self.threads = threads
        self.workers = 1
        self.intra_op_threads = int(threads or 1)
        self.thread_name_prefix = "egeunet-infer"
        self._pool = None

    def train(self, mode: bool = True) -> InferenceRuntime:
        return super().train(False)  # an inference runtime has no training mode (the bundle's engines call it)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.network(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.name == "onnxruntime" or not self.threads:
            return self._logits(x)
        return self._thread_pool().submit(self._logits, x).result()

    def logits(self, images: np.ndarray) -> np.ndarray:
        """The logits of N x 3 x h x w float32 images, as a float32 array on the CPU."""
        return self(torch.from_numpy(images).to(self.device)).float().cpu().numpy()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weights={self.weights!r}, threads={self.threads}"


def _onnx_session(path: Path, threads: int | None) -> nn.Module:
    from egeunet_monai.export import load_onnx_predictor

    return load_onnx_predictor(path, providers=["CPUExecutionProvider"], options=session_options(threads))


def load_runtime(
    weights: str | os.PathLike,
    runtime: str = "auto",
    threads: int | None = None,
    device: str | torch.device = "cpu",
    image_size: Sequence[int] = (256, 256),
    cache_dir: str | os.PathLike | None = None,
    network: nn.Module | None = None,
) -> InferenceRuntime:
    """The fastest runtime for ``weights`` that is installed (see the module docstring), or the one asked for.

    Args:
        weights: a ``.pt``/``.pth``/``.ts``/``.onnx`` file.
        runtime: ``"auto"`` (ONNX Runtime, else TorchScript, else eager), or one of ``"onnxruntime"``,
            ``"torchscript"``, ``"eager"`` to require it.
        threads: intra-op threads (default: the library's own choice).
        device: where PyTorch runtimes compute; ONNX Runtime runs on CPU, so ``"auto"`` on another device is eager.
        image_size: (height, width) the network runs at (ONNX exports fix it).
        cache_dir: where ONNX exports are cached; default :func:`onnx_cache_dir`.
        network: the network the weights belong to; default ``EGEUNet()``.

    Raises:
        ValueError: unknown ``runtime``, an impossible pairing (an ``.onnx`` file without ONNX Runtime), or weights
            that do not fit the network.
        ImportError: ``runtime="onnxruntime"`` (or an ``.onnx`` file) without ONNX Runtime installed.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}.")
    path = check_weights_file(weights)
    device = torch.device(device)
    suffix = path.suffix.lower()
    if suffix == ".onnx" and runtime not in ("auto", "onnxruntime"):
        raise ValueError(f"{path}: an ONNX file runs with ONNX Runtime only, not {runtime}.")
    if runtime == "auto" and device.type != "cpu" and suffix != ".onnx":
        runtime, why_torch = "eager", f"ONNX Runtime runs on CPU here; on {device} the PyTorch network does"
    else:
        why_torch = ""

    if runtime in ("auto", "onnxruntime"):
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            if runtime == "onnxruntime" or suffix == ".onnx":
                raise ImportError(f"{path}: ONNX Runtime is not installed: `{ONNX_INSTALL_HINT}`.") from err
            why_torch = f"ONNX Runtime is not installed: `{ONNX_INSTALL_HINT}` for the fastest path"
        else:
            try:
                onnx_file = path if suffix == ".onnx" else cached_onnx_export(path, network, image_size, cache_dir)
                net = _onnx_session(onnx_file, threads)
            except Exception as err:
                if suffix == ".onnx":
                    raise not_an_onnx_model(path, err) from err
                if runtime == "onnxruntime":
                    raise
                why_torch = f"the ONNX export could not be made or run ({type(err).__name__}: {err})"
            else:
                return InferenceRuntime(net, "onnxruntime", onnx_reason(path, onnx_file), str(path), threads).announce()

    if runtime in ("auto", "torchscript"):
        try:
            if suffix == ".ts":
                net = _load_torchscript(path).to(device)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)  # as in _load_torchscript
                    net = torch.jit.script(load_eager_network(path, network)).to(device)
        except Exception as err:
            if runtime == "torchscript":
                raise
            why_torch += f"; TorchScript failed ({type(err).__name__}: {err})"
        else:
            reason = why_torch or "as asked"
            return InferenceRuntime(net, "torchscript", reason, str(path), threads, device).announce()

    net = load_eager_network(path, network).to(device)
    return InferenceRuntime(net, "eager", why_torch.lstrip("; ") or "as asked", str(path), threads, device).announce()
