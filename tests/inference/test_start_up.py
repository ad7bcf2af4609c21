# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""``egeunet-monai predict`` starts without MONAI (seconds and hundreds of MiB of imports: Ignite, MLflow, SciPy's
signal module, matplotlib...), and what it uses in MONAI's place gives what MONAI gives: the reader's array, the
default weights, the config's settings, the hole filling."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from egeunet_monai.inference.ort_session import ONNX_CACHE_ENV
from tests.conftest import REPO_ROOT, require_shared_data

HEAVY = ("monai", "ignite", "mlflow", "matplotlib", "pandas")
PROBE = """
import sys
from egeunet_monai.cli.main import main
code = main(sys.argv[1:])
print("heavy:", sorted(m for m in {heavy!r} if m in sys.modules))
sys.exit(code)
"""


def test_predict_help_imports_neither_torch_nor_monai():
    proc = subprocess.run([sys.executable, "-c", "import sys\nfrom egeunet_monai.cli.main import main\n"
                           "try:\n    main(['predict', '--help'])\nexcept SystemExit:\n    pass\n"
                           "print('loaded:', sorted(m for m in ('torch', 'monai') if m in sys.modules))"],
                          capture_output=True, text=True, timeout=300)
    assert "loaded: []" in proc.stdout, proc.stdout + proc.stderr


def test_predict_on_a_folder_does_not_import_monai(tmp_path):
    photos = require_shared_data("ph2", "images")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("IMD002.jpg", "IMD003.jpg"):
        (inputs / name).write_bytes((photos / name).read_bytes())
    (inputs / "broken.jpg").write_bytes((photos / "IMD004.jpg").read_bytes()[:5000])
    # no --weights: the default weights are found without the engines (which import MONAI) too
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), "predict", str(inputs), "--out",
                           str(tmp_path / "out"), "--no-progress", "--device", "cpu"],
                          capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the truncated photo fails alone
    assert "heavy: []" in proc.stdout, proc.stdout
    assert "broken.jpg" in proc.stderr and "Segmented 2 of 3 images" in proc.stdout
    assert {p.name for p in (tmp_path / "out").glob("*_mask.png")} == {"IMD002_mask.png", "IMD003_mask.png"}


def test_predict_with_a_cached_onnx_export_does_not_import_torch(tmp_path):
    """Once the weights' ONNX export is cached, ``predict`` (decoding, resizing, ONNX Runtime, threshold, flags, hole
    filling, PNGs, overlay, CSV) runs without PyTorch, whose import took 1-2 s of a 7-10 s run on 300 photographs;
    the first run, which exports, needs it."""
    pytest.importorskip("onnxruntime")
    from egeunet_monai.inference.predictor import _torch_can_use_a_gpu

    photos = require_shared_data("ph2", "images")
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "IMD002.jpg").write_bytes((photos / "IMD002.jpg").read_bytes())
    env = {**os.environ, ONNX_CACHE_ENV: str(tmp_path / "cache")}
    # the config's default device, unless this PyTorch can see a GPU (then the default is the PyTorch network on it)
    device = ["--device", "cpu"] if _torch_can_use_a_gpu() else []

    def predict(out: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", PROBE.format(heavy=("torch", "monai")), "predict", str(inputs),
                               "--out", str(tmp_path / out), "--no-progress", "--overlay", "--probabilities", *device],
                              capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, env=env, check=False)

    first = predict("first")
    # the export builds the PyTorch network (of MONAI's blocks)
    assert first.returncode == 0 and "heavy: ['monai', 'torch']" in first.stdout, first.stdout + first.stderr
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == 1
    again = predict("again")
    assert again.returncode == 0 and "heavy: []" in again.stdout, again.stdout + again.stderr
    for name in ("IMD002_mask.png", "IMD002_prob.png", "IMD002_overlay.png"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "first" / name).read_bytes(), name
    table = (tmp_path / "first" / "predictions.csv").read_text().replace(str(tmp_path / "first"), str(tmp_path / "again"))
    assert (tmp_path / "again" / "predictions.csv").read_text() == table


def test_read_photo_is_the_bundle_reader_s_array():
    from egeunet_monai.data import DermoscopyImageReader, read_photo

    data = require_shared_data()
    reader = DermoscopyImageReader(kind="image", reverse_indexing=False)
    for path in (data / "ph2/images/IMD002.jpg", data / "isic2017_train_256/images/ISIC_0000000.jpg"):
        expected, _ = reader.get_data(reader.read(str(path)))
        got = read_photo(path)
        assert got.dtype == np.uint8 and np.array_equal(got, np.asarray(expected))


def test_default_weights_say_which_and_why(tmp_path, capsys):
    """No models/model.pt: the released weights; the released file itself (its SHA256SUMS entry matches): released;
    any other models/model.pt: the user's own. The config's ``egeunet_monai.engines.default_weights`` is this one."""
    from egeunet_monai import engines
    from egeunet_monai.resources import default_weights, released_weights

    assert engines.default_weights is default_weights
    assert default_weights(tmp_path) == str(released_weights())
    assert "no models/model.pt trained on your data" in capsys.readouterr().out
    assert default_weights(REPO_ROOT / "bundle") == str(REPO_ROOT / "bundle" / "models" / "model.pt")
    assert "(released weights)" in capsys.readouterr().out
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"own weights")
    (tmp_path / "models" / "SHA256SUMS").write_text("0" * 64 + "  model.pt\n")
    assert default_weights(tmp_path) == str(tmp_path / "models" / "model.pt")
    assert "your model" in capsys.readouterr().out


def test_the_config_s_settings_read_as_json_are_monai_s(tmp_path):
    from monai.bundle import ConfigParser

    from egeunet_monai.inference.predictor import _BATCH_IDS, _batch_settings

    config = REPO_ROOT / "configs" / "inference.json"
    weights = REPO_ROOT / "bundle" / "models" / "model.pt"
    settings = _batch_settings(config, REPO_ROOT, weights, None, None, None, None)
    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(REPO_ROOT)
    for key in _BATCH_IDS:
        assert settings[key] == parser.get_parsed_content(key), key
    assert settings["device"] == str(parser.get_parsed_content("device"))  # without importing torch on a CPU build
    # an edited config with an expression where a plain value was: MONAI's parser resolves it
    edited = json.loads(config.read_text())
    edited["threshold"] = "$0.25 + 0.25"
    (tmp_path / "inference.json").write_text(json.dumps(edited))
    assert _batch_settings(tmp_path / "inference.json", REPO_ROOT, weights, None, None, None, None) is None


def test_hole_filling_is_monai_s(tmp_path):
    import torch
    from monai.transforms import FillHoles

    from egeunet_monai.inference.batch import BatchPredictor

    rng = np.random.default_rng(0)
    masks = [np.where(rng.random((57, 83)) > 0.4, 255, 0).astype(np.uint8) for _ in range(5)]
    ring = np.zeros((40, 40), np.uint8)
    ring[5:30, 5:30] = 255
    ring[10:20, 10:20] = 0  # a hole
    ring[0:3, 0:3] = 255
    masks.append(ring)
    predictor = BatchPredictor(None, tmp_path, fill_holes=True)
    for mask in masks:
        expected = FillHoles()(torch.from_numpy((mask > 0).astype(np.float32))[None])
        assert np.array_equal(predictor._clean(mask) > 0, np.asarray(expected)[0] > 0)
    assert predictor._clean(ring)[15, 15] == 255


@pytest.mark.parametrize("runtime", ["eager", "torchscript", "onnxruntime"])
def test_the_runtime_option_picks_the_runtime(runtime, tmp_path):
    """``--runtime`` reaches the runtime (the PyTorch network is built of MONAI's blocks: eager and TorchScript
    import MONAI, the cached ONNX export does not)."""
    from egeunet_monai.cli.main import build_parser
    from egeunet_monai.inference import open_predictor

    args = build_parser().parse_args(["predict", "x.jpg", "--out", str(tmp_path), "--runtime", runtime])
    predictor = open_predictor(REPO_ROOT / "bundle" / "models" / "model.pt", output_dir=tmp_path, device="cpu",
                               runtime=args.runtime)
    assert predictor.runtime.name == runtime
    photos = require_shared_data("ph2", "images")
    mask, _, stats = predictor.predict_one(photos / "IMD002.jpg")
    assert mask.shape == (572, 765) and stats.area_px == int((mask > 0).sum()) > 0
