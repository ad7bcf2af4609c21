# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The ``egeunet-monai`` command: ``predict``, ``serve``, shortcuts to the bundle's ``train``, ``evaluate`` and
``export``, and ``bundle`` (writes the packaged bundle out, to edit its configs).

argparse rather than ``fire`` (a dependency already used by ``monai.bundle``): argparse gives each subcommand a
``--help`` with a usage line, typed options and an examples section, ``--flag`` booleans and several positional
paths, whereas fire derives the help from a signature, parses arguments as Python literals (a file named
``1e3.jpg`` or ``[a].png`` would not stay a string) and has no room for examples.
"""

from __future__ import annotations

import argparse
import codecs
import importlib.util
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]

_EXAMPLES_MAIN = """\
examples:
  egeunet-monai predict photos/ --out masks/ --overlay
  egeunet-monai serve                  # then open http://127.0.0.1:8000
  egeunet-monai train --dataset_dir ../shared/data/ph2 --max_epochs 50
  egeunet-monai evaluate --dataset_dir ../shared/data/ph2
  egeunet-monai export --onnx
  egeunet-monai bundle --out my_bundle/  # the bundle's configs and released weights, to edit

Run `egeunet-monai COMMAND --help` for the options of each command.
"""

_EXAMPLES_PREDICT = """\
examples:
  egeunet-monai predict lesion.jpg --out results/
  egeunet-monai predict photos/ more/IMD002.jpg --out results/ --overlay --probabilities
  egeunet-monai predict photos/ --out results/ --weights models/model.ts
  egeunet-monai predict photos/ --out results/ --weights models/model.onnx   # needs egeunet-monai[onnx]
  egeunet-monai predict photos/ --out results/ --weights model_int8.onnx     # scripts/export_edge.py's INT8
  egeunet-monai predict photos/ --out results/ --runtime eager               # the PyTorch network
  egeunet-monai predict photos/ --out results/ --tta --uncertainty-map       # 8 views: 8x the time
  egeunet-monai predict photos/ --out results/ --largest-component --no-fill-holes

writes, in --out:
  <id>_mask.png         the lesion mask (0/255) at the image's original size, as the bundle writes it
  <id>_overlay.png      with --overlay: the photo with the predicted lesion outlined
  <id>_prob.png         with --probabilities: the sigmoid probability x 255
  <id>_uncertainty.png  with --uncertainty-map (needs --tta): the per-pixel entropy of the views' mean x 255
  predictions.csv       one row per input: lesion area in pixels and as a fraction of the image, mean
                        confidence (mean probability inside the lesion), uncertainty, flags, the files written,
                        and the error for files that failed

predictions.csv columns uncertainty and flags:
  uncertainty  only with --tta (empty otherwise): in [0, 1], the mean entropy (bits) of the eight views' mean
               probability over the pixels any view calls lesion; high when the views disagree
  flags        semicolon-separated, empty when none:
                 empty                no lesion found
                 touches_border       more than 1 % of the image's outermost pixels are lesion
                 multiple_components  two or more pieces, each at least 0.1 % of the image
                 tiny / huge          lesion below 0.8 % / above 81 % of the image
                 low_confidence       only with --tta: uncertainty above 0.5 (the 90th percentile on the
                                      validation split: those images' mean Dice was 0.60, the others' 0.90)

The exit code is 0 when every image was segmented, 1 when any failed (the others are still processed).
"""

_EXAMPLES_SERVE = """\
examples:
  egeunet-monai serve                                 # http://127.0.0.1:8000, default weights
  egeunet-monai serve --port 8080 --weights models/model.ts
  egeunet-monai serve --host 0.0.0.0 --port 8000      # reachable from other machines: mind who can reach it

Open the address in a browser, choose or drop a JPEG/PNG dermoscopy photograph, and the page shows the lesion
outline, a mask toggle, the lesion area, the mean confidence, the quality flags (and with --tta the uncertainty),
and a link to download the mask PNG.
"""

_EXAMPLES_TRAIN = """\
Runs: python -m monai.bundle run training --config_file configs/train.json --bundle_root ROOT [ARGS...]
Any other argument goes to the bundle unchanged (config ids such as --max_epochs, --dataset_dir, --resume).

examples:
  egeunet-monai train                                  # synthetic data, a quick demo
  egeunet-monai train --dataset_dir ../shared/data/isic2017_train_256,../shared/data/ph2 --max_epochs 300
  egeunet-monai train --resume true                    # continue an interrupted run
  egeunet-monai train --dry-run --max_epochs 2         # print the command only
"""

_EXAMPLES_EVALUATE = """\
Runs: python -m monai.bundle run evaluating
        --config_file "['configs/train.json','configs/evaluate.json']" --bundle_root ROOT [ARGS...]
Any other argument goes to the bundle unchanged (e.g. --dataset_dir, --ckpt_path, --output_dir).

examples:
  egeunet-monai evaluate --dataset_dir ../shared/data/ph2
  egeunet-monai evaluate --dataset_dir ../shared/data/ph2 --ckpt_path runs/release/models/model.pt

With --dataset_dir or --datalist_file and no --ckpt_path, it evaluates the weights predict uses by default
(models/model.pt, else the released weights); on the synthetic default, the model the synthetic training wrote.
"""

_EXAMPLES_EXPORT = """\
Runs: python -m monai.bundle ckpt_export network_def --filepath models/model.ts --ckpt_file <the weights predict uses>
        --meta_file configs/metadata.json --config_file configs/inference.json   (paths under ROOT)
or, with --onnx: python -m monai.bundle onnx_export network_def --filepath models/model.onnx ...
        --input_shape "[1, 3, 256, 256]" --use_trace True --converter_kwargs "{...}"
        (the graph of egeunet_monai.export.export_onnx: opset 17, input "image", output "logits", any batch size)
Any other argument goes to the bundle unchanged.

examples:
  egeunet-monai export                                  # models/model.pt (else the released) -> models/model.ts
  egeunet-monai export --onnx                           # the same -> models/model.onnx
  egeunet-monai export --ckpt runs/release/models/model.pt --out /tmp/model.ts
"""


_EXAMPLES_BUNDLE = """\
examples:
  egeunet-monai bundle --out my_bundle/
  egeunet-monai predict photos/ --out masks/ --bundle-root my_bundle/    # with my_bundle/configs/, edited
  python -m monai.bundle run --config_file my_bundle/configs/inference.json --bundle_root my_bundle \\
      --input_path photos/ --output_dir masks/

writes, in --out: configs/ (inference, train, evaluate, multi-GPU, metadata, logging), models/ (the released
model.pt, model.ts and their SHA256SUMS), docs/ (the model card and the data licence) and LICENSE: the MONAI bundle
that ships inside the package. Given --bundle-root DIR, the commands read DIR/configs/ instead of the packaged
configs (an installed package: also when run from DIR).
"""

# extras of pyproject.toml: the modules each needs
EXTRAS = {"viewer": ("starlette", "uvicorn"), "onnx": ("onnx", "onnxruntime", "onnxscript")}


def missing_extra(extra: str) -> str | None:
    """A message naming the extra to install when a module of ``extra`` is not installed, else None."""
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return f"{', '.join(missing)} not installed: pip install 'egeunet-monai[{extra}]'"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Examples shown as written (the defaults are in each option's help)."""


def _add_common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--bundle-root",
        type=Path,
        default=None,
        help="the bundle folder: models/ and runs/ are read and written there, its configs/ replace the packaged "
        "ones (default: this checkout's root, else the current folder)",
    )


def _add_runtime(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--runtime",
        choices=("auto", "onnxruntime", "torchscript", "eager"),
        default=None,
        help="how the network runs (default: the config's runtime, auto: ONNX Runtime, exported once per weights "
        "file and cached, else TorchScript, else PyTorch); eager forces the PyTorch network",
    )


def _add_tta(sub: argparse.ArgumentParser) -> None:
    # None when not given: the config's `tta` stays (false in the bundle's; an edited --bundle-root config may differ)
    sub.add_argument(
        "--tta",
        action="store_true",
        default=None,
        help="test-time augmentation: average the eight flips/rotations of each image (8x the time; with the "
        "released weights pooled DSC -0.002 on the ISIC validation split, see the model card) and report each "
        "image's uncertainty and the low_confidence flag",
    )


def _add_cleanup(sub: argparse.ArgumentParser) -> None:
    # None when not given: the config's `fill_holes` / `largest_component` stay (an edited config may differ)
    sub.add_argument(
        "--no-fill-holes",
        dest="fill_holes",
        action="store_const",
        const=False,
        default=None,
        help="leave holes in the mask (the config's fill_holes, on by default: +0.0004 pooled DSC on the external "
        "test, 150 PH2 photographs)",
    )
    sub.add_argument(
        "--largest-component",
        action="store_true",
        default=None,
        help="keep only the mask's largest piece (the config's largest_component, off by default: -0.0004 pooled DSC "
        "on the external test); the flags still describe the mask before it",
    )


def _cleanup_overrides(args: argparse.Namespace) -> dict:
    """The config ids the clean-up options set; the others keep the config's values."""
    options = {"fill_holes": args.fill_holes, "largest_component": args.largest_component}
    return {key: value for key, value in options.items() if value is not None}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``egeunet-monai`` (exposed for the docs and the tests)."""
    from egeunet_monai import __version__

    parser = argparse.ArgumentParser(
        prog="egeunet-monai",
        description="EGE-UNet skin-lesion segmentation: segment your own dermoscopy photographs, browse the results "
        "in a local web page, and train, evaluate or export the MONAI bundle.",
        epilog=_EXAMPLES_MAIN,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = subs.add_parser(
        "predict",
        help="segment images or folders of images",
        description="Segment dermoscopy photographs with the bundle's inference pipeline (configs/inference.json).",
        epilog=_EXAMPLES_PREDICT,
        formatter_class=_Formatter,
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files (JPEG/PNG...) or folders")
    p.add_argument("--out", "-o", type=Path, required=True,
                   help="output folder (created if needed; files of the same name in it are replaced)")
    p.add_argument("--weights", "-w", type=Path, default=None, help="model.pt, model.ts or model.onnx "
                   "(default: models/model.pt, else the released bundle/models/model.pt)")
    p.add_argument("--overlay", action="store_true", help="also write <id>_overlay.png: the outline on the photo")
    p.add_argument("--probabilities", action="store_true", help="also write <id>_prob.png, the probability map")
    _add_tta(p)
    p.add_argument("--uncertainty-map", action="store_true",
                   help="also write <id>_uncertainty.png, the per-pixel entropy of the views' mean x 255 (needs --tta)")
    _add_cleanup(p)
    p.add_argument("--device", default=None, help="cpu, cuda:0... (default: CUDA when available)")
    _add_runtime(p)
    p.add_argument("--batch-size", type=int, default=8,
                   help="images per network call (default 8; decoding and writing overlap the network's work)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_common(p)

    s = subs.add_parser(
        "serve",
        help="a local web page to segment one image at a time",
        description="Start a small local web app: upload a photo, see the lesion outlined with its area.",
        epilog=_EXAMPLES_SERVE,
        formatter_class=_Formatter,
    )
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this computer only)")
    s.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    s.add_argument("--weights", "-w", type=Path, default=None, help="model.pt, model.ts or model.onnx (default as for "
                   "predict)")
    s.add_argument("--max-upload-mb", type=float, default=20.0,
                   help="largest accepted upload, in megabytes (default 20)")
    _add_tta(s)
    _add_cleanup(s)
    s.add_argument("--device", default=None, help="cpu, cuda:0... (default: CUDA when available)")
    _add_runtime(s)
    _add_common(s)

    w = subs.add_parser(
        "bundle",
        help="write the MONAI bundle (configs, released weights, model card) into a folder, to edit",
        description="Write the MONAI bundle that ships inside the package into a folder.",
        epilog=_EXAMPLES_BUNDLE,
        formatter_class=_Formatter,
    )
    w.add_argument("--out", "-o", type=Path, required=True, help="output folder (created if needed)")
    w.add_argument("--overwrite", action="store_true", help="replace the bundle's files already in --out")

    for name, help_text, epilog in (
        ("train", "train the bundle (python -m monai.bundle run training)", _EXAMPLES_TRAIN),
        ("evaluate", "evaluate a checkpoint (python -m monai.bundle run evaluating)", _EXAMPLES_EVALUATE),
        ("export", "export the weights to TorchScript or ONNX (monai.bundle ckpt_export)", _EXAMPLES_EXPORT),
    ):
        b = subs.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                            epilog=epilog, formatter_class=_Formatter)
        if name == "export":
            b.add_argument("--onnx", action="store_true", help="export ONNX (monai.bundle onnx_export) instead")
            b.add_argument("--ckpt", type=Path, default=None,
                           help="checkpoint to export (default: the weights predict uses, ROOT/models/model.pt "
                           "else the released weights)")
            b.add_argument("--out", type=Path, default=None, help="file to write (default ROOT/models/model.ts|.onnx)")
        b.add_argument("--dry-run", action="store_true", help="print the bundle command without running it")
        _add_common(b)
    return parser


def _bundle_root(args: argparse.Namespace) -> Path:
    from egeunet_monai.inference import default_bundle_root

    return (args.bundle_root or default_bundle_root()).resolve()


def _given(extra: Sequence[str], option: str) -> bool:
    """Whether the bundle arguments set ``option`` (``--x v`` or ``--x=v``)."""
    return any(a == option or a.startswith(option + "=") for a in extra)


def bundle_command(args: argparse.Namespace, extra: Sequence[str]) -> list[str]:
    """The ``python -m monai.bundle ...`` command line that ``train``, ``evaluate`` or ``export`` stand for."""
    from egeunet_monai.resources import configs_dir

    root = _bundle_root(args)
    configs = configs_dir(root)
    cmd = [sys.executable, "-m", "monai.bundle"]
    if args.command == "train":
        cmd += ["run", "training", "--config_file", str(configs / "train.json")]
    elif args.command == "evaluate":
        files = [str(configs / "train.json"), str(configs / "evaluate.json")]
        cmd += ["run", "evaluating", "--config_file", repr(files)]
        if (_given(extra, "--dataset_dir") or _given(extra, "--datalist_file")) and not _given(extra, "--ckpt_path"):
            from egeunet_monai.engines import default_weights

            # evaluate.json's default is <ckpt_dir>/model.pt, which an installed package has not got
            cmd += ["--ckpt_path", default_weights(str(root))]
    else:
        from egeunet_monai.engines import default_weights

        onnx = args.onnx
        ckpt = args.ckpt or default_weights(str(root))  # as predict: models/model.pt, else the released weights
        out = args.out or root / "models" / ("model.onnx" if onnx else "model.ts")
        cmd += ["onnx_export" if onnx else "ckpt_export", "network_def", "--filepath", str(out),
                "--ckpt_file", str(ckpt), "--meta_file", str(configs / "metadata.json"),
                "--config_file", str(configs / "inference.json")]
        if onnx:
            # the graph of egeunet_monai.export.export_onnx: TorchScript exporter (--use_trace), opset 17 and a
            # dynamic batch; MONAI's defaults (torch.export from an example of batch 1) fix the batch at 1
            from egeunet_monai.export import onnx_converter_kwargs

            cmd += ["--input_shape", "[1, 3, 256, 256]", "--use_trace", "True",
                    "--converter_kwargs", repr(onnx_converter_kwargs())]
    # the configs' relative defaults (runs/, models/) are relative to bundle_root, not to where the user is
    if "--bundle_root" not in extra:
        cmd += ["--bundle_root", str(root)]
    return cmd + list(extra)


def _run_bundle(args: argparse.Namespace, extra: Sequence[str]) -> int:
    problem = missing_extra("onnx") if args.command == "export" and args.onnx else None
    if problem:
        print(f"egeunet-monai export --onnx: error: {problem}", file=sys.stderr)
        return 2
    cmd = bundle_command(args, extra)
    print("$ " + shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    if args.command == "export":
        Path(cmd[cmd.index("--filepath") + 1]).parent.mkdir(parents=True, exist_ok=True)
    return _call_naming_input_errors(cmd, args.command)


# MONAI reports a bad image or mask at the end of a long traceback, as "Failed to instantiate component ...": the
# reader's own message (egeunet_monai.data.DermoscopyInputError, which names the file) is repeated as the last line
_INPUT_ERROR = re.compile(r"DermoscopyInputError: (.+)")
_STDERR_TAIL = 256 * 1024


def _call_naming_input_errors(cmd: Sequence[str], command: str) -> int:
    """Run ``cmd``, passing its stderr through as it comes (progress bars included); when it fails on a bad input
    file, end with that file's message and exit status 1 (a crash on the way out, e.g. of threads still caching,
    does not hide it)."""
    decoder, tail = codecs.getincrementaldecoder("utf-8")(errors="replace"), ""
    with subprocess.Popen(cmd, stderr=subprocess.PIPE) as proc:
        while chunk := proc.stderr.read1(65536):
            text = decoder.decode(chunk)
            sys.stderr.write(text)
            sys.stderr.flush()
            tail = (tail + text)[-_STDERR_TAIL:]
    found = _INPUT_ERROR.findall(tail) if proc.returncode != 0 else []
    if found:
        print(f"egeunet-monai {command}: error: {found[-1]}", file=sys.stderr)
        return 1
    return proc.returncode


def _make_predictor(args: argparse.Namespace, **kwargs):
    from egeunet_monai.inference.predictor import open_predictor

    if args.weights is not None:
        print(f"weights: {args.weights} (given with --weights)", flush=True)
    try:
        return open_predictor(
            weights=args.weights, bundle_root=_bundle_root(args), device=args.device, runtime=args.runtime, **kwargs
        )
    except (FileNotFoundError, ImportError, ValueError) as err:
        print(f"egeunet-monai {args.command}: error: {err}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    problem = missing_extra("viewer")
    if problem:
        print(f"egeunet-monai serve: error: {problem}", file=sys.stderr)
        return 2
    from egeunet_monai.viewer import serve

    predictor = _make_predictor(args, tta=args.tta, overrides=_cleanup_overrides(args))
    if predictor is None:
        return 2
    serve(predictor, host=args.host, port=args.port, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from egeunet_monai.cli.predict import out_dir_problem, run_predict

    problem = out_dir_problem(args.out)  # before the weights load: a wrong --out is known at once
    if problem:
        print(f"egeunet-monai predict: error: {problem}", file=sys.stderr)
        return 2
    # the network gets one thread and the other cores decode, resize and write (runtime.py's measurements)
    predictor = _make_predictor(args, output_dir=args.out, save_probabilities=args.probabilities,
                                save_overlays=args.overlay, tta=args.tta, threads=1, batch_size=args.batch_size,
                                overrides=_cleanup_overrides(args))
    if predictor is None:
        return 2
    if args.uncertainty_map and not predictor.tta:
        print("egeunet-monai predict: error: --uncertainty-map needs --tta (the map is the views' disagreement)",
              file=sys.stderr)
        return 2
    return run_predict(predictor, args.inputs, args.out, overlay=args.overlay, progress=not args.no_progress,
                       uncertainty_map=args.uncertainty_map)


def _write_bundle(args: argparse.Namespace) -> int:
    from egeunet_monai.resources import write_bundle

    try:
        out = write_bundle(args.out, overwrite=args.overwrite)
    except (FileExistsError, FileNotFoundError, RuntimeError) as err:
        print(f"egeunet-monai bundle: error: {err}", file=sys.stderr)
        return 2
    print(f"Wrote the bundle into {out}: edit {out / 'configs'}, then give the commands --bundle-root {out}.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``egeunet-monai`` console script; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in ("train", "evaluate", "export"):
        return _run_bundle(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "predict":
        return _predict(args)
    if args.command == "bundle":
        return _write_bundle(args)
    return _serve(args)


if __name__ == "__main__":  # python -m egeunet_monai.cli.main
    sys.exit(main())
