"""The bundle in a real MONAI Label 0.8.5 server: listed, infers on real dermoscopy images, ranks the unlabeled ones
by uncertainty and serves the most uncertain first, learns from a label.

What it does, end to end, with nothing mocked:

1. ``scripts/setup_monailabel_env.sh`` makes (or finds) the separate MONAI Label venv; a few seconds when it
   exists, about 10 minutes and 8 GB the first time.
2. ``scripts/build_bundle.py`` builds the bundle from ``configs/`` + ``bundle/`` + ``models/`` and places it
   into a fresh app in ``tmp_path``: the ``monaibundle`` sample app with ``monailabel_app/`` on top (the
   ``tta_uncertainty`` scoring method and active-learning strategy).
3. A datastore of 5 real images (4 ISIC 2017 at 256x256, 1 PH2 at 766x576) from ``../shared/data``, all from the
   validation list of ``bundle/splits/isic2017_ph2_seed0.json`` (the released weights never trained on them); 2 of
   them come with their ISIC 0/255 masks already in ``labels/final/``; and a truncated copy of one, unlabeled,
   that the scoring must report by name while it scores the others.
4. ``monailabel start_server`` runs as a subprocess on 127.0.0.1 (a free port), in its own process group, which
   is killed at teardown whatever happens (the training subprocess of the server belongs to it too).

Skips (with the reason) only outside CI: when ``../shared/data`` is absent, when the MONAI Label environment
cannot be set up, or when ``EGEUNET_SKIP_MONAILABEL=1``. Under ``CI=true`` each of these fails instead.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from local_server import free_port
from PIL import Image

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "egeunet_skin_lesion_segmentation"
LABEL_NAME = "skin lesion"
HOST = "127.0.0.1"  # the server never listens anywhere else

# 4 ISIC 2017 images (256x256) and 1 PH2 image (766x576, not square: a transposed mask cannot pass), all outside the
# released weights' training split: the server must give masks at each image's own size and orientation
ISIC_IDS = ["ISIC_0000004", "ISIC_0000010", "ISIC_0000016", "ISIC_0000017"]
PH2_ID = "IMD008"
PRELABELLED = ["ISIC_0000016", "ISIC_0000017"]  # 0/255 masks, as ISIC ships them
SAVED_VIA_API = ["ISIC_0000010", PH2_ID]  # 0/1 masks, as MONAI Label saves them
# a truncated copy of ISIC_0000010 (its first 3000 bytes), unlabeled: the scoring must name it and score the others
BROKEN_ID = "truncated_photo"

# Dice of the server's masks against the expert masks of the 5 images, measured on 2026-12-01 with the released
# weights (bundle/models/model.pt; none of the 5 is in their training split), fed H x W (rows first):
#   ISIC_0000004 0.5256 (the hardest of the 5 for these weights), ISIC_0000010 0.9523,
#   ISIC_0000016 0.9278, ISIC_0000017 0.9243, IMD008 (PH2, 766x576) 0.9439; mean 0.8548, min 0.5256.
# With the 0.3.0 weights (2026-12-07, AMD EPYC, 2 cores): 0.5153, 0.9748, 0.9460, 0.9477, 0.9375; mean 0.8643.
# (The original's 17-epoch checkpoint, the fallback without released weights, gives 0.5967/0.9664/0.9692/0.9687/
# 0.9431 through configs/inference.json, mean 0.8888; it trained on all ISIC images, these 4 included.)
# Asserted below with a margin: mean > 0.82 and every image > 0.45. Re-measure when the released weights change.
MIN_MEAN_DICE = 0.82
MIN_IMAGE_DICE = 0.45
# The server's masks are the bundle's own (configs/inference.json run in this venv by LesionPredictor): measured
# identical on all 5 images (the MONAI Label venv has another torch, 2.14 against 2.13); at least 99.9 % of the
# pixels must agree, room for float rounding to flip a few boundary pixels on another CPU.
MIN_AGREEMENT = 0.999

# Active learning (monailabel_app/): the scoring method and strategy "tta_uncertainty". Scores of the 3 unlabeled
# images with the released weights, measured on 2026-12-01 (Intel Xeon, 2 cores), the server's (torch 2.14.1) and
# this process's (torch 2.13) equal to the last bit: ISIC_0000004 0.393962, IMD008 0.214001, ISIC_0000010 0.201469.
# With the 0.3.0 weights (2026-12-07, AMD EPYC): 0.3211, 0.1600, 0.1495 (server and reference to 4 digits).
# The float32 scores differ from float64 ones by at most 1.9e-7. On another CPU a view's probability near the 0.5
# threshold may fall on the other side, moving the pixel in or out of the lesion the entropy is averaged over: each
# such pixel moves the score by at most 1 / (union area) <= 1 / 6463 = 1.5e-4, and at most 6 view probabilities
# lie within 1e-4 of the threshold (ISIC_0000004), i.e. <= 9.3e-4. Tolerance: 2e-3 (about 2x); the closest two
# scores are 0.0125 apart (0.0105 with 0.3.0), so the order is checked strictly on this CPU.
UNCERTAINTY = "tta_uncertainty"
SCORE_ATOL = 2e-3

SERVER_START_TIMEOUT_S = 600  # 10-30 s on an idle 2-core machine, ~110 s seen at load 11
TRAIN_TIMEOUT_S = 1200  # 30-45 s idle, ~260 s seen at load 11
SETUP_TIMEOUT_S = 3600


def _in_ci() -> bool:
    from tests.conftest import in_ci  # the one rule: CI=true, 1 or yes

    return in_ci()


def _skip_or_fail(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"{reason} (and CI=true requires this test to run)")
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------------------- HTTP helpers
def _request(method: str, url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 300):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, content, ctype) in files.items():
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n".encode()
        )
        out.write(content)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _png_bytes(mask01: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask01.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    pred, truth = pred.astype(bool), truth.astype(bool)
    denom = pred.sum() + truth.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(pred, truth).sum() / denom)


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def monailabel_venv(tmp_path_factory) -> Path:
    if os.environ.get("EGEUNET_SKIP_MONAILABEL") == "1":
        _skip_or_fail("EGEUNET_SKIP_MONAILABEL=1")
    venv = Path(os.environ.get("MONAILABEL_VENV", REPO_ROOT / ".venv-monailabel"))
    log = tmp_path_factory.mktemp("setup") / "setup_monailabel_env.log"
    env = {**os.environ, "MONAILABEL_VENV": str(venv)}
    try:
        with log.open("w") as fh:
            proc = subprocess.run(
                ["bash", str(REPO_ROOT / "scripts" / "setup_monailabel_env.sh")],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=SETUP_TIMEOUT_S,
                check=False,
            )
        ok = proc.returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    if not ok:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        _skip_or_fail(f"the MONAI Label environment could not be set up in {venv}:\n{tail}")
    assert (venv / "bin" / "monailabel").exists(), f"{venv}/bin/monailabel missing after set-up"
    return venv


@pytest.fixture(scope="module")
def bundle_weights() -> Path:
    """The released weights (bundle/models/model.pt, tracked in git), given explicitly so that a local training's
    models/model.pt does not change what is measured."""
    released = REPO_ROOT / "bundle" / "models" / "model.pt"
    assert released.is_file(), f"{released}: the released weights are missing from the checkout"
    return released


@pytest.fixture(scope="module")
def datastore(tmp_path_factory, shared_data_dir) -> dict:
    """A studies folder with 5 real images, 2 of them labelled (0/255), and a truncated photograph; returns paths of
    the images (not the truncated one) and masks."""
    studies = tmp_path_factory.mktemp("studies")
    final = studies / "labels" / "final"
    final.mkdir(parents=True)
    images, masks = {}, {}
    sources = [(i, shared_data_dir / "isic2017_train_256") for i in ISIC_IDS] + [(PH2_ID, shared_data_dir / "ph2")]
    for image_id, root in sources:
        src, mask = root / "images" / f"{image_id}.jpg", root / "masks" / f"{image_id}_segmentation.png"
        assert src.is_file() and mask.is_file(), f"{src} or {mask} missing from ../shared/data"
        (studies / src.name).write_bytes(src.read_bytes())
        images[image_id], masks[image_id] = studies / src.name, mask
        if image_id in PRELABELLED:
            (final / f"{image_id}.png").write_bytes(mask.read_bytes())  # 0/255, ISIC style
    (studies / f"{BROKEN_ID}.jpg").write_bytes(images["ISIC_0000010"].read_bytes()[:3000])
    return {"studies": studies, "images": images, "masks": masks}


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory, monailabel_venv, bundle_weights) -> Path:
    work = tmp_path_factory.mktemp("monailabel")
    app = work / "apps" / "monaibundle"
    cmd = [
        sys.executable,
        str(REPO_ROOT / "scripts" / "build_bundle.py"),
        "--out",
        str(work / "dist"),
        "--monailabel-app",
        str(app),
        "--monailabel-venv",
        str(monailabel_venv),
    ]
    cmd += ["--weights", str(bundle_weights)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"build_bundle.py failed:\n{proc.stdout}\n{proc.stderr}"
    assert (work / "dist" / MODEL / "configs" / "inference.json").is_file()
    assert list((work / "dist").glob(f"{MODEL}*.zip")), "no bundle zip written"
    assert (app / "main.py").is_file() and (app / "model" / MODEL / "models" / "model.pt").is_file()
    return app


@pytest.fixture(scope="module")
def server(app_dir, datastore, monailabel_venv, tmp_path_factory):
    port = free_port()
    base = f"http://{HOST}:{port}"
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(
        PATH=f"{monailabel_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(monailabel_venv),
        MONAI_LABEL_SESSION_PATH=str(log_path.parent / "sessions"),
        MONAI_LABEL_DATASTORE_AUTO_RELOAD="true",
        # no scoring subprocess at start-up and after each training and served image (MONAI Label's default): each
        # loads the app again, ~85 s of CPU at start-up on the shared 2-core machine; the test scores on request
        MONAI_LABEL_AUTO_UPDATE_SCORING="false",
    )
    cmd = [
        str(monailabel_venv / "bin" / "monailabel"),
        "start_server",
        "--app", str(app_dir),
        "--studies", str(datastore["studies"]),
        "--conf", "models", MODEL,
        "--conf", "zoo_source", "github",  # use the local bundle folder, never the model zoo
        "--conf", "sam2", "false",  # no SAM2 (it would download weights)
        "--host", HOST,
        "--port", str(port),
    ]  # fmt: skip
    log = log_path.open("w")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=app_dir, start_new_session=True)
    try:
        info = None
        while time.monotonic() - t0 < SERVER_START_TIMEOUT_S:
            if proc.poll() is not None:
                break
            try:
                status, _, body = _request("GET", f"{base}/info/", timeout=10)
                if status == 200:
                    info = json.loads(body)
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(1)
        startup_s = time.monotonic() - t0
        if info is None:
            log.flush()
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
            pytest.fail(f"MONAI Label server did not answer /info/ within {SERVER_START_TIMEOUT_S} s:\n{tail}")
        print(f"MONAI Label server up in {startup_s:.1f} s on {base}")
        yield {"base": base, "info": info, "log": log_path, "app": app_dir, "startup_s": startup_s}
    finally:
        # stop the server and everything it started (its training subprocess shares its process group)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


def _infer(base: str, image_id: str) -> tuple[np.ndarray, float]:
    t0 = time.monotonic()
    status, ctype, body = _request("POST", f"{base}/infer/{MODEL}?image={urllib.parse.quote(image_id)}&output=image")
    elapsed = time.monotonic() - t0
    assert status == 200, f"/infer/{MODEL} on {image_id}: HTTP {status}: {body[:2000]!r}"
    assert body[:8] == b"\x89PNG\r\n\x1a\n", f"the result is not a PNG (Content-Type {ctype}): {body[:64]!r}"
    img = Image.open(io.BytesIO(body))
    assert img.mode in ("L", "1", "P"), f"the mask of {image_id} is not single channel: mode {img.mode}"
    return np.asarray(img), elapsed


# ---------------------------------------------------------------------------------------------------- tests
def test_info_lists_the_model_and_its_label(server):
    info = server["info"]
    assert MODEL in info["models"], f"model not listed: {list(info['models'])}"
    model = info["models"][MODEL]
    assert model["type"] == "segmentation"
    assert model["dimension"] == 2
    assert model["labels"] == {LABEL_NAME: 1}
    assert LABEL_NAME in info["labels"]
    assert model["config"].get("result_extension") == ".png"
    assert MODEL in info["trainers"], f"no trainer for the bundle: {list(info['trainers'])}"
    assert info["datastore"]["total"] == len(ISIC_IDS) + 1 + 1  # and the truncated photograph
    assert info["datastore"]["completed"] == len(PRELABELLED)


def test_infer_returns_a_binary_mask_of_the_image_size_that_matches_the_expert(server, datastore, bundle_weights,
                                                                               tmp_path):
    from egeunet_monai.inference import LesionPredictor

    # the bundle's own mask of each image (configs/inference.json, in this venv), which the server's must be
    bundle = LesionPredictor(bundle_weights, output_dir=tmp_path, device="cpu")
    dices, agreement, times = {}, {}, []
    for image_id, path in datastore["images"].items():
        mask, elapsed = _infer(server["base"], image_id)
        times.append(elapsed)
        with Image.open(path) as photo:
            width, height = photo.size
        assert mask.shape == (height, width), f"{image_id}: mask {mask.shape}, image {(height, width)}"
        assert set(np.unique(mask).tolist()) <= {0, 1}, f"{image_id}: not a 0/1 mask: {np.unique(mask)}"
        agreement[image_id] = float(((mask > 0) == (bundle.predict(path).mask > 0)).mean())
        truth = np.asarray(Image.open(datastore["masks"][image_id])) > 0
        dices[image_id] = _dice(mask > 0, truth)
    print(f"Dice per image: { {k: round(v, 4) for k, v in dices.items()} }; pixels as the bundle's: "
          f"{ {k: round(v, 6) for k, v in agreement.items()} }; infer times (s): {np.round(times, 2)}")
    assert min(agreement.values()) >= MIN_AGREEMENT, agreement
    assert min(dices.values()) > MIN_IMAGE_DICE, dices
    assert float(np.mean(list(dices.values()))) > MIN_MEAN_DICE, dices
    # the infer task ran the package's default runtime (ONNX Runtime, which setup_monailabel_env.sh installs), as
    # predict and the scorer do, not the sample's eager network_def
    assert f"inference runtime: onnxruntime for {server['app']}" in server["log"].read_text(errors="replace")


def _post_json(url: str, payload: dict) -> tuple[int, object]:
    status, _, body = _request("POST", url, data=json.dumps(payload).encode(),
                               headers={"Content-Type": "application/json"})
    return status, json.loads(body) if body else None


def test_active_learning_serves_unlabeled_images_by_decreasing_tta_uncertainty(server, datastore, bundle_weights,
                                                                              tmp_path):
    from egeunet_monai.cli.main import main as cli_main

    base, info = server["base"], server["info"]
    assert UNCERTAINTY in info["scoring"], f"no scoring method {UNCERTAINTY}: {list(info['scoring'])}"
    assert UNCERTAINTY in info["strategies"], f"no strategy {UNCERTAINTY}: {list(info['strategies'])}"
    unlabeled = [i for i in datastore["images"] if i not in PRELABELLED]

    # the reference, in this process: the uncertainty that `egeunet-monai predict --tta` writes to predictions.csv
    # for each image, with the weights the server runs (the CSV's 4 decimals are well inside SCORE_ATOL)
    out = tmp_path / "predict_tta"
    paths = [str(datastore["images"][image_id]) for image_id in unlabeled]
    assert cli_main(["predict", *paths, "--out", str(out), "--weights", str(bundle_weights), "--tta",
                     "--device", "cpu", "--no-progress"]) == 0
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = {Path(row["image"]).stem: row for row in csv.DictReader(f)}
    reference = {image_id: float(rows[Path(path).stem]["uncertainty"]) for image_id, path in zip(unlabeled, paths)}

    t0 = time.monotonic()
    status, summary = _post_json(f"{base}/scoring/{UNCERTAINTY}?run_sync=true", {})
    scoring_s = time.monotonic() - t0
    assert status == 200, f"/scoring/{UNCERTAINTY}: HTTP {status}: {summary}"
    assert summary["total"] == len(unlabeled) + 1 and summary["skipped"] == 0, summary
    assert summary["executed"] == len(unlabeled) and set(summary["scores"]) == set(unlabeled), summary
    # the truncated photograph fails alone, named with its problem by the reader
    assert set(summary["errors"]) == {BROKEN_ID}, summary
    assert f"{BROKEN_ID}.jpg: truncated file" in summary["errors"][BROKEN_ID], summary
    print(f"scoring {len(unlabeled)} images (+1 truncated) in the server: {scoring_s:.2f} s")
    # again: the scores are current for these weights, only the one without a score is tried
    status, rerun = _post_json(f"{base}/scoring/{UNCERTAINTY}?run_sync=true", {})
    assert status == 200 and rerun["skipped"] == len(unlabeled) and rerun["executed"] == 0, rerun
    assert set(rerun["errors"]) == {BROKEN_ID}, rerun
    scores = {}
    for image_id in unlabeled:  # in the datastore, where the strategy reads them
        status, _, body = _request("GET", f"{base}/datastore/image/info?image={image_id}")
        assert status == 200, body[:500]
        scores[image_id] = json.loads(body).get(UNCERTAINTY)
    assert scores == summary["scores"], (scores, summary)
    print(f"TTA uncertainty: server {scores}; reference {reference}")
    for image_id, score in scores.items():
        assert score is not None and abs(score - reference[image_id]) <= SCORE_ATOL, (image_id, score, reference)

    # asked again and again without a label saved, the server walks down the ranking (the image without a score
    # last), then starts over
    served = []
    for _ in range(len(unlabeled) + 2):
        status, sample = _post_json(f"{base}/activelearning/{UNCERTAINTY}", {})
        assert status == 200 and sample and sample.get("id"), f"/activelearning/{UNCERTAINTY}: HTTP {status}: {sample}"
        assert sample[UNCERTAINTY] == scores.get(sample["id"]), sample
        served.append(sample["id"])
    ranking, unscored, again = served[:len(unlabeled)], served[len(unlabeled)], served[-1]
    assert sorted(ranking) == sorted(unlabeled) and unscored == BROKEN_ID, served
    for k, earlier in enumerate(ranking):  # decreasing reference uncertainty, up to ties within SCORE_ATOL
        for later in ranking[k + 1:]:
            assert reference[earlier] >= reference[later] - SCORE_ATOL, (served, reference)
    assert again == ranking[0], f"after all were served the most uncertain should come first again: {served}"


def test_saved_labels_train_one_epoch_and_write_a_new_checkpoint(server, datastore):
    base = server["base"]
    # an annotator saves corrected masks: single channel 0/1 PNG, what MONAI Label clients save
    for image_id in SAVED_VIA_API:
        mask01 = (np.asarray(Image.open(datastore["masks"][image_id])) > 0).astype(np.uint8)
        body, ctype = _multipart(
            {"params": json.dumps({"label_info": [{"name": LABEL_NAME, "idx": 1}]})},
            {"label": (f"{image_id}.png", _png_bytes(mask01), "image/png")},
        )
        status, _, resp = _request(
            "PUT", f"{base}/datastore/label?image={image_id}&tag=final", data=body, headers={"Content-Type": ctype}
        )
        assert status == 200, f"saving the label of {image_id}: HTTP {status}: {resp[:1000]!r}"
        assert (datastore["studies"] / "labels" / "final" / f"{image_id}.png").is_file()
    status, _, resp = _request("GET", f"{base}/info/")
    assert json.loads(resp)["datastore"]["completed"] == len(PRELABELLED) + len(SAVED_VIA_API)

    models_dir = server["app"] / "model" / MODEL / "models"
    before = {p.name: p.stat().st_mtime_ns for p in models_dir.glob("*")}
    t0 = time.monotonic()
    # 4 labelled images, val_split 0.25: 3 to train on, 1 to validate (whose Dice picks the checkpoint)
    params = json.dumps({"max_epochs": 1, "val_split": 0.25, "multi_gpu": False}).encode()
    status, _, resp = _request(
        "POST", f"{base}/train/{MODEL}", data=params, headers={"Content-Type": "application/json"}
    )
    assert status == 200, f"/train/{MODEL}: HTTP {status}: {resp[:1000]!r}"
    task = {}
    while time.monotonic() - t0 < TRAIN_TIMEOUT_S:
        time.sleep(2)
        status, _, resp = _request("GET", f"{base}/train/")
        task = json.loads(resp) if status == 200 else {}
        if task.get("status") not in (None, "SUBMITTED", "RUNNING"):
            break
    train_s = time.monotonic() - t0
    details = "\n".join(task.get("details", [])[-40:])
    assert task.get("status") == "DONE", f"training ended as {task.get('status')} after {train_s:.0f} s:\n{details}"

    after = {p.name: p.stat().st_mtime_ns for p in models_dir.glob("*")}
    new_or_updated = [n for n, ts in after.items() if n not in before or ts > before[n]]
    assert new_or_updated, f"training finished ({train_s:.0f} s) but wrote no checkpoint in {models_dir}:\n{details}"
    print(f"1-epoch training through MONAI Label: {train_s:.1f} s; new checkpoint(s): {new_or_updated}")

    # the server picks the new weights up for the next inference, which still gives a valid mask
    mask, _ = _infer(base, PH2_ID)
    with Image.open(datastore["images"][PH2_ID]) as photo:
        assert mask.shape == (photo.size[1], photo.size[0])
    assert set(np.unique(mask).tolist()) <= {0, 1}
