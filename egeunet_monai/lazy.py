# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Packages whose names are imported from their modules on first use (PEP 562), so that a light command does not
pay for MONAI. scientific-python's ``lazy_loader.attach`` does the same; ten lines spare a dependency."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, where ``exports`` maps each public name to the module of
    the package that defines it; a name is imported once, then bound in the package."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list:
        return sorted([*vars(sys.modules[package]), *exports])

    return __getattr__, __dir__
