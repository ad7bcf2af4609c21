#!/usr/bin/env python
"""Plot a training run's learning curves from its MLflow store: training loss (per iteration and its per-epoch
mean), validation mean Dice and pooled Dice per epoch, and the learning rate.

Example:
  python scripts/plot_learning_curves.py --tracking-uri sqlite:///runs/release/mlflow.db \\
      --run-name release_isic2017_ph2 --out bundle/docs/images/learning_curves.png
"""

from __future__ import annotations

import argparse
import sys

try:
    import matplotlib
except ImportError:
    sys.exit("matplotlib is not installed: pip install 'egeunet-monai[plot]'")

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402


def find_run(client: MlflowClient, experiment: str, run_name: str | None):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment named {experiment!r}")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    runs = [r for r in runs if run_name is None or r.info.run_name == run_name]
    if not runs:
        raise SystemExit(f"no run named {run_name!r} in experiment {experiment!r}")
    return runs[0]


def history(client: MlflowClient, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return np.array([m.step for m in points]), np.array([m.value for m in points])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking-uri", required=True, help="e.g. sqlite:///runs/mlflow.db or http://127.0.0.1:5000")
    p.add_argument("--experiment", default="egeunet_skin_lesion_segmentation", help="(default: %(default)s)")
    p.add_argument("--run-name", help="the run to plot (default: the newest)")
    p.add_argument("--out", default="learning_curves.png", help="PNG to write (default: %(default)s)")
    args = p.parse_args(argv)

    client = MlflowClient(tracking_uri=args.tracking_uri)
    run = find_run(client, args.experiment, args.run_name)
    it, loss = history(client, run.info.run_id, "train_loss")
    ep, dice = history(client, run.info.run_id, "val_mean_dice")
    ep_p, pooled = history(client, run.info.run_id, "val_pooled_dice")
    # "lr" (step = epoch) in current configs; older runs logged MONAI's "lr_group_0" at the iteration step
    ep_lr, lr = history(client, run.info.run_id, "lr")
    if lr.size == 0:
        ep_lr, lr = history(client, run.info.run_id, "lr_group_0")
    if loss.size == 0 or dice.size == 0:
        raise SystemExit(f"run {run.info.run_name} has no train_loss/val_mean_dice history yet")

    iters_per_epoch = max(1, int(round(it.max() / max(ep.max(), 1))))
    epoch_of_iter = (it - 1) // iters_per_epoch + 1
    epochs = np.unique(epoch_of_iter)
    epoch_loss = np.array([loss[epoch_of_iter == e].mean() for e in epochs])

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].plot(it / iters_per_epoch, loss, color="0.75", lw=0.6, label="per iteration")
    axes[0].plot(epochs, epoch_loss, "o-", color="C0", label="epoch mean")
    axes[0].set(title="training loss (DiceCE, deep supervision)", xlabel="epoch", ylabel="loss")
    axes[0].legend()
    axes[1].plot(ep, dice, "o-", label="mean Dice (per image)")
    if pooled.size:
        axes[1].plot(ep_p, pooled, "s--", label="pooled DSC (paper's metric)")
    best = int(np.argmax(dice))
    axes[1].annotate(f"best {dice[best]:.4f} @ {ep[best]}", (ep[best], dice[best]), textcoords="offset points",
                     xytext=(-60, -25), arrowprops={"arrowstyle": "->"})
    axes[1].set(title="validation", xlabel="epoch", ylabel="Dice")
    axes[1].legend(loc="lower right")
    if lr.size:
        if ep_lr.max() > ep.max() + 1:  # iteration steps
            ep_lr = ep_lr / iters_per_epoch
        axes[2].plot(ep_lr, lr, "-", color="C2")
        axes[2].set(title="learning rate", xlabel="epoch", ylabel="lr", yscale="log")
    fig.suptitle(f"EGE-UNet training run '{run.info.run_name}'")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}: {len(epochs)} epochs, best validation mean Dice {dice[best]:.4f} at epoch {ep[best]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
