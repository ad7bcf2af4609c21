# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""``egeunet-monai predict``: segment a batch of files, one at a time, so that a bad file fails alone."""

from __future__ import annotations

import csv
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["CSV_COLUMNS", "CSV_NAME", "collect_inputs", "out_dir_problem", "run_predict"]

CSV_NAME = "predictions.csv"
CSV_COLUMNS = (
    "image",
    "status",
    "width",
    "height",
    "lesion_area_px",
    "lesion_area_fraction",
    "mean_confidence",
    "uncertainty",
    "flags",
    "mask",
    "overlay",
    "probability",
    "uncertainty_map",
    "error",
)

# the images predict writes next to the table (the predictors' masks, probabilities and overlays, --uncertainty-map):
# a second run with --out the input folder must not take them for photographs
_OUTPUT_STEM_SUFFIXES = ("_mask", "_prob", "_overlay", "_uncertainty")
_MAX_NAMED = 3


def collect_inputs(inputs: Sequence[str | os.PathLike],
                   notes: list[str] | None = None) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files named by ``inputs`` (files, or folders listed with ``egeunet_monai.data.list_images``, less
    the files predict writes), and ``(input, reason)`` for each input that gives none: missing, not an image suffix,
    folder without images, or a file whose name clashes with an earlier one (its outputs would overwrite the
    other's). ``notes`` receives one line each for what a folder's scan passed over (:func:`_scan_notes`)."""
    from egeunet_monai.data import list_images

    files: list[Path] = []
    failed: list[tuple[str, str]] = []
    by_stem: dict[str, Path] = {}
    for entry in inputs:
        try:
            found = [Path(d["image"]) for d in list_images(entry)]
        except (OSError, ValueError) as err:  # DermoscopyInputError is a ValueError
            failed.append((os.fspath(entry), _reason(err, entry)))
            found = []
        folder = Path(os.fspath(entry)).expanduser()
        if folder.is_dir():  # a file given by name is always taken, whatever its name
            if notes is not None:
                notes += _scan_notes(folder, found)
            photos = [path for path in found if not _is_output(path)]
            if found and not photos:
                failed.append((os.fspath(entry), "no images besides the files predict writes"))
            found = photos
        for path in found:
            if path.stem in by_stem:
                if by_stem[path.stem] != path:
                    failed.append((str(path), f"same name as {by_stem[path.stem]}: its outputs would overwrite "
                                   f"{path.stem}_mask.png; rename one of them"))
                continue
            by_stem[path.stem] = path
            files.append(path)
    return files, failed


def _is_output(path: Path) -> bool:
    return path.name == CSV_NAME or (path.suffix.lower() == ".png" and path.stem.endswith(_OUTPUT_STEM_SUFFIXES))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _named(paths: Sequence[Path]) -> str:
    return ", ".join(p.name for p in paths[:_MAX_NAMED]) + (", ..." if len(paths) > _MAX_NAMED else "")


def _scan_notes(folder: Path, found: Sequence[Path]) -> list[str]:
    """One line each for what the scan of ``folder`` (``found``: what ``list_images`` took) passed over: the files
    predict writes, and files of other formats and subfolders, which would otherwise vanish without a word."""
    from egeunet_monai.data import IMAGE_SUFFIXES

    scanned = found[0].parent if found else folder  # list_images takes images/ when the folder has no photos
    entries = sorted(p for p in scanned.iterdir() if not p.name.startswith("."))
    outputs = [p for p in entries if p.is_file() and _is_output(p)]
    others = [p for p in entries if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES and p not in outputs]
    subfolders = [p for p in entries if p.is_dir() and (found or p.name != "images")]
    notes = []
    if outputs:
        notes.append(f"{folder}: left out {_count(len(outputs), 'file')} that predict writes ({_named(outputs)}): "
                     "outputs of an earlier run, not photographs; name a file to segment it anyway")
    skipped = []
    if others:
        skipped.append(f"skipped {_count(len(others), 'file')} not supported ({_named(others)}; supported: "
                       f"{', '.join(IMAGE_SUFFIXES)})")
    if subfolders:
        skipped.append(f"subfolders are not searched ({_named(subfolders)})")
    if skipped:
        notes.append(f"{folder}: " + "; ".join(skipped))
    return notes


def out_dir_problem(out_dir: Path) -> str | None:
    """Why predict cannot write into ``out_dir``, as one line naming it, else None; makes the folder when missing.
    Checked by writing a temporary file: before the network runs, not once per image and then at the table."""
    if out_dir.exists() and not out_dir.is_dir():
        return f"--out {out_dir}: not a folder (a file of that name exists)"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir):
            pass
    except OSError as err:
        return f"--out {out_dir}: cannot write files there ({err.strerror or err})"
    return None


def _reason(err: BaseException, path: str | os.PathLike) -> str:
    """The message of ``err`` without the path it starts with (the CSV and summary show the path already)."""
    problem = getattr(err, "problem", None)
    if problem:
        return str(problem)
    text = str(err)
    prefix = f"{os.fspath(path)}: "
    return text[len(prefix):] if text.startswith(prefix) else f"{type(err).__name__}: {text}"


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def uncertainty_map_png(probability: np.ndarray) -> np.ndarray:
    """The ``<id>_uncertainty.png`` pixels of a probability map: its binary entropy (bits, in [0, 1]) x 255,
    rounded to ``uint8`` (0: certain, 255: probability 0.5)."""
    import torch  # only with --tta, whose pipeline is PyTorch's anyway

    from egeunet_monai.inference import binary_entropy

    entropy = binary_entropy(torch.as_tensor(probability, dtype=torch.float64)).numpy()
    return np.round(entropy * 255).astype(np.uint8)


def _row(path: Path, stats, mask: Path, overlay: Path | str, probability: Path | None, uncertainty_map) -> dict:
    return {
        "image": str(path),
        "status": "ok",
        "width": stats.width,
        "height": stats.height,
        "lesion_area_px": stats.area_px,
        "lesion_area_fraction": _fmt(stats.area_fraction, 6),
        "mean_confidence": _fmt(stats.mean_confidence, 4),
        "uncertainty": _fmt(stats.uncertainty, 4),
        "flags": _format_flags(stats.flags),
        "mask": str(mask),
        "overlay": str(overlay or ""),
        "probability": str(probability) if probability is not None and probability.is_file() else "",
        "uncertainty_map": str(uncertainty_map or ""),
        "error": "",
    }


def _format_flags(flags) -> str:
    from egeunet_monai.inference.quality import format_flags

    return format_flags(flags)


def run_predict(predictor, inputs: Sequence[str | os.PathLike], out_dir: Path, overlay: bool = False,
                progress: bool = True, uncertainty_map: bool = False) -> int:
    """Segment every image of ``inputs`` with ``predictor`` (from :func:`~egeunet_monai.inference.open_predictor`,
    writing into ``out_dir``, which the caller has checked with :func:`out_dir_problem`), write ``predictions.csv``
    and print a summary; the exit code is 1 if any failed.

    A :class:`~egeunet_monai.inference.BatchPredictor` runs as a pipeline (decoding, batched network calls and
    writing overlap; it writes the overlays itself when made with ``save_overlays``); a
    :class:`~egeunet_monai.inference.LesionPredictor` (test-time augmentation) goes image by image, and with
    ``uncertainty_map`` also writes ``<id>_uncertainty.png`` (:func:`uncertainty_map_png` of the probability)."""
    from tqdm import tqdm

    from egeunet_monai.inference.batch import BatchPredictor

    notes: list[str] = []
    files, failed = collect_inputs(inputs, notes)
    rows: list[dict] = [{"image": name, "status": "failed", "error": why} for name, why in failed]
    for line in notes:
        print(line, file=sys.stderr)
    for name, why in failed:
        print(f"FAILED {name}: {why}", file=sys.stderr)
    empty_folders = [name for name, _ in failed if Path(name).expanduser().is_dir()]  # no image, so not counted

    bar = tqdm(total=len(files), desc="segmenting", unit="image", disable=not progress or not files, file=sys.stderr)

    def fail(path: Path, why: str) -> None:
        tqdm.write(f"FAILED {path}: {why}", file=sys.stderr)
        rows.append({"image": str(path), "status": "failed", "error": why})
        failed.append((str(path), why))

    if isinstance(predictor, BatchPredictor):
        with warnings.catch_warnings():
            # conversions (grayscale -> RGB...) are normal for user photos: one line each, not a traceback
            warnings.simplefilter("ignore")
            for result in predictor.predict(files):
                bar.update()
                bar.set_postfix_str(result.path.name, refresh=False)
                if result.error is not None:
                    prefix = f"{result.path}: "
                    fail(result.path, result.error[len(prefix):] if result.error.startswith(prefix) else result.error)
                    continue
                rows.append(_row(result.path, result.stats, result.mask_path, result.overlay_path,
                                 result.probability_path, None))
    else:
        for path in files:
            bar.update()
            bar.set_postfix_str(path.name, refresh=False)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    overlay_path = map_path = None
                    mask, probability, stats = predictor.predict(path)
                    if overlay:
                        from egeunet_monai.inference import load_photo
                        from egeunet_monai.visualize import draw_overlay

                        overlay_path = out_dir / f"{path.stem}_overlay.png"
                        Image.fromarray(draw_overlay(load_photo(path), mask)).save(overlay_path)
                    if uncertainty_map:
                        map_path = out_dir / f"{path.stem}_uncertainty.png"
                        Image.fromarray(uncertainty_map_png(probability)).save(map_path)
            except Exception as err:  # one file's failure, whatever it is, must not stop the batch
                fail(path, _reason(err, path))
                continue
            rows.append(_row(path, stats, predictor.mask_path(path), overlay_path, predictor.probability_path(path),
                             map_path))
    bar.close()

    csv_path = out_dir / CSV_NAME
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)

    done = sum(r["status"] == "ok" for r in rows)
    images = done + len(failed) - len(empty_folders)
    if images or not empty_folders:
        print(f"Segmented {done} of {images} images into {out_dir} (table: {csv_path}).")
    else:
        print(f"No image to segment: none found in {', '.join(empty_folders)} (table: {csv_path}).")
    if failed:
        print(f"{len(failed)} failed:", file=sys.stderr)
        for name, why in failed:
            print(f"  {name}: {why}", file=sys.stderr)
        return 1
    return 0
