# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""An MLflow handler that never stops training, and logs each epoch exactly once across kills and resumes."""

from __future__ import annotations

import os
import time
import warnings
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ignite.engine import Engine, Events
from monai.apps.utils import get_logger
from monai.handlers import MLFlowHandler
from monai.utils import flatten_dict

from egeunet_monai.files import write_json_atomic

__all__ = ["TolerantMLFlowHandler", "TrackingWarning", "tracking_state"]

logger = get_logger("egeunet_monai.tracking")

# MLflow's REST client retries 7 times with exponential back-off and waits 120 s per request by default: minutes
# of stalled training per call when the server is gone. These apply unless the environment sets them already.
DEFAULT_REQUEST_TIMEOUT_S = 10
DEFAULT_REQUEST_MAX_RETRIES = 0
_MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
_MAX_PARAMS_PER_BATCH = 100
try:
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
except ImportError:  # pragma: no cover
    MAX_PARAM_VAL_LENGTH = 6000


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


class TolerantMLFlowHandler(MLFlowHandler):
    """``monai.handlers.MLFlowHandler`` that keeps training going when tracking fails, and that, with
    ``defer_until_checkpoint``, logs every metric value of a resumed training exactly once.

    **Faults.** Every call to the tracking store is guarded: an error (server stopped or unreachable, time-out,
    locked database...) gives one :class:`TrackingWarning` and a log line, and training continues. Metric values
    that could not be sent are kept (at most ``max_pending``) and sent again with the next batch, at most every
    ``retry_interval`` seconds, so a short outage loses nothing; params wait for the run; artifacts are tried once.
    For HTTP stores the request time-out and retries are set low (``MLFLOW_HTTP_REQUEST_TIMEOUT``,
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, unless the environment sets them) so a dead server costs seconds, not
    minutes. At the end (``close``, or ``COMPLETED`` without ``close_on_complete``) a summary is logged, as a
    warning when anything was not logged, and written to ``summary_file`` (JSON) if given.

    **Resume.** MLflow cannot delete a logged value, so values of an epoch that a kill throws away must never
    reach the store. With ``defer_until_checkpoint=True`` (for a trainer whose checkpoint is saved at every epoch
    end): the values of an epoch (iteration losses, learning rates, and the metrics of ``validator``, logged at the
    trainer's epoch) are held back until the next ``EPOCH_STARTED`` or ``COMPLETED``, i.e. until that epoch's
    checkpoint has been written; they are also part of :meth:`state_dict`, so put the handler in the checkpoint
    (see :func:`tracking_state`). A kill in the middle of an epoch then loses only values that the resumed run logs
    again; values restored from the checkpoint are sent unless the store already has their (key, step). Params
    that a resumed run logs with another value (MLflow refuses to change a param) become tags
    ``changed_param.<key>``. The run itself is found by name as MONAI does: the unfinished run of that name.

    Args:
        args: as for ``monai.handlers.MLFlowHandler``.
        validator: an evaluator (e.g. the ``SupervisedEvaluator`` of ``ValidationHandler``) whose
            ``state.metrics`` are logged at the trainer's epoch (its ``state.epoch`` through
            ``global_epoch_transform``) each time it completes; attach this handler to the trainer only.
        defer_until_checkpoint: hold each epoch's values back as described above; ``False`` sends them at once.
        retry_interval: seconds without any call to the store after a failure.
        request_timeout: seconds per HTTP request; ``None`` leaves ``MLFLOW_HTTP_REQUEST_TIMEOUT`` alone.
        request_max_retries: HTTP retries; ``None`` leaves ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` alone.
        max_pending: metric values kept while the store is unreachable; older ones are dropped beyond that.
        summary_file: JSON file for the end-of-run summary (written atomically); ``None`` to skip.
        kwargs: as for ``monai.handlers.MLFlowHandler``.
    """

    def __init__(
        self,
        *args: Any,
        validator: Engine | None = None,
        defer_until_checkpoint: bool = False,
        retry_interval: float = 30.0,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT_S,
        request_max_retries: int | None = DEFAULT_REQUEST_MAX_RETRIES,
        max_pending: int = 100_000,
        summary_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or kwargs.get("tracking_uri") or (args[0] if args else "")
        if str(uri).lower().startswith(("http://", "https://")):  # the REST client only; SQLite is left alone
            if request_timeout is not None:
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, request_timeout))))
            if request_max_retries is not None:
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(int(request_max_retries)))
        super().__init__(*args, **kwargs)
        self.validator = validator
        self.defer_until_checkpoint = defer_until_checkpoint
        self.retry_interval = float(retry_interval)
        self.max_pending = int(max_pending)
        self.summary_file = summary_file
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
            "params_not_logged": 0,
            "first_error": "",
        }

    # ---------------------------------------------------------------------------------------- guarded calls
    def _tracking_uri(self) -> str:
        return str(getattr(self.client, "tracking_uri", "") or os.environ.get("MLFLOW_TRACKING_URI", ""))

    def _available(self, final: bool = False) -> bool:
        if final:  # the last try at the end of the run: once, whatever the back-off, until a call fails
            return not self._failed_in_final_try
        if time.monotonic() >= self._retry_at:
            return True
        self.stats["skipped_calls"] += 1
        return False

    def _call(self, what: str, fn, *args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except Exception as err:  # MlflowException, requests' ConnectionError/Timeout, sqlalchemy, OSError...
            self._failed(what, err)
            return _FAILED
        if self._retry_at:
            logger.info(f"MLflow tracking works again ({self._tracking_uri()})")
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
                f"MLflow tracking failed ({what}, tracking_uri={self._tracking_uri()}): {message}. Training "
                f"continues; metric values are kept and sent again at most every {self.retry_interval:g} s; the "
                "summary at the end of the run says what was not logged."
            )
            logger.warning(text)
            warnings.warn(text, TrackingWarning, stacklevel=3)
        else:
            logger.debug(f"MLflow tracking failed again ({what}): {message}")

    # ---------------------------------------------------------------------------------------- run and params
    def _open_run(self, final: bool = False) -> bool:
        """Find (the unfinished run of ``run_name``, as MONAI does) or create the run; False when unreachable."""
        if self.cur_run is not None:
            return True
        if self._closed or not self._available(final):
            return False

        def find_or_create():
            self._set_experiment()
            run_name = f"run_{time.strftime('%Y%m%d_%H%M%S')}" if self.run_name is None else self.run_name
            runs = self.client.search_runs(self.experiment.experiment_id)
            runs = [r for r in runs if r.info.run_name == run_name or not self.run_name]
            runs = [r for r in runs if r.info.status != self.run_finish_status]
            if runs:
                return self.client.get_run(runs[-1].info.run_id)
            return self.client.create_run(experiment_id=self.experiment.experiment_id, run_name=run_name)

        run = self._call("opening the run", find_or_create)
        if run is _FAILED:
            return False
        self.cur_run = run
        return True

    def _log_params(self, params: dict[str, Any]) -> None:
        self._pending_params.update({str(k): str(v) for k, v in params.items()})
        self._send_params()

    def _send_params(self, final: bool = False) -> bool:
        if not self._pending_params:
            return True
        if not self._open_run(final) or not self._available(final):
            return False
        run_id = self.cur_run.info.run_id
        run = self._call("reading the run's params", self.client.get_run, run_id)
        if run is _FAILED:
            return False
        logged = run.data.params
        new = {k: v for k, v in self._pending_params.items() if k not in logged}
        changed = {
            k: v for k, v in self._pending_params.items() if k in logged and logged[k] != v[:MAX_PARAM_VAL_LENGTH]
        }
        for k, v in changed.items():
            logger.info(f"MLflow param '{k}' was '{logged[k]}' in this run; now '{v}' (tag changed_param.{k})")
        from mlflow.entities import Param, RunTag

        params = [Param(k, v) for k, v in new.items()]
        tags = [RunTag(f"changed_param.{k}", v[:MAX_PARAM_VAL_LENGTH]) for k, v in changed.items()]
        for i in range(0, max(len(params), len(tags), 1), _MAX_PARAMS_PER_BATCH):
            batch_params, batch_tags = params[i : i + _MAX_PARAMS_PER_BATCH], tags[i : i + _MAX_PARAMS_PER_BATCH]
            if not batch_params and not batch_tags:
                break
            done = self._call("logging params", self.client.log_batch, run_id, params=batch_params, tags=batch_tags)
            if done is _FAILED:
                return False
        self._pending_params.clear()
        return True

    def _delete_exist_param_in_dict(self, param_dict: dict) -> None:
        """Not used: :meth:`_send_params` compares with the run's params itself."""

    def start(self, engine: Engine) -> None:
        """Open (or continue) the run and log the params; never raises for tracking failures."""
        self._closed = False
        self._open_run()
        params = dict(self.experiment_param or {})
        params.update({attr: getattr(engine.state, attr, None) for attr in self.default_tracking_params})
        self._log_params(params)
        if (self.dataset_dict is not None or self.dataset_logger is not None) and self._open_run():
            log_dataset = self.dataset_logger or self._default_dataset_log
            self._call("logging the dataset", log_dataset, self.dataset_dict)

    # ---------------------------------------------------------------------------------------- metrics
    def _log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        timestamp = int(time.time() * 1000)
        run_id = self.cur_run.info.run_id if self.cur_run is not None else ""
        points = []
        for key, value in flatten_dict(metrics).items():
            try:
                points.append(_Point(str(key), float(value), timestamp, int(step or 0), run_id))
            except (TypeError, ValueError):
                logger.warning(f"MLflow: metric '{key}' is not a number ({type(value).__name__}); not logged")
        self.stats["produced"] += len(points)
        self._staged.extend(points)
        if not self.defer_until_checkpoint:
            self.commit()

    def _log_validation(self, validator: Engine) -> None:
        if validator.state.metrics:
            self._log_metrics(validator.state.metrics, step=self.global_epoch_transform(validator.state.epoch))

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
        run_id = self.cur_run.info.run_id
        for p in self._pending:
            p.run_id = p.run_id or run_id
        if any(p.restored for p in self._pending):
            if not self._drop_restored_duplicates():
                return
        from mlflow.entities import Metric

        by_run: dict[str, list[_Point]] = defaultdict(list)
        for p in self._pending:
            by_run[p.run_id].append(p)
        sent: set[int] = set()
        try:
            for rid, points in by_run.items():
                for i in range(0, len(points), _MAX_METRICS_PER_BATCH):
                    batch = points[i : i + _MAX_METRICS_PER_BATCH]
                    metrics = [Metric(p.key, p.value, p.timestamp, p.step) for p in batch]
                    if self._call("logging metrics", self.client.log_batch, rid, metrics=metrics) is _FAILED:
                        return
                    sent.update(id(p) for p in batch)
                    self.stats["logged"] += len(batch)
        finally:
            self._pending = [p for p in self._pending if id(p) not in sent]

    def _drop_restored_duplicates(self) -> bool:
        """Leave out restored values whose (key, step) the store has already (the killed run sent them)."""
        keys = {(p.run_id, p.key) for p in self._pending if p.restored}
        present: set[tuple[str, str, int]] = set()
        for rid, key in sorted(keys):
            history = self._call("reading the metric history", self.client.get_metric_history, rid, key)
            if history is _FAILED:
                return False
            present.update((rid, key, m.step) for m in history)
        before = len(self._pending)
        self._pending = [p for p in self._pending if not (p.restored and (p.run_id, p.key, p.step) in present)]
        for p in self._pending:
            p.restored = False
        self.stats["already_in_store"] += before - len(self._pending)
        return True

    # ---------------------------------------------------------------------------------------- engine events
    def attach(self, engine: Engine) -> None:
        """Attach to ``engine`` (and to ``validator``'s ``EPOCH_COMPLETED``); see ``MLFlowHandler.attach``."""
        if not engine.has_event_handler(self.commit, Events.COMPLETED):
            # before MONAI's `complete`/`close`, which are attached below
            engine.add_event_handler(Events.COMPLETED, self.commit)
        if self.defer_until_checkpoint and not engine.has_event_handler(self.commit, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self.commit)
        super().attach(engine)
        if not self.close_on_complete and not engine.has_event_handler(self.report, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.report)
        if self.validator is not None and not self.validator.has_event_handler(
            self._log_validation, Events.EPOCH_COMPLETED
        ):
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self._log_validation)

    def complete(self) -> None:
        """Log the artifacts (each tried once; failures are counted in the summary)."""
        if not self.artifacts:
            return
        for artifact in self._parse_artifacts():
            done = (
                self._open_run(final=True)
                and self._available()
                and self._call("logging an artifact", self.client.log_artifact, self.cur_run.info.run_id, artifact)
                is not _FAILED
            )
            if not done and artifact not in self.stats["artifacts_not_logged"]:
                self.stats["artifacts_not_logged"].append(artifact)

    def close(self) -> None:
        """Send what is left (one last try), end the run, report, release the SQLite engine."""
        self._in_final_try, self._failed_in_final_try = True, False
        try:
            self.commit(final=True)
            self._send_params(final=True)
            terminated = False
            if self.cur_run is not None and self._available(final=True):
                ended = self._call(
                    "ending the run", self.client.set_terminated, self.cur_run.info.run_id, self.run_finish_status
                )
                terminated = ended is not _FAILED
            self.report(run_ended=terminated)
            self.cur_run = None
            self._closed = True
        finally:
            self._in_final_try = False
            try:
                self._dispose_sqlite_store()
            except Exception:  # releasing a local engine must not fail a finished training either
                pass

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
            "tracking_uri": self._tracking_uri(),
            "experiment_name": self.experiment_name,
            "run_name": self.run_name,
            "run_id": self.cur_run.info.run_id if self.cur_run is not None else None,
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
