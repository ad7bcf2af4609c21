# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Yes/no options of the bundle configs, read the same way however they are given on the command line."""

from __future__ import annotations

__all__ = ["flag"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", ""}


def flag(value: object, name: str) -> bool:
    """``value`` of the yes/no option ``name`` as a bool.

    ``python -m monai.bundle run ... --amp false`` hands the config the *string* "false" (fire parses Python literals
    only: ``False`` would be a bool), and a non-empty string is true in an ``if``: without this, ``--amp false`` would
    turn mixed precision on. Accepts bools, 0/1 and true/false, yes/no, on/off in any case; anything else is an error
    that names the option.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"--{name} must be true or false, got {value!r}.")
