from .batch_augmentation import RandFlipRotateBatch

__all__ = ["RandFlipRotateBatch"]
