# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The viewer app served by uvicorn in a thread of the test process, on a free port of 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time

import pytest

UPLOAD_LIMIT = 1024 * 1024  # small, so that the tests need no large files


@pytest.fixture(scope="session")
def viewer_predictor(tiny_bundle_weights, tmp_path_factory):
    from egeunet_monai.inference import open_predictor

    # what `egeunet-monai serve` makes: the predict command's batch predictor, ONNX Runtime by default
    return open_predictor(tiny_bundle_weights, output_dir=tmp_path_factory.mktemp("viewer_masks"), device="cpu")


@pytest.fixture(scope="session")
def viewer_url(viewer_predictor, tmp_path_factory):
    import uvicorn

    from egeunet_monai.viewer import create_app

    app = create_app(viewer_predictor, max_upload_bytes=UPLOAD_LIMIT, work_dir=tmp_path_factory.mktemp("viewer"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the viewer did not start", pytrace=False)
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()
