# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""What the benchmark modules share: the machine's description, interleaved timing, real images, tables."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SHARED_REFERENCE = REPO_ROOT.parent / "shared" / "reference"
RELEASED_WEIGHTS = REPO_ROOT / "bundle" / "models" / "model.pt"
# the original implementation's own training code wrote it (its key names): how its users hold weights
ORIGINAL_WEIGHTS = SHARED_REFERENCE / "original_trained_isic2017_17ep.pth"


def machine() -> str:
    """CPU model, cores, load average and library versions, in one line for the report."""
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "not installed"
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} cores, load average {load} (1, 5, 15 min) at the start; "
        f"PyTorch {torch.__version__}, ONNX Runtime {ort}, Python {platform.python_version()}"
    )


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, images: int, warmup: int = 1) -> dict:
    """``{name: (wall seconds per image, CPU seconds per image)}``, one value per repeat. In each repeat every path
    runs once, in an order that rotates from repeat to repeat, so that a burst of load on a shared machine hits all
    paths alike and none always runs first. CPU time is the process's (all its threads)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    out = {name: ([], []) for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            c0, w0 = time.process_time(), time.perf_counter()
            fns[name]()
            out[name][0].append((time.perf_counter() - w0) / images)
            out[name][1].append((time.process_time() - c0) / images)
    return out


def rate(seconds_per_image: list[float]) -> str:
    """Median images/s with the interquartile range of the repeats."""
    rates = sorted(1.0 / s for s in seconds_per_image)
    if len(rates) >= 4:
        q1, _, q3 = statistics.quantiles(rates, n=4)
    else:
        q1, q3 = rates[0], rates[-1]
    return f"{statistics.median(rates):.1f} [{q1:.1f}-{q3:.1f}]"


def ratio(seconds: list[float], reference: list[float]) -> float:
    """Median over repeats of the speed-up against ``reference`` measured in the same repeat."""
    return statistics.median(r / s for r, s in zip(reference, seconds))


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def real_images(count: int):
    """``count`` real photographs as the network sees them (3 x 256 x 256 in [0, 255]): half ISIC 2017 training
    images, half full-size PH2 photographs, prepared as the bundle does; repeated when there are fewer."""
    import numpy as np
    import torch
    from PIL import Image

    from egeunet_monai.inference.batch import prepare_image

    files = sorted((SHARED_DATA / "isic2017_train_256" / "images").glob("*.jpg"))[: (count + 1) // 2]
    files += sorted((SHARED_DATA / "ph2" / "images").glob("*.jpg"))[: count // 2]
    if not files:
        raise SystemExit(f"no real images under {SHARED_DATA}")
    x = [torch.from_numpy(prepare_image(np.asarray(Image.open(f).convert("RGB")))) for f in files]
    while len(x) < count:
        x.append(x[len(x) % len(files)])
    return torch.stack(x)


def plain_segment(net, photo: Path, out: Path) -> None:
    """One photograph as a user of the original code segments it (the baseline of the end-to-end rows): PIL decode,
    min-max scaling to [0, 255], resize to 256x256, the network at batch 1, the probability resized back,
    threshold 0.5, PNG."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    image = np.asarray(Image.open(photo).convert("RGB"), dtype=np.float32)
    image = (image - image.min()) / (image.max() - image.min()) * 255
    x = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None], size=(256, 256), mode="bilinear", antialias=True)
    with torch.no_grad():
        p = torch.sigmoid(net(x))
    p = F.interpolate(p, size=image.shape[:2], mode="bilinear")
    Image.fromarray((p[0, 0] >= 0.5).numpy().astype(np.uint8) * 255).save(out / f"{photo.stem}_mask.png")
