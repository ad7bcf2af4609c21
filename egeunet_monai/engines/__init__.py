from .checkpoints import latest_checkpoint, resume_checkpoint, tracking_run_name

__all__ = ["latest_checkpoint", "resume_checkpoint", "tracking_run_name"]
