"""Checkpoint writes that fail half way (injected error, a real full disk, a SIGKILL during the write) leave the
previous checkpoint intact and loadable, and the error is reported; the best-model tracker survives a resume."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from monai.handlers import CheckpointSaver

from egeunet_monai.engines import latest_checkpoint
from egeunet_monai.handlers import (
    CheckpointWriteError,
    DurableCheckpointSaver,
    DurableDiskSaver,
    resumable_state,
    save_durably,
)
from egeunet_monai.handlers import checkpoint_saver as saver_module

REPO_ROOT = Path(__file__).resolve().parents[2]


class FailingSave:
    """``torch.save`` that, on the calls numbered in ``fail_on`` (1-based), writes half the bytes, then fails as a
    full disk would."""

    def __init__(self, fail_on=()):
        self.fail_on, self.calls = set(fail_on), 0

    def __call__(self, obj, f):
        self.calls += 1
        if self.calls not in self.fail_on:
            return torch.save(obj, f)
        buf = io.BytesIO()
        torch.save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        raise OSError(errno.ENOSPC, "No space left on device (injected half way)")


def trainer_with_saver(save_dir: Path, make_saver, epochs_seen: dict) -> tuple[Engine, torch.nn.Module]:
    model = torch.nn.Linear(8, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(engine, batch):
        with torch.no_grad():
            model.weight.add_(1.0)  # every iteration changes the weights: each epoch's checkpoint differs

    trainer = Engine(step)

    @trainer.on(Events.EPOCH_COMPLETED)
    def remember(engine):  # attached before the saver: what each epoch's checkpoint must hold
        epochs_seen[engine.state.epoch] = model.weight.detach().clone()

    saver = make_saver({"model": model, "optimizer": optimizer, "trainer": trainer})
    saver.attach(trainer)
    trainer.saver = saver
    return trainer, model


def checkpoint_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_injected_failure_half_way_keeps_the_previous_checkpoint(tmp_path: Path, caplog) -> None:
    save_dir = tmp_path / "checkpoints"
    weights: dict[int, torch.Tensor] = {}
    failing = FailingSave(fail_on={2})
    trainer, _ = trainer_with_saver(
        save_dir,
        lambda d: DurableCheckpointSaver(str(save_dir), d, save_interval=1, n_saved=1, save_func=failing),
        weights,
    )
    with caplog.at_level(logging.ERROR), pytest.raises(CheckpointWriteError) as info:
        trainer.run([0, 1], max_epochs=3)

    err = info.value
    assert err.errno == errno.ENOSPC and isinstance(err, OSError)
    assert err.path == str(save_dir / "checkpoint_epoch=2.pt")
    assert "checkpoint_epoch=2.pt" in str(err) and "intact" in str(err) and "half way" in str(err)
    assert any("checkpoint not saved" in r.getMessage() for r in caplog.records)  # reported in the log too
    assert trainer.state.epoch == 2  # the run stopped at the failed save

    # the previous checkpoint: still there, alone (no half-written file), complete and loadable
    assert checkpoint_names(save_dir) == ["checkpoint_epoch=1.pt"]
    state = torch.load(save_dir / "checkpoint_epoch=1.pt", weights_only=True)
    assert torch.equal(state["model"]["weight"], weights[1])
    assert state["trainer"]["iteration"] == 2  # ignite saves the iteration: epoch 1 of 2 iterations
    assert latest_checkpoint(str(save_dir)) == str(save_dir / "checkpoint_epoch=1.pt")
    # the saver's list is as before the failed save, so the next save replaces epoch 1 cleanly
    checkpoint = trainer.saver.interval_checkpoint
    assert [(p, f) for p, f in checkpoint.state_dict()["_saved"]] == [(1, "checkpoint_epoch=1.pt")]
    trainer.saver.interval_completed(trainer)  # epoch 2 again, now the disk has room
    assert checkpoint_names(save_dir) == ["checkpoint_epoch=2.pt"]
    assert torch.load(save_dir / "checkpoint_epoch=2.pt", weights_only=True)["trainer"]["iteration"] == 4


def test_monai_stock_saver_would_lose_the_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """Why DurableCheckpointSaver exists (MONAI 1.6.1, ignite 0.5.5): the stock saver deletes checkpoint 1 before
    it writes checkpoint 2 in place, so the same failure leaves only a truncated file. If this starts failing,
    upstream has fixed it."""
    save_dir = tmp_path / "checkpoints"
    real_save = torch.serialization.save
    calls = []

    def stock_save(obj, f, *args, **kwargs):  # torch.save as ignite calls it (a path), failing on the 2nd call
        calls.append(f)
        if len(calls) == 2:
            buf = io.BytesIO()
            real_save(obj, buf)
            Path(f).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
            raise OSError(errno.ENOSPC, "No space left on device (injected half way)")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", stock_save)
    trainer, _ = trainer_with_saver(
        save_dir, lambda d: CheckpointSaver(str(save_dir), d, save_interval=1, n_saved=1), {}
    )
    with pytest.raises(OSError):
        trainer.run([0, 1], max_epochs=3)
    assert checkpoint_names(save_dir) == ["checkpoint_epoch=2.pt"]  # epoch 1 deleted, epoch 2 truncated
    monkeypatch.undo()
    with pytest.raises(Exception):
        torch.load(save_dir / "checkpoint_epoch=2.pt", weights_only=True)


def test_best_model_write_failure_keeps_model_pt_and_the_tracker(tmp_path: Path) -> None:
    model = torch.nn.Linear(8, 4)
    failing = FailingSave(fail_on={2})
    saver = DurableCheckpointSaver(
        str(tmp_path), {"model": model}, save_key_metric=True, key_metric_filename="model.pt", save_func=failing
    )
    evaluator = Engine(lambda e, b: None)
    evaluator.state.key_metric_name = "val_mean_dice"
    tracker = saver.key_metric_checkpoint

    def validate(score: float) -> None:
        with torch.no_grad():
            model.weight.fill_(score)
        evaluator.state.metrics = {"val_mean_dice": score}
        saver.metrics_completed(evaluator)

    validate(0.5)
    with pytest.raises(CheckpointWriteError, match="model.pt"):
        validate(0.7)  # a new best, but the disk fails half way
    assert checkpoint_names(tmp_path) == ["model.pt"]
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].eq(0.5).all()
    assert [p for p, _ in tracker.state_dict()["_saved"]] == [0.5]  # 0.7 was never saved: 0.5 is still the one to beat
    validate(0.6)  # the disk works again: 0.6 beats the saved 0.5
    assert torch.load(tmp_path / "model.pt", weights_only=True)["weight"].eq(0.6).all()
    assert checkpoint_names(tmp_path) == ["model.pt"]


def test_restored_tracker_keeps_the_best_model_after_resume(tmp_path: Path) -> None:
    """The tracker state in the checkpoint (``best_model_tracker``) is what stops a worse epoch after a resume from
    replacing model.pt; a fresh tracker (the negative control) would replace it."""
    model = torch.nn.Linear(8, 4)

    def make_saver(folder: Path) -> DurableCheckpointSaver:
        return DurableCheckpointSaver(str(folder), {"model": model}, save_key_metric=True, key_metric_filename="model.pt")

    def validate(saver, score: float) -> None:
        evaluator = Engine(lambda e, b: None)
        evaluator.state.key_metric_name = "dice"
        evaluator.state.metrics = {"dice": score}
        with torch.no_grad():
            model.weight.fill_(score)
        saver.metrics_completed(evaluator)

    def best(folder: Path) -> float:
        return torch.load(folder / "model.pt", weights_only=True)["weight"][0, 0].item()

    for folder, restore in ((tmp_path / "fresh", False), (tmp_path / "restored", True)):
        before = make_saver(folder)
        validate(before, 0.8)
        state = before.state_dict()  # the best-model tracker's, as the training checkpoint holds it
        after = make_saver(folder)  # the resumed process
        if restore:
            after.load_state_dict(state)
        validate(after, 0.3)
        assert best(folder) == pytest.approx(0.3 if not restore else 0.8)
    validate(after, 0.9)  # a real improvement after the resume still wins
    assert best(tmp_path / "restored") == pytest.approx(0.9)


FILE_SIZE_LIMIT = 300 * 1024  # per file: the 200 and 120 KB checkpoints fit, the 400 KB one does not


@pytest.fixture(params=["tmpfs", pytest.param("file_size_limit", marks=pytest.mark.slow)])
def full_disk(request: pytest.FixtureRequest, tmp_path: Path):
    """A folder where the second of _checkpoint_writer's three writes fails in the kernel: a 512 KiB tmpfs (a real
    full disk, ENOSPC; mounting needs root), or, where mounting is refused and for the second parameter, a child
    process whose RLIMIT_FSIZE stops any file at 300 KiB (EFBIG; no privileges needed; slow: it imports torch).
    Yields (mechanism, results)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if request.param == "tmpfs":
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(folder)],
                                  capture_output=True, text=True)
            refused = done.stderr.strip() if done.returncode != 0 else None
        except FileNotFoundError as err:  # no mount command at all
            refused = str(err)
        if refused is None:
            try:
                from _checkpoint_writer import write_three_checkpoints

                yield "tmpfs", write_three_checkpoints(str(folder))
            finally:
                subprocess.run(["umount", str(folder)], check=False)
            return
        print(f"cannot mount a tmpfs here ({refused}): a file-size limit instead")
    writer = Path(__file__).with_name("_checkpoint_writer.py")
    done = subprocess.run([sys.executable, str(writer), str(folder), str(FILE_SIZE_LIMIT)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    yield "file_size_limit", json.loads(done.stdout.strip().splitlines()[-1])


def test_real_full_disk_keeps_the_previous_checkpoint(full_disk) -> None:
    mechanism, result = full_disk
    error = result["error"]
    assert error is not None, "the write that cannot fit did not fail"
    if mechanism == "tmpfs":
        # torch.save reports the full disk as a RuntimeError of its zip writer; the free space gives the reason back
        assert error["errno"] == errno.ENOSPC and "the disk is full" in error["message"], error
    else:
        assert errno.EFBIG in error["chain_errnos"], error  # the kernel refused the write: "File too large"
    assert "the previous checkpoints in" in error["message"] and "are intact" in error["message"], error
    assert result["after_failure"] == ["model_epoch=1.pt"]  # the partial file was removed
    assert result["kept_is_epoch_1"]  # and the previous checkpoint loads, with its own values
    assert result["after_next_write"] == ["model_epoch=2.pt"]  # a write that fits: saved, then the old one goes


@pytest.mark.slow  # a subprocess that imports torch: seconds normally, more than a minute on a loaded machine
def test_sigkill_during_the_write_leaves_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint_epoch=1.pt"
    writer = textwrap.dedent(
        f"""
        import os, time, torch
        from egeunet_monai.handlers import save_durably
        save_durably({{"version": torch.tensor(1)}}, {str(target)!r})

        def slow(obj, f):
            f.write(b"x" * 65536)
            f.flush()
            open({str(tmp_path / "writing")!r}, "w").close()
            time.sleep(600)

        save_durably({{"version": torch.tensor(2)}}, {str(target)!r}, slow)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "writing").exists():
            assert proc.poll() is None, "the writer ended early"
            assert time.monotonic() < deadline, "the writer never started the second write"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert len(partial) == 1  # what the killed write left behind, next to an intact checkpoint
    assert torch.load(target, weights_only=True)["version"].item() == 1
    DurableDiskSaver(tmp_path)  # a new run's saver clears it away
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_write_order_temp_fsync_rename_then_folder_fsync(tmp_path: Path, monkeypatch) -> None:
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(saver_module.os, "fsync", fsync)
    monkeypatch.setattr(saver_module.os, "replace", replace)
    target = tmp_path / "checkpoint_epoch=1.pt"
    save_durably({"w": torch.ones(3)}, target)
    (kind1, temp), (kind2, src, dst), (kind3, folder) = events
    assert (kind1, kind2, kind3) == ("fsync", "replace", "fsync")
    assert temp == src and Path(src).parent == tmp_path and ".partial-" in Path(src).name
    assert dst == str(target) and folder == str(tmp_path)
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


def test_resume_from_a_checkpoint_written_before_tracking_state_existed(tmp_path: Path) -> None:
    old = tmp_path / "checkpoint_epoch=3.pt"
    torch.save({"model": {}, "optimizer": {}}, old)
    objects = {"model": object(), "optimizer": object(), "tracking": object()}
    assert set(resumable_state(objects, str(old))) == {"model", "optimizer"}
    new = tmp_path / "checkpoint_epoch=4.pt"
    torch.save({"model": {}, "optimizer": {}, "tracking": {"points": []}}, new)
    assert set(resumable_state(objects, str(new))) == {"model", "optimizer", "tracking"}
    assert set(resumable_state(objects, "")) == set(objects)  # not resuming
    torch.save({"optimizer": {}}, old)  # a missing model is still an error for CheckpointLoader to raise
    assert "model" in resumable_state(objects, str(old))


def test_bundle_config_uses_the_durable_savers_and_the_tolerant_tracking() -> None:
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "configs" / "train.json"))
    config = parser.get()
    handlers = [parser.get(h[1:]) if isinstance(h, str) else h  # "@id": a handler defined under an id
                for h in config["train"]["trainer_handlers"] + config["validate"]["handlers"]]
    savers = [h for h in handlers if "CheckpointSaver" in h["_target_"]]
    # the epoch checkpoints, the last epoch's model (with no validation images) and the best model
    assert len(savers) == 3 and all(h["_target_"] == "egeunet_monai.handlers.DurableCheckpointSaver" for h in savers)
    tracking = [h for h in config["train"]["handlers"] if "MLFlow" in h["_target_"]]
    assert [h["_target_"] for h in tracking] == ["egeunet_monai.handlers.TolerantMLFlowHandler"]
    assert tracking[0]["defer_until_checkpoint"] is True and tracking[0]["validator"] == "@validate#evaluator"
    assert not [h for h in handlers if "MLFlow" in h["_target_"]]  # the validation is logged once, by the trainer
    assert "tracking" in config["train"]["checkpoint_state"]
    # the best-model saver, by its id: its state is its tracker's (the score of the saved model.pt)
    assert config["train"]["checkpoint_state"]["best_model_tracker"] == "@validate#best_model_saver"
    assert parser.get("validate#best_model_saver#save_key_metric") is True
    evaluate = json.loads((REPO_ROOT / "configs" / "evaluate.json").read_text())
    assert [h["_target_"] for h in evaluate["validate#handlers"] if "MLFlow" in h["_target_"]] == [
        "egeunet_monai.handlers.TolerantMLFlowHandler"
    ]
