from .checkpoints import default_weights, latest_checkpoint, resume_checkpoint, tracking_run_name
from .split_batch import SplitBatchIteration

__all__ = ["SplitBatchIteration", "default_weights", "latest_checkpoint", "resume_checkpoint", "tracking_run_name"]
