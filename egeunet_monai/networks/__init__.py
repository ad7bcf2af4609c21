from .nets import EGEUNet, EgeUNet
from .original_checkpoint import (
    OriginalCheckpointError,
    convert_original_state_dict,
    load_original_state_dict,
    original_to_monai_key,
)

__all__ = [
    "EGEUNet",
    "EgeUNet",
    "OriginalCheckpointError",
    "convert_original_state_dict",
    "load_original_state_dict",
    "original_to_monai_key",
]
