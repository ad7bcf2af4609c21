from .egeunet import EGEUNet, EgeUNet

__all__ = ["EGEUNet", "EgeUNet"]
