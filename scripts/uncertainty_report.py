#!/usr/bin/env python
"""Uncertainty, quality-flag, calibration and clean-up report for a trained EGE-UNet with test-time augmentation.

For every image of folders of dermoscopy images with expert masks, the bundle's preprocessing (as
``scripts/evaluation_report.py`` loads it), the eight dihedral views (``egeunet_monai.inference.predict_with_tta``),
and the predictions resized back to the image's original size (MONAI ``Invertd``). Per source and for all images:

- how well the per-image uncertainty ranks the errors: Spearman correlation with 1 - Dice, and the mean Dice of
  the images kept when the 10 % most uncertain are set aside (risk-coverage curve, ``risk_coverage.png``), for the
  library's uncertainty and the other measures it was chosen from;
- the quality flags (how many images, their mean Dice) and the uncertainty's 90th percentile, the rule by which
  the ``low_confidence`` threshold was set;
- the expected calibration error of the pixel probabilities with and without TTA (``reliability.png``);
- pooled DSC and mean Dice without / with TTA, each raw and after MONAI's ``KeepLargestConnectedComponent``,
  ``FillHoles`` and both.

Writes ``per_image.csv``, ``summary.json``, ``table.md``, the two PNGs and, with ``--maps``, a per-pixel
uncertainty map ``maps/<id>_uncertainty.png`` for every image (binary entropy of the mean probability x 255).

Examples:
  # the release's validation split (ISIC 2017 and PH2 validation ids)
  python scripts/uncertainty_report.py --data ../shared/data/isic2017_train_256 ../shared/data/ph2 \\
      --split bundle/splits/isic2017_ph2_seed0.json --out runs/uncertainty

  # all 150 PH2 images at their original size
  python scripts/uncertainty_report.py --data ../shared/data/ph2 --out runs/uncertainty_ph2
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import FillHoles, Invertd, KeepLargestConnectedComponent, LoadImage
from PIL import Image
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from evaluation_report import load_bundle, split_ids  # noqa: E402

from egeunet_monai.data import DermoscopyImageReader, pair_images_and_masks  # noqa: E402
from egeunet_monai.engines import default_weights  # noqa: E402
from egeunet_monai.inference import binary_entropy, format_flags, predict_with_tta, quality_flags  # noqa: E402
from egeunet_monai.metrics import (  # noqa: E402
    CalibrationHistogram,
    mean_score_at_coverage,
    plot_reliability_diagram,
    plot_risk_coverage,
    pooled_metrics,
    risk_coverage_curve,
    spearman_correlation,
)

COVERAGE = 0.9  # the risk-coverage point reported: the 10 % most uncertain set aside
# "uncertainty" is the library's (TTAResult.uncertainty); the others are those it was chosen from
MEASURES = ("uncertainty", "entropy_in_mean_mask", "views_disagreement", "views_pairwise_iou")


def _mean_entropy(entropy: torch.Tensor, region: torch.Tensor) -> float:
    return float(entropy[region].mean()) if bool(region.any()) else 0.0


def candidate_uncertainties(view_probabilities: torch.Tensor, threshold: float) -> dict[str, float]:
    """The per-image measures the library's uncertainty was chosen from, for one image's ``8 x 1 x H x W`` views.
    ``lesion_entropy`` is :func:`egeunet_monai.inference.lesion_entropy` (``TTAResult.uncertainty``)."""
    masks = view_probabilities >= threshold
    mean_mask = view_probabilities.mean(dim=0) >= threshold
    entropy = binary_entropy(view_probabilities.mean(dim=0))
    union, intersection = masks.any(dim=0), masks.all(dim=0)
    pairs = [(i, j) for i in range(len(masks)) for j in range(i + 1, len(masks))]
    pair_iou = [
        float((masks[i] & masks[j]).sum()) / float((masks[i] | masks[j]).sum()) if bool((masks[i] | masks[j]).any())
        else 1.0
        for i, j in pairs
    ]  # fmt: skip
    return {
        "entropy_in_mean_mask": _mean_entropy(entropy, mean_mask),
        "views_disagreement": 1.0 - float(intersection.sum()) / float(union.sum()) if bool(union.any()) else 0.0,
        "views_pairwise_iou": 1.0 - float(np.mean(pair_iou)),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="dataset folders (images/ + masks/), one source each")
    p.add_argument("--split", help="a split file (bundle/splits/*.json): keep only the ids of --subset")
    p.add_argument("--subset", default="validation", help="which list of the split file (default: %(default)s)")
    p.add_argument("--weights", help="model.pt (default: models/model.pt, else the released bundle/models/model.pt)")
    p.add_argument("--out", default="runs/uncertainty", help="output folder (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default: %(default)s)")
    p.add_argument("--maps", action="store_true", help="write each image's per-pixel uncertainty map as a PNG")
    return p.parse_args(argv)


def _counts(pred: torch.Tensor, label: torch.Tensor) -> np.ndarray:
    tp, fp, fn = int((pred & label).sum()), int((pred & ~label).sum()), int((~pred & label).sum())
    return np.array([tp, fp, fn, pred.numel() - tp - fp - fn], dtype=np.int64)


def _dice(counts: np.ndarray) -> float:
    return pooled_metrics(*counts)["dsc"]  # both empty: 1, as MONAI's compute_dice(ignore_empty=False)


def evaluate(args: argparse.Namespace) -> dict:
    weights = args.weights or default_weights(str(REPO_ROOT))
    network, _, infer_pre, _ = load_bundle(weights)  # its own clean-ups below, each on a copy of the mask
    keep = split_ids(args.split, args.subset) if args.split else None
    items = [it for d in args.data for it in pair_images_and_masks(d) if keep is None or it["id"] in keep]
    if not items:
        raise SystemExit("no image/mask pairs to evaluate (check --data and --split)")
    invert = Invertd(keys="pred", transform=infer_pre, orig_keys="image", nearest_interp=False)
    reader = DermoscopyImageReader(kind="mask")
    load_mask = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)
    # the bundle's arrays follow the reader's axis order; PNGs are written rows first
    to_rows_first = (lambda a: a.T) if reader.reverse_indexing else (lambda a: a)  # noqa: E731
    fill, lcc = FillHoles(), KeepLargestConnectedComponent()
    cleanups = {"raw": lambda m: m, "fill_holes": fill, "largest_component": lcc,
                "largest_component+fill_holes": lambda m: fill(lcc(m))}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.maps:
        (out / "maps").mkdir(exist_ok=True)

    rows, counts = [], defaultdict(lambda: np.zeros(4, dtype=np.int64))
    calibration = defaultdict(CalibrationHistogram)
    for item in tqdm(items, desc="TTA", unit="img"):
        pre = infer_pre({"image": item["image"]})
        with torch.no_grad():
            result = predict_with_tta(network, pre["image"].as_tensor()[None].float(), threshold=args.threshold)
        label = load_mask(item["label"])[0] > 0.5
        row = {"id": item["id"], "source": item["source"], "uncertainty": float(result.uncertainty[0])}
        row.update(candidate_uncertainties(result.view_probabilities[0], args.threshold))
        for name, prob in (("tta", result.probability[0]), ("plain", result.view_probabilities[0, 0])):
            # the probabilities carry the image's transforms, so Invertd can undo the resize
            pred = MetaTensor(prob, meta=pre["image"].meta, applied_operations=pre["image"].applied_operations)
            back = invert({"image": pre["image"], "pred": pred})["pred"].as_tensor().clamp(0.0, 1.0)
            calibration[(name, item["source"])].update(back, label)
            calibration[(name, "all")].update(back, label)
            mask = (back >= args.threshold).to(torch.uint8)
            if name == "tta":
                row["flags"] = format_flags(quality_flags(mask, row["uncertainty"]))
                if args.maps:
                    entropy = to_rows_first((binary_entropy(back)[0] * 255).round().to(torch.uint8).numpy())
                    Image.fromarray(np.ascontiguousarray(entropy)).save(out / "maps" / f"{item['id']}_uncertainty.png")
            for cleanup, transform in cleanups.items():
                c = _counts(torch.as_tensor(transform(mask.clone()))[0] > 0, label)
                counts[(f"{name}+{cleanup}", item["source"])] += c
                counts[(f"{name}+{cleanup}", "all")] += c
                row[f"dice_{name}_{cleanup}"] = _dice(c)
        rows.append(row)

    summary: dict = {"weights": str(weights), "images": len(rows), "coverage": COVERAGE, "by_source": {}}
    curves = {}
    for source in sorted({r["source"] for r in rows}) + ["all"]:
        sel = [r for r in rows if source == "all" or r["source"] == source]
        dice = np.array([r["dice_tta_raw"] for r in sel])
        entry: dict = {"images": len(sel), "mean_dice": float(dice.mean()), "ranking": {}}
        for name in MEASURES:
            u = np.array([r[name] for r in sel])
            curve = risk_coverage_curve(u, dice)
            if name == "uncertainty":
                curves[f"{source} ({len(sel)})"] = curve
                entry["uncertainty_percentile_90"] = float(np.percentile(u, 90))
            entry["ranking"][name] = {
                "spearman_with_1_minus_dice": spearman_correlation(u, 1.0 - dice) if len(sel) > 1 else float("nan"),
                "mean_dice_kept": mean_score_at_coverage(curve, COVERAGE),
            }
        flags = defaultdict(list)
        for r in sel:
            for flag in r["flags"].split(";") if r["flags"] else ["(none)"]:
                flags[flag].append(r["dice_tta_raw"])
        entry["flags"] = {f: {"images": len(d), "mean_dice": float(np.mean(d))} for f, d in sorted(flags.items())}
        entry["ece"] = {name: calibration[(name, source)].expected_calibration_error() for name in ("tta", "plain")}
        entry["cleanup"] = {}
        for name in ("plain", "tta"):
            for cleanup in cleanups:
                key = f"{name}+{cleanup}"
                entry["cleanup"][key] = {
                    "pooled_dsc": pooled_metrics(*counts[(key, source)])["dsc"],
                    "mean_dice": float(np.mean([r[f"dice_{name}_{cleanup}"] for r in sel])),
                }
        summary["by_source"][source] = entry

    with open(out / "per_image.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_risk_coverage(curves, out / "risk_coverage.png", title="TTA uncertainty: risk-coverage")
    plot_reliability_diagram(
        {"TTA": calibration[("tta", "all")].reliability_diagram(),
         "no TTA": calibration[("plain", "all")].reliability_diagram()},
        out / "reliability.png", title="pixel calibration (original size)",
    )  # fmt: skip
    return summary


def format_tables(summary: dict) -> str:
    lines = [
        f"| source | images | mean Dice (TTA) | Spearman(uncertainty, 1 - Dice) | mean Dice, {COVERAGE:.0%} kept "
        "| uncertainty 90th pct | ECE no TTA | ECE TTA |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for source, e in summary["by_source"].items():
        r = e["ranking"]["uncertainty"]
        lines.append(
            f"| {source} | {e['images']} | {e['mean_dice']:.4f} | {r['spearman_with_1_minus_dice']:.3f} "
            f"| {r['mean_dice_kept']:.4f} | {e['uncertainty_percentile_90']:.3f} | {e['ece']['plain']:.4f} "
            f"| {e['ece']['tta']:.4f} |"
        )
    lines += ["", "| source | measure | Spearman(u, 1 - Dice) | mean Dice kept |", "|---|---|---|---|"]
    for source, e in summary["by_source"].items():
        for name, r in e["ranking"].items():
            label = "lesion_entropy (the library's)" if name == "uncertainty" else name
            lines.append(f"| {source} | {label} | {r['spearman_with_1_minus_dice']:.3f} | {r['mean_dice_kept']:.4f} |")
    lines += ["", "| source | flag | images | mean Dice |", "|---|---|---|---|"]
    for source, e in summary["by_source"].items():
        for flag, f in e["flags"].items():
            lines.append(f"| {source} | {flag} | {f['images']} | {f['mean_dice']:.4f} |")
    lines += ["", "| source | prediction | pooled DSC | mean Dice |", "|---|---|---|---|"]
    for source, e in summary["by_source"].items():
        for key, c in e["cleanup"].items():
            lines.append(f"| {source} | {key} | {c['pooled_dsc']:.4f} | {c['mean_dice']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary = evaluate(args)
    tables = format_tables(summary)
    print(f"weights: {summary['weights']}\n\n{tables}")
    Path(args.out, "table.md").write_text(tables + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
