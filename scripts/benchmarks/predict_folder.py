#!/usr/bin/env python
# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""End to end: masks for a folder of full-size PH2 photographs, each way a whole process of its own, timed from
start to exit (imports, weights, every image decoded, segmented and written as PNG): images/s, CPU seconds and peak
RSS of the process, and the mean Dice between its masks and the plain loop's.

- the plain loop, as a user of the original code writes it (the original code is not available here; its network is
  this project's ``EGEUNet``, eval mode, eager, PyTorch's default threads): PIL decode, min-max scaling to
  [0, 255], resize to 256 x 256 (``F.interpolate`` bilinear with anti-aliasing), the network at batch 1, sigmoid,
  resize back (bilinear), threshold 0.5, PNG;
- ``egeunet-monai predict`` as it is in this checkout (``cli``), and with ``--runtime eager`` (``cli-eager``: the
  masks the default runtime's must agree with);
- ``predict_folder`` (egeunet_monai/inference/batch.py) with worker threads, and with DataLoader worker processes
  for decoding instead (the same functions), to choose between them.

All use the same weights (the released ones by default), so the masks can be compared. The ONNX export is made once
before the runs (a first run on new weights adds it: see the printed time).

Example: ``python scripts/benchmarks/predict_folder.py --images 300 --repeats 3`` (each repeat runs every variant once,
in a rotating order; the table gives the median images/s and the median of the per-repeat ratios).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RELEASED_WEIGHTS, REPO_ROOT, SHARED_DATA, machine, markdown, plain_segment

PH2 = SHARED_DATA / "ph2" / "images"


def plain_loop(inputs: Path, out: Path, weights: str, threads: int | None) -> None:
    import torch

    from egeunet_monai.networks import EGEUNet

    if threads:
        torch.set_num_threads(threads)
    net = EGEUNet()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()
    for path in sorted(inputs.glob("*.jpg")):
        plain_segment(net, path, out)


def dataloader_pipeline(inputs: Path, out: Path, weights: str, workers: int, batch: int) -> None:
    """Decoding in DataLoader worker processes, writing on one thread: the alternative to predict_folder's threads."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch
    from PIL import Image

    from egeunet_monai.data import DermoscopyImageReader
    from egeunet_monai.inference.batch import prepare_image, restore_mask
    from egeunet_monai.inference.runtime import load_runtime

    files = sorted(inputs.glob("*.jpg"))

    class Photos(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            torch.set_num_threads(1)
            reader = DermoscopyImageReader(kind="image", reverse_indexing=False)
            array, _ = reader.get_data(reader.read(str(files[i])))
            return prepare_image(np.asarray(array)), i, array.shape[0], array.shape[1]

    runtime = load_runtime(weights, threads=1)
    loader = torch.utils.data.DataLoader(Photos(), batch_size=batch, num_workers=workers)

    def write(p, i, h, w):
        Image.fromarray(restore_mask(p.numpy(), h, w)[1]).save(out / f"{files[i].stem}_mask.png", compress_level=1)

    with ThreadPoolExecutor(1) as pool:
        jobs = []
        for x, idx, hs, ws in loader:
            probabilities = torch.sigmoid(runtime(x))
            jobs += [pool.submit(write, p, int(i), int(h), int(w)) for p, i, h, w in zip(probabilities, idx, hs, ws)]
        for job in jobs:
            job.result()


def child(args) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    kind = args.child
    if kind == "plain":
        plain_loop(args.input, args.out, args.weights, args.threads)
    elif kind == "pipeline":
        from egeunet_monai.inference.batch import predict_folder

        predict_folder(args.input, args.out, args.weights, batch_size=args.batch, workers=args.workers,
                       threads=args.threads, progress=False)  # fmt: skip
    elif kind == "dataloader":
        dataloader_pipeline(args.input, args.out, args.weights, args.workers, args.batch)


def run(cmd: list[str], env: dict, timeout: float) -> tuple[float, float, float, int]:
    """(wall s, CPU s, peak RSS MiB, exit code) of one whole process; stopped after ``timeout`` seconds (exit code
    -9: the rate is then that of the masks written so far)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - start > timeout:
            proc.kill()
        time.sleep(0.05)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, -9):
        print(f"{' '.join(cmd)} failed with exit code {code}", file=sys.stderr)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code


def mean_dice(a: Path, b: Path) -> float:
    import numpy as np
    from PIL import Image

    scores = []
    for mask in sorted(a.glob("*_mask.png")):
        other = b / mask.name
        if not other.is_file():
            return float("nan")
        p, q = np.asarray(Image.open(mask)) > 0, np.asarray(Image.open(other)) > 0
        scores.append(2 * (p & q).sum() / max(int(p.sum() + q.sum()), 1) if p.shape == q.shape else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=300, help="photographs (the 150 of PH2, repeated)")
    p.add_argument("--weights", default=str(RELEASED_WEIGHTS))
    p.add_argument("--variants", nargs="+",
                   default=["plain-1", "threads-2", "threads-1", "dataloader-2", "plain", "cli"])
    p.add_argument("--repeats", type=int, default=1, help="interleaved repeats of every variant (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=600, help="seconds one process may run (default: %(default)s)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)

    sys.path.insert(0, str(REPO_ROOT))
    print(machine())
    photos = sorted(PH2.glob("*.jpg"))
    if not photos:
        raise SystemExit(f"no photographs in {PH2}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    inputs = tmp / "photos"
    inputs.mkdir()
    for i in range(args.images):  # copies under new names: each file is decoded as a new one
        src = photos[i % len(photos)]
        shutil.copy(src, inputs / f"{src.stem}_{i // len(photos)}.jpg")
    from egeunet_monai.inference.runtime import load_runtime

    start = time.perf_counter()
    print(load_runtime(args.weights).description, f"({time.perf_counter() - start:.1f} s)")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    me = [sys.executable, str(Path(__file__).resolve())]
    commands = {
        "plain": ("plain loop (original network, eager, batch 1, PyTorch's default threads)",
                  me + ["--child", "plain", "--threads", "0"]),
        "plain-1": ("plain loop (original network, eager, batch 1, 1 thread)", me + ["--child", "plain"]),
        "cli": ("egeunet-monai predict (this checkout, default runtime, batch 8)",
                [str(Path(sys.executable).with_name("egeunet-monai")), "predict", str(inputs), "--device", "cpu",
                 "--weights", args.weights, "--no-progress"]),
        "cli-eager": ("egeunet-monai predict --runtime eager (the PyTorch network, batch 8)",
                      [str(Path(sys.executable).with_name("egeunet-monai")), "predict", str(inputs), "--device",
                       "cpu", "--weights", args.weights, "--no-progress", "--runtime", "eager"]),
    }  # fmt: skip
    for v in args.variants:
        if v.startswith("threads-"):
            w = int(v.split("-")[1])
            commands[v] = (f"predict_folder, {w} worker thread{'s' * (w > 1)}, ONNX Runtime 1 thread, batch 8",
                           me + ["--child", "pipeline", "--workers", str(w), "--threads", "1"])  # fmt: skip
        elif v.startswith("dataloader-"):
            w = int(v.split("-")[1])
            commands[v] = (f"DataLoader, {w} worker processes, ONNX Runtime 1 thread, batch 8",
                           me + ["--child", "dataloader", "--workers", str(w)])  # fmt: skip
    outs = {v: tmp / f"out_{v}" for v in args.variants}
    runs: dict[str, list[tuple[float, float, float, int]]] = {v: [] for v in args.variants}  # (rate, CPU, RSS, masks)
    for r in range(args.repeats):
        # every variant once per repeat, the order rotating as in common.interleaved: a burst of load hits all alike
        for v in args.variants[r % len(args.variants):] + args.variants[: r % len(args.variants)]:
            label, cmd = commands[v]
            shutil.rmtree(outs[v], ignore_errors=True)
            outs[v].mkdir()
            if v.startswith("cli"):
                cmd = cmd + ["--out", str(outs[v])]
            else:
                cmd = cmd + ["--input", str(inputs), "--out", str(outs[v]), "--weights", args.weights]
            wall, cpu, rss, code = run(cmd, env, args.timeout)
            written = len(list(outs[v].glob("*_mask.png")))
            if code not in (0, -9):
                label += f" (exit code {code})"
            runs[v].append((written / wall, cpu, rss, written))
            print(f"repeat {r + 1}: {label}: {written / wall:.1f} images/s, {wall:.1f} s, CPU {cpu:.1f} s, "
                  f"peak RSS {rss:.0f} MiB, {written} masks", flush=True)
    base = args.variants[0]
    eager = "cli-eager" if "cli-eager" in outs else None
    rows = []
    for v in args.variants:
        rates = [run_[0] for run_ in runs[v]]
        ratios = [mine[0] / theirs[0] for mine, theirs in zip(runs[v], runs[base])]
        row = [commands[v][0], f"{statistics.median(rates):.1f}", " / ".join(f"{x:.1f}" for x in rates),
               f"{statistics.median(ratios):.2f}x", f"{statistics.median(run_[1] for run_ in runs[v]):.1f}",
               f"{max(run_[2] for run_ in runs[v]):.0f}", str(runs[v][-1][3]),
               f"{mean_dice(outs[v], outs[base]):.4f}"]  # fmt: skip
        if eager:
            row.append(f"{mean_dice(outs[v], outs[eager]):.4f}")
        rows.append(row)
    print(f"\n{args.images} full-size PH2 photographs ({len(photos)} distinct), one whole process each, "
          f"{args.repeats} interleaved repeat(s)")
    print(markdown(["path", "images/s (median)", "each repeat", f"vs {base} (median of ratios)", "CPU s (median)",
                    "peak RSS MiB (max)", "masks", f"mean Dice vs {base}"]
                   + (["mean Dice vs predict --runtime eager"] if eager else []), rows))  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
