#!/usr/bin/env python
# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Speed of EGE-UNet on this machine: every path measured side by side in one run, one Markdown table.

Rows (each timed in the same run, the paths of a group interleaved repeat by repeat so that a busy machine slows
them alike; the eager network, the faithful port of the original, is the reference of every ratio):

- inference at HxW (default 256x256): batch 1 latency and batch 8 / 64 throughput for eager PyTorch, eager with
  channels-last tensors, ``optimize_for_inference`` (egeunet_monai.networks.fast; with ``workers=--threads`` too
  when that is 2 or more), TorchScript (``torch.jit.script``,
  what ``monai.bundle ckpt_export`` writes), ONNX Runtime on CPU (egeunet_monai.export), bf16 autocast and, with
  ``--compile``, ``torch.compile``; with the largest difference of each from eager (logits and probabilities);
- training: images/s of one optimizer step at batch 8 (forward, EGEUNetLoss, backward, AdamW) in fp32, with
  ``fused_ops`` and the fused AdamW, with the batch also split over ``--threads`` threads by the bundle's
  ``SplitBatchIteration`` through a real SupervisedTrainer (what configs/train.json runs), with channels-last
  tensors, with bf16 autocast (and ``--compile``);
- training end to end through the bundle: configs/train.json's own ``train#dataloader`` (built with
  ``monai.bundle.ConfigParser``, ``dataset_dir`` pointing at real images, a subset of ``--train-images``): the
  one-off decoding and resizing into the CacheDataset, the loader alone, and loader + step for each
  ``--num-workers``;
- training end to end through the bundle's own trainer: real ``python -m monai.bundle run training`` runs (one
  process with the plain operators, with the fused ones, and as shipped with the batch split; ``torchrun`` with 2
  CPU ranks of 4 and of 8 images) on the same subset, validation off, Ignite's epoch times after the first epoch,
  each variant ``--trainer-repeats`` times in a rotating order;
- inference end to end through configs/inference.json on full-size photographs (decode, resize, infer, resize back,
  write PNG), eager and ONNX Runtime, in a child process each: images/s and peak RSS;
- parameters, multiply-adds counted with ``torch.utils.flop_counter.FlopCounterMode``, and the bound they imply
  from the machine's measured float32 matmul rate.

Two rates are given for every timing: wall clock (what a user sees) and CPU time (the process's CPU seconds: on a
shared machine it is much less disturbed by other processes, but it counts threads spinning while they wait).

Examples::

    python scripts/benchmark.py --quick                      # smoke run, about 3 minutes on an idle 2-core CPU
    python scripts/benchmark.py --out docs/benchmark_table.md
    python scripts/benchmark.py --threads 1 --repeats 7 --batch-sizes 1 8

Nothing is written outside a temporary folder (and ``--out``/``--json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SHARED = REPO_ROOT.parent / "shared"
# the released weights if the repository has them, else the original training script's checkpoint
DEFAULT_WEIGHTS = next(
    (p for p in (REPO_ROOT / "bundle" / "models" / "model.pt", SHARED / "reference" / "original_trained_isic2017_17ep.pth")
     if p.is_file()),
    REPO_ROOT / "bundle" / "models" / "model.pt",
)
DEFAULT_TRAIN_DIR = SHARED / "data" / "isic2017_train_256"
DEFAULT_PH2_DIR = SHARED / "data" / "ph2" / "images"
MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(16 * 2**30)}
ORIGINAL_CONV_MACS = 72_096_256  # the original implementation's convolutions, 1x3x256x256 (../shared/reference)


# ----------------------------------------------------------------------------------------------------------- utils
def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def machine_description(threads: int) -> dict:
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "not installed"
    import monai

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": threads,
        "monai": monai.__version__,
        "onnxruntime": ort_version,
        "python": platform.python_version(),
    }


def load_average() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load: " + " ".join(f"{v:.2f}" for v in os.getloadavg())


@dataclass
class Row:
    group: str
    path: str
    batch: str
    unit: str  # "ms/img" (lower is better) or "img/s" (higher is better) or a free text unit
    values: list[float] = field(default_factory=list)  # wall-clock rate per repeat
    cpu_values: list[float] = field(default_factory=list)  # CPU-time rate per repeat
    ratio: float | None = None  # vs the reference, wall clock (median of per-repeat ratios), >1 is faster
    cpu_ratio: float | None = None
    diff: str = ""
    note: str = ""
    text: str | None = None  # a value that is not a timing


def _fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def render(rows: list[Row]) -> str:
    head = (
        "| group | path | batch | median | spread (min-max) | unit | CPU-time rate | vs eager (wall) | "
        "vs eager (CPU) | max abs diff vs eager: logits / prob | notes |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        if r.text is not None:
            median, spread, cpu = r.text, "", ""
        else:
            median = _fmt(statistics.median(r.values)) if r.values else "-"
            spread = f"{_fmt(min(r.values))}-{_fmt(max(r.values))}" if len(r.values) > 1 else ""
            cpu = _fmt(statistics.median(r.cpu_values)) if r.cpu_values else ""
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        cpu_ratio = f"{r.cpu_ratio:.2f}x" if r.cpu_ratio is not None else ""
        lines.append(
            f"| {r.group} | {r.path} | {r.batch} | {median} | {spread} | {r.unit} | {cpu} | {ratio} | {cpu_ratio} | "
            f"{r.diff} | {r.note} |"
        )
    return "\n".join(lines)


def run_groups(groups: list[tuple[str, Callable[[], tuple[list[Row], list[str]]]]], skip: list[str], rows: list[Row],
               messages: list[str], after_each: Callable[[], object] | None = None) -> None:
    """Run each (name, fn) group not in ``skip``, adding its rows and messages (and its wall time) to ``rows`` and
    ``messages``; ``after_each()`` follows every group."""
    for name, fn in groups:
        if name in skip:
            continue
        t0 = time.perf_counter()
        new_rows, new_messages = fn()
        rows += new_rows
        messages += new_messages + [f"{name}: {time.perf_counter() - t0:.0f} s wall"]
        log(messages[-1])
        if after_each is not None:
            after_each()


def rotated(items: list, r: int) -> list:
    """``items`` starting at position ``r`` (wrapping): the order of repeat ``r``, so that none always runs first."""
    return items[r % len(items) :] + items[: r % len(items)]


def interleaved(
    fns: dict[str, Callable[[], object]], images: int, repeats: int, calls: int = 1, warmup: int = 1
) -> dict[str, tuple[list[float], list[float]]]:
    """Per repeat and per path: (wall seconds, CPU seconds) per image, the paths run one after the other in each
    repeat (and in a rotating order, so that none always runs first)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for name in rotated(names, r):
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(calls):
                fns[name]()
            wall[name].append((time.perf_counter() - w0) / (calls * images))
            cpu[name].append((time.process_time() - c0) / (calls * images))
    return {k: (wall[k], cpu[k]) for k in fns}


def rows_from_timings(
    group: str, batch: int, timings: dict, reference: str, latency: bool, diffs: dict, notes: dict
) -> list[Row]:
    """One row per path of ``timings`` ({path: (wall seconds per image, CPU seconds per image)}, one value per
    repeat), with its ratio to ``reference``; empty CPU lists (a GPU's timings) leave the CPU columns empty."""
    rows = []
    ref_wall, ref_cpu = timings[reference]
    for name, (wall, cpu) in timings.items():
        if latency:
            values = [1e3 * w for w in wall]
            cpu_values = [1e3 * c for c in cpu]
            unit = "ms/img"
        else:
            values = [1 / w for w in wall]
            cpu_values = [1 / c for c in cpu]
            unit = "img/s"
        ratio = statistics.median(rw / w for rw, w in zip(ref_wall, wall))
        cpu_ratio = statistics.median(rc / c for rc, c in zip(ref_cpu, cpu)) if cpu and ref_cpu else None
        rows.append(
            Row(group, name, str(batch), unit, values, cpu_values, ratio, cpu_ratio, diffs.get(name, ""), notes.get(name, ""))
        )
    return rows


# ------------------------------------------------------------------------------------------------- model and data
def load_model(weights: str | None):
    from egeunet_monai.networks import EGEUNet, load_original_state_dict

    net = EGEUNet()
    if weights and os.path.isfile(weights):
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        try:
            net.load_state_dict(state)
        except RuntimeError:
            net = load_original_state_dict(net, weights)
        return net, f"weights {weights}"
    torch.manual_seed(0)
    return net, "random initial weights (no --weights file found)"


def load_real_batch(folder: Path, count: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``count`` real images (min-max scaled to [0, 255], as the bundle feeds the network) and their masks."""
    from PIL import Image

    images_dir, masks_dir = folder / "images", folder / "masks"
    files = sorted(images_dir.glob("*.jpg"))[:count] if images_dir.is_dir() else []
    if not files:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(count, 3, *size, generator=g) * 255
        return x, (x[:, :1] > 127).float(), "random images (no real data found)"
    xs, ys = [], []
    for f in files:
        img = Image.open(f).convert("RGB").resize(size[::-1], Image.BILINEAR)
        a = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-8) * 255
        xs.append(torch.from_numpy(a))
        m = masks_dir / f"{f.stem}_segmentation.png"
        if m.is_file():
            mask = np.asarray(Image.open(m).convert("L").resize(size[::-1], Image.NEAREST)) > 127
        else:
            mask = a[0] > 127
        ys.append(torch.from_numpy(mask.astype(np.float32))[None])
    while len(xs) < count:  # fewer files than asked: repeat
        xs.append(xs[len(xs) % len(files)])
        ys.append(ys[len(ys) % len(files)])
    return torch.stack(xs), torch.stack(ys), f"{len(files)} real images from {folder}"


# ------------------------------------------------------------------------------------------------------ inference
def inference_rows(args, net, x_all: torch.Tensor, tmp: Path) -> tuple[list[Row], list[str]]:
    from egeunet_monai.networks.fast import optimize_for_inference

    messages = []
    net = net.eval()
    paths: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    notes: dict[str, str] = {}
    paths["eager (reference)"] = net
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    paths["eager, channels_last"] = lambda x: net_cl(x.contiguous(memory_format=torch.channels_last))
    paths["optimize_for_inference"] = optimize_for_inference(net)
    notes["optimize_for_inference"] = (
        "egeunet_monai.networks.fast: full-resolution levels 2 images at a time, folded gates/affines, "
        "row/column max-pool, shifted dilated depth-wise convs"
    )
    if args.threads >= 2:
        name = f"optimize_for_inference, workers={args.threads}"
        paths[name] = optimize_for_inference(net, workers=args.threads)
        notes[name] = f"the batch split over {args.threads} threads with one intra-op thread each"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths["TorchScript (script)"] = torch.jit.script(copy.deepcopy(net))
    notes["TorchScript (script)"] = "what ckpt_export writes; recomputes the gates every call"
    try:
        from egeunet_monai.export import export_onnx, load_onnx_predictor

        t0 = time.perf_counter()
        onnx_file = export_onnx(net, tmp / "model.onnx", image_size=(args.size, args.size), check=False)
        messages.append(f"ONNX export: {time.perf_counter() - t0:.1f} s wall")
        paths["ONNX Runtime (CPU)"] = load_onnx_predictor(onnx_file, threads=args.threads, providers=["CPUExecutionProvider"])
        notes["ONNX Runtime (CPU)"] = "export_onnx + load_onnx_predictor, opset 17"
    except ImportError as err:
        messages.append(f"ONNX Runtime row skipped: {err}")
    bf16 = "eager, bf16 autocast"

    def run_bf16(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(x).float()

    if args.bf16:
        paths[bf16] = run_bf16
        notes[bf16] = "reduced precision: not within 1e-5 by design"
    if args.compile:
        t0 = time.perf_counter()
        compiled = torch.compile(copy.deepcopy(net))
        with torch.no_grad():
            compiled(x_all[:8])
        messages.append(f"torch.compile (inference): first call {time.perf_counter() - t0:.0f} s wall")
        paths["torch.compile (inductor)"] = compiled

    rows: list[Row] = []
    with torch.no_grad():
        # accuracy on the largest batch measured (real images), and eager's own float32 error (vs float64)
        probe = x_all[: max(b for b in args.batch_sizes)]
        reference = net(probe)
        diffs = {}
        for name, fn in paths.items():
            out = fn(probe)
            out = out.as_tensor() if hasattr(out, "as_tensor") else out
            d_logit = (out - reference).abs().max().item()
            d_prob = (torch.sigmoid(out) - torch.sigmoid(reference)).abs().max().item()
            diffs[name] = f"{d_logit:.1e} / {d_prob:.1e}"
        net64 = copy.deepcopy(net).double()
        exact = net64(probe.double())
        d_logit = (reference.double() - exact).abs().max().item()
        d_prob = (torch.sigmoid(reference.double()) - torch.sigmoid(exact)).abs().max().item()
        diffs["eager (reference)"] = f"vs float64: {d_logit:.1e} / {d_prob:.1e}"
        del net64, exact
        for batch in args.batch_sizes:
            x = x_all[:batch].contiguous()
            names = [n for n in paths if batch in (8,) or n != bf16 or args.bf16_all]
            fns = {n: (lambda f=paths[n]: f(x)) for n in names}
            latency = batch == 1
            log(f"inference batch {batch}: {', '.join(names)}")
            timings = interleaved(
                fns,
                images=batch,
                repeats=args.repeats if batch <= 8 else max(2, args.repeats - 2),
                calls=args.latency_calls if latency else 1,
                warmup=2,
            )
            label = f"inference {args.size}x{args.size}" + (" latency" if latency else " throughput")
            rows += rows_from_timings(label, batch, timings, "eager (reference)", latency, diffs, notes)
    return rows, messages


# ------------------------------------------------------------------------------------------------------- training
def training_rows(args, net0, x_all: torch.Tensor, y_all: torch.Tensor) -> tuple[list[Row], list[str]]:
    from egeunet_monai.losses import EGEUNetLoss
    from egeunet_monai.networks import EGEUNet
    from egeunet_monai.networks.blocks import cpu_kernels

    batch = args.train_batch
    x, y = x_all[:batch].contiguous(), y_all[:batch].contiguous()
    loss_fn = EGEUNetLoss()
    messages = []

    def make(channels_last=False, amp=False, compile_=False, fused=False, kernels=True):
        if fused:  # what configs/train.json builds: same weights, fused CPU operators, fused AdamW
            net = EGEUNet(fused_ops=True)
            net.load_state_dict(net0.state_dict())
            net.train()
        else:
            net = copy.deepcopy(net0).train()
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2, fused=fused)
        model = torch.compile(net) if compile_ else net
        xx = x.contiguous(memory_format=torch.channels_last) if channels_last else x

        def step():
            with cpu_kernels.enabled(kernels):
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                    outs = model(xx)
                loss = loss_fn([o.float() for o in outs], y)
                loss.backward()
                opt.step()
            return loss

        return step

    def make_split(workers: int):
        """configs/train.json's step: fused network and AdamW, the batch split over threads by the bundle's
        SplitBatchIteration, driven through a real SupervisedTrainer."""
        from monai.engines import SupervisedTrainer

        from egeunet_monai.engines import SplitBatchIteration

        net = EGEUNet(fused_ops=True)
        net.load_state_dict(net0.state_dict())
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2, fused=True)
        trainer = SupervisedTrainer(torch.device("cpu"), 1, [], net, opt, loss_fn, decollate=False)
        iteration, batch_data = SplitBatchIteration(workers=workers), {"image": x, "label": y}
        return lambda: iteration(trainer, batch_data)

    fns = {
        "eager fp32 (reference)": make(),
        "fused_ops without its C++ kernels + fused AdamW": make(fused=True, kernels=False),
        "fused_ops + fused AdamW": make(fused=True),
    }
    if args.threads >= 2:
        fns[f"fused_ops + fused AdamW, batch split over {args.threads} threads (configs/train.json)"] = make_split(
            args.threads
        )
    fns["channels_last"] = make(channels_last=True)
    if args.bf16:
        fns["bf16 autocast (AMP)"] = make(amp=True)
    if args.compile:
        t0 = time.perf_counter()
        step = make(compile_=True)
        step()
        messages.append(f"torch.compile (training step): first step {time.perf_counter() - t0:.0f} s wall")
        fns["torch.compile (inductor)"] = step
    log(f"training step batch {batch}: {', '.join(fns)}")
    timings = interleaved(fns, images=batch, repeats=args.repeats, warmup=1)
    rows = rows_from_timings(
        "training step (fwd+loss+bwd+AdamW)", batch, timings, "eager fp32 (reference)", False, {}, {}
    )
    return rows, messages


def kernel_rows(args) -> tuple[list[Row], list[str]]:
    """Each operator of ``fused_ops`` forward + backward at the shapes of one SplitBatchIteration half (4 images) and
    on one thread, as that half runs: its PyTorch composition (the C++ kernels off) against its C++ kernel."""
    from egeunet_monai.losses import EGEUNetLoss
    from egeunet_monai.networks.blocks import ChannelFirstLayerNorm, GroupNorm, cpu_kernels, fused_ops
    from egeunet_monai.transforms import RandFlipRotateBatch

    if not cpu_kernels.available():
        return [], ["kernel rows skipped: the C++ CPU kernels did not build here"]
    n = 4
    g = torch.Generator().manual_seed(0)
    conv = {d: torch.nn.Conv2d(5, 5, 3, padding=d, dilation=d, groups=5) for d in (1, 2, 5, 7)}
    loss, target = EGEUNetLoss(), (torch.rand(n, 1, 256, 256, generator=g) > 0.5).float()
    ops: dict[str, tuple[Callable, list[int]]] = {
        "channel LayerNorm, 5 ch, 128x128 (bridge 1 groups)": (ChannelFirstLayerNorm(5, fused=True), [n, 5, 128, 128]),
        "channel LayerNorm, 20 ch, 128x128 (bridge 1 tail)": (ChannelFirstLayerNorm(20, fused=True), [n, 20, 128, 128]),
        **{
            f"3x3 depth-wise conv, dilation {d}, 5 ch, 128x128": ((lambda c: lambda t: fused_ops.depthwise_conv3x3(t, c))(c), [n, 5, 128, 128])
            for d, c in conv.items()
        },
        "2x2 max-pool, 8 ch, 256x256 (encoder 1)": (fused_ops.max_pool2x2, [n, 8, 256, 256]),
        "GroupNorm(4, 8), 256x256 (encoder 1)": (GroupNorm(4, 8, fused=True), [n, 8, 256, 256]),
        # the six outputs (main and upsampled side heads) as one 6 x n x 1 x 256 x 256 tensor
        "EGEUNetLoss, six DiceCE terms, 256x256 (vs MONAI's DiceCELoss)": (lambda t: loss(list(t.unbind(0)), target), [6, n, 1, 256, 256]),
    }  # fmt: skip
    rows = []
    group = f"fused_ops operators, forward + backward (one thread, one half of a split batch-8 step: {n} images)"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for name, (fn, shape) in ops.items():
        x = torch.randn(*shape, generator=g)
        grad = torch.randn_like(fn(x))

        def run(kernels: bool, fn=fn, x=x, grad=grad):
            with cpu_kernels.enabled(kernels):
                fn(x.detach().requires_grad_()).backward(grad)

        fns = {f"{name}: PyTorch composition": lambda run=run: run(False), f"{name}: C++ kernel": lambda run=run: run(True)}
        timings = interleaved(fns, images=n, repeats=max(args.repeats, 9), calls=3, warmup=1)
        rows += rows_from_timings(group, n, timings, f"{name}: PyTorch composition", True, {}, {})
    torch.set_num_threads(threads)
    # the trainer's batch augmentation: the whole batch of 8 on the main thread, with all its threads
    image, label = torch.rand(8, 3, 256, 256, generator=g) * 255, target.repeat(2, 1, 1, 1)
    augmentation = RandFlipRotateBatch(seed=0)

    def augment(kernels: bool):
        with cpu_kernels.enabled(kernels):
            augmentation(image, label)

    name = "RandFlipRotateBatch (flips, rotation), batch 8, 256x256"
    fns = {f"{name}: PyTorch operators": lambda: augment(False), f"{name}: C++ kernel": lambda: augment(True)}
    timings = interleaved(fns, images=8, repeats=max(args.repeats, 9), calls=5, warmup=1)
    group = f"trainer's batch augmentation (main thread, {threads} threads, as prepare_batch runs it)"
    rows += rows_from_timings(group, 8, timings, f"{name}: PyTorch operators", True, {}, {})
    return rows, []


# ---------------------------------------------------------------------------------------- bundle (child processes)
def _child_train(opts: dict) -> dict:
    """Build configs/train.json's train#dataloader, prepare_batch, network, loss and optimizer with ConfigParser
    and time them."""
    from monai.bundle import ConfigParser

    torch.set_num_threads(opts["threads"])
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "configs" / "train.json"))
    parser.update(
        {
            "bundle_root": opts["tmp"],
            "output_dir": opts["tmp"] + "/runs",
            "ckpt_dir": opts["tmp"] + "/models",
            "dataset_dir": opts["data"],
            "num_workers": opts["num_workers"],
            "device": "$torch.device('cpu')",
            "train#dataset#progress": False,
            "train#dataset#data": f"$@datalists['training'][:{opts['images']}]",
        }
    )
    parser.parse(True)
    result: dict = {"num_workers": opts["num_workers"]}
    t0, c0 = time.perf_counter(), time.process_time()
    loader = parser.get_parsed_content("train#dataloader")  # builds and fills the CacheDataset
    result["cache_s"] = time.perf_counter() - t0
    result["cache_cpu_s"] = time.process_time() - c0
    result["cache_images"] = len(loader.dataset)
    net = parser.get_parsed_content("network")
    loss_fn = parser.get_parsed_content("loss")
    opt = parser.get_parsed_content("optimizer")
    # the trainer's prepare_batch: with augment_on_device (the default) the flips and rotation happen here
    prepare = parser.get_parsed_content("train#prepare_batch")
    net.train()

    def children_cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    def epoch(step: bool) -> tuple[list[float], list[float], int]:
        """Per batch (after the first two): wall and CPU seconds per image, this process and its workers."""
        walls, cpus, n = [], [], 0
        result.setdefault("batch_seconds", [])
        t_prev, c_prev = time.perf_counter(), time.process_time() + children_cpu()
        for i, batch in enumerate(loader):
            images, labels = prepare(batch, torch.device("cpu"))
            if step:
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(images), labels)
                loss.backward()
                opt.step()
            t_now, c_now = time.perf_counter(), time.process_time() + children_cpu()
            if i >= 2:
                result["batch_seconds"].append(t_now - t_prev)
                walls.append((t_now - t_prev) / len(batch["image"]))
                cpus.append((c_now - c_prev) / len(batch["image"]))
                n += len(batch["image"])
            t_prev, c_prev = t_now, c_now
        return walls, cpus, n

    if opts["loader_only"]:
        walls, cpus, n = epoch(step=False)
    else:
        walls, cpus, n = epoch(step=True)
    result.update(walls=walls, cpus=cpus, images=n)
    # CPU seconds of worker processes are only counted once they exit (persistent workers exit with the loader)
    return result


def _child_infer(opts: dict) -> dict:
    """Run configs/inference.json's evaluator on a folder of photographs; images/s and peak RSS."""
    from monai.bundle import ConfigParser

    torch.set_num_threads(opts["threads"])
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "configs" / "inference.json"))
    overrides = {
        "bundle_root": str(REPO_ROOT),
        "dataset_dir": opts["images"],
        "output_dir": opts["out"],
        "device": "$torch.device('cpu')",
    }
    if opts.get("onnx"):
        overrides["onnx_path"] = opts["onnx"]
        # the config's own expression, with the thread count of this run
        overrides["network"] = f"$egeunet_monai.export.load_onnx_predictor(@onnx_path, threads={opts['threads']})"
    else:
        overrides["ckpt_path"] = opts["ckpt"]
    parser.update(overrides)
    parser.parse(True)
    evaluator = parser.get_parsed_content("evaluator")  # its val_handlers (weights loader) attach here
    n = len(parser.get_parsed_content("datalist"))
    t0, c0 = time.perf_counter(), time.process_time()
    evaluator.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    written = len(list(Path(opts["out"]).glob("*_mask.png")))
    rss_mb = peak_rss_mb()
    return {"images": n, "written": written, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss_mb}


def peak_rss_mb() -> float:
    """Peak resident memory of this process. ``VmHWM`` belongs to the address space, which ``execve`` replaces;
    ``ru_maxrss`` survives ``execve`` and would report the parent's peak in a child started by fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(kind: str, opts: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", kind, "--_opts", json.dumps(opts)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(REPO_ROOT), env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{kind} child failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")


def bundle_train_rows(args, tmp: Path) -> tuple[list[Row], list[str]]:
    rows, messages = [], []
    if not (args.train_dir / "images").is_dir():
        return rows, [f"bundle training rows skipped: no real data at {args.train_dir}"]
    group = f"training end to end, bundle train#dataloader ({args.train_images} real images, batch 8)"
    settings = [("loader only", 0, True)] + [("loader + step", nw, False) for nw in args.num_workers]
    first = True
    for label, nw, loader_only in settings:
        log(f"bundle training: {label}, num_workers={nw}")
        opts = {
            "tmp": str(tmp / f"train_nw{nw}_{int(loader_only)}"),
            "data": str(args.train_dir),
            "images": args.train_images,
            "num_workers": nw,
            "threads": args.threads,
            "loader_only": loader_only,
        }
        res = run_child("train", opts, timeout=args.child_timeout)
        if first:
            rows.append(
                Row(
                    group,
                    "CacheDataset fill (decode + resize, once)",
                    "-",
                    "img/s",
                    [res["cache_images"] / res["cache_s"]],
                    [res["cache_images"] / max(res["cache_cpu_s"], 1e-9)],
                    note=f"num_workers={nw} (CPU time of the main process only)",
                )
            )
            first = False
        walls, cpus = res["walls"], res["cpus"]
        # one value per window of 4 batches: the spread over the epoch
        window = 4
        values = [1 / statistics.mean(walls[i : i + window]) for i in range(0, len(walls) - window + 1, window)] or [
            1 / statistics.mean(walls)
        ]
        total = res["images"] / sum(res["batch_seconds"]) if walls else float("nan")
        rows.append(
            Row(
                group,
                f"{label}, num_workers={nw}" + (" (augment + collate only)" if loader_only else ""),
                "8",
                "img/s",
                values,
                [1 / statistics.mean(cpus)] if nw == 0 else [],
                note=f"{res['images']} images timed, epoch rate {total:.2f} img/s"
                + ("" if nw == 0 else "; CPU-time rate omitted (workers' CPU is not visible while they run)"),
            )
        )
    return rows, messages


EPOCH_LINE = re.compile(r"Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d+):([\d.]+)")


def run_bundle_training(
    args, tmp: Path, ranks: int, batch: int, workers: int, extra: list[str], env_extra: dict[str, str] | None = None
) -> tuple[list[float], str]:
    """``python -m monai.bundle run training`` (``torchrun`` with multi_gpu_train.json for ranks > 1) on a subset
    of the real images, no validation; returns Ignite's epoch times (the slowest rank's) and the command."""
    out = tmp / f"trainer_{ranks}x{batch}_w{workers}_{len(extra)}_{len(env_extra or {})}"
    configs = "configs/train.json" if ranks == 1 else "['configs/train.json','configs/multi_gpu_train.json']"
    launcher = (
        [sys.executable, "-m", "monai.bundle"]
        if ranks == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m", "monai.bundle"]
    )
    overrides = [
        "--batch_size", str(batch), "--num_workers", str(workers), "--max_epochs", str(args.trainer_epochs),
        "--val_interval", str(args.trainer_epochs + 1), "--dataset_dir", str(args.train_dir),
        f"--train#dataset#data", f"$@datalists['training'][:{args.train_images}]", "--train#dataset#progress", "False",
    ]  # fmt: skip
    cmd = launcher + ["run", "training", "--config_file", configs, "--bundle_root", str(out)] + overrides + extra
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(max(1, args.threads // ranks)), **(env_extra or {}))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.child_timeout, cwd=str(REPO_ROOT), env=env)
    epochs: dict[int, float] = {}
    for m in EPOCH_LINE.finditer(proc.stdout + proc.stderr):
        seconds = int(m.group(2)) * 3600 + int(m.group(3)) * 60 + float(m.group(4))
        epochs[int(m.group(1))] = max(seconds, epochs.get(int(m.group(1)), 0.0))
    if proc.returncode or len(epochs) < args.trainer_epochs:
        raise RuntimeError(f"bundle training failed (rc {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    shown = [f"{k}={v}" for k, v in (env_extra or {}).items()]
    shown += ["python -m monai.bundle" if ranks == 1 else f"torchrun --nproc_per_node={ranks} -m monai.bundle"]
    shown += ["run training --config_file", f'"{configs}"' if ranks > 1 else configs, "--batch_size", str(batch)]
    shown += ["--num_workers", str(workers)] + extra
    return [epochs[k] for k in sorted(epochs)], " ".join(shown)


def bundle_trainer_rows(args, tmp: Path) -> tuple[list[Row], list[str]]:
    """The bundle's own SupervisedTrainer, end to end: epochs after the first (CacheDataset filled, workers up).
    Each variant runs ``--trainer-repeats`` times, the variants taking turns in a rotating order (as the other
    groups), so that a change of load on a shared machine slows them alike."""
    if not (args.train_dir / "images").is_dir():
        return [], [f"bundle trainer rows skipped: no real data at {args.train_dir}"]
    group = f"training end to end, the bundle's trainer ({args.train_images} real images, epochs 2-{args.trainer_epochs})"
    unsplit = ["--split_batch_workers", "1"]
    per_sample = ["--augment_on_device", "false"]  # MONAI's RandFlipd/RandRotated in the loader's workers
    no_kernels = {"EGEUNET_CPU_KERNELS": "0"}  # fused_ops' PyTorch compositions (before the C++ kernels)
    variants = [
        ("1 process, plain ops, per-sample augmentation (before fused_ops)", 1, 8, 2, ["--network_def#fused_ops", "False", "--loss#fused_ops", "False", "--optimizer#fused", "False"] + unsplit + per_sample, {}),
        ("1 process, fused_ops without its C++ kernels, batch split over 2 threads, per-sample augmentation (2026-11-29)", 1, 8, 2, per_sample, no_kernels),
        ("1 process, fused_ops with C++ kernels, batch split over 2 threads, per-sample augmentation", 1, 8, 2, per_sample, {}),
        ("1 process (configs/train.json as shipped: C++ kernels, batch split over 2 threads, batch augmentation, loader in the main process)", 1, 8, 2, [], {}),
        ("1 process, as shipped but with 2 loader worker processes", 1, 8, 2, ["--loader_workers", "2"], {}),
        ("torchrun, 2 CPU ranks x batch 4 (global batch 8, the recipe)", 2, 4, 0, [], {}),
        ("torchrun, 2 CPU ranks x batch 8 (global batch 16)", 2, 8, 0, [], {}),
    ]  # fmt: skip
    if args.quick:  # one run of each kind: one process as shipped, the batched augmentation, torchrun
        variants = [variants[i] for i in (3, 4, 5)]
    messages = [f"'{v[0]}' skipped: --threads {args.threads}" for v in variants if v[1] > args.threads]
    variants = [v for v in variants if v[1] <= args.threads]
    rates: dict[str, list[float]] = {v[0]: [] for v in variants}
    commands: dict[str, str] = {}
    for r in range(args.trainer_repeats):
        for label, ranks, batch, workers, extra, env_extra in rotated(variants, r):
            log(f"bundle trainer: {label} (repeat {r + 1})")
            (tmp / f"r{r}").mkdir(exist_ok=True)
            times, commands[label] = run_bundle_training(args, tmp / f"r{r}", ranks, batch, workers, extra, env_extra)
            rates[label] += [args.train_images / t for t in times[1:]]
    rows = []
    reference = statistics.median(rates[variants[0][0]]) if variants else None
    for label, ranks, batch, *_ in variants:
        rate = statistics.median(rates[label])
        rows.append(
            Row(group, label, str(batch * ranks), "img/s", rates[label], [], ratio=rate / reference,
                note=f"`{commands[label]}`")
        )  # fmt: skip
    return rows, messages


def bundle_infer_rows(args, net, tmp: Path) -> tuple[list[Row], list[str]]:
    rows, messages = [], []
    files = sorted(p for p in args.ph2_dir.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    if not files:
        return rows, [f"bundle inference rows skipped: no images at {args.ph2_dir}"]
    files = files[: args.ph2_images]
    folder = tmp / "ph2_subset"
    folder.mkdir()
    for f in files:
        os.symlink(f.resolve(), folder / f.name)
    ckpt = tmp / "model.pt"
    torch.save(net.state_dict(), ckpt)
    variants = [("eager (reference)", {})]
    try:
        from egeunet_monai.export import export_onnx

        variants.append(("ONNX Runtime (onnx_path)", {"onnx": export_onnx(net, tmp / "bundle.onnx", check=False)}))
    except ImportError as err:
        messages.append(f"bundle ONNX row skipped: {err}")
    results: dict[str, list[dict]] = {name: [] for name, _ in variants}
    for r in range(args.bundle_repeats):
        for name, extra in variants:
            out = tmp / f"pred_{len(results[name])}_{name.split()[0]}"
            log(f"bundle inference: {name}, repeat {r + 1}")
            opts = {"images": str(folder), "out": str(out), "ckpt": str(ckpt), "threads": args.threads, **extra}
            results[name].append(run_child("infer", opts, timeout=args.child_timeout))
    ref = results["eager (reference)"]
    group = f"inference end to end, configs/inference.json ({len(files)} full-size PH2 photographs, batch 1)"
    for name, res in results.items():
        values = [x["images"] / x["wall_s"] for x in res]
        cpus = [x["images"] / x["cpu_s"] for x in res]
        ratio = statistics.median(x["wall_s"] / y["wall_s"] for x, y in zip(ref, res))
        cpu_ratio = statistics.median(x["cpu_s"] / y["cpu_s"] for x, y in zip(ref, res))
        rss = max(x["peak_rss_mb"] for x in res)
        written = min(x["written"] for x in res)
        rows.append(
            Row(
                group,
                name,
                "1",
                "img/s",
                values,
                cpus,
                ratio,
                cpu_ratio,
                note=f"peak RSS {rss:.0f} MB; {written} masks written per run (decode, resize, infer, invert, PNG)",
            )
        )
    return rows, messages


# ------------------------------------------------------------------------------------------- size and the bound
def count_rows(args, net) -> tuple[list[Row], list[str]]:
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    x = torch.rand(1, 3, 256, 256) * 255

    def count(mode: str) -> tuple[int, dict]:
        model = copy.deepcopy(net)
        if mode == "train":
            model.train()  # no gate cache: the gate mixers run every call, as in the original
            ctx = torch.no_grad()
        else:
            model.eval()
            ctx = torch.no_grad()
        with ctx:
            if mode == "eval-cached":
                model(x)  # fill the gate cache
            counter = FlopCounterMode(display=False)
            with counter:
                model(x)
        per_op = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
        return counter.get_total_flops(), per_op

    total_train, ops_train = count("train")
    total_cached, ops_cached = count("eval-cached")
    conv_train = sum(v for k, v in ops_train.items() if "convolution" in k) // 2
    conv_cached = sum(v for k, v in ops_cached.items() if "convolution" in k) // 2
    rows = [
        Row("size", "trainable parameters", "-", "", text=f"{params:,}"),
        Row(
            "size",
            "multiply-adds per 1x3x256x256 image, every conv (gate mixers included)",
            "1",
            "MAC",
            text=f"{total_train // 2:,}",
            note=f"FlopCounterMode, train-mode forward (no gate cache); convolutions {conv_train:,} "
            f"(original: {ORIGINAL_CONV_MACS:,}); other counted ops: "
            + (
                ", ".join(f"{k.split('.')[-1]} {v // 2:,}" for k, v in ops_train.items() if "convolution" not in k)
                or "none (norms, GELU, interpolation, max-pool, Hadamard products are not multiply-adds it counts)"
            ),
        ),
        Row(
            "size",
            "multiply-adds per image, eval with cached gates (what inference runs)",
            "1",
            "MAC",
            text=f"{total_cached // 2:,}",
            note=f"convolutions {conv_cached:,}: the gate mixers ({conv_train - conv_cached:,} MAC) run once per size",
        ),
    ]
    # the machine's float32 multiply-add rate (a large matmul, same threads), measured now: the physical bound
    n = 1024 if args.quick else 2048
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    rates, cpu_rates = [], []
    for _ in range(3 if args.quick else 5):
        t0, c0 = time.perf_counter(), time.process_time()
        a @ b
        rates.append(n**3 / (time.perf_counter() - t0))
        cpu_rates.append(n**3 / max(time.process_time() - c0, 1e-9))
    cores = os.cpu_count() or 1
    rows.append(
        Row(
            "bound",
            f"float32 matmul {n}x{n} ({args.threads} threads)",
            "-",
            "GMAC/s",
            [r / 1e9 for r in rates],
            [r / 1e9 for r in cpu_rates],
            note=f"multiply-add rate of the BLAS: wall clock under the current load; CPU-time rate is per busy "
            f"core (x {cores} cores = {cores * statistics.median(cpu_rates) / 1e9:.1f} GMAC/s on an idle machine)",
        )
    )
    macs = total_cached // 2
    rows.append(
        Row(
            "bound",
            "inference images/s if every MAC ran at the matmul rate",
            "-",
            "img/s",
            [r / macs for r in rates],
            [r / macs for r in cpu_rates],
            note=f"idle-machine bound: {cores * statistics.median(cpu_rates) / macs:,.0f} img/s on {cores} cores; "
            "the network is bound by memory traffic and per-op overhead far below it",
        )
    )
    rows.append(
        Row(
            "bound",
            "training images/s if every MAC ran at the matmul rate (3x the forward)",
            "-",
            "img/s",
            [r / (3 * total_train // 2) for r in rates],
            [r / (3 * total_train // 2) for r in cpu_rates],
            note=f"idle-machine bound: {cores * statistics.median(cpu_rates) / (3 * total_train / 2):,.0f} img/s "
            f"on {cores} cores",
        )
    )
    return rows, []


# ------------------------------------------------------------------------------------------------------------ main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0]
        + " Groups: inference (batch 1/8/64, eager, channels-last, optimize_for_inference, TorchScript, ONNX Runtime,"
        " bf16), training step, the fused_ops operators with and without their C++ kernels, training end to end through configs/train.json, inference end to end through"
        " configs/inference.json, size (parameters, multiply-adds) and the bound they imply.",
        epilog="Every ratio is against the eager network measured in the same run. See docs/benchmarks.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, help="also write the header and table (Markdown) to this file")
    p.add_argument("--json", type=Path, help="also write the raw measurements as JSON to this file")
    p.add_argument("--quick", action="store_true", help="smoke run: few repeats, small subsets, batch 1 and 8 only, three bundle-trainer variants")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch / ONNX Runtime intra-op threads")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per path (after warm-up)")
    p.add_argument("--latency-calls", type=int, default=4, help="batch-1 calls per latency repeat")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64], help="inference batch sizes")
    p.add_argument("--size", type=int, default=256, help="inference image height and width")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="EGE-UNet weights (ours or the original's)")
    p.add_argument("--train-dir", type=Path, default=DEFAULT_TRAIN_DIR, help="real images/ + masks/ for training")
    p.add_argument("--train-batch", type=int, default=8, help="batch size of the training-step rows")
    p.add_argument("--train-images", type=int, default=256, help="subset of --train-dir for the bundle rows")
    p.add_argument("--num-workers", type=int, nargs="+", default=[0, 1, 2], help="bundle loader num_workers to try")
    p.add_argument("--trainer-epochs", type=int, default=3, help="epochs of each real bundle training run (first not timed)")
    p.add_argument("--trainer-repeats", type=int, default=2, help="runs of each bundle-trainer variant (interleaved)")
    p.add_argument("--ph2-dir", type=Path, default=DEFAULT_PH2_DIR, help="full-size photographs for the bundle inference")
    p.add_argument("--ph2-images", type=int, default=24, help="how many of them")
    p.add_argument("--bundle-repeats", type=int, default=2, help="runs of each bundle-inference variant")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="leave out the bf16 autocast rows")
    p.add_argument("--bf16-all", action="store_true", help="bf16 inference at every batch size (default: batch 8)")
    p.add_argument("--compile", action="store_true", help="add torch.compile rows (compiling takes minutes)")
    p.add_argument(
        "--skip",
        nargs="+",
        default=[],
        choices=["inference", "training", "kernels", "bundle-train", "bundle-trainer", "bundle-infer", "size"],
        help="groups to leave out",
    )
    p.add_argument(
        "--malloc-tuned",
        action="store_true",
        help="run with glibc malloc keeping freed memory (MALLOC_MMAP_THRESHOLD_=32 MiB, MALLOC_TRIM_THRESHOLD_=16 GiB): "
        "removes the page faults that large, short-lived tensors cost with the default settings",
    )
    p.add_argument("--child-timeout", type=float, default=1800, help="seconds allowed to each bundle child process")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    p.add_argument("--_opts", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 2)
        args.latency_calls = min(args.latency_calls, 2)
        args.batch_sizes = [b for b in args.batch_sizes if b <= 8] or [1]
        args.train_images = min(args.train_images, 40)
        args.num_workers = args.num_workers[:1]
        args.ph2_images = min(args.ph2_images, 3)
        args.bundle_repeats = 1
        args.trainer_epochs = 2
        args.trainer_repeats = 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._child:
        warnings.simplefilter("ignore")
        opts = json.loads(args._opts)
        result = _child_train(opts) if args._child == "train" else _child_infer(opts)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    if args.malloc_tuned and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        env = dict(os.environ, **MALLOC_TUNED)
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve())] + sys.argv[1:], env)
    torch.set_num_threads(args.threads)
    machine = machine_description(args.threads)
    tuned = {k: os.environ[k] for k in MALLOC_TUNED if k in os.environ}
    machine["malloc"] = "glibc, " + (", ".join(f"{k}={v}" for k, v in tuned.items()) if tuned else "default settings")
    load_start = load_average()
    started = time.time()
    net, weights_note = load_model(args.weights)
    x_all, y_all, data_note = load_real_batch(args.train_dir, max(args.batch_sizes + [args.train_batch]), (args.size, args.size))
    rows: list[Row] = []
    messages = [weights_note, f"inference/training-step inputs: {data_note}"]
    with tempfile.TemporaryDirectory(prefix="egeunet_bench_") as tmp_name:
        tmp = Path(tmp_name)
        groups = [
            ("inference", lambda: inference_rows(args, net, x_all, tmp)),
            ("training", lambda: training_rows(args, net, x_all, y_all)),
            ("kernels", lambda: kernel_rows(args)),
            ("bundle-train", lambda: bundle_train_rows(args, tmp)),
            ("bundle-trainer", lambda: bundle_trainer_rows(args, tmp)),
            ("bundle-infer", lambda: bundle_infer_rows(args, net, tmp)),
            ("size", lambda: count_rows(args, net)),
        ]
        run_groups(groups, args.skip, rows, messages)
    load_end = load_average()
    command = "python scripts/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = [
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; torch {machine['torch']} ({machine['torch_threads']} "
        f"thread{'s' if machine['torch_threads'] != 1 else ''}), MONAI {machine['monai']}, ONNX Runtime {machine['onnxruntime']}, Python {machine['python']}; "
        f"malloc: {machine['malloc']}",
        "",
        f"Load at start: `{load_start}`; at end: `{load_end}`; took {time.time() - started:.0f} s",
        "",
        "Notes: " + "; ".join(messages),
        "",
        "",
    ]
    text = "\n".join(header) + render(rows) + "\n"
    print(text)
    raw = {"command": command, "machine": machine, "load_start": load_start, "load_end": load_end, "messages": messages}
    save_report(args, text, raw, rows)
    return 0


def save_report(args, text: str, raw: dict, rows: list[Row]) -> None:
    """The table (``text``) to ``--out`` and ``raw`` plus the rows as JSON to ``--json``, where given."""
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps({**raw, "rows": [r.__dict__ for r in rows]}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
