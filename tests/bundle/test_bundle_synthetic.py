# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The README's chain on the synthetic default: train (bare command, a few epochs) -> evaluate -> infer ->
``ckpt_export`` -> infer with the TorchScript module; then the MLflow run read back from the sqlite store, and the
weights inference picks by default after it (the released ones) and after a training on real data (that model)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_helpers import REPO_ROOT, dice, epoch_log_lines, metric_steps, mlflow_client, read_mask, training_runs
from PIL import Image

pytestmark = pytest.mark.slow

N_SYNTHETIC = 48  # the default synthetic dataset: 38 for training, 10 for validation
N_TRAIN, N_VAL, BATCH = 38, 10, 8
ITERS_PER_EPOCH = N_TRAIN // BATCH  # drop_last
METRICS_CSV_KEYS = {
    "val_mean_dice", "val_mean_iou", "val_thresholded_jaccard", "val_pooled_dice", "val_pooled_iou",
    "val_pooled_accuracy", "val_pooled_sensitivity", "val_pooled_specificity",
}
TRACKED_PARAMS = {
    "dataset_dir", "train_images", "val_images", "val_fraction", "seed", "image_size", "network", "loss", "optimizer",
    "learning_rate", "weight_decay", "lr_scheduler", "batch_size", "amp", "accelerate", "intra_op_threads",
    "split_batch_workers", "augment_on_device", "loader_workers", "train_samples", "large_lesion_repeats",
    "large_lesion_share",
}


def default_intra_op_threads() -> int:
    """What ``torch.get_num_threads()`` is in a fresh process (this one's may have been changed by a test)."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def _read_metrics_csv(path: Path) -> dict[str, float]:
    with open(path, newline="") as f:
        return {row[0]: float(row[1]) for row in csv.reader(f) if row}


def _read_raw_csv(path: Path) -> dict[str, float]:
    with open(path, newline="") as f:
        return {row["filename"]: float(row["class0"]) for row in csv.DictReader(f)}


def _cosine_lr(step: int, lr0: float = 1e-3, eta_min: float = 1e-5, period: int = 50) -> float:
    return eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * step / period)) / 2


def test_training_writes_model_checkpoint_and_split(synthetic_trained):
    root, epochs = synthetic_trained.root, synthetic_trained.epochs
    out = synthetic_trained.train.output
    assert "Setting logging properties based on config: configs/logging.conf" in out  # picked up with no flag
    assert "Detected deprecated name" not in out  # MONAI's warning about metadata.json's optional_packages_version
    assert [(e, i) for e, _, i, _ in epoch_log_lines(out)] == [
        (e, i) for e in range(1, epochs + 1) for i in range(1, ITERS_PER_EPOCH + 1)
    ]

    split = json.loads((root / "runs" / "datalist_split.json").read_text())
    train_ids = [d["id"] for d in split["training"]]
    val_ids = [d["id"] for d in split["validation"]]
    assert (len(train_ids), len(val_ids)) == (N_TRAIN, N_VAL)
    assert sorted(train_ids + val_ids) == [f"syn_{i:04d}" for i in range(N_SYNTHETIC)]
    for item in split["training"] + split["validation"]:
        assert Path(item["image"]).is_file() and Path(item["label"]).is_file()
        assert Path(item["label"]).name == f"{item['id']}_segmentation.png"

    from egeunet_monai.networks.nets import EGEUNet

    # the synthetic default keeps its model under runs/: models/model.pt is for a model trained on real data
    assert not (root / "models" / "model.pt").exists()
    state = torch.load(root / "runs" / "synthetic_model" / "model.pt", map_location="cpu", weights_only=True)
    net = EGEUNet(in_channels=3, out_channels=1, channels=[8, 16, 24, 32, 48, 64], deep_supervision=True)
    net.load_state_dict(state.get("model", state))

    checkpoints = sorted((root / "runs" / "checkpoints").glob("checkpoint_epoch=*.pt"))
    assert [p.name for p in checkpoints] == [f"checkpoint_epoch={epochs}.pt"]  # n_saved=1: only the last
    ckpt = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    assert {"model", "optimizer", "lr_scheduler", "trainer"} <= set(ckpt)
    # ignite keeps the iteration and the epoch length: epoch = iteration / epoch_length
    trainer = ckpt["trainer"]
    assert (trainer["iteration"], trainer["epoch_length"]) == (epochs * ITERS_PER_EPOCH, ITERS_PER_EPOCH)
    assert ckpt["lr_scheduler"]["last_epoch"] == epochs


def test_evaluate_writes_per_image_csvs_pooled_metrics_and_overlays(synthetic_evaluated):
    root = synthetic_evaluated.root
    eval_dir = root / "runs" / "eval"
    metrics = _read_metrics_csv(eval_dir / "metrics.csv")
    assert METRICS_CSV_KEYS <= set(metrics), sorted(metrics)
    assert all(0.0 <= v <= 1.0 for v in metrics.values()), metrics
    # pooled Dice and IoU come from the same pooled confusion counts: IoU = Dice / (2 - Dice)
    d = metrics["val_pooled_dice"]
    assert metrics["val_pooled_iou"] == pytest.approx(d / (2 - d), abs=1e-6)

    split = json.loads((root / "runs" / "datalist_split.json").read_text())
    val_images = {d["image"] for d in split["validation"]}
    for name in ("val_mean_dice", "val_mean_iou", "val_thresholded_jaccard"):
        raw = _read_raw_csv(eval_dir / f"{name}_raw.csv")
        assert set(raw) == val_images, f"{name}_raw.csv rows are not the validation images"
        assert np.mean(list(raw.values())) == pytest.approx(metrics[name], abs=1e-4)
        assert (eval_dir / f"{name}_summary.csv").is_file()
    raw_dice = _read_raw_csv(eval_dir / "val_mean_dice_raw.csv")
    raw_iou = _read_raw_csv(eval_dir / "val_mean_iou_raw.csv")
    for image in val_images:  # per image too, IoU = Dice / (2 - Dice)
        assert raw_iou[image] == pytest.approx(raw_dice[image] / (2 - raw_dice[image]), abs=1e-4)

    overlays = sorted((eval_dir / "overlays").glob("*_overlay.png"))
    assert len(overlays) == min(8, N_VAL)  # num_overlays
    assert {p.name[: -len("_overlay.png")] for p in overlays} <= {Path(i).stem for i in val_images}
    assert (eval_dir / "overlays" / "overlays.png").is_file()
    with Image.open(overlays[0]) as img:
        assert img.size[0] >= 256 and img.size[1] >= 256

    # and the evaluation is in MLflow, next to the training run
    client = mlflow_client(root)
    experiment = client.get_experiment_by_name("egeunet_skin_lesion_segmentation")
    evals = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name.startswith("evaluate_")]
    assert len(evals) == 1
    assert evals[0].data.metrics["val_pooled_dice"] == pytest.approx(metrics["val_pooled_dice"], abs=1e-6)


def test_inference_writes_one_binary_mask_per_image_at_its_size(synthetic_inferred):
    inputs = sorted(synthetic_inferred.inputs.glob("*.png"))
    assert len(inputs) == N_SYNTHETIC
    masks = sorted(synthetic_inferred.predictions.glob("*_mask.png"))
    assert [m.name for m in masks] == [f"{p.stem}_mask.png" for p in inputs]
    labels = synthetic_inferred.inputs.parent / "masks"
    scores = []
    for image, mask_file in zip(inputs, masks):
        mask = read_mask(mask_file)
        with Image.open(image) as img:
            assert mask.shape == (img.size[1], img.size[0])
        assert set(np.unique(mask)) <= {0, 255}
        scores.append(dice(mask, read_mask(labels / f"{image.stem}_segmentation.png")))
    # two epochs give a rough segmenter (validation Dice ~0.7): far above what a transposed or empty mask scores
    assert np.mean(scores) > 0.4, f"mean Dice of the inferred masks against the truth: {np.mean(scores):.3f}"


def test_torchscript_export_gives_the_same_masks(synthetic_inferred):
    exported = synthetic_inferred.model.with_suffix(".ts")
    assert f"exported to file: {exported}" in synthetic_inferred.export.output
    ts = torch.jit.load(str(exported), map_location="cpu")
    assert isinstance(ts, torch.jit.ScriptModule)
    pt_masks = sorted(synthetic_inferred.predictions.glob("*_mask.png"))
    ts_masks = sorted(synthetic_inferred.ts_predictions.glob("*_mask.png"))
    assert [m.name for m in ts_masks] == [m.name for m in pt_masks] and len(pt_masks) == N_SYNTHETIC
    differing = 0
    for a, b in zip(pt_masks, ts_masks):
        ma, mb = read_mask(a), read_mask(b)
        assert ma.shape == mb.shape
        differing += int((ma != mb).sum())
    # the same network: at most a few pixels right at the 0.5 threshold may flip between eager and TorchScript
    assert differing <= 10, f"{differing} pixels differ between the model.pt and model.ts masks"


def test_mlflow_run_read_back_from_sqlite(synthetic_trained):
    root, epochs = synthetic_trained.root, synthetic_trained.epochs
    client = mlflow_client(root)
    run_name = (root / "runs" / "mlflow_run_name.txt").read_text().strip()
    runs = training_runs(client)
    assert [r.info.run_name for r in runs] == [run_name]
    run = runs[0]
    assert run.info.status == "FINISHED"

    loss = metric_steps(client, run.info.run_id, "train_loss")
    assert [s for s, _ in loss] == list(range(1, epochs * ITERS_PER_EPOCH + 1))  # per iteration
    assert all(np.isfinite(v) and v > 0 for _, v in loss)
    lr = metric_steps(client, run.info.run_id, "lr")
    assert [s for s, _ in lr] == list(range(1, epochs + 1))  # per epoch: the lr each epoch trained with
    for step, value in lr:
        assert value == pytest.approx(_cosine_lr(step - 1), rel=1e-6)
    val = metric_steps(client, run.info.run_id, "val_mean_dice")
    assert [s for s, _ in val] == list(range(1, epochs + 1))
    assert all(0.0 <= v <= 1.0 for _, v in val)

    params = run.data.params
    assert TRACKED_PARAMS <= set(params), sorted(TRACKED_PARAMS - set(params))
    assert (params["train_images"], params["val_images"]) == (str(N_TRAIN), str(N_VAL))
    assert (params["train_samples"], params["large_lesion_repeats"]) == (str(N_TRAIN), "1")  # off by default
    assert float(params["learning_rate"]) == 1e-3 and params["batch_size"] == str(BATCH)
    assert Path(params["dataset_dir"]) == root / "runs" / "synthetic_data"
    # accelerated (C++ kernels: CI builds them), PyTorch's default threads; the CPU step splits each batch over 2
    # threads wherever the process has 2 intra-op threads (CI's 2 cores)
    assert params["accelerate"] == "True" and params["intra_op_threads"] == str(default_intra_op_threads())
    assert params["split_batch_workers"] == ("2" if default_intra_op_threads() > 1 else "1")
    assert (params["augment_on_device"], params["amp"]) == ("True", "False")  # the batch augmentation, CPU included
    assert params["loader_workers"] == "0"  # nothing per sample left for worker processes on a CPU

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.pt", "datalist_split.json"} <= artifacts, artifacts
    local = client.download_artifacts(run.info.run_id, "model.pt", str(root / "downloaded"))
    assert Path(local).read_bytes() == (root / "runs" / "synthetic_model" / "model.pt").read_bytes()  # the best
    # stored beside the sqlite store (runs/mlruns), not in ./mlruns of the folder the command ran from
    stored = list((root / "runs" / "mlruns").rglob("model.pt"))
    assert [p.read_bytes() for p in stored] == [Path(local).read_bytes()], stored


def test_after_the_synthetic_quick_start_inference_keeps_the_released_weights(synthetic_trained, capsys):
    from egeunet_monai.engines import default_weights
    from egeunet_monai.resources import released_weights

    released = str(released_weights())
    assert released == str(REPO_ROOT / "bundle" / "models" / "model.pt")
    assert default_weights(str(synthetic_trained.root)) == released
    assert capsys.readouterr().out == (
        f"weights: {released} (released weights; no models/model.pt trained on your data in {synthetic_trained.root})\n"
    )


def test_after_a_training_on_real_data_inference_uses_that_model(real_bundle, capsys):
    """``--dataset_dir`` (the real_bundle fixture): the trained model replaces the released weights by default, and the
    bare inference command said so."""
    from egeunet_monai.engines import default_weights

    own = str(real_bundle.root / "models" / "model.pt")
    assert default_weights(str(real_bundle.root)) == own
    line = f"weights: {own} (your model, trained on your data; --weights or --ckpt_path picks other weights)"
    assert capsys.readouterr().out == line + "\n"
    assert line in real_bundle.infer.output

