# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""An MLflow tracking handler that never stops training, and logs each epoch exactly once across kills and resumes."""

from __future__ import annotations

import os
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mlflow
import torch
from ignite.engine import Engine, Events
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from monai.apps.utils import get_logger
from monai.utils import ensure_tuple, flatten_dict

from egeunet_monai.files import write_json_atomic

__all__ = ["TolerantMLFlowHandler", "TrackingWarning", "tracking_state"]

logger = get_logger("egeunet_monai.tracking")

# MLflow's REST client retries 7 times with exponential back-off and waits 120 s per request by default: minutes
# of stalled training per call when the server is gone. These apply unless the environment sets them already.
DEFAULT_REQUEST_TIMEOUT_S = 10
DEFAULT_REQUEST_MAX_RETRIES = 0
MAX_METRICS_PER_BATCH = 1000  # MLflow's limits for one log_batch call
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VAL_LENGTH = 6000  # MLflow's limit for a param value
RUN_FINISHED = "FINISHED"


class TrackingWarning(UserWarning):
    """The tracking store failed; training goes on. Issued once per handler."""


@dataclass
class _Point:
    key: str
    value: float
    timestamp: int
    step: int
    run_id: str = ""  # "" until the run is known (the store may be unreachable at start)
    restored: bool = False  # came back from a checkpoint: may already be in the store


class _Failed:
    pass


_FAILED = _Failed()


class TolerantMLFlowHandler:
    """Track an Ignite/MONAI training to MLflow (``MlflowClient``) as ``monai.handlers.MLFlowHandler`` does (same
    argument names, metric names and steps), keeping training going when tracking fails, and, with
    ``defer_until_checkpoint``, logging every metric value of a resumed training exactly once.

    **What is logged.** At ``STARTED``: the params (``experiment_param`` and the engine's ``max_epochs`` and
    ``epoch_length``). At each ``ITERATION_COMPLETED`` (``iteration_log``): ``output_transform(state.output)`` as
    ``tag_name`` (or each key of a dict), and the ``optimizer_param_names`` of the engine's ``optimizer`` as
    ``<name>_group_<i>``, at step ``state.iteration``. At each ``EPOCH_COMPLETED`` (``epoch_log``): the engine's
    ``state.metrics`` at step ``global_epoch_transform(state.epoch)``, and those of ``validator`` each time it
    completes. At ``COMPLETED``: the ``artifacts`` (files, or every file under a folder).

    **Faults.** Every call to the tracking store is guarded: an error (server stopped or unreachable, time-out,
    locked database...) gives one :class:`TrackingWarning` and a log line, and training continues. Metric values
    that could not be sent are kept (at most ``max_pending``) and sent again with the next batch, at most every
    ``retry_interval`` seconds, so a short outage loses nothing; params wait for the run; artifacts are tried once.
    For HTTP stores the request time-out and retries are set low (``MLFLOW_HTTP_REQUEST_TIMEOUT``,
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, unless the environment sets them) so a dead server costs seconds, not
    minutes. At the end (:meth:`close`, or ``COMPLETED`` without ``close_on_complete``) a summary is logged, as a
    warning when anything was not logged, and written to ``summary_file`` (JSON) if given.

    **Resume.** MLflow cannot delete a logged value, so values of an epoch that a kill throws away must never
    reach the store. With ``defer_until_checkpoint=True`` (for a trainer whose checkpoint is saved at every epoch
    end): the values of an epoch (iteration losses, learning rates, and the metrics of ``validator``, logged at the
    trainer's epoch) are held back until the next ``EPOCH_STARTED`` or ``COMPLETED``, i.e. until that epoch's
    checkpoint has been written; they are also part of :meth:`state_dict`, so put the handler in the checkpoint
    (see :func:`tracking_state`). A kill in the middle of an epoch then loses only values that the resumed run logs
    again; values restored from the checkpoint are sent unless the store already has their (key, step). Params
    that a resumed run logs with another value (MLflow refuses to change a param) become tags
    ``changed_param.<key>``. The run is found by name: the unfinished run of ``run_name``, else a new one.

    Args:
        tracking_uri: the MLflow store; ``None``: ``mlflow.get_tracking_uri()`` (``MLFLOW_TRACKING_URI``).
        experiment_name: created if it does not exist.
        run_name: the run to continue (unfinished) or create; ``None``: a new time-stamped run.
        experiment_param: params to log at ``STARTED``.
        artifacts: files or folders to log at ``COMPLETED``.
        iteration_log: log the loss and optimizer params at every iteration.
        epoch_log: log ``state.metrics`` at every epoch.
        output_transform: the loss from ``engine.state.output`` (a number, a 0-d tensor or a dict of them).
        global_epoch_transform: the step of an epoch's metrics from ``state.epoch``.
        tag_name: the metric name of the loss.
        optimizer_param_names: optimizer params logged per group at every iteration.
        close_on_complete: end the run at ``COMPLETED`` (:meth:`close`).
        validator: an evaluator (e.g. the ``SupervisedEvaluator`` of ``ValidationHandler``) whose
            ``state.metrics`` are logged at the trainer's epoch (its ``state.epoch`` through
            ``global_epoch_transform``) each time it completes; attach this handler to the trainer only.
        defer_until_checkpoint: hold each epoch's values back as described above; ``False`` sends them at once.
        retry_interval: seconds without any call to the store after a failure.
        request_timeout: seconds per HTTP request; ``None`` leaves ``MLFLOW_HTTP_REQUEST_TIMEOUT`` alone.
        request_max_retries: HTTP retries; ``None`` leaves ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` alone.
        max_pending: metric values kept while the store is unreachable; older ones are dropped beyond that.
        summary_file: JSON file for the end-of-run summary (written atomically); ``None`` to skip.
        artifact_location: where an experiment this handler creates keeps its artifacts (a folder or URI); ``None``:
            the store's default, which for a SQLite store is ``./mlruns`` under whatever folder the training was
            started from, and for a tracking server its own artifact root.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str = "monai_experiment",
        run_name: str | None = None,
        experiment_param: Mapping[str, Any] | None = None,
        artifacts: str | Sequence[str] | None = None,
        iteration_log: bool = True,
        epoch_log: bool = True,
        output_transform: Callable[[Any], Any] = lambda x: x[0],
        global_epoch_transform: Callable[[int], int] = lambda x: x,
        tag_name: str = "Loss",
        optimizer_param_names: str | Sequence[str] = "lr",
        close_on_complete: bool = False,
        validator: Engine | None = None,
        defer_until_checkpoint: bool = False,
        retry_interval: float = 30.0,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT_S,
        request_max_retries: int | None = DEFAULT_REQUEST_MAX_RETRIES,
        max_pending: int = 100_000,
        summary_file: str | None = None,
        artifact_location: str | None = None,
    ) -> None:
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        if str(uri).lower().startswith(("http://", "https://")):  # the REST client only; SQLite is left alone
            if request_timeout is not None:
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, request_timeout))))
            if request_max_retries is not None:
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(int(request_max_retries)))
        self.client = MlflowClient(tracking_uri=tracking_uri or mlflow.get_tracking_uri())
        self.experiment_name = experiment_name
        self.run_name = run_name
        self._run_name = run_name or f"run_{time.strftime('%Y%m%d_%H%M%S')}"
        self.experiment_param = dict(experiment_param or {})
        self.artifacts = [str(a) for a in ensure_tuple(artifacts) if a]
        self.iteration_log = iteration_log
        self.epoch_log = epoch_log
        self.output_transform = output_transform
        self.global_epoch_transform = global_epoch_transform
        self.tag_name = tag_name
        self.optimizer_param_names = list(ensure_tuple(optimizer_param_names))
        self.close_on_complete = close_on_complete
        self.validator = validator
        self.defer_until_checkpoint = defer_until_checkpoint
        self.retry_interval = float(retry_interval)
        self.max_pending = int(max_pending)
        self.summary_file = summary_file
        self.artifact_location = artifact_location or None
        self.run_id: str | None = None
        self._staged: list[_Point] = []  # values of the epoch in progress
        self._pending: list[_Point] = []  # values due to be sent
        self._pending_params: dict[str, str] = {}
        self._retry_at = 0.0
        self._warned = False
        self._closed = False
        self._in_final_try = False
        self._failed_in_final_try = False
        self.stats: dict[str, Any] = {
            "produced": 0,
            "logged": 0,
            "already_in_store": 0,
            "dropped_overflow": 0,
            "failed_calls": 0,
            "skipped_calls": 0,
            "artifacts_not_logged": [],
            "first_error": "",
        }

    # ---------------------------------------------------------------------------------------- guarded calls
    def _available(self, final: bool = False) -> bool:
        if final:  # the last try at the end of the run: once, whatever the back-off, until a call fails
            return not self._failed_in_final_try
        if time.monotonic() >= self._retry_at:
            return True
        self.stats["skipped_calls"] += 1
        return False

    def _call(self, what: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except Exception as err:  # MlflowException, requests' ConnectionError/Timeout, sqlalchemy, OSError...
            self._failed(what, err)
            return _FAILED
        if self._retry_at:
            logger.info(f"MLflow tracking works again ({self.client.tracking_uri})")
            self._retry_at = 0.0
        return result

    def _failed(self, what: str, err: Exception) -> None:
        self.stats["failed_calls"] += 1
        self._failed_in_final_try = self._in_final_try
        self._retry_at = time.monotonic() + self.retry_interval
        message = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500]
        if not self.stats["first_error"]:
            self.stats["first_error"] = f"{what}: {message}"
        if not self._warned:
            self._warned = True
            text = (
                f"MLflow tracking failed ({what}, tracking_uri={self.client.tracking_uri}): {message}. Training "
                f"continues; metric values are kept and sent again at most every {self.retry_interval:g} s; the "
                "summary at the end of the run says what was not logged."
            )
            logger.warning(text)
            warnings.warn(text, TrackingWarning, stacklevel=3)
        else:
            logger.debug(f"MLflow tracking failed again ({what}): {message}")

    # ---------------------------------------------------------------------------------------- run and params
    def _find_or_create_run(self) -> str:
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else self.client.create_experiment(self.experiment_name, artifact_location=self.artifact_location)
        )
        runs = self.client.search_runs([experiment_id])
        runs = [r for r in runs if r.info.run_name == self._run_name and r.info.status != RUN_FINISHED]
        if runs:
            return runs[-1].info.run_id
        return self.client.create_run(experiment_id=experiment_id, run_name=self._run_name).info.run_id

    def _open_run(self, final: bool = False) -> bool:
        """Find the unfinished run of ``run_name`` or create it; False when the store is unreachable."""
        if self.run_id is not None:
            return True
        if self._closed or not self._available(final):
            return False
        run_id = self._call("opening the run", self._find_or_create_run)
        if run_id is _FAILED:
            return False
        self.run_id = run_id
        return True

    def _send_params(self, final: bool = False) -> bool:
        if not self._pending_params:
            return True
        if not self._open_run(final) or not self._available(final):
            return False
        run = self._call("reading the run's params", self.client.get_run, self.run_id)
        if run is _FAILED:
            return False
        logged = run.data.params
        new = {k: v for k, v in self._pending_params.items() if k not in logged}
        changed = {
            k: v for k, v in self._pending_params.items() if k in logged and logged[k] != v[:MAX_PARAM_VAL_LENGTH]
        }
        for k, v in changed.items():
            logger.info(f"MLflow param '{k}' was '{logged[k]}' in this run; now '{v}' (tag changed_param.{k})")
        params = [Param(k, v) for k, v in new.items()]
        tags = [RunTag(f"changed_param.{k}", v[:MAX_PARAM_VAL_LENGTH]) for k, v in changed.items()]
        for i in range(0, max(len(params), len(tags)), MAX_PARAMS_PER_BATCH):
            batch_params, batch_tags = params[i : i + MAX_PARAMS_PER_BATCH], tags[i : i + MAX_PARAMS_PER_BATCH]
            done = self._call("logging params", self.client.log_batch, self.run_id, params=batch_params,
                              tags=batch_tags)
            if done is _FAILED:
                return False
        self._pending_params.clear()
        return True

    def start(self, engine: Engine) -> None:
        """Open (or continue) the run and log the params; never raises for tracking failures."""
        self._closed = False
        self._open_run()
        params = dict(self.experiment_param)
        params.update({attr: getattr(engine.state, attr, None) for attr in ("max_epochs", "epoch_length")})
        self._pending_params.update({str(k): str(v) for k, v in params.items()})
        self._send_params()

    # ---------------------------------------------------------------------------------------- metrics
    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log ``metrics`` (nested dicts are flattened) at ``step``: held back until :meth:`commit` with
        ``defer_until_checkpoint``, else sent now. Values that are not numbers are left out, with a warning."""
        timestamp = int(time.time() * 1000)
        points = []
        for key, value in flatten_dict(dict(metrics)).items():
            try:
                value = value.item() if isinstance(value, torch.Tensor) else value
                points.append(_Point(str(key), float(value), timestamp, int(step), self.run_id or ""))
            except (TypeError, ValueError, RuntimeError):
                logger.warning(f"MLflow: metric '{key}' is not a number ({type(value).__name__}); not logged")
        self.stats["produced"] += len(points)
        self._staged.extend(points)
        if not self.defer_until_checkpoint:
            self.commit()

    def iteration_completed(self, engine: Engine) -> None:
        """Log the loss and the optimizer params of this iteration."""
        loss = self.output_transform(engine.state.output)
        if loss is None:
            return
        self.log_metrics(loss if isinstance(loss, Mapping) else {self.tag_name: loss}, step=engine.state.iteration)
        optimizer = getattr(engine, "optimizer", None)  # MONAI's trainers have one
        if optimizer is not None:
            for name in self.optimizer_param_names:
                groups = {f"{name}_group_{i}": group[name] for i, group in enumerate(optimizer.param_groups)}
                self.log_metrics(groups, step=engine.state.iteration)

    def epoch_completed(self, engine: Engine) -> None:
        """Log ``engine.state.metrics`` (the trainer's, or the validator's) at the epoch's step."""
        if engine.state.metrics:
            self.log_metrics(engine.state.metrics, step=self.global_epoch_transform(engine.state.epoch))

    def commit(self, engine: Engine | None = None, final: bool = False) -> None:
        """Release the values held back so far (their epoch's checkpoint is written) and try to send them."""
        self._pending.extend(self._staged)
        self._staged = []
        overflow = len(self._pending) - self.max_pending
        if overflow > 0:
            del self._pending[:overflow]
            self.stats["dropped_overflow"] += overflow
        self._send_metrics(final)

    def _send_metrics(self, final: bool = False) -> None:
        if not self._pending:
            return
        if not self._send_params(final) or not self._available(final):
            return
        for p in self._pending:
            p.run_id = p.run_id or self.run_id
        if any(p.restored for p in self._pending) and not self._drop_restored_duplicates():
            return
        by_run: dict[str, list[_Point]] = defaultdict(list)
        for p in self._pending:
            by_run[p.run_id].append(p)
        sent: set[int] = set()
        try:
            for run_id, points in by_run.items():
                for i in range(0, len(points), MAX_METRICS_PER_BATCH):
                    batch = points[i : i + MAX_METRICS_PER_BATCH]
                    metrics = [Metric(p.key, p.value, p.timestamp, p.step) for p in batch]
                    if self._call("logging metrics", self.client.log_batch, run_id, metrics=metrics) is _FAILED:
                        return
                    sent.update(id(p) for p in batch)
                    self.stats["logged"] += len(batch)
        finally:
            self._pending = [p for p in self._pending if id(p) not in sent]

    def _drop_restored_duplicates(self) -> bool:
        """Leave out restored values whose (key, step) the store has already (the killed run sent them)."""
        keys = {(p.run_id, p.key) for p in self._pending if p.restored}
        present: set[tuple[str, str, int]] = set()
        for run_id, key in sorted(keys):
            history = self._call("reading the metric history", self.client.get_metric_history, run_id, key)
            if history is _FAILED:
                return False
            present.update((run_id, key, m.step) for m in history)
        before = len(self._pending)
        self._pending = [p for p in self._pending if not (p.restored and (p.run_id, p.key, p.step) in present)]
        for p in self._pending:
            p.restored = False
        self.stats["already_in_store"] += before - len(self._pending)
        return True

    # ---------------------------------------------------------------------------------------- engine events
    def attach(self, engine: Engine) -> None:
        """Attach to ``engine`` (and to ``validator``'s ``EPOCH_COMPLETED``).

        Args:
            engine: the Ignite engine (the trainer, or an evaluator for an evaluation run).
        """
        if not engine.has_event_handler(self.start, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.start)
        if not engine.has_event_handler(self.commit, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.commit)  # before the artifacts and the end of the run
        if self.defer_until_checkpoint and not engine.has_event_handler(self.commit, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self.commit)
        if self.iteration_log and not engine.has_event_handler(self.iteration_completed, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        if self.epoch_log and not engine.has_event_handler(self.epoch_completed, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        if not engine.has_event_handler(self.complete, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.complete)
        end = self.close if self.close_on_complete else self.report
        if not engine.has_event_handler(end, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, end)
        if self.validator is not None and not self.validator.has_event_handler(
            self.epoch_completed, Events.EPOCH_COMPLETED
        ):
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def _artifact_files(self) -> list[str]:
        files = []
        for path in self.artifacts:
            if os.path.isfile(path):
                files.append(path)
            else:
                files += [os.path.join(root, name) for root, _, names in os.walk(path) for name in sorted(names)]
        return files

    def complete(self, engine: Engine | None = None) -> None:
        """Log the artifacts (each tried once; failures are counted in the summary)."""
        for artifact in self._artifact_files():
            done = (
                self._open_run(final=True)
                and self._available()
                and self._call("logging an artifact", self.client.log_artifact, self.run_id, artifact) is not _FAILED
            )
            if not done and artifact not in self.stats["artifacts_not_logged"]:
                self.stats["artifacts_not_logged"].append(artifact)

    def close(self, engine: Engine | None = None) -> None:
        """Send what is left (one last try), end the run and report."""
        # MLflow has no public way to release a SQLite store's engine: its connections go with the process
        self._in_final_try, self._failed_in_final_try = True, False
        try:
            self.commit(final=True)
            self._send_params(final=True)
            terminated = False
            if self.run_id is not None and self._available(final=True):
                ended = self._call("ending the run", self.client.set_terminated, self.run_id, RUN_FINISHED)
                terminated = ended is not _FAILED
            self.report(run_ended=terminated)
            self.run_id = None
            self._closed = True
        finally:
            self._in_final_try = False

    # ---------------------------------------------------------------------------------------- state and summary
    def state_dict(self) -> dict:
        """Values not yet in the store (held back and unsent), for the checkpoint; plain types only."""
        points = self._pending + self._staged
        return {"points": [[p.run_id, p.key, p.value, p.timestamp, p.step] for p in points]}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Take back the values of a checkpoint; they are sent unless the store has their (key, step) already."""
        restored = [_Point(k, float(v), int(t), int(s), str(r), True) for r, k, v, t, s in state_dict["points"]]
        self.stats["produced"] += len(restored)
        self._pending.extend(restored)

    def summary(self) -> dict[str, Any]:
        """What was logged and what was not, so far."""
        not_logged = len(self._pending) + len(self._staged) + self.stats["dropped_overflow"]
        out = {
            "tracking_uri": self.client.tracking_uri,
            "experiment_name": self.experiment_name,
            "run_name": self._run_name,
            "run_id": self.run_id,
            "metric_values": self.stats["produced"],
            "metric_values_logged": self.stats["logged"],
            "metric_values_already_in_store": self.stats["already_in_store"],
            "metric_values_not_logged": not_logged,
            "params_not_logged": len(self._pending_params),
            "artifacts_not_logged": list(self.stats["artifacts_not_logged"]),
            "failed_calls": self.stats["failed_calls"],
            "calls_skipped_while_failing": self.stats["skipped_calls"],
            "first_error": self.stats["first_error"],
        }
        out["complete"] = not (not_logged or out["params_not_logged"] or out["artifacts_not_logged"])
        return out

    def report(self, engine: Engine | None = None, run_ended: bool | None = None) -> dict[str, Any]:
        """Log the summary (a warning when anything was not logged) and write ``summary_file``."""
        s = self.summary()
        if run_ended is not None:
            s["run_ended"] = run_ended
        if s["complete"]:
            logger.info(
                f"MLflow summary: all {s['metric_values']} metric values logged to run {s['run_name']} "
                f"({s['run_id'] or 'closed'}) at {s['tracking_uri']}"
            )
        else:
            logger.warning(
                f"MLflow summary: metrics were NOT all logged to run {s['run_name']} at {s['tracking_uri']}: "
                f"{s['metric_values_not_logged']} of {s['metric_values']} metric values, "
                f"{s['params_not_logged']} params and {len(s['artifacts_not_logged'])} artifacts not logged "
                f"({s['failed_calls']} failed calls; first: {s['first_error']}). Training itself was not affected."
            )
        if self.summary_file:
            try:
                write_json_atomic(self.summary_file, s)
            except OSError as err:
                logger.warning(f"MLflow summary not written to {self.summary_file}: {err}")
        return s


class _NoTracking:
    """Stands in for the tracking handler in a checkpoint when there is none."""

    def state_dict(self) -> dict:
        return {"points": []}

    def load_state_dict(self, state_dict: Mapping) -> None:
        pass


def tracking_state(handlers: Any) -> Any:
    """The :class:`TolerantMLFlowHandler` among ``handlers`` (the trainer's handler list), for the checkpoint's
    ``save_dict``: looked up by type, not by position, so that a list with a handler inserted (MONAI Label inserts a
    ``CheckpointLoader``) still finds it. A stand-in with an empty state when there is none.

    Args:
        handlers: a list of handler objects (``None`` entries are ignored).
    """
    for h in handlers or []:
        if isinstance(h, TolerantMLFlowHandler):
            return h
    return _NoTracking()
