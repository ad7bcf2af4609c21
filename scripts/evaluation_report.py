#!/usr/bin/env python
"""Accuracy report for a trained EGE-UNet on folders of dermoscopy images with expert masks.

Prints one table by source (each dataset folder): the original paper's pooled metrics at 256x256, the
per-image means and the ISIC thresholded Jaccard, and the same at each image's original resolution (the
prediction resized back, as the inference config does), after the inference config's mask clean-up
(``fill_holes``, ``largest_component``: whichever configs/inference.json turns on), so the figures are those of
the masks that ``configs/inference.json`` and ``egeunet-monai predict`` write. Writes the per-image CSV, a summary JSON and an
overlay contact sheet.

The images go through the bundle's own transforms (configs/train.json ``validate#preprocessing`` for the 256x256
image and mask, configs/inference.json ``preprocessing`` and MONAI ``Invertd`` for the way back), so the
figures are those of the bundle, not of a second pipeline.

With ``--tta`` the masks are those of ``egeunet-monai predict --tta`` (the mean of the eight dihedral views,
``egeunet_monai.inference.predict_with_tta``), the per-image CSV gains the uncertainty and the quality flags, and
the report adds, by source: how well the uncertainty ranks the errors (Spearman correlation with 1 - Dice at the
original size; mean Dice of the images kept when the 10 % most uncertain are set aside), the expected calibration
error of the pixel probabilities with and without TTA, and three PNGs: ``risk_coverage.png``,
``uncertainty_dice.png`` (uncertainty against 1 - Dice) and ``reliability.png``.

Examples:
  # the released model on its own validation split (the figures of the model card)
  python scripts/evaluation_report.py --data ../shared/data/isic2017_train_256 ../shared/data/ph2 \\
      --split bundle/splits/isic2017_ph2_seed0.json --out runs/report

  # the same with test-time augmentation: uncertainty ranking, calibration and the model card's three figures
  python scripts/evaluation_report.py --data ../shared/data/isic2017_train_256 ../shared/data/ph2 \\
      --split bundle/splits/isic2017_ph2_seed0.json --out runs/report_tta --tta

  # any model on any folder of images/<id>.jpg + masks/<id>_segmentation.png
  python scripts/evaluation_report.py --data my_clinic_set --weights runs/release/models/model.pt --out report
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
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, FillHolesd, Invertd, KeepLargestConnectedComponentd, LoadImage
from PIL import Image
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from egeunet_monai.data import DermoscopyImageReader, pair_images_and_masks  # noqa: E402
from egeunet_monai.engines import default_weights  # noqa: E402
from egeunet_monai.inference import format_flags, load_photo, predict_with_tta, quality_flags  # noqa: E402
from egeunet_monai.inference.runtime import load_eager_network  # noqa: E402
from egeunet_monai.metrics import (  # noqa: E402
    CalibrationHistogram,
    mean_score_at_coverage,
    per_image_scores,
    plot_reliability_diagram,
    plot_risk_coverage,
    plot_uncertainty_scatter,
    pooled_metrics,
    risk_coverage_curve,
    spearman_correlation,
)

COVERAGE = 0.9  # the risk-coverage point reported with --tta: the 10 % most uncertain set aside
from egeunet_monai.visualize import draw_overlay, overlay_sheet  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="dataset folders (images/ + masks/), one source each")
    p.add_argument("--split", help="a split file (datalist_split.json or bundle/splits/*.json): keep only its ids")
    p.add_argument("--subset", default="validation", help="which list of the split file to evaluate (default: %(default)s)")
    p.add_argument("--weights", help="model.pt (default: models/model.pt, else the released bundle/models/model.pt)")
    p.add_argument("--out", default="runs/report", help="output folder (default: %(default)s)")
    p.add_argument("--overlays", type=int, default=8,
                   help="images in the overlay sheet, 0 for none (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default: %(default)s)")
    p.add_argument("--no-cleanup", action="store_true",
                   help="threshold only: skip the clean-up that configs/inference.json turns on (fill_holes, ...)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (8 views): adds the uncertainty, "
                   "calibration and the three PNGs (see above)")
    return p.parse_args(argv)


def split_ids(split_file: str, subset: str) -> set[str]:
    content = json.loads(Path(split_file).read_text())
    if subset not in content:
        raise SystemExit(f"{split_file} has no '{subset}' list (it has: {', '.join(content)})")
    return {item["id"] if isinstance(item, dict) else str(item) for item in content[subset]}


def load_bundle(weights: str) -> tuple[torch.nn.Module, object, object, Compose]:
    train = ConfigParser()
    train.read_config(str(REPO_ROOT / "configs" / "train.json"))
    infer = ConfigParser()
    infer.read_config(str(REPO_ROOT / "configs" / "inference.json"))
    # this project's checkpoints and the original implementation's (its own key names) alike
    network = load_eager_network(weights, infer.get_parsed_content("network_def"))
    # the clean-up steps that inference.json turns on (disabled ones parse to None), in its order
    cleanup = Compose([t for t in infer.get_parsed_content("postprocessing_transforms")
                       if isinstance(t, (FillHolesd, KeepLargestConnectedComponentd))])
    return network, train.get_parsed_content("validate#preprocessing"), infer.get_parsed_content("preprocessing"), cleanup


def evaluate(args: argparse.Namespace) -> dict:
    weights = args.weights or default_weights(str(REPO_ROOT))
    network, val_pre, infer_pre, cleanup = load_bundle(weights)
    if args.no_cleanup:
        cleanup = Compose([])
    keep = split_ids(args.split, args.subset) if args.split else None
    items = [it for d in args.data for it in pair_images_and_masks(d) if keep is None or it["id"] in keep]
    if not items:
        raise SystemExit("no image/mask pairs to evaluate (check --data and --split)")
    invert = Invertd(keys="pred", transform=infer_pre, orig_keys="image", nearest_interp=False)
    load_mask = LoadImage(reader=DermoscopyImageReader(kind="mask"), image_only=True, ensure_channel_first=True)

    def to_original_size(prob: torch.Tensor, pre: dict) -> torch.Tensor:
        # the probabilities carry the image's transforms, so Invertd can undo the resize
        pred = MetaTensor(prob, meta=pre["image"].meta, applied_operations=pre["image"].applied_operations)
        return invert({"image": pre["image"], "pred": pred})["pred"]

    counts = {res: defaultdict(lambda: np.zeros(4, dtype=np.int64)) for res in ("256", "original")}
    calibration = defaultdict(CalibrationHistogram)  # (with or without TTA, source): pixels at the original size
    rows, overlays, titles = [], [], []
    for item in tqdm(items, desc="evaluating", unit="img"):
        label256 = val_pre({"image": item["image"], "label": item["label"]})["label"]
        pre = infer_pre({"image": item["image"]})
        mask_orig = load_mask(item["label"]).float()
        height, width = mask_orig.shape[-2:]
        row = {"id": item["id"], "source": item["source"], "height": int(height), "width": int(width)}
        with torch.no_grad():
            if args.tta:
                tta = predict_with_tta(network, pre["image"][None].float(), threshold=args.threshold)
                prob, plain = tta.probability[0], tta.view_probabilities[0, 0]  # view 0: the image as it is
                row["uncertainty"] = round(float(tta.uncertainty[0]), 5)
            else:
                prob = torch.sigmoid(network(pre["image"][None].float()))[0].as_tensor()
        pred256 = cleanup({"pred": (prob >= args.threshold).float()})["pred"]
        back = to_original_size(prob, pre)
        thresholded = (back >= args.threshold).float()
        pred_orig = cleanup({"pred": thresholded.clone()})["pred"]  # a copy: MONAI's clean-up works in place
        if args.tta:  # flagged before the clean-up, as predict flags them
            row["flags"] = format_flags(quality_flags(thresholded, row["uncertainty"]))
            for name, p in (("tta", back), ("no_tta", to_original_size(plain, pre))):
                for group in (item["source"], "all"):
                    calibration[(name, group)].update(p.as_tensor().clamp(0.0, 1.0), mask_orig)
        for res, (p, y) in {"256": (pred256, label256), "original": (pred_orig, mask_orig)}.items():
            p, y = p[None].bool(), (y[None] > 0.5)
            tp, fp, fn = int((p & y).sum()), int((p & ~y).sum()), int((~p & y).sum())
            tn = p.numel() - tp - fp - fn
            counts[res][item["source"]] += (tp, fp, fn, tn)
            counts[res]["all"] += (tp, fp, fn, tn)
            scores = per_image_scores(p.float(), y.float(), threshold=None)
            for k, v in scores.items():
                row[f"{k}_{res}"] = round(float(v[0]), 5)
        rows.append(row)
        if len(overlays) < args.overlays:
            # the bundle's reader keeps rows first: masks are (1, H, W), as the photo (EXIF orientation applied)
            pred_hw, mask_hw = pred_orig[0].numpy() > 0.5, mask_orig[0].numpy() > 0.5
            overlays.append(draw_overlay(load_photo(item["image"]), pred_hw, mask_hw))
            titles.append(f"{item['id']} Dice {row['dice_original']:.3f}")

    summary: dict = {"weights": str(weights), "images": len(rows), "tta": args.tta,
                     "cleanup": [type(t).__name__ for t in cleanup.transforms], "by_source": {}}
    for source in sorted({r["source"] for r in rows}) + ["all"]:
        sel = [r for r in rows if source == "all" or r["source"] == source]
        entry = {"images": len(sel)}
        for res in ("256", "original"):
            pooled = pooled_metrics(*counts[res][source])
            entry[res] = {f"pooled_{k}": v for k, v in pooled.items()}
            for k in ("dice", "iou", "thresholded_jaccard"):
                entry[res][f"mean_{k}"] = float(np.mean([r[f"{k}_{res}"] for r in sel]))
        if args.tta:
            entry["uncertainty"] = uncertainty_summary(sel, calibration, source)
        summary["by_source"][source] = entry

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.tta:
        write_uncertainty_plots(rows, calibration, out)
    with open(out / "per_image.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if overlays:  # --overlays 0: no sheet
        Image.fromarray(overlay_sheet(overlays, titles)).save(out / "overlays.png")
    return summary


def uncertainty_summary(rows: list[dict], calibration: dict, source: str) -> dict:
    """How well the TTA uncertainty of ``rows`` ranks their errors (Dice at the original size), and the ECE."""
    u = np.array([r["uncertainty"] for r in rows])
    dice = np.array([r["dice_original"] for r in rows])
    return {
        "spearman_with_1_minus_dice": spearman_correlation(u, 1.0 - dice) if len(rows) > 1 else float("nan"),
        "mean_dice": float(dice.mean()),
        f"mean_dice_{COVERAGE:.0%}_kept": mean_score_at_coverage(risk_coverage_curve(u, dice), COVERAGE),
        "uncertainty_percentile_90": float(np.percentile(u, 90)),
        "ece_tta": calibration[("tta", source)].expected_calibration_error(),
        "ece_no_tta": calibration[("no_tta", source)].expected_calibration_error(),
    }


def write_uncertainty_plots(rows: list[dict], calibration: dict, out: Path) -> None:
    """``risk_coverage.png``, ``uncertainty_dice.png`` and ``reliability.png`` (each source, and all images)."""
    groups = {}
    for source in sorted({r["source"] for r in rows}):
        sel = [r for r in rows if r["source"] == source]
        groups[f"{source} ({len(sel)})"] = (np.array([r["uncertainty"] for r in sel]),
                                            np.array([r["dice_original"] for r in sel]))
    if len(groups) > 1:
        groups[f"all ({len(rows)})"] = (np.array([r["uncertainty"] for r in rows]),
                                        np.array([r["dice_original"] for r in rows]))
    plot_risk_coverage({k: risk_coverage_curve(u, d) for k, (u, d) in groups.items()}, out / "risk_coverage.png",
                       title="TTA uncertainty: risk-coverage")
    plot_uncertainty_scatter({k: (u, 1.0 - d) for k, (u, d) in groups.items() if not k.startswith("all")},
                             out / "uncertainty_dice.png", title="TTA uncertainty against the error")
    plot_reliability_diagram({"TTA": calibration[("tta", "all")].reliability_diagram(),
                              "no TTA": calibration[("no_tta", "all")].reliability_diagram()},
                             out / "reliability.png", title="pixel calibration (original size)")


def format_uncertainty_table(summary: dict) -> str:
    key = f"mean_dice_{COVERAGE:.0%}_kept"
    lines = [
        f"| source | images | mean Dice (TTA) | Spearman(uncertainty, 1 - Dice) | mean Dice, {COVERAGE:.0%} kept "
        "| uncertainty 90th pct | ECE no TTA | ECE TTA |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for source, e in summary["by_source"].items():
        u = e["uncertainty"]
        lines.append(
            f"| {source} | {e['images']} | {u['mean_dice']:.4f} | {u['spearman_with_1_minus_dice']:.3f} "
            f"| {u[key]:.4f} | {u['uncertainty_percentile_90']:.3f} | {u['ece_no_tta']:.4f} | {u['ece_tta']:.4f} |"
        )
    return "\n".join(lines)


def format_table(summary: dict) -> str:
    head = (
        "| source | images | resolution | pooled DSC | pooled mIoU | mean Dice | mean IoU | thresholded Jaccard "
        "| sensitivity | specificity | accuracy |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for source, e in summary["by_source"].items():
        for res in ("256", "original"):
            m = e[res]
            lines.append(
                f"| {source} | {e['images']} | {'256x256' if res == '256' else 'original'} | {m['pooled_dsc']:.4f} "
                f"| {m['pooled_miou']:.4f} | {m['mean_dice']:.4f} | {m['mean_iou']:.4f} | "
                f"{m['mean_thresholded_jaccard']:.4f} | {m['pooled_sensitivity']:.4f} | "
                f"{m['pooled_specificity']:.4f} | {m['pooled_accuracy']:.4f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary = evaluate(args)
    table = format_table(summary)
    if all("uncertainty" in e for e in summary["by_source"].values()):
        table += "\n\n" + format_uncertainty_table(summary)
    print(f"weights: {summary['weights']}\n\n{table}")
    Path(args.out, "table.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
