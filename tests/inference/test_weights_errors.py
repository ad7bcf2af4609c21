# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Weights files that cannot be read: ``predict --weights`` says in one line which file and what it is not (exit 2,
no traceback), as ``load_runtime`` does, and never PyTorch's advice to load with ``weights_only=False``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egeunet_monai.cli import main
from egeunet_monai.inference.ort_session import ONNX_CACHE_ENV
from egeunet_monai.inference.runtime import load_eager_network, load_runtime

TEXT = b"hello, these are not weights\n"
ADVICE = ("Re-running", "`weights_only`", "internal miniz error")  # PyTorch's, wrong or unsafe here


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(ONNX_CACHE_ENV, str(tmp_path / "onnx_cache"))  # never the user's cache


def _predict(tmp_path, weights, capsys, *options) -> str:
    from tests.conftest import require_shared_data

    photo = require_shared_data("ph2", "images", "IMD002.jpg")
    code = main(["predict", str(photo), "--out", str(tmp_path / "out"), "--weights", str(weights), *options])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(weights) in err, err
    return err


@pytest.mark.parametrize("name, content, problem", [
    ("w.ts", TEXT, "is not a TorchScript archive (torch.jit.load: "),
    ("w.onnx", TEXT, "is not an ONNX model that ONNX Runtime can run (InvalidProtobuf: "),
    ("w.pt", TEXT, "it is not a PyTorch checkpoint (neither a zip archive nor a pickle)"),
    ("empty.pt", b"", "is empty (0 bytes)"),
    ("empty.onnx", b"", "is empty (0 bytes)"),
    ("folder.pt", None, "is a folder, not a weights file"),
    ("folder", None, "is a folder, not a weights file"),
])
def test_predict_names_the_file_and_what_it_is_not(tmp_path, capsys, name, content, problem):
    if name.endswith(".onnx"):
        pytest.importorskip("onnxruntime")
    weights = tmp_path / name
    weights.mkdir() if content is None else weights.write_bytes(content)
    err = _predict(tmp_path, weights, capsys)
    assert problem in err and not any(advice in err for advice in ADVICE), err


@pytest.mark.parametrize("runtime", ["auto", "torchscript", "eager"])
def test_every_runtime_says_a_ts_file_is_not_torchscript(tmp_path, runtime):
    text = tmp_path / "w.ts"
    text.write_bytes(TEXT)
    with pytest.raises(ValueError, match=r"w\.ts is not a TorchScript archive \(torch\.jit\.load: .*zip archive"):
        load_runtime(text, runtime=runtime)
    # a zip archive that torch.save wrote, not torch.jit.save
    state = tmp_path / "state_dict.ts"
    torch.save({"weight": torch.zeros(2)}, state)
    with pytest.raises(ValueError, match=r"state_dict\.ts is not a TorchScript archive"):
        load_eager_network(state)


def test_a_bad_onnx_file_is_a_value_error_from_load_runtime_too(tmp_path):
    pytest.importorskip("onnxruntime")
    weights = tmp_path / "w.onnx"
    weights.write_bytes(TEXT)
    with pytest.raises(ValueError, match=r"w\.onnx is not an ONNX model .*Protobuf parsing failed"):
        load_runtime(weights, runtime="onnxruntime")


def test_a_checkpoint_weights_only_refuses_is_named_without_pytorchs_advice(tmp_path, capsys):
    weights = tmp_path / "numpy.pt"
    torch.save({"weight": np.zeros(2)}, weights)  # a real pickle, with a global weights_only=True does not load
    with pytest.raises(ValueError, match=r"numpy\.pt: cannot be read as a PyTorch checkpoint \(Unsupported global"):
        load_eager_network(weights)
    err = _predict(tmp_path, weights, capsys, "--runtime", "eager")
    assert "Unsupported global" in err and not any(advice in err for advice in ADVICE), err
