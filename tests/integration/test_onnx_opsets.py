# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""``egeunet_monai.export.export_onnx`` at each opset its docstring says is tested (17 and 18), with the released
weights: the file declares that opset and ONNX Runtime runs it at batch 1 and 4 on real photographs, matching the
PyTorch network in float64."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO_ROOT, require_shared_data

IMAGES = ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]  # 256x256: the network's input size
# ONNX Runtime's float32 probabilities against the network's in float64. Measured: 6.1e-6 at most (both opsets, batch
# 1 and 4), bound 16x that, as tests/networks/test_fast_paths.py bounds its ONNX check.
PROB_ATOL = 1e-4

pytestmark = pytest.mark.slow  # an export and ONNX Runtime per opset: 20-30 s of CPU each


@pytest.fixture(scope="module")
def released():
    """The released network (bundle/models/model.pt), 4 real photographs as a float32 batch in [0, 255], and the
    network's probabilities for them in float64."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(REPO_ROOT / "bundle" / "models" / "model.pt", weights_only=True))
    folder = require_shared_data("isic2017_train_256", "images")
    # (C, W, H) as MONAI's PIL reader gives them to the bundle
    photos = [np.asarray(Image.open(folder / f"{i}.jpg").convert("RGB"), dtype=np.float32).transpose(2, 1, 0)
              for i in IMAGES]
    images = torch.from_numpy(np.stack(photos))
    with torch.no_grad():
        expected = torch.sigmoid(copy.deepcopy(network).double().eval()(images.double()))
    return network.eval(), images, expected


@pytest.mark.parametrize("opset", [17, 18])
def test_export_onnx_at_a_documented_opset_runs_in_onnx_runtime(opset, released, tmp_path):
    import onnx

    from egeunet_monai.export import export_onnx, load_onnx_predictor

    network, images, expected = released
    path = export_onnx(network, tmp_path / "model.onnx", opset=opset)
    assert [o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx")] == [opset]
    predictor = load_onnx_predictor(path, threads=1)
    for n in (1, 4):
        got = torch.sigmoid(predictor(images[:n]).double())
        assert got.shape == (n, 1, 256, 256)
        assert (got - expected[:n]).abs().max() <= PROB_ATOL
