from egeunet_monai.resources import default_weights  # configs/inference.json's ckpt_path

from .checkpoints import (
    latest_checkpoint,
    resume_checkpoint,
    tracking_run_name,
    trained_on_synthetic_data,
)
from .prepare_batch import PrepareBatchAugmented
from .recipe import (
    augmentation_prepare_batch,
    described,
    ema_model,
    loader_workers,
    per_sample_transforms,
    set_intra_op_threads,
    training_epochs,
)

__all__ = [
    "PrepareBatchAugmented",
    "augmentation_prepare_batch",
    "described",
    "default_weights",
    "ema_model",
    "latest_checkpoint",
    "loader_workers",
    "per_sample_transforms",
    "resume_checkpoint",
    "set_intra_op_threads",
    "tracking_run_name",
    "training_epochs",
    "trained_on_synthetic_data",
]
