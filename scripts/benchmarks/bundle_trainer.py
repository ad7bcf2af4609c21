# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The bundle's trainer end to end on real images: ``python -m monai.bundle run training`` as a user runs it.

Each variant is one command line (this checkout's configs/train.json with some overrides, or another checkout's, e.g.
main's, with its own Python), run ``--repeats`` times in an order that rotates from repeat to repeat, so that a change
of load on a shared machine slows all variants alike. Timed: Ignite's epoch times after the first (the first fills
the CacheDataset and builds nothing else); no validation. Figures: images per second, the median and range over the
timed epochs of all repeats.

    python scripts/benchmarks/bundle_trainer.py --images 256 --epochs 3 --repeats 2 \
        --baseline /work/main --out /tmp/trainer.json

``--repeat-index K --repeats 1`` runs one round (with round K's order) and appends to ``--out``: several short
commands make one interleaved run (on a machine shared with a long job that a wrapper pauses for each command).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, SHARED_DATA, machine  # noqa: E402

EPOCH_LINE = re.compile(r"Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d+):([\d.]+)")

# label: (checkout ("branch" or "baseline"), overrides, extra environment)
VARIANTS = {
    "baseline as shipped": ("baseline", [], {}),
    "as shipped (accelerate true, PyTorch's default threads)": ("branch", [], {}),
    "--accelerate false (the reference network, loss and augmentation)": ("branch", ["--accelerate", "false"], {}),
    "--intra_op_threads 1": ("branch", ["--intra_op_threads", "1"], {}),
}


def train_once(root: Path, python: str, out: Path, args, overrides: list[str], env_extra: dict) -> list[float]:
    """Ignite's epoch times of one ``monai.bundle run training`` in checkout ``root``."""
    cmd = [
        python, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
        "--bundle_root", str(out), "--dataset_dir", str(args.data), "--max_epochs", str(args.epochs),
        "--val_interval", str(args.epochs + 1), "--train#dataset#data", f"$@datalists['training'][:{args.images}]",
        "--train#dataset#progress", "False", *overrides,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONWARNINGS="ignore", **env_extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, timeout=args.timeout)
    epochs = {int(m[1]): int(m[2]) * 3600 + int(m[3]) * 60 + float(m[4]) for m in EPOCH_LINE.finditer(proc.stdout + proc.stderr)}
    if proc.returncode or len(epochs) < args.epochs:
        raise RuntimeError(f"training failed in {root} (rc {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return [epochs[k] for k in sorted(epochs)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=SHARED_DATA / "isic2017_train_256", help="images/ and masks/")
    p.add_argument("--images", type=int, default=256, help="training images (the first of the split's training list)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is not timed")
    p.add_argument("--repeats", type=int, default=2, help="runs of each variant")
    p.add_argument("--repeat-index", type=int, default=0, help="order of the first round (for runs split in commands)")
    p.add_argument("--baseline", type=Path, help="another checkout (with its own .venv) to run as shipped beside this one")
    p.add_argument("--variants", nargs="+", default=None, help="labels of VARIANTS to run (default: all that apply)")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", type=Path, required=True, help="JSON: appends {variant: [img/s per timed epoch]}")
    args = p.parse_args(argv)

    labels = args.variants or [k for k, v in VARIANTS.items() if v[0] == "branch" or args.baseline]
    roots = {"branch": (REPO_ROOT, sys.executable)}
    if args.baseline:
        roots["baseline"] = (args.baseline.resolve(), str(args.baseline.resolve() / ".venv" / "bin" / "python"))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {"machine": machine(), "rates": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat_index, args.repeat_index + args.repeats):
            shift = r % len(labels)
            for label in labels[shift:] + labels[:shift]:
                which, overrides, env_extra = VARIANTS[label]
                root, python = roots[which]
                times = train_once(root, python, Path(tmp) / f"{r}_{len(overrides)}_{which}", args, overrides, env_extra)
                rates = [args.images / t for t in times[1:]]
                results["rates"].setdefault(label, []).extend(rates)
                print(f"{label}: {', '.join(f'{v:.1f}' for v in rates)} img/s (load {os.getloadavg()[0]:.1f})", flush=True)
                args.out.write_text(json.dumps(results, indent=1))
    for label, rates in results["rates"].items():
        print(f"{label}: median {statistics.median(rates):.1f} img/s ({min(rates):.1f}-{max(rates):.1f}, {len(rates)} epochs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
