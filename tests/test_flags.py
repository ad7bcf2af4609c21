# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Yes/no options given on the bundle command line (``--amp false`` reaches the config as the string "false")."""

from __future__ import annotations

import pytest

from egeunet_monai.flags import flag


@pytest.mark.parametrize("value", [True, 1, "true", "True", " YES ", "on", "1"])
def test_true_spellings(value):
    assert flag(value, "amp") is True


@pytest.mark.parametrize("value", [False, 0, "false", "False", "no", "OFF", "0", ""])
def test_false_spellings(value):
    assert flag(value, "amp") is False


@pytest.mark.parametrize("value", ["flase", 2, None, 0.5])
def test_anything_else_names_the_option(value):
    with pytest.raises(ValueError, match="--resume must be true or false"):
        flag(value, "resume")
