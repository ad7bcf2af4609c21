#!/usr/bin/env python
# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Edge exports of EGE-UNet: an INT8 model (ONNX Runtime static quantization, calibrated on training images) and a
float16 one, next to the float32 export, each a ``.onnx`` file that ``--weights`` takes as it is.

Examples:
  # the released weights, calibrated on 100 ISIC 2017 training images of the bundle's split
  python scripts/export_edge.py --out runs/edge

  # own weights and calibration images
  python scripts/export_edge.py --weights models/model.pt --calibration my_photos/ --out runs/edge

Writes ``model_fp32.onnx``, ``model_int8.onnx`` and ``model_fp16.onnx`` and prints their sizes. Accuracy and speed
against float32: ``scripts/benchmarks/edge_models.py``.

INT8: quantize-dequantize pairs (QDQ) around the convolutions, weights per output channel, activations unsigned
8 bits with min-max calibration; the LayerNorms, GroupNorms, attention gates and GELUs stay float32. Measured
(scripts/benchmarks/edge_models.py, 429 validation images, 2-core Xeon, ONNX Runtime 1.32, one thread): pooled DSC
-0.0004 against float32, but 0.55x its speed: the network is small and memory-bound, and the added
quantize/dequantize passes cost more than the cheaper convolutions save. Quantizing every operator ONNX Runtime can
(``--int8-operators all``): -0.0006 DSC, 0.44x the speed, a larger file.
Float16: all weights and operators in float16, inputs and outputs float32 (``keep_io_types``), so callers feed it as
the float32 model: pooled DSC -0.0000, 0.92x the speed on CPU (ONNX Runtime's CPU kernels lack some float16
operators, e.g. Resize), half the weight bytes. The files are all about 400 KiB: the graph's ~1,500 node definitions
weigh as much as the 53,374 weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

DEFAULT_WEIGHTS = REPO_ROOT / "bundle" / "models" / "model.pt"
DEFAULT_CALIBRATION = REPO_ROOT.parent / "shared" / "data" / "isic2017_train_256"
DEFAULT_SPLIT = REPO_ROOT / "bundle" / "splits" / "isic2017_ph2_seed0.json"
# operators quantized to INT8; the others stay float32
INT8_OPERATORS = ("Conv",)


def calibration_files(folder: Path, count: int, split: Path | None) -> list[Path]:
    """``count`` images of ``folder`` spread evenly over its sorted list; with a split file, training ids only
    (the validation images measure the result, they must not tune it)."""
    from egeunet_monai.data import list_images

    files = [Path(item["image"]) for item in list_images(folder)]
    if split is not None and split.is_file():
        training = {entry["id"] for entry in json.loads(split.read_text())["training"]}
        files = [f for f in files if f.stem in training]
    if not files:
        raise SystemExit(f"no calibration images in {folder}")
    step = max(1, len(files) // count)
    return files[::step][:count]


class ImageCalibration:
    """An ``onnxruntime.quantization.CalibrationDataReader``: the calibration images one at a time, prepared as
    the bundle prepares them for the network (min-max to [0, 255], MONAI's anti-aliased resize to 256 x 256)."""

    def __init__(self, files: list[Path], input_name: str) -> None:
        self.files = list(files)
        self.input_name = input_name
        self._next = iter(self.files)

    def get_next(self):
        from egeunet_monai.data import DermoscopyImageReader
        from egeunet_monai.inference.batch import prepare_image

        path = next(self._next, None)
        if path is None:
            return None
        reader = DermoscopyImageReader(kind="image", reverse_indexing=False)
        array, _ = reader.get_data(reader.read(str(path)))
        return {self.input_name: prepare_image(np.asarray(array))[None]}

    def rewind(self) -> None:
        self._next = iter(self.files)


def export_fp32(weights: Path, out: Path) -> Path:
    """The float32 ONNX model (dynamic batch), as ``load_runtime`` exports it."""
    from egeunet_monai.export import export_onnx
    from egeunet_monai.inference.runtime import OPSET, load_eager_network

    return Path(export_onnx(load_eager_network(weights), out, opset=OPSET, dynamic_batch=True, check=True))


def quantize_int8(fp32: Path, out: Path, files: list[Path], operators=INT8_OPERATORS) -> Path:
    """Static INT8 quantization of ``fp32`` calibrated on ``files``; ``operators=None`` quantizes every operator
    type that ONNX Runtime can."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_name(out.stem + ".preprocessed.onnx")
    # ONNX shape inference and graph clean-up, as ONNX Runtime advises; its symbolic shape inference stops on this
    # graph (an assertion in its Conv shape rule), ONNX's own shape inference is enough for quantization
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    input_name = onnx.load(str(prepared)).graph.input[0].name
    try:
        quantize_static(
            str(prepared),
            str(out),
            ImageCalibration(files, input_name),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(operators) if operators else None,
            per_channel=True,
            # 7-bit weights: ONNX Runtime's U8S8 kernels can saturate on x86 CPUs without VNNI (AVX2-only ones),
            # which cost one test image 0.94 Dice to float32 there; ONNX Runtime's documented remedy
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        prepared.unlink(missing_ok=True)
    return out


def convert_fp16(fp32: Path, out: Path) -> Path:
    """Float16 weights and operators, float32 inputs and outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(out))
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="model.pt/.pth/.ts (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("runs/edge"), help="output folder (default: %(default)s)")
    p.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION, help="calibration images (a folder)")
    p.add_argument("--calibration-images", type=int, default=100, help="how many (default: %(default)s)")
    p.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="use only its training ids ('' for all)")
    p.add_argument("--formats", nargs="+", choices=("int8", "fp16"), default=["int8", "fp16"])
    p.add_argument("--int8-operators", nargs="+", default=list(INT8_OPERATORS),
                   help="ONNX operator types to quantize, or 'all' (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = [export_fp32(args.weights, args.out / "model_fp32.onnx")]
    if "int8" in args.formats:
        split = args.split if str(args.split) else None
        files = calibration_files(args.calibration, args.calibration_images, split)
        print(f"calibrating on {len(files)} images of {args.calibration}")
        operators = None if args.int8_operators == ["all"] else args.int8_operators
        written.append(quantize_int8(written[0], args.out / "model_int8.onnx", files, operators))
    if "fp16" in args.formats:
        written.append(convert_fp16(written[0], args.out / "model_fp16.onnx"))
    for path in written:
        print(f"{path}: {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
