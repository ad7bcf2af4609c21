from .checkpoint_saver import (
    BestMetricState,
    CheckpointWriteError,
    DurableCheckpointSaver,
    DurableDiskSaver,
    resumable_state,
    save_durably,
)
from .mlflow_handler import TolerantMLFlowHandler, TrackingWarning, tracking_state
from .overlay_saver import OverlaySaver

__all__ = [
    "BestMetricState",
    "CheckpointWriteError",
    "DurableCheckpointSaver",
    "DurableDiskSaver",
    "OverlaySaver",
    "TolerantMLFlowHandler",
    "TrackingWarning",
    "resumable_state",
    "save_durably",
    "tracking_state",
]
