# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""configs/multi_gpu_train.json: ``torchrun`` + DistributedDataParallel, run for real on CPU with 2 processes and the
gloo backend, and the config's rank-0-only handlers checked against train.json's handler lists."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from bundle_helpers import (
    MULTI_GPU_TRAIN,
    REPO_ROOT,
    bundle_env,
    check_ok,
    epoch_log_lines,
    metric_steps,
    mlflow_client,
    run_command,
    seed_mlflow_store,
    training_runs,
)

RANK_ONLY = "@secondary_rank"  # train.json: false; multi_gpu_train.json: "$dist.get_rank() > 0"
# handlers that write files or logs once for the whole job: disabled on ranks other than 0
RANK_ZERO_KINDS = ("CheckpointSaver", "MLFlowHandler", "StatsHandler")


def _merged_parser():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(REPO_ROOT / "configs" / "train.json"), str(REPO_ROOT / "configs" / "multi_gpu_train.json")])
    return parser


def _merged_config() -> dict:
    return _merged_parser().get()


def test_rank_zero_handlers_are_disabled_on_other_ranks():
    """Every checkpoint saver, MLflow and Stats handler of train.json's lists is disabled where ``secondary_rank``
    holds (multi_gpu_train.json: ranks != 0), and nothing else is: a handler added to train.json fails here instead
    of silently writing from every rank. Handlers are reached by id, never by position, so a list reordered or with a
    handler inserted (MONAI Label inserts a ``CheckpointLoader`` into ``train#handlers``) changes nothing."""
    parser = _merged_parser()
    assert parser.get("secondary_rank") == "$dist.get_rank() > 0"
    assert json.loads((REPO_ROOT / "configs" / "train.json").read_text())["secondary_rank"] is False
    seen = []
    for list_id in ("train#handlers", "train#trainer_handlers", "validate#handlers"):
        for index, handler in enumerate(parser.get(list_id)):
            where = f"{list_id}#{index}"
            if isinstance(handler, str):  # "@id": a handler defined under an id of its own
                assert handler.startswith("@"), f"{where}: {handler!r}"
                where, handler = handler, parser.get(handler[1:])
            target = handler["_target_"]
            where = f"{where} ({target})"
            if target.endswith("RankLogger"):
                assert "_disabled_" not in handler, "the per-rank log must run on every rank"
                continue
            rank_zero = target.split(".")[-1].endswith(RANK_ZERO_KINDS)
            disabled = handler.get("_disabled_")
            if rank_zero:
                assert disabled == RANK_ONLY, f"{where} must be disabled on ranks != 0, has _disabled_={disabled!r}"
                seen.append(target.split(".")[-1])
            else:
                assert disabled != RANK_ONLY, f"{where} is not a rank-0-only handler but is disabled on other ranks"
    # train: StatsHandler, MLflow, epoch checkpoints; validate: best-model saver, StatsHandler
    assert len(seen) >= 5, seen
    for kind in RANK_ZERO_KINDS:
        assert any(s.endswith(kind) for s in seen), f"no {kind} found among {seen}"
    # a disabled handler referred to by id is None in its list: the evaluator gets the list without it
    assert parser.get("validate#evaluator#val_handlers") == "$[h for h in @validate#handlers if h is not None]"
    text = (REPO_ROOT / "configs" / "multi_gpu_train.json").read_text()
    assert not re.search(r"handlers#\d", text), "multi_gpu_train.json finds a handler by its position in a list"


def test_multi_gpu_config_wraps_network_and_samplers():
    config = _merged_config()
    assert config["network"]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
    assert "LOCAL_RANK" in config["device"]
    for part, shuffle in (("train", True), ("validate", False)):
        sampler = config[part]["sampler"]
        assert sampler["_target_"] == "DistributedSampler" and sampler["shuffle"] is shuffle
        assert config[part]["dataloader"]["sampler"] == f"@{part}#sampler"
        assert config[part]["dataloader"]["shuffle"] is False  # shuffling is the sampler's job now
    # the MLflow run name (and its record for --resume) comes from rank 0 only, with train.json's component
    from monai.bundle import ConfigParser

    single = ConfigParser.load_config_file(str(REPO_ROOT / "configs" / "train.json"))
    assert config["run_name"] == {**single["run_name"], "_disabled_": "@secondary_rank"}
    init = " ".join(item for item in config["initialize"] if isinstance(item, str))
    assert "init_process_group" in init and "'nccl' if torch.cuda.is_available() else 'gloo'" in init
    # as train.json, it sets --intra_op_threads where given (torchrun's default OMP_NUM_THREADS=1 otherwise)
    assert {"_target_": "egeunet_monai.engines.set_intra_op_threads", "threads": "@intra_op_threads"} in config["initialize"]
    # every rank waits for the others before tearing gloo down: a rank that destroyed its group while its peer still
    # used the connection aborted the peer at exit ("terminate called without an active exception", CI 2026-12-06)
    assert [item.split(" and ")[-1] for item in config["finalize"]] == ["dist.barrier()", "dist.destroy_process_group()"]


def _torchrun(root: Path, data: Path, logs: Path, max_epochs: int, *extra: str):
    """The multi-GPU training with 2 processes on CPU (gloo); returns the result and each rank's output."""
    torchrun = Path(sys.executable).with_name("torchrun")
    result = run_command(
        [torchrun, "--standalone", "--nproc_per_node", "2", "--log-dir", logs, "--redirects", "3",
         "-m", "monai.bundle", "run", "training", "--config_file", MULTI_GPU_TRAIN, "--bundle_root", root,
         "--dataset_dir", data, "--max_epochs", str(max_epochs), "--batch_size", "2", "--num_workers", "0",
         "--image_size", "[64, 64]", *extra],
        env=bundle_env(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1"),  # CPU and gloo even on a GPU machine
        log_file=logs.with_suffix(".log"),
    )
    rank_logs = {}
    for rank in (0, 1):
        found = sorted(logs.glob(f"*/attempt_0/{rank}/stdout.log"))
        assert len(found) == 1, f"rank {rank}: expected one stdout.log under {logs}, found {found}"
        rank_logs[rank] = found[0].read_text() + found[0].with_name("stderr.log").read_text()
    if result.returncode != 0:
        pytest.fail(f"torchrun failed ({result.returncode}):\n{result.tail()}\n--- rank 1:\n{rank_logs[1][-3000:]}")
    return check_ok(result), rank_logs


def _check_rank_log(rank: int, log: str, epochs: range, max_epochs: int) -> str:
    """The rank logged its start and each of its iterations (2 per epoch); returns its list of handlers."""
    start = re.search(rf"rank {rank}/2: starting at epoch {epochs[0]}/{max_epochs}, 2 batches per epoch from 4 "
                      r"samples \(DistributedSampler\); handlers on this rank: (.*)", log)
    assert start, f"rank {rank} did not log its start at epoch {epochs[0]}:\n{log[-3000:]}"
    for epoch in epochs:
        for it in (1, 2):
            assert re.search(rf"rank {rank}/2: epoch {epoch}/{max_epochs}, iteration {it}/2 "
                             rf"\(global {(epoch - 1) * 2 + it}\), train_loss \d", log), (
                f"rank {rank}: no log of epoch {epoch} iteration {it}")
    iterations = re.findall(rf"rank {rank}/2: epoch (\d+)/", log)
    assert sorted(set(map(int, iterations))) == list(epochs), f"rank {rank} trained epochs {iterations}"
    return start[1]


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path: Path, mlflow_db_template: Path):
    from egeunet_monai.data import generate_synthetic_dataset
    from egeunet_monai.networks.nets import EGEUNet

    # 10 pairs: 8 for training (4 per rank: 2 batches of 2 each), 2 for validation (1 per rank)
    data = Path(generate_synthetic_dataset(tmp_path / "data", num_images=10, size=64))
    root = tmp_path / "bundle"
    seed_mlflow_store(mlflow_db_template, root)
    _, rank_logs = _torchrun(root, data, tmp_path / "logs_first", 2)

    # both ranks trained: each logs its own 2 x 2 iterations, on its half of the data (DistributedSampler)
    for rank, log in rank_logs.items():
        handlers = _check_rank_log(rank, log, range(1, 3), 2)
        if rank == 0:
            for kind in RANK_ZERO_KINDS:
                assert kind in handlers, f"rank 0 lacks its {kind}: {handlers}"
            assert [(e, i) for e, _, i, _ in epoch_log_lines(log)] == [(1, 1), (1, 2), (2, 1), (2, 2)]
            assert "Epoch[2] Metrics -- " in log and "val_mean_dice" in log
        else:
            assert not re.search("Checkpoint|MLFlow|Stats", handlers), handlers
            assert epoch_log_lines(log) == [] and "Metrics --" not in log, "rank 1 printed the rank-0 statistics"

    # only rank 0 wrote: one checkpoint, one best model, one MLflow run
    checkpoints = sorted(p.name for p in (root / "runs" / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint_epoch=2.pt"], checkpoints
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    state = state.get("model", state)
    assert not any(k.startswith("module.") for k in state), "DDP's 'module.' prefix leaked into models/model.pt"
    net = EGEUNet(in_channels=3, out_channels=1, channels=[8, 16, 24, 32, 48, 64], deep_supervision=True)
    net.load_state_dict(state)  # strict: the plain network loads it, as inference does
    ckpt = torch.load(root / "runs" / "checkpoints" / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=False)
    assert (ckpt["trainer"]["iteration"], ckpt["trainer"]["epoch_length"]) == (4, 2)  # 2 epochs of 2 per rank

    client = mlflow_client(root)
    all_runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(all_runs) == 1, [r.info.run_name for r in all_runs]
    run = training_runs(client)[0]
    assert run.info.status == "FINISHED"
    run_name = (root / "runs" / "mlflow_run_name.txt").read_text().strip()
    assert run.info.run_name == run_name
    assert [s for s, _ in metric_steps(client, run.info.run_id, "train_loss")] == [1, 2, 3, 4]
    assert [s for s, _ in metric_steps(client, run.info.run_id, "val_mean_dice")] == [1, 2]
    split = json.loads((root / "runs" / "datalist_split.json").read_text())
    assert (len(split["training"]), len(split["validation"])) == (8, 2)

    # --resume true: every rank loads rank 0's checkpoint and goes on at epoch 3
    _, rank_logs = _torchrun(root, data, tmp_path / "logs_resumed", 3, "--resume", "true")
    for rank, log in rank_logs.items():
        handlers = _check_rank_log(rank, log, range(3, 4), 3)
        assert "CheckpointLoader" in handlers, f"rank {rank} did not load the checkpoint: {handlers}"
    ckpt = torch.load(root / "runs" / "checkpoints" / "checkpoint_epoch=3.pt", map_location="cpu", weights_only=False)
    assert ckpt["trainer"]["iteration"] == 6
    assert (root / "runs" / "mlflow_run_name.txt").read_text().strip() == run_name
    loss_steps = sorted(m.step for r in training_runs(client, run_name)
                        for m in client.get_metric_history(r.info.run_id, "train_loss"))
    assert loss_steps == [1, 2, 3, 4, 5, 6], loss_steps
