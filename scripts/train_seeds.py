# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Train one recipe with several seeds, a few at a time: the bundle's own training
(``python -m monai.bundle run training``), one process per seed, to compare recipes by their mean over seeds on the
external test (docs/recipes.md: the seed alone moves the PH2 pooled DSC by up to 0.015).

    python scripts/train_seeds.py --dataset_dir ../shared/data/isic2017_train_256 --out ~/seeds --name zo \\
        --seeds 0 1 2 3 --parallel 2 -- --max_epochs 50 --intensity_prob 0.5 --zoom_prob 0.5 \\
        --zoom_range "[0.8,1.5]" --ema_momentum 0.001 --large_lesion_repeats 3

Each seed trains in ``<work>/<name>_s<seed>`` (``--work``, default ``--out``) with ``--val_fraction 0.1 --seed S
--resume true`` and the arguments after ``--``; when it ends, its ``models/model.pt``, ``runs/datalist_split.json``
and the last lines of its log are copied to ``<out>/<name>_s<seed>/`` and a row is added to ``<out>/seeds.tsv``
(seed, exit status, minutes, and the best epoch and its validation mean Dice as the run's last checkpoint records
them). On a lent GPU machine
(scripts/gpu_seeds_run.sh) ``--work`` is a local folder and ``--out`` the folder that comes back, so a run cut short
still returns every finished seed. Then test each model here:
``python scripts/evaluation_report.py --data ../shared/data/ph2 --weights <out>/<name>_s<seed>/model.pt --out ...``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
_LOG_TAIL_CHARS = 20_000


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_dir", required=True, help="the bundle's --dataset_dir (folders, comma-separated)")
    parser.add_argument("--out", type=Path, required=True, help="where each seed's model, split and log tail go")
    parser.add_argument("--work", type=Path, help="where the trainings run (default: --out)")
    parser.add_argument("--name", required=True, help="the recipe's name: runs are <name>_s<seed>")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--parallel", type=int, default=1, help="trainings at a time (default 1)")
    parser.add_argument("--val_fraction", type=float, default=0.1, help="the selection split (default 0.1)")
    args, bundle_args = parser.parse_known_args(argv)
    if bundle_args[:1] == ["--"]:
        bundle_args = bundle_args[1:]
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    return args, bundle_args


def training_command(args: argparse.Namespace, seed: int, bundle_root: Path, bundle_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
            "--dataset_dir", args.dataset_dir, "--val_fraction", str(args.val_fraction), "--seed", str(seed),
            "--bundle_root", str(bundle_root), "--run_name", bundle_root.name, "--resume", "true", *bundle_args]


def best_epoch(bundle_root: Path) -> tuple[str, str]:
    """(epoch, validation mean Dice) of the best epoch, from the ``validation_best`` of the run's last training
    checkpoint (``runs/checkpoints/``), or ("", "") when there is none (no checkpoint, no selection split)."""
    import torch

    from egeunet_monai.engines import latest_checkpoint

    path = latest_checkpoint(str(bundle_root / "runs" / "checkpoints"))
    best = torch.load(path, map_location="cpu", weights_only=True).get("validation_best") if path else None
    return (str(best["best_metric_epoch"]), str(best["best_metric"])) if best else ("", "")


def train_seed(args: argparse.Namespace, seed: int, bundle_args: list[str], table_lock: threading.Lock) -> int:
    name = f"{args.name}_s{seed}"
    bundle_root = (args.work or args.out) / name
    bundle_root.mkdir(parents=True, exist_ok=True)
    log_file = bundle_root / "train.log"
    start = time.monotonic()
    with open(log_file, "ab") as log:
        code = subprocess.run(training_command(args, seed, bundle_root, bundle_args), cwd=REPO_ROOT,
                              stdout=log, stderr=subprocess.STDOUT).returncode
    minutes = (time.monotonic() - start) / 60
    log_text = log_file.read_text(encoding="utf-8", errors="replace")
    kept = args.out / name
    kept.mkdir(parents=True, exist_ok=True)
    for produced in (bundle_root / "models" / "model.pt", bundle_root / "runs" / "datalist_split.json"):
        if produced.is_file():
            shutil.copy2(produced, kept / produced.name)
    (kept / "train_log_tail.txt").write_text(log_text[-_LOG_TAIL_CHARS:], encoding="utf-8")
    epoch, dice = best_epoch(bundle_root)
    with table_lock:
        table = args.out / "seeds.tsv"
        new = not table.is_file()
        with open(table, "a", encoding="utf-8") as f:
            if new:
                f.write("name\tseed\texit\tminutes\tbest_epoch\tval_mean_dice\n")
            f.write(f"{name}\t{seed}\t{code}\t{minutes:.1f}\t{epoch}\t{dice}\n")
    print(f"{name}: exit {code}, {minutes:.1f} min, best epoch {epoch or '-'} ({dice or '-'})", flush=True)
    return code


def main(argv=None) -> int:
    args, bundle_args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    # the processes share the cores: PyTorch's own count in each would oversubscribe them
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    if "--intra_op_threads" not in bundle_args:
        bundle_args = [*bundle_args, "--intra_op_threads", str(threads)]
    with ThreadPoolExecutor(args.parallel) as pool:
        codes = list(pool.map(lambda seed: train_seed(args, seed, bundle_args, lock), args.seeds))
    return 0 if all(code == 0 for code in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
