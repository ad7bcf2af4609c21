# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""``egeunet-monai export`` and ``export --onnx`` run for real on weights the bundle trained (``tiny_training``), and
the files they write used as a user would: loaded in ONNX Runtime at two batch sizes, and given to ``egeunet-monai
predict`` and ``egeunet-monai serve`` as ``--weights model.onnx`` / ``model.ts`` on real photographs, whose masks
must be those of the ``.pt`` path (``cli_predictions``) up to a few pixels on the lesion's outline."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import urllib.request
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import torch
from local_server import free_port, stop_process_group, wait_until_answering
from PIL import Image

from tests.conftest import console_script

pytestmark = pytest.mark.slow

FORMATS = (".onnx", ".ts")
SERVED_IMAGE = "IMD002.jpg"  # a PH2 photograph at its original size (765 x 572): the mask is resized back
# Masks may differ from the .pt path's only where the probability is within float32 rounding of the 0.5 threshold:
# on the outline of the .pt mask (a pixel with both values in its 3x3 neighbourhood), and only a few of them.
# Measured on the 4 photos (2 PH2 at 765x572, 2 ISIC at 256x256): model.ts 0 pixels; model.onnx 1 pixel (IMD003), 0
# on the others. Bound: 10 per photo, all on the outline.
MAX_DIFFERING_PIXELS = 10
# ONNX Runtime's float32 probabilities (what the masks are thresholded from) against the PyTorch network's in float64.
# Measured on the 4 photos: 2.3e-4 at most (eager float32 itself: 1.4e-4; the logits reach +-44): 4x margin.
ONNX_PROB_ATOL = 1e-3


@pytest.fixture(scope="module")
def exported(tiny_bundle_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``egeunet-monai export [--onnx] --ckpt model.pt --out model.ts|.onnx``: the two files, by suffix."""
    folder = tmp_path_factory.mktemp("exported")
    files = {}
    for suffix in FORMATS:
        path = folder / f"model{suffix}"
        cmd = [str(console_script()), "export", *(["--onnx"] if suffix == ".onnx" else []),
               "--ckpt", str(tiny_bundle_weights), "--out", str(path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not path.is_file():
            pytest.fail(f"egeunet-monai export to {path.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}",
                        pytrace=False)
        files[suffix] = path
    return files


def _differing_pixels_off_the_outline(mask: np.ndarray, reference: np.ndarray) -> tuple[int, int]:
    """(pixels where ``mask`` differs from ``reference``, those of them not on ``reference``'s outline)."""
    ref = reference > 0
    padded = np.pad(ref, 1, mode="edge")
    shifted = [padded[1 + dy: padded.shape[0] - 1 + dy, 1 + dx: padded.shape[1] - 1 + dx]
               for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    outline = np.any(shifted, axis=0) & ~np.all(shifted, axis=0)
    differ = (mask > 0) != ref
    return int(differ.sum()), int((differ & ~outline).sum())


def _assert_same_mask(mask: np.ndarray, reference: np.ndarray, what: str) -> None:
    assert mask.shape == reference.shape, what
    assert set(np.unique(mask).tolist()) <= {0, 255}, what
    differing, off_outline = _differing_pixels_off_the_outline(mask, reference)
    print(f"{what}: {differing} pixels differ from the .pt path's mask")
    assert off_outline == 0 and differing <= MAX_DIFFERING_PIXELS, (what, differing, off_outline)


def test_export_onnx_writes_a_graph_onnx_runtime_runs_at_two_batch_sizes(exported, cli_predictions,
                                                                       tiny_bundle_weights, tmp_path):
    import onnx
    import onnxruntime

    from egeunet_monai.inference import LesionPredictor

    model = onnx.load(str(exported[".onnx"]))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]  # as the help says
    session = onnxruntime.InferenceSession(str(exported[".onnx"]), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("image", "logits") and inp.shape == ["batch", 3, 256, 256], (inp, out)
    # the real photographs as the bundle's inference preprocessing makes them, and the PyTorch network in float64
    predictor = LesionPredictor(tiny_bundle_weights, output_dir=tmp_path, device="cpu")
    images = torch.stack([predictor.preprocessing({"image": str(cli_predictions.inputs / name)})["image"].as_tensor()
                          for name in cli_predictions.images])
    with torch.no_grad():
        expected = torch.sigmoid(copy.deepcopy(predictor.network).double()(images.double()))
    for n in (1, 4):
        (got,) = session.run(["logits"], {"image": images[:n].numpy()})
        assert got.shape == (n, 1, 256, 256)
        assert (torch.sigmoid(torch.from_numpy(got).double()) - expected[:n]).abs().max() <= ONNX_PROB_ATOL


@pytest.mark.parametrize("suffix", FORMATS)
def test_predict_with_exported_weights_gives_the_masks_of_the_pt_weights(suffix, exported, cli_predictions,
                                                                        tmp_path):
    out = tmp_path / "results"
    cmd = [str(console_script()), "predict", str(cli_predictions.inputs), "--out", str(out),
           "--weights", str(exported[suffix]), "--device", "cpu", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    # the same 4 good photos and 1 truncated one as the .pt run: exit code 1, the corrupt file named
    assert proc.returncode == 1 and "Segmented 4 of 5 images" in proc.stdout, proc.stderr[-3000:]
    assert cli_predictions.corrupt in proc.stderr
    for name in cli_predictions.images:
        stem = Path(name).stem
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        reference = np.asarray(Image.open(cli_predictions.out / f"{stem}_mask.png"))
        _assert_same_mask(mask, reference, f"predict --weights model{suffix}, {name}")


@pytest.fixture(scope="module", params=FORMATS)
def served(request, exported, tmp_path_factory):
    """``egeunet-monai serve --weights model.onnx|.ts`` on a free port, in its own process group."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([str(console_script()), "serve", "--port", str(port), "--weights",
                                 str(exported[request.param]), "--device", "cpu"],
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(url + "/", proc, log, 300, f"egeunet-monai serve --weights model{request.param}")
        yield request.param, url
    finally:
        stop_process_group(proc, timeout_s=20)


def test_serve_with_exported_weights_gives_the_mask_of_the_pt_weights(served, cli_predictions):
    suffix, url = served
    data = (cli_predictions.inputs / SERVED_IMAGE).read_bytes()
    request = urllib.request.Request(f"{url}/api/segment", data=data, method="POST",
                                     headers={"X-File-Name": quote(SERVED_IMAGE),
                                              "Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=300) as response:
        body = json.loads(response.read())
    with urllib.request.urlopen(url + body["mask_url"], timeout=60) as response:
        mask = np.asarray(Image.open(io.BytesIO(response.read())))
    reference = np.asarray(Image.open(cli_predictions.out / f"{Path(SERVED_IMAGE).stem}_mask.png"))
    _assert_same_mask(mask, reference, f"serve --weights model{suffix}, {SERVED_IMAGE}")
    assert body["area_px"] == int((mask > 0).sum())
    assert (body["width"], body["height"]) == (reference.shape[1], reference.shape[0])
