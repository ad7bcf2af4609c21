#!/usr/bin/env python
# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The viewer's request latency: ``egeunet-monai serve`` in its own process, full-size PH2 photographs posted one
at a time as the page posts them (``POST /api/segment``, the photo as the body), from the request to the JSON answer
(the mask written and the overlay drawn), against the original network run as its users run it on the same photos
(the plain loop of ``predict_folder.py``, one photo at a time, in this process: PIL decode, min-max scaling, resize
to 256, the network at batch 1, resize back, threshold, PNG).

Variants: the server as shipped (the default runtime: ONNX Runtime) and with ``--runtime eager``; the plain loop with
PyTorch's default threads and with one. One path after the other (not interleaved: an idle process's OpenMP threads
spin after each call and slow whoever runs next), each after one warm-up request.

Example: ``python scripts/benchmarks/viewer_latency.py --photos 30``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import RELEASED_WEIGHTS, SHARED_DATA, machine, markdown, plain_segment

PH2 = SHARED_DATA / "ph2" / "images"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(weights: str, options: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    script = Path(sys.executable).with_name("egeunet-monai")
    with open(log, "w") as out:
        proc = subprocess.Popen([str(script), "serve", "--port", str(port), "--weights", weights, "--device", "cpu",
                                 *options], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server stopped: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url + "/", timeout=5).read()
            return proc, url
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server did not answer in 300 s: {log}")


def post(url: str, photo: Path) -> tuple[float, dict]:
    request = urllib.request.Request(url + "/api/segment", data=photo.read_bytes(), method="POST",
                                     headers={"X-File-Name": photo.name, "Content-Type": "application/octet-stream"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as answer:
        body = json.loads(answer.read())
    return time.perf_counter() - start, body


def plain_one(net, photo: Path, out: Path) -> float:
    start = time.perf_counter()
    plain_segment(net, photo, out)
    return time.perf_counter() - start


def summary(seconds: list[float]) -> str:
    q = statistics.quantiles(seconds, n=4)
    return f"{1000 * statistics.median(seconds):.0f} [{1000 * q[0]:.0f}-{1000 * q[2]:.0f}]"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=30, help="PH2 photographs (the first N)")
    p.add_argument("--weights", default=str(RELEASED_WEIGHTS))
    args = p.parse_args(argv)

    import torch

    from egeunet_monai.inference.runtime import load_eager_network

    print(machine())
    photos = sorted(PH2.glob("*.jpg"))[: args.photos]
    tmp = Path(tempfile.mkdtemp(prefix="bench_viewer_"))
    variants = {"viewer (egeunet-monai serve), default runtime": [],
                "viewer, --runtime eager": ["--runtime", "eager"]}  # fmt: skip
    net = load_eager_network(args.weights)
    default_threads = torch.get_num_threads()
    plain = f"plain loop, one photo (original network, eager, batch 1, {default_threads} threads)"
    plain_1 = "plain loop, one photo (original network, eager, batch 1, 1 thread)"
    times: dict[str, list[float]] = {plain: [], plain_1: []}
    areas: dict[str, list[int]] = {}
    # one path at a time, nothing else running: an idle process's OpenMP threads spin for a while after each call
    # and take the cores from whoever runs next, so that interleaving processes measures that, not the paths
    for name, threads in ((plain, default_threads), (plain_1, 1)):
        torch.set_num_threads(threads)
        plain_one(net, photos[0], tmp)  # warm-up
        times[name] = [plain_one(net, photo, tmp) for photo in photos]
    torch.set_num_threads(default_threads)
    for i, (name, options) in enumerate(variants.items()):
        proc, url = start_server(args.weights, options, tmp / f"serve_{i}.log")
        try:
            post(url, photos[0])  # warm-up: the first request builds the resize matrices
            answers = [post(url, photo) for photo in photos]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        times[name] = [seconds for seconds, _ in answers]
        areas[name] = [body["area_px"] for _, body in answers]
    reference = statistics.median(times[plain])
    rows = [[name, summary(t), f"{reference / statistics.median(t):.2f}x"] for name, t in times.items()]
    print(f"\n{len(photos)} full-size PH2 photographs, one request at a time, one path after the other; ms median "
          "[interquartile range]")
    print(markdown(["path", "latency ms", "speed vs plain loop"], rows))
    names = list(areas)
    same = sum(a == b for a, b in zip(areas[names[0]], areas[names[1]]))
    print(f"lesion areas equal between the two servers on {same} of {len(photos)} photographs")


if __name__ == "__main__":
    main()
