# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""load_runtime: the fastest exact runtime for a weights file, exported to ONNX once per file, with fall-backs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from egeunet_monai.inference.runtime import (
    ONNX_CACHE_ENV,
    cached_onnx_export,
    file_sha256,
    load_eager_network,
    load_runtime,
)
from tests.conftest import REPO_ROOT, require_original_checkpoint

RELEASED = REPO_ROOT / "bundle" / "models" / "model.pt"
RELEASED_TS = REPO_ROOT / "bundle" / "models" / "model.ts"
# The accuracy contract of the default runtime: probabilities within 1e-4 of the eager network in float32.
# Measured on the 16 images of `real_images` (Intel Xeon with AVX-512, ONNX Runtime 1.32): 2.2e-5 with the
# released weights, 6.8e-5 with the original implementation's 17-epoch checkpoint, at batch 1 and 8, 1 and 2 threads
# (the eager float32 network itself is 1.0e-5 and 1.3e-5 from float64; most of the rest is ONNX Runtime's
# InstanceNormalization, which GroupNorm exports to, on the first level's activations of up to ~740).
PROBABILITY_ATOL = 1e-4
# Dice between the INT8 model's masks and the float32 model's, per image of `real_images`, calibrated on 4 images:
# measured at least 0.988 (with 100 calibration images: mean 0.989 over the 429 validation images). With 8-bit
# weights an AVX2-only CPU (no VNNI) gave 0.943 on one image (ONNX Runtime's U8S8 saturation); the export's 7-bit
# weights (reduce_range) gave 0.981-0.998 on the first six there (2026-12-06, 0.2.0 weights).
INT8_MIN_DICE = 0.97

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path_factory, monkeypatch):
    """One export cache for the module's tests, never the user's."""
    folder = tmp_path_factory.getbasetemp() / "onnx_cache"
    monkeypatch.setenv(ONNX_CACHE_ENV, str(folder))
    return folder


@pytest.fixture(scope="module")
def real_images() -> torch.Tensor:
    """8 ISIC 2017 training images and 8 full-size PH2 photographs, as the network sees them."""
    from tests.conftest import require_shared_data
    from PIL import Image

    from egeunet_monai.inference.batch import prepare_image

    data = require_shared_data()
    files = sorted((data / "isic2017_train_256" / "images").glob("*.jpg"))[:8]
    files += sorted((data / "ph2" / "images").glob("*.jpg"))[:8]
    return torch.from_numpy(np.stack([prepare_image(np.asarray(Image.open(f).convert("RGB"))) for f in files]))


def _probabilities(net, x: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([torch.sigmoid(net(x[i : i + batch])) for i in range(0, len(x), batch)])


@pytest.mark.parametrize("which", ["released .pt", "released .ts", "original checkpoint"])
def test_default_runtime_is_onnx_runtime_within_the_accuracy_contract(which, real_images):
    pytest.importorskip("onnxruntime")
    weights = {"released .pt": RELEASED, "released .ts": RELEASED_TS}.get(which) or require_original_checkpoint()
    expected = _probabilities(load_eager_network(weights), real_images, 8)
    for threads in (1, 2):
        runtime = load_runtime(weights, threads=threads)
        assert runtime.name == "onnxruntime"
        assert "cached" in runtime.description
        for batch in (8, 1):  # the exported batch axis is dynamic
            got = _probabilities(runtime, real_images, batch)
            assert got.shape == expected.shape
            diff = (got - expected).abs().max().item()
            assert diff <= PROBABILITY_ATOL, f"{which}, {threads} threads, batch {batch}: {diff:.3g}"


def test_export_is_cached_by_the_weights_checksum(tmp_path, onnx_cache):
    pytest.importorskip("onnxruntime")
    first = cached_onnx_export(RELEASED)
    assert first.parent == onnx_cache and first.name.startswith(file_sha256(RELEASED))
    stamp = first.stat().st_mtime_ns
    again = load_runtime(RELEASED)
    assert str(first) in again.description and first.stat().st_mtime_ns == stamp  # read, not exported again

    # the same weights under another name share the export; changed weights get their own
    copy = tmp_path / "renamed.pt"
    copy.write_bytes(RELEASED.read_bytes())
    assert cached_onnx_export(copy) == first
    changed = load_eager_network(RELEASED)
    with torch.no_grad():
        changed.final_conv.bias.add_(1.0)
    torch.save(changed.state_dict(), tmp_path / "changed.pt")
    other = cached_onnx_export(tmp_path / "changed.pt")
    assert other != first and other.is_file()
    assert not [p for p in onnx_cache.iterdir() if ".tmp" in p.name]  # no temporary file left behind


def test_concurrent_processes_export_one_whole_file(tmp_path):
    """Two processes that find no export start one each: both finish, one complete file is left."""
    pytest.importorskip("onnxruntime")
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        from egeunet_monai.inference.runtime import load_runtime
        print(load_runtime({str(RELEASED)!r}).name)
        """
    )
    env = {**os.environ, ONNX_CACHE_ENV: str(cache), "PYTHONPATH": str(REPO_ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [o.split()[-1] for o in outputs] == ["onnxruntime", "onnxruntime"]
    assert [p.name for p in cache.iterdir()] == [f"{file_sha256(RELEASED)}-256x256-opset17.onnx"]
    import onnx

    onnx.checker.check_model(str(next(cache.iterdir())))


def test_onnx_file_runs_as_given(real_images):
    pytest.importorskip("onnxruntime")
    onnx_file = cached_onnx_export(RELEASED)
    runtime = load_runtime(onnx_file, threads=1)
    assert runtime.name == "onnxruntime" and "as given" in runtime.reason
    expected = _probabilities(load_eager_network(RELEASED), real_images[:4], 4)
    assert (_probabilities(runtime, real_images[:4], 4) - expected).abs().max().item() <= PROBABILITY_ATOL
    with pytest.raises(ValueError, match="ONNX Runtime only"):
        load_runtime(onnx_file, runtime="eager")


def test_without_onnx_runtime_falls_back_to_torchscript_and_says_why(monkeypatch, real_images, caplog):
    # what `import onnxruntime` does where the package is not installed: raise ImportError
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with caplog.at_level("INFO", logger="egeunet_monai.inference.runtime"):
        runtime = load_runtime(RELEASED, threads=1)
    assert runtime.name == "torchscript"
    assert "ONNX Runtime is not installed" in runtime.reason and "egeunet-monai[onnx]" in runtime.reason
    assert [r.getMessage() for r in caplog.records] == [runtime.description]  # one message
    expected = _probabilities(load_eager_network(RELEASED), real_images[:4], 4)
    assert (_probabilities(runtime, real_images[:4], 4) - expected).abs().max().item() <= PROBABILITY_ATOL
    with pytest.raises(ImportError, match="not installed"):
        load_runtime(RELEASED, runtime="onnxruntime")


def test_eager_can_be_forced(real_images):
    runtime = load_runtime(RELEASED, runtime="eager", threads=1)
    assert runtime.name == "eager" and runtime.reason == "as asked"
    # run on a thread of its own with one intra-op thread: the same function as the network in this thread
    expected = _probabilities(load_eager_network(RELEASED), real_images[:2], 2)
    assert (_probabilities(runtime, real_images[:2], 2) - expected).abs().max().item() <= PROBABILITY_ATOL


def test_bad_arguments_and_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_runtime(RELEASED, runtime="tensorrt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_runtime(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown weights format"):
        load_runtime(tmp_path / "model.safetensors")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: cannot be read"):
        load_eager_network(junk)
    torch.save({"unrelated.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt"):
        load_runtime(tmp_path / "other.pt", runtime="eager")



def test_int8_edge_export_loads_as_it_is(tmp_path, real_images):
    """scripts/export_edge.py's INT8 model runs as ``--weights`` with a dynamic batch, its masks close to the float32
    model's. Calibrated here on 4 training images only, to keep the test short."""
    pytest.importorskip("onnxruntime")
    from tests.conftest import require_shared_data

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import export_edge

    fp32 = export_edge.export_fp32(RELEASED, tmp_path / "model_fp32.onnx")
    files = export_edge.calibration_files(require_shared_data("isic2017_train_256"), 4, None)
    int8 = export_edge.quantize_int8(fp32, tmp_path / "model_int8.onnx", files)
    runtime = load_runtime(int8, threads=1)
    assert runtime.name == "onnxruntime" and "as given" in runtime.reason
    expected = _probabilities(load_runtime(fp32, threads=1), real_images, 8) >= 0.5
    for batch in (8, 3):
        got = _probabilities(runtime, real_images, batch) >= 0.5
        assert got.shape == expected.shape
        dice = [(2 * (g & e).sum() / max(int(g.sum() + e.sum()), 1)).item() for g, e in zip(got, expected)]
        assert min(dice) >= INT8_MIN_DICE, dice
    # `--weights model_int8.onnx` in predict/serve (open_predictor) and `--ckpt_path model_int8.onnx` in the bundle
    from monai.bundle import ConfigParser

    from egeunet_monai.inference import open_predictor

    predictor = open_predictor(int8, output_dir=tmp_path / "masks", device="cpu")
    assert predictor.runtime.name == "onnxruntime" and predictor.runtime.weights == str(int8)
    photo = require_shared_data("ph2", "images", "IMD002.jpg")
    mask, _, stats = predictor.predict_one(photo)
    assert mask.shape == (572, 765) and stats.area_px > 0
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "configs" / "inference.json"))
    parser["bundle_root"] = str(REPO_ROOT)
    parser["ckpt_path"] = str(int8)
    network = parser.get_parsed_content("network")
    assert network.name == "onnxruntime" and "as given" in network.reason
