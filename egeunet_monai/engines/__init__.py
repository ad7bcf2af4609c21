from .checkpoints import default_weights, latest_checkpoint, resume_checkpoint, tracking_run_name

__all__ = ["default_weights", "latest_checkpoint", "resume_checkpoint", "tracking_run_name"]
