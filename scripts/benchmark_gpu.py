#!/usr/bin/env python
# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Speed of EGE-UNet on a GPU: the rows of issue 5's GPU targets, side by side in one run, one Markdown table.

- inference at 256x256, batch 1 latency and batch 256 throughput: eager fp32 (the faithful port of the original:
  the reference of every ratio), eager with bf16 autocast, channels-last, TorchScript (what ``ckpt_export``
  writes), the eager network captured in a CUDA graph and ``torch.compile`` (mode ``reduce-overhead``, CUDA graphs
  too), in fp32 and bf16: a network of ~200 small kernels needs fewer launches more than faster kernels; each with
  its largest difference from eager;
- training, one optimizer step (forward, EGEUNetLoss on the six outputs, backward, fused AdamW) at batch 8 (the
  released recipe) and ``--big-batch``: fp32, bf16 autocast (and ``--compile-train``);
- training end to end through the bundle's own trainer (``python -m monai.bundle run training``; on a GPU it
  augments each batch on the device: ``augment_on_device``) on real images, as shipped and with ``--amp true``
  at batch 8, and at ``--big-batch``: Ignite's epoch times after the first.

CUDA timings wait for the device (``torch.cuda.synchronize``) around each timed repeat; the paths of a group take
turns, repeat by repeat. A path that fails (a compiler missing on the machine, say) becomes a note, not a crash,
so that one run on a lent machine gives every row it can. ``--device cpu`` runs the same code on the CPU (the
test suite's smoke run: tests/scripts/test_benchmark_gpu.py).

Examples::

    python scripts/benchmark_gpu.py --out docs/benchmark_gpu.md            # on a GPU machine, ~5 minutes
    python scripts/benchmark_gpu.py --compile --skip training             # + torch.compile rows, minutes more
    python scripts/benchmark_gpu.py --device cpu --quick                  # smoke run on a CPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks.table import (  # noqa: E402  (the table, model, data and bundle-run helpers)
    DEFAULT_TRAIN_DIR,
    DEFAULT_WEIGHTS,
    Row,
    load_model,
    load_real_batch,
    log,
    render,
    rotated,
    rows_from_timings,
    run_bundle_training,
    run_groups,
    save_report,
)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs), CUDA {torch.version.cuda}"
    return f"CPU ({torch.get_num_threads()} torch threads)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fns: dict[str, Callable[[], object]], device: torch.device, images: int, repeats: int, calls: int,
          warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per image of each path, per repeat; the paths take turns (in a rotating order) repeat by repeat."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    seconds: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for name in rotated(list(fns), r):
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(calls):
                fns[name]()
            synchronize(device)
            seconds[name].append((time.perf_counter() - t0) / (calls * images))
    return seconds


def wall_only(seconds: dict[str, list[float]]) -> dict[str, tuple[list[float], list[float]]]:
    """``timed``'s seconds in the form of benchmark.rows_from_timings, with no CPU-time column (not what a GPU
    spends)."""
    return {name: (values, []) for name, values in seconds.items()}


def attempt(name: str, build: Callable[[], Callable[[], object]], paths: dict, notes: list[str]) -> None:
    """``paths[name] = build()``, or a note saying why that path is left out."""
    try:
        paths[name] = build()
    except Exception as e:  # noqa: BLE001 - one broken path must not cost the others on a lent machine
        notes.append(f"{name}: left out ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})")
        log(traceback.format_exc())


# ------------------------------------------------------------------------------------------------------ inference
def inference_rows(args, net, x_all: torch.Tensor, device: torch.device) -> tuple[list[Row], list[str]]:
    notes: list[str] = []
    eager = net.to(device).eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def bf16(fn):
        def run(x):
            with autocast:
                return fn(x)
        return run

    builders: dict[str, Callable[[], Callable]] = {
        "eager fp32 (reference)": lambda: eager,
        "eager, bf16 autocast": lambda: bf16(eager),
        "eager, channels-last": lambda: (lambda x: eager(x.contiguous(memory_format=torch.channels_last))),
        "TorchScript fp32 (ckpt_export)": lambda: torch.jit.script(eager),
    }
    if args.compile:
        compiled = torch.compile(eager, mode="reduce-overhead")
        builders["torch.compile reduce-overhead, fp32"] = lambda: compiled
        builders["torch.compile reduce-overhead, bf16 autocast"] = lambda: bf16(compiled)
    models: dict[str, Callable] = {}
    for name, build in builders.items():
        attempt(name, build, models, notes)

    rows = []
    for batch in args.batch_sizes:
        x = x_all[:batch].to(device)
        with torch.inference_mode():
            reference = eager(x).float()
            per_batch = dict(models)
            if device.type == "cuda":  # the eager network's ~200 kernels captured once, replayed as one launch
                attempt("eager + CUDA graph, fp32", lambda: captured(eager, x), per_batch, notes)
                attempt("eager + CUDA graph, bf16 autocast", lambda: captured(bf16(eager), x), per_batch, notes)
            paths: dict[str, Callable[[], object]] = {}
            diffs: dict[str, str] = {}
            for name, model in per_batch.items():
                def check(model=model):
                    out = model(x).float()
                    return f"{(out - reference).abs().max().item():.1e} / " \
                           f"{(out.sigmoid() - reference.sigmoid()).abs().max().item():.1e}"
                try:
                    diffs[name] = check()
                    paths[name] = (lambda model=model: model(x))
                except Exception as e:  # noqa: BLE001
                    notes.append(f"{name} at batch {batch}: left out ({type(e).__name__}: {str(e)[:200]})")
            seconds = timed(paths, device, batch, args.repeats, args.latency_calls if batch == 1 else 1, args.warmup)
        group = f"inference {args.size}x{args.size} ({'latency' if batch == 1 else 'throughput'})"
        rows += rows_from_timings(group, batch, wall_only(seconds), "eager fp32 (reference)", batch == 1, diffs, {})
    return rows, notes


def captured(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``fn`` on the (fixed) input ``x`` as a CUDA graph: warmed up on a side stream (which also fills the GHPA gate
    cache), captured, then replayed; the returned callable ignores its argument and returns the graph's output."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_x)

    def replay(_x: torch.Tensor) -> torch.Tensor:
        graph.replay()
        return static_out

    return replay


# -------------------------------------------------------------------------------------------------- training step
def training_rows(args, net0, x_all: torch.Tensor, y_all: torch.Tensor, device: torch.device) -> tuple[list[Row], list[str]]:
    import copy

    from egeunet_monai.losses import EGEUNetLoss

    notes: list[str] = []
    loss_fn = EGEUNetLoss()
    rows = []
    for batch in sorted({args.train_batch, args.big_batch}):
        x, y = x_all[:batch].to(device), y_all[:batch].to(device)
        paths: dict[str, Callable[[], object]] = {}

        def make_step(amp: bool, compile_: bool):
            net = copy.deepcopy(net0).to(device).train()
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2, fused=True)
            forward = torch.compile(net) if compile_ else net

            def step():
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    loss = loss_fn(forward(x), y)
                loss.backward()
                opt.step()
            return step

        attempt("fp32 (reference)", lambda: make_step(False, False), paths, notes)
        attempt("bf16 autocast", lambda: make_step(True, False), paths, notes)
        if args.compile_train:
            attempt("torch.compile, fp32", lambda: make_step(False, True), paths, notes)
        seconds = timed(paths, device, batch, args.repeats, args.step_calls, args.warmup)
        rows += rows_from_timings("training, one optimizer step", batch, wall_only(seconds), "fp32 (reference)", False, {}, {})
    return rows, notes


# ------------------------------------------------------------------------------------------------ bundle trainer
def bundle_trainer_rows(args) -> tuple[list[Row], list[str]]:
    if not (args.train_dir / "images").is_dir():
        return [], [f"bundle trainer rows skipped: no real data at {args.train_dir}"]
    group = f"training end to end, the bundle's trainer ({args.train_images} real images, epochs 2-{args.trainer_epochs})"
    variants = [
        ("configs/train.json as shipped (fp32, augmentation on the device)", args.train_batch, []),
        ("with --amp true (bf16 autocast)", args.train_batch, ["--amp", "true"]),
        (f"batch {args.big_batch} (validation Dice not checked at this batch size)", args.big_batch, []),
    ]
    if args.quick:  # the smoke run: the shipped config once
        variants = variants[:1]
    if args.compile:  # compiled in the first epoch, which is not timed
        variants.append(("with --compile true (torch.compile of the network)", args.train_batch, ["--compile", "true"]))
    rates: dict[str, list[float]] = {v[0]: [] for v in variants}
    commands: dict[str, str] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="egeunet_gpu_bench_") as tmp_name:
        for r in range(args.trainer_repeats):
            for label, batch, extra in rotated(variants, r):
                log(f"bundle trainer: {label} (repeat {r + 1})")
                out = Path(tmp_name) / f"r{r}"
                out.mkdir(exist_ok=True)
                try:
                    times, commands[label] = run_bundle_training(args, out, 1, batch, args.num_workers, extra)
                    rates[label] += [args.train_images / t for t in times[1:]]
                except Exception as e:  # noqa: BLE001
                    notes.append(f"{label}: failed ({str(e)[-500:]})")
    reference = statistics.median(rates[variants[0][0]]) if rates[variants[0][0]] else None
    rows = []
    for label, batch, _ in variants:
        if rates[label]:
            rate = statistics.median(rates[label])
            rows.append(Row(group, label, str(batch), "img/s", rates[label], [],
                            rate / reference if reference else None, None, note=f"`{commands[label]}`"))
    return rows, notes


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda (default when there is one) or cpu")
    p.add_argument("--out", type=Path, help="also write the header and table (Markdown) to this file")
    p.add_argument("--json", type=Path, help="also write the raw measurements as JSON to this file")
    p.add_argument("--quick", action="store_true", help="smoke run: small batches, few repeats, few images")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per path")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per path first (compiling happens here)")
    p.add_argument("--latency-calls", type=int, default=50, help="batch-1 calls per latency repeat")
    p.add_argument("--step-calls", type=int, default=20, help="training steps per repeat")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256], help="inference batch sizes")
    p.add_argument("--size", type=int, default=256, help="inference image height and width")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="EGE-UNet weights (ours or the original's)")
    p.add_argument("--train-dir", type=Path, default=DEFAULT_TRAIN_DIR, help="real images/ + masks/")
    p.add_argument("--train-batch", type=int, default=8, help="the released recipe's batch size")
    p.add_argument("--big-batch", type=int, default=64, help="the larger batch of the training rows")
    p.add_argument("--train-images", type=int, default=1596, help="training images of the bundle runs (subset)")
    p.add_argument("--num-workers", type=int, default=4, help="loader workers of the bundle runs")
    p.add_argument("--trainer-epochs", type=int, default=4, help="epochs of each bundle run (the first not timed)")
    p.add_argument("--trainer-repeats", type=int, default=1, help="runs of each bundle variant")
    p.add_argument("--compile", action="store_true",
                   help="add the torch.compile rows (inference, and a bundle run with --compile true): minutes of compiling")
    p.add_argument("--compile-train", action="store_true", help="add a torch.compile training-step row")
    p.add_argument("--skip", nargs="+", default=[], choices=["inference", "training", "bundle-trainer"], help="groups to leave out")
    p.add_argument("--child-timeout", type=float, default=900, help="seconds allowed to each bundle run")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.latency_calls, args.step_calls = 2, 1, 2, 1
        args.batch_sizes = [min(b, 4) for b in args.batch_sizes]
        args.train_batch, args.big_batch = min(args.train_batch, 4), min(args.big_batch, 8)
        args.train_images, args.trainer_epochs = min(args.train_images, 16), 2
    args.threads = torch.get_num_threads()  # what run_bundle_training gives each run (OMP_NUM_THREADS)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    started = time.time()
    net, weights_note = load_model(args.weights)
    count = max(args.batch_sizes + [args.train_batch, args.big_batch])
    x_all, y_all, data_note = load_real_batch(args.train_dir, count, (args.size, args.size))
    rows: list[Row] = []
    notes = [weights_note, f"inputs: {data_note}"]
    command = "python scripts/benchmark_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv)
    groups = [
        ("inference", lambda: inference_rows(args, net, x_all, device)),
        ("training", lambda: training_rows(args, net, x_all, y_all, device)),
        ("bundle-trainer", lambda: bundle_trainer_rows(args)),
    ]
    # the table is written after each group: a run cut short on a lent machine keeps what it measured
    run_groups(groups, args.skip, rows, notes, lambda: write_outputs(args, command, device, started, rows, notes))
    print(write_outputs(args, command, device, started, rows, notes))
    return 0


def write_outputs(args, command: str, device: torch.device, started: float, rows: list[Row], notes: list[str]) -> str:
    import monai

    header = [
        f"Command: `{command.strip()}`",
        "",
        f"Device: {device_description(device)}; torch {torch.__version__}, MONAI {monai.__version__}; "
        f"took {time.time() - started:.0f} s",
        "",
        "Notes: " + "; ".join(notes),
        "",
        "",
    ]
    text = "\n".join(header) + render(rows) + "\n"
    save_report(args, text, {"command": command, "device": device_description(device), "notes": notes}, rows)
    return text


if __name__ == "__main__":
    sys.exit(main())
