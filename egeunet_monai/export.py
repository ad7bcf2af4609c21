# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""ONNX export of EGE-UNet and ONNX Runtime inference as a drop-in, torch-in/torch-out module.

Export once, then run anywhere ONNX Runtime runs (no PyTorch needed there)::

    from egeunet_monai.export import export_onnx, load_onnx_predictor
    export_onnx(net, "model.onnx")                 # dynamic batch, 256x256, opset 17
    predictor = load_onnx_predictor("model.onnx")  # a torch.nn.Module: logits = predictor(images)

In the bundle: ``python -m monai.bundle run --config_file configs/inference.json --onnx_path model.onnx ...``.

The exported graph has a **dynamic batch** and the **fixed height and width** it was exported at (the gates of
GHPA are resized to the feature maps when exporting; ONNX Runtime folds them into constants when it loads the
model). Its input is ``image`` (N x C x H x W float32, values in [0, 255] as the bundle feeds the network), its
output ``logits`` (N x out_channels x H x W).
"""

from __future__ import annotations

import copy
import os
import sys
import warnings
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["OnnxPredictor", "export_onnx", "load_onnx_predictor", "onnx_converter_kwargs", "onnx_session"]

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def onnx_converter_kwargs(opset: int = 17, dynamic_batch: bool = True) -> dict:
    """The arguments of ``torch.onnx.export`` (TorchScript-based exporter) that :func:`export_onnx` uses, also given
    by ``egeunet-monai export --onnx`` to ``monai.bundle onnx_export --use_trace True --converter_kwargs``, so that
    both write the same graph: input ``image`` and output ``logits`` with a dynamic batch (``dynamic_batch``)."""
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    return dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=int(opset), dynamo=False,
                dynamic_axes=dynamic_axes)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    opset: int = 17,
    image_size: Sequence[int] = (256, 256),
    dynamic_batch: bool = True,
    dynamo: bool = False,
    check: bool = True,
    atol: float = 1e-4,
) -> str:
    """Export ``model`` (an :class:`~egeunet_monai.networks.nets.EGEUNet`, in eval mode) to an ONNX file.

    Args:
        model: the network; it is not changed (a CPU copy in eval mode is exported).
        path: the ``.onnx`` file to write.
        opset: ONNX opset version (17 and 18 are tested, tests/integration/test_onnx_opsets.py).
        image_size: (height, width) of the exported graph, divisible by 32; the bundle works at 256x256.
        dynamic_batch: let the batch size vary (otherwise it is fixed at 2).
        dynamo: use the ``torch.export``-based exporter instead of the TorchScript-based one; both give the same
            graph numerically, the default one is several times faster to run.
        check: run ONNX Runtime (if installed) on a random batch and compare with PyTorch.
        atol: the largest absolute difference of the logits that ``check`` accepts (float32 rounding of a
            different operation order, typically about 1e-5).

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: ``image_size`` not divisible by 32, or ``check`` found a difference above ``atol``.
    """
    height, width = (int(s) for s in image_size)
    divisor = int(getattr(model, "size_divisor", 32))
    if height % divisor or width % divisor:
        raise ValueError(f"image_size must be divisible by {divisor}, got {height}x{width}.")
    net = copy.deepcopy(model).cpu().float().eval()
    in_channels = int(getattr(net, "in_channels", 3))
    example = torch.rand(2, in_channels, height, width) * 255
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with warnings.catch_warnings():
        # the TorchScript exporter warns that H and W become constants: exactly what is intended here
        warnings.simplefilter("ignore")
        if dynamo:
            dynamic_shapes = {"x": {0: torch.export.Dim("batch")}} if dynamic_batch else None
            torch.onnx.export(net, (example,), path, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              opset_version=opset, dynamo=True, dynamic_shapes=dynamic_shapes, external_data=False)
        else:
            torch.onnx.export(net, (example,), path, **onnx_converter_kwargs(opset, dynamic_batch),
                              do_constant_folding=True)
    if check:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return path
        probe = torch.rand(3 if dynamic_batch else 2, in_channels, height, width) * 255
        with torch.no_grad():
            expected = net(probe)
        got = load_onnx_predictor(path, threads=1)(probe)
        diff = (got - expected).abs().max().item()
        if not diff <= atol:
            raise ValueError(f"ONNX Runtime output differs from PyTorch by {diff:.3g} > {atol:g} ({path}).")
    return path


def onnx_session(
    path: str | os.PathLike, threads: int | None = None, providers: Sequence[str] | None = None, options=None
):
    """An ``onnxruntime.InferenceSession`` for ``path`` with all graph optimisations on.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: ONNX Runtime's choice, one per physical core).
        providers: execution providers (default: CUDA first when available, then CPU).
        options: an ``onnxruntime.SessionOptions`` to use instead of the above (``threads`` is then ignored).
    """
    try:
        import onnxruntime as ort
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ONNX Runtime is not installed: pip install 'egeunet-monai[onnx]' (or pip install onnxruntime)."
        ) from err
    if options is None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(os.fspath(path), options, providers=list(providers))


class OnnxPredictor(nn.Module):
    """Runs an exported EGE-UNet with ONNX Runtime behind the interface of the PyTorch network in eval mode:
    ``logits = predictor(images)`` with ``images`` a float tensor N x C x H x W on any device; the logits come
    back as a float32 tensor on the same device. A :class:`monai.data.MetaTensor` input gives a MetaTensor output
    carrying the input's metadata, as the PyTorch network does (so the bundle's ``Invertd``/``SaveImaged`` work).

    It has no parameters; ``train()`` is accepted but the graph is always the eval-mode network.

    Args:
        path: the ``.onnx`` file written by :func:`export_onnx`.
        threads: intra-op threads for ONNX Runtime (default: its own choice).
        providers: ONNX Runtime execution providers (default: CUDA if available, then CPU).
        options: an ``onnxruntime.SessionOptions`` instead of the default ones.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        options=None,
    ) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.session = onnx_session(self.path, threads=threads, providers=providers, options=options)
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)
        self.output_name = self.session.get_outputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a MetaTensor comes only from MONAI's transforms, so MONAI is loaded then; the predict command never loads it
        monai_data = sys.modules.get("monai.data")
        is_meta = monai_data is not None and isinstance(x, monai_data.MetaTensor)
        plain = x.as_tensor() if is_meta else x
        expected = self.input_shape
        if plain.dim() != 4 or any(
            isinstance(e, int) and e != s for e, s in zip(expected[1:], plain.shape[1:])
        ):
            raise ValueError(
                f"{self.path} takes input of shape {expected} (N may vary; H and W are fixed when exporting), "
                f"got {list(plain.shape)}."
            )
        array = plain.detach().to("cpu", torch.float32).contiguous().numpy()
        out = torch.from_numpy(self.session.run([self.output_name], {self.input_name: array})[0])
        out = out.to(plain.device)
        if is_meta:
            out = monai_data.MetaTensor(out)
            out.copy_meta_from(x)
        return out

    def extra_repr(self) -> str:
        return f"path={self.path!r}, providers={self.session.get_providers()}"


def load_onnx_predictor(
    path: str | os.PathLike, threads: int | None = None, providers: Sequence[str] | None = None, options=None
) -> OnnxPredictor:
    """A callable torch-in/torch-out module running the ONNX model at ``path`` with ONNX Runtime: a drop-in for
    the PyTorch network in eval mode (see :class:`OnnxPredictor`).

    Args:
        path: the ``.onnx`` file written by :func:`export_onnx`.
        threads: intra-op threads for ONNX Runtime (default: its own choice).
        providers: ONNX Runtime execution providers (default: CUDA if available, then CPU).
        options: an ``onnxruntime.SessionOptions`` instead of the default ones (``threads`` is then ignored).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no ONNX model at {path}: write one with egeunet_monai.export.export_onnx.")
    return OnnxPredictor(path, threads=threads, providers=providers, options=options)
