# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Importing the network (or the speed-up layer) costs no tracking, viewer or plotting package: a fresh interpreter
imports the module and lists what ``sys.modules`` holds after."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

HEAVY = ("mlflow", "starlette", "uvicorn", "matplotlib", "onnxruntime")


@pytest.mark.parametrize(
    "statement",
    [
        "import egeunet_monai",
        "import egeunet_monai.networks",
        "from egeunet_monai.networks import EGEUNet, load_original_state_dict",
        "import egeunet_monai.accel",
    ],  # not EGEUNet(): building it imports MONAI's Convolution, and `import monai` imports every optional package
        # MONAI knows that is installed (MLflow among them): MONAI's choice, not ours
)
def test_importing_the_network_loads_no_heavy_package(statement):
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = sorted({name.split(".")[0] for name in loaded} & set(HEAVY))
    assert heavy == [], f"`{statement}` imported {heavy}"
