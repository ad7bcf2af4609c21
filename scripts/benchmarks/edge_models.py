#!/usr/bin/env python
# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The edge exports of scripts/export_edge.py against the float32 model: file size, speed (ONNX Runtime, one thread,
interleaved) and pooled DSC on the validation ids of the bundle's split, at each image's own size (masks resized back
as the bundle does), plus how far each model's masks are from the float32 model's (mean Dice between them).

Example: ``python scripts/export_edge.py --out runs/edge && python scripts/benchmarks/edge_models.py runs/edge/*.onnx``
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from common import REPO_ROOT, SHARED_DATA, interleaved, machine, markdown, rate, ratio

DEFAULT_SPLIT = REPO_ROOT / "bundle" / "splits" / "isic2017_ph2_seed0.json"


def validation_set(split: Path, limit: int | None):
    """(network inputs N x 3 x 256 x 256, original sizes, ground-truth masks) of the split's validation ids."""
    import torch

    from egeunet_monai.data import DermoscopyImageReader
    from egeunet_monai.inference.batch import prepare_image

    images = DermoscopyImageReader(kind="image", reverse_indexing=False)
    masks = DermoscopyImageReader(kind="mask", reverse_indexing=False)
    entries = json.loads(split.read_text())["validation"][:limit]
    x, sizes, truth = [], [], []
    for entry in entries:
        folder = SHARED_DATA / entry["source"]
        array, _ = images.get_data(images.read(str(folder / "images" / f"{entry['id']}.jpg")))
        mask, _ = masks.get_data(masks.read(str(folder / "masks" / f"{entry['id']}_segmentation.png")))
        x.append(torch.from_numpy(prepare_image(np.asarray(array))))
        sizes.append(array.shape[:2])
        truth.append(np.asarray(mask) > 0)
    return torch.stack(x), sizes, truth


def predict_masks(runtime, x, sizes, batch: int = 8) -> list[np.ndarray]:
    import torch

    from egeunet_monai.inference.batch import restore_mask

    out = []
    for i in range(0, len(x), batch):
        probabilities = torch.sigmoid(runtime(x[i : i + batch]).float())
        for p, (h, w) in zip(probabilities, sizes[i : i + batch]):
            out.append(restore_mask(p.numpy(), h, w)[1] > 0)
    return out


def pooled_dsc(predictions: list[np.ndarray], truth: list[np.ndarray]) -> float:
    from egeunet_monai.metrics import pooled_metrics

    tp = sum(int((p & t).sum()) for p, t in zip(predictions, truth))
    fp = sum(int((p & ~t).sum()) for p, t in zip(predictions, truth))
    fn = sum(int((~p & t).sum()) for p, t in zip(predictions, truth))
    tn = sum(int((~p & ~t).sum()) for p, t in zip(predictions, truth))
    return pooled_metrics(tp, fp, fn, tn)["dsc"]


def mean_dice(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    scores = [2 * (p & q).sum() / max(int(p.sum() + q.sum()), 1) if (p.any() or q.any()) else 1.0 for p, q in zip(a, b)]
    return float(np.mean(scores))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", type=Path, help="model_fp32.onnx first, then the edge exports")
    p.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    p.add_argument("--limit", type=int, default=None, help="first N validation ids only")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)

    from egeunet_monai.inference.runtime import load_runtime

    warnings.simplefilter("ignore")
    print(machine())
    x, sizes, truth = validation_set(args.split, args.limit)
    runtimes = {m.name: load_runtime(m, threads=1) for m in args.models}
    reference = args.models[0].name
    masks = {name: predict_masks(rt, x, sizes) for name, rt in runtimes.items()}
    dsc = {name: pooled_dsc(m, truth) for name, m in masks.items()}
    speeds = {}
    for batch in (8, 1):
        xb = x[:batch]
        calls = 1 if batch == 8 else 4
        fns = {name: (lambda rt=rt: [rt(xb) for _ in range(calls)]) for name, rt in runtimes.items()}
        speeds[batch] = interleaved(fns, repeats=args.repeats, images=batch * calls)
    rows = []
    for model in args.models:
        name = model.name
        w8, w1 = speeds[8][name][0], speeds[1][name][0]
        rows.append([
            name, f"{model.stat().st_size / 1024:.0f}", rate(w8), f"{ratio(w8, speeds[8][reference][0]):.2f}x",
            rate(speeds[8][name][1]), rate(w1), f"{ratio(w1, speeds[1][reference][0]):.2f}x",
            f"{dsc[name]:.4f}", f"{dsc[name] - dsc[reference]:+.4f}", f"{mean_dice(masks[name], masks[reference]):.4f}",
        ])  # fmt: skip
    print(f"\n{len(truth)} validation images of {args.split.name}; ONNX Runtime, 1 thread; speed: {args.repeats} "
          "interleaved repeats, images/s median [interquartile range]")
    print(markdown(["model", "KiB", "b8 wall img/s", "vs fp32", "b8 CPU img/s", "b1 wall img/s", "vs fp32",
                    "pooled DSC", "change", "mean Dice vs fp32 masks"], rows))  # fmt: skip


if __name__ == "__main__":
    main()
