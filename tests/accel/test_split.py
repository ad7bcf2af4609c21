# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""SplitBatchIteration (``egeunet_monai/accel/split.py``): a SupervisedTrainer iteration that runs each part of the
batch on its own thread must give the whole batch's loss and gradients, deterministically, and leave the trainer's own
iteration where a split would not apply."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents

from egeunet_monai.accel import accelerate
from egeunet_monai.accel.split import SplitBatchIteration, split_batch_iteration
from egeunet_monai.losses import EGEUNetLoss
from egeunet_monai.networks.nets import EGEUNet


@pytest.fixture(autouse=True)
def two_intra_op_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _batches(count: int, batch: int, size: int = 64) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(3)
    out = []
    for _ in range(count):
        image = torch.rand(batch, 3, size, size, generator=gen) * 255
        # a blob per image so that Dice and cross-entropy both have something to fit
        label = (torch.rand(batch, 1, size // 8, size // 8, generator=gen) > 0.6).float()
        out.append({"image": image, "label": torch.nn.functional.interpolate(label, size=(size, size))})
    return out


def _trainer(net: torch.nn.Module, batches, iteration_update=None, lr: float = 1.0, **kwargs) -> SupervisedTrainer:
    # plain SGD: each parameter moves by its gradient
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=batches,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=lr),
        loss_function=EGEUNetLoss(),
        iteration_update=iteration_update,
        decollate=False,
        **kwargs,
    )


def _network() -> EGEUNet:
    torch.manual_seed(0)
    return accelerate(EGEUNet())  # as configs/train.json: the kernels too (the reference network where none builds)


# The float32 whole-batch and split steps against the same step with the network in float64 (MONAI's
# DeepSupervisionLoss computes the loss itself in float32: ~1e-7 of rounding in the reference, far below these):
# measured on Intel Xeon under ATEN_CPU_CAPABILITY unset/avx2/default (oneDNN capped alike), C++ kernels on and off:
# loss <= 2.1e-7 relative, predictions <= 1.1e-5 and gradients <= 4.6e-5 of their largest value (both at
# default/SSE4.1); bounds 3x or more (5x on the loss).
LOSS_RTOL = 1e-6
PRED_TOL = 4e-5
GRAD_TOL = 1.5e-4


def test_split_iteration_gives_the_whole_batch_loss_prediction_and_gradients():
    batches = _batches(1, batch=4)
    whole_net, split_net, exact_net = _network(), _network(), _network().double()
    whole = _trainer(whole_net, batches)
    split = _trainer(split_net, batches, SplitBatchIteration(workers=2))
    exact = _trainer(exact_net, [{k: v.double() for k, v in b.items()} for b in batches])  # the reference
    for trainer in (whole, split, exact):
        trainer.run()

    exact_pred = exact.state.output["pred"]
    assert exact_pred[0].dtype == torch.float64
    for trainer, net in ((whole, whole_net), (split, split_net)):
        assert trainer.state.output["loss"].item() == pytest.approx(exact.state.output["loss"].item(), rel=LOSS_RTOL)
        pred = trainer.state.output["pred"]
        assert isinstance(pred, list) and len(pred) == len(exact_pred) == 6
        for a, b in zip(pred, exact_pred):
            assert a.shape == b.shape == (4, 1, 64, 64)
            torch.testing.assert_close(a.double(), b, rtol=0, atol=PRED_TOL * b.abs().max().item())
        # the gradients the optimizer stepped with (SGD leaves them in .grad; the weights' change would add the
        # rounding of the update)
        for (name, p), q in zip(net.named_parameters(), exact_net.parameters()):
            scale = q.grad.abs().max().item()
            assert scale > 0, f"{name} got no gradient"
            gap = (p.grad.double() - q.grad).abs().max().item()
            assert gap <= GRAD_TOL * scale, f"{name}: {gap / scale:.1e} of its largest gradient"


def test_split_iteration_is_deterministic():
    batches = _batches(2, batch=4)
    nets = [_network(), _network()]
    for net in nets:
        _trainer(net, batches, SplitBatchIteration(workers=2), lr=0.1).run()
    for (name, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        assert torch.equal(a, b), name


def test_events_fire_once_per_iteration_and_caller_threads_are_kept():
    batches = _batches(3, batch=4)
    trainer = _trainer(_network(), batches, SplitBatchIteration(workers=2), lr=0.01)
    events = [IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED, IterationEvents.BACKWARD_COMPLETED,
              IterationEvents.MODEL_COMPLETED]  # fmt: skip
    fired = {e: 0 for e in events}
    for event in events:
        trainer.add_event_handler(event, lambda engine, e=event: fired.__setitem__(e, fired[e] + 1))
    trainer.run()
    assert fired == {e: 3 for e in events}
    assert torch.get_num_threads() == 2


def test_workers_compute_with_their_share_of_the_intra_op_threads():
    iteration = SplitBatchIteration(workers=2)
    assert iteration.intra_op_threads == 1
    pool = iteration._thread_pool()
    assert list(pool.map(lambda _: torch.get_num_threads(), range(4))) == [1, 1, 1, 1]
    assert torch.get_num_threads() == 2
    assert copy.deepcopy(iteration)._pool is None  # a copy starts its own pool


def test_kernels_keep_a_workers_intra_op_count():
    """A kernel must not reset a worker's one thread (a build through at::parallel_for with OpenMP did, on each
    thread's first call: the split step ran 1.6x slower)."""
    net = _network()
    iteration = SplitBatchIteration(workers=2)

    def work() -> int:
        net(torch.rand(2, 3, 64, 64) * 255)[0].sum().backward()
        return torch.get_num_threads()

    assert list(iteration._thread_pool().map(lambda _: work(), range(2))) == [1, 1]
    assert torch.get_num_threads() == 2


def test_it_applies_on_a_cpu_with_two_threads_and_nothing_that_needs_the_trainers_own_iteration():
    net, cpu = _network(), torch.device("cpu")
    iteration = split_batch_iteration(True, net, cpu, amp=False, compile=False)
    assert isinstance(iteration, SplitBatchIteration) and (iteration.workers, iteration.intra_op_threads) == (2, 1)
    assert split_batch_iteration("false", net, cpu, amp=False, compile=False) is None  # --accelerate false
    assert split_batch_iteration(True, net, "cuda:0", amp=False, compile=False) is None
    assert split_batch_iteration(True, net, cpu, amp=True, compile=False) is None
    assert split_batch_iteration(True, net, cpu, amp=False, compile=True) is None
    torch.set_num_threads(1)
    assert split_batch_iteration(True, net, cpu, amp=False, compile=False) is None  # --intra_op_threads 1
    torch.set_num_threads(4)
    assert split_batch_iteration(True, net, cpu, amp=False, compile=False).intra_op_threads == 2


def test_a_batch_of_one_runs_on_the_calling_thread_as_the_trainers_own_iteration():
    batches = _batches(1, batch=1)
    plain_net, net = _network(), _network()
    _trainer(plain_net, batches).run()
    iteration = SplitBatchIteration(workers=2)
    _trainer(net, batches, iteration).run()
    assert iteration._pool is None  # no thread was started
    for (name, a), b in zip(plain_net.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), name  # the same operations on the same thread: bit for bit


def test_weight_ema_averages_the_weights_each_split_step_left():
    """configs/train.json's ``ema_momentum``: Ignite's ``EMAHandler`` on the accelerated network, updated at each
    ``ITERATION_COMPLETED``, after the split iteration's threads have joined and its one optimizer step: each update
    is ``(1 - momentum) * ema + momentum * stepped weights``; its copy keeps the kernel modules and the plain
    network's state-dict keys."""
    from ignite.engine import Events
    from ignite.handlers import EMAHandler

    net = _network()
    ema = EMAHandler(net, momentum=0.25)
    trainer = _trainer(net, _batches(3, batch=4), SplitBatchIteration(workers=2), lr=0.1)
    before = {}
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: before.update(
        {k: v.clone() for k, v in ema.ema_model.state_dict().items()}))
    ema.attach(trainer)
    checked = []

    def check(engine) -> None:  # attached after the EMA: runs after its update
        for name, averaged in ema.ema_model.state_dict().items():
            expected = 0.75 * before[name] + 0.25 * net.state_dict()[name]
            torch.testing.assert_close(averaged, expected, rtol=1e-6, atol=1e-7, msg=name)
        checked.append(engine.state.iteration)

    trainer.add_event_handler(Events.ITERATION_COMPLETED, check)
    trainer.run()
    assert checked == [1, 2, 3]
    assert not all(torch.equal(a, b) for a, b in zip(ema.ema_model.parameters(), net.parameters()))
    assert [type(m) for m in ema.ema_model.modules()] == [type(m) for m in net.modules()]
    EGEUNet().load_state_dict(ema.ema_model.state_dict())
