"""EGE-UNet for skin-lesion segmentation, in the MONAI ecosystem."""

__version__ = "0.1.0"

# Imported here so that a bundle config's "$import egeunet_monai" reaches every subpackage
# (MONAI binds "$import a.b" to the name "a.b", not "a").
from . import data, engines, export, flags, handlers, losses, metrics, networks, transforms, visualize  # noqa: E402

__all__ = ["data", "engines", "export", "flags", "handlers", "losses", "metrics", "networks", "transforms", "visualize", "__version__"]
