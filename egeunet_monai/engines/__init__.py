from .checkpoints import (
    default_weights,
    latest_checkpoint,
    resume_checkpoint,
    tracking_run_name,
    trained_on_synthetic_data,
)
from .prepare_batch import PrepareBatchAugmented
from .split_batch import SplitBatchIteration

__all__ = [
    "PrepareBatchAugmented",
    "SplitBatchIteration",
    "default_weights",
    "latest_checkpoint",
    "resume_checkpoint",
    "tracking_run_name",
    "trained_on_synthetic_data",
]
