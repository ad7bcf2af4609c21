# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The table, model, data and bundle-run helpers of scripts/benchmark_gpu.py (the GPU benchmark; the CPU benchmarks are
the other modules of this folder, which print their own tables with ``common``)."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
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
ORIGINAL_CONV_MACS = 72_096_256  # the original implementation's convolutions, 1x3x256x256 (../shared/reference)


# ----------------------------------------------------------------------------------------------------------- utils
def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


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



def save_report(args, text: str, raw: dict, rows: list[Row]) -> None:
    """The table (``text``) to ``--out`` and ``raw`` plus the rows as JSON to ``--json``, where given."""
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps({**raw, "rows": [r.__dict__ for r in rows]}, indent=1), encoding="utf-8")

