"""EGE-UNet for skin-lesion segmentation, in the MONAI ecosystem."""

__version__ = "0.1.0"
