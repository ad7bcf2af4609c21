"""EGE-UNet for skin-lesion segmentation, in the MONAI ecosystem."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# The subpackages load on first use (PEP 562 module __getattr__): `import egeunet_monai.networks` pulls in no MLflow,
# viewer or plotting package, and a bundle config's "$import egeunet_monai" still reaches every subpackage as an
# attribute, e.g. "$egeunet_monai.data.list_images(...)" (MONAI binds "$import a.b" to the name "a.b", not "a").
_SUBMODULES = (
    "accel", "cli", "data", "engines", "export", "files", "flags", "handlers", "inference", "losses", "metrics", "networks",
    "resources", "threads", "transforms", "viewer", "visualize",
)  # fmt: skip

__all__ = [
    "accel", "data", "engines", "export", "flags", "handlers", "losses", "metrics", "networks", "transforms", "visualize",
    "__version__",
]  # fmt: skip


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")  # also binds it here: called once per subpackage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
