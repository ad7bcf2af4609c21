# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Datalists (lists of ``{"image", "label", ...}`` dicts) from dermoscopy dataset folders."""

from __future__ import annotations

import json
import math
import os
import random
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path


from egeunet_monai.data.errors import DermoscopyInputError, DermoscopyInputWarning
from egeunet_monai.data.photo import MASK_STEM_SUFFIX, oriented_size
from egeunet_monai.files import write_json_atomic

__all__ = [
    "IMAGE_SUFFIXES",
    "MASK_SUFFIX",
    "SPLIT_FILE_NAME",
    "build_datalists",
    "list_images",
    "pair_images_and_masks",
    "split_datalist",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MASK_SUFFIX = MASK_STEM_SUFFIX + ".png"
SPLIT_FILE_NAME = "datalist_split.json"
_MAX_SHOWN = 10
# files next to images that are not photographs: ISIC masks and superpixel maps
_NON_PHOTO_STEM_SUFFIXES = (MASK_STEM_SUFFIX, "_superpixels")


def _show(names: Sequence[str]) -> str:
    """At most ``_MAX_SHOWN`` names, then how many more: an error message must stay readable for 2000 files."""
    shown = ", ".join(names[:_MAX_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_SHOWN else f" ({len(names)})")


def _visible_files(folder: Path) -> list[Path]:
    # hidden files include macOS "._x.jpg" resource forks, which carry an image suffix but are not images
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def pair_images_and_masks(dataset_dir: str | os.PathLike, check_sizes: bool = True) -> list[dict]:
    """Pair ``images/<id>.<ext>`` with ``masks/<id>_segmentation.png`` by id.

    Pairing is by file name, never by listing order, and the result is sorted by id. Images may have any suffix of
    :data:`IMAGE_SUFFIXES` (any case); masks must be PNG named ``<id>_segmentation.png`` (the suffix is matched
    case-insensitively, so ISIC 2016's ``_Segmentation.png`` works). Hidden files are ignored.

    Args:
        dataset_dir: a folder holding ``images/`` and ``masks/``.
        check_sizes: compare each image's size with its mask's, from the file headers only (no decoding; EXIF
            orientations that turn the photo by 90 degrees swap width and height, as the reader does).

    Returns:
        ``[{"image": str, "label": str, "id": str, "source": <name of dataset_dir>}, ...]``, paths absolute.

    Raises:
        FileNotFoundError: ``dataset_dir``, or its ``images/`` or ``masks/`` subfolder, does not exist.
        DermoscopyInputError: an empty subfolder, images without masks or masks without images (the ids are
            listed), two images with the same id, or an image whose size differs from its mask's.
    """
    root = Path(os.fspath(dataset_dir)).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found (expected {root}/images and {root}/masks).")
    folders = {}
    for sub in ("images", "masks"):
        folder = root / sub
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder}: missing '{sub}' subfolder; a dataset folder holds images/<id>.jpg and "
                f"masks/<id>{MASK_SUFFIX}."
            )
        folders[sub] = folder

    images: dict[str, list[Path]] = defaultdict(list)
    for path in _visible_files(folders["images"]):
        if _is_image_file(path):
            images[path.stem].append(path)
    if not images:
        raise DermoscopyInputError(folders["images"], f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    duplicated = sorted(i for i, paths in images.items() if len(paths) > 1)
    if duplicated:
        examples = "; ".join(" and ".join(p.name for p in images[i]) for i in duplicated[:_MAX_SHOWN])
        raise DermoscopyInputError(
            folders["images"], f"several images share an id: {_show(duplicated)}. Keep one file per id: {examples}"
        )

    masks: dict[str, list[Path]] = defaultdict(list)
    misnamed: list[str] = []
    for path in _visible_files(folders["masks"]):
        if path.name.lower().endswith(MASK_SUFFIX):
            masks[path.name[: -len(MASK_SUFFIX)]].append(path)
        elif _is_image_file(path):
            misnamed.append(path.name)
    if not masks:
        hint = f"; found files not named like a mask: {_show(misnamed)}" if misnamed else ""
        raise DermoscopyInputError(folders["masks"], f"no masks named <id>{MASK_SUFFIX} in this folder{hint}")
    duplicated = sorted(i for i, paths in masks.items() if len(paths) > 1)
    if duplicated:
        raise DermoscopyInputError(folders["masks"], f"several masks share an id: {_show(duplicated)}")

    without_mask = sorted(set(images) - set(masks))
    without_image = sorted(set(masks) - set(images))
    if without_mask or without_image:
        problems = []
        if without_mask:
            problems.append(f"images without a mask in {folders['masks']}: {_show(without_mask)}")
        if without_image:
            problems.append(f"masks without an image in {folders['images']}: {_show(without_image)}")
        hint = f" (masks must be named <id>{MASK_SUFFIX}"
        hint += f"; misnamed: {_show(misnamed)})" if misnamed else ")"
        raise DermoscopyInputError(root, "unpaired files: " + "; ".join(problems) + hint)

    items = [
        {"image": str(images[i][0]), "label": str(masks[i][0]), "id": i, "source": root.name}
        for i in sorted(images)
    ]
    if check_sizes:
        _check_pair_sizes(root, items)
    return items


def _check_pair_sizes(root: Path, items: Iterable[dict]) -> None:
    mismatches = []
    for item in items:
        image_size, mask_size = oriented_size(item["image"]), oriented_size(item["label"])
        if image_size != mask_size:
            mismatches.append(
                f"{item['image']} is {image_size[0]}x{image_size[1]} but {item['label']} is "
                f"{mask_size[0]}x{mask_size[1]}"
            )
    if mismatches:
        shown = "; ".join(mismatches[:_MAX_SHOWN])
        more = f" ... ({len(mismatches)} pairs in all)" if len(mismatches) > _MAX_SHOWN else ""
        raise DermoscopyInputError(
            root, f"mask size differs from image size (width x height, as displayed): {shown}{more}"
        )


def _source_of(item: dict) -> str:
    return str(item.get("source", ""))


def _id_of(item: dict) -> str:
    return str(item.get("id", Path(str(item["image"])).stem))


def split_datalist(items: Sequence[dict], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Split a datalist into training and validation, stratified by ``"source"``.

    Deterministic for a given ``seed`` and set of items, whatever their order (items are sorted by id first), and
    each source is shuffled with its own generator, so adding a dataset does not reshuffle the others. Each source
    with ``n >= 2`` items puts ``max(1, ceil(val_fraction * n))`` of them in validation (never all of them); a
    source with a single item keeps it for training. ``val_fraction=0`` puts everything in training.

    Args:
        items: dicts with at least ``"image"``; ``"id"`` defaults to the image's file stem and ``"source"`` to ``""``.
        val_fraction: fraction of each source held out for validation, in ``[0, 1)``.
        seed: random seed.

    Returns:
        ``(training, validation)``, each sorted by (source, id); the dicts are copies.
    """
    # bundle command lines may hand over strings ("0.2")
    val_fraction, seed = float(val_fraction), int(seed)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    by_source: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        by_source[_source_of(item)].append(dict(item))
    training: list[dict] = []
    validation: list[dict] = []
    for source in sorted(by_source):
        group = sorted(by_source[source], key=lambda d: (_id_of(d), str(d["image"])))
        n = len(group)
        n_val = 0 if val_fraction == 0 or n < 2 else min(n - 1, max(1, math.ceil(val_fraction * n)))
        # string seeds are hashed deterministically by `random` (unlike hash(), which changes per process)
        order = list(range(n))
        random.Random(f"{seed}:{source}").shuffle(order)
        val_idx = set(order[:n_val])
        for k, item in enumerate(group):
            (validation if k in val_idx else training).append(item)
    return training, validation


def _split_dirs(dataset_dirs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """A list of folders from a path, a comma-separated string (CLI use) or a list of either."""
    raw = [dataset_dirs] if isinstance(dataset_dirs, (str, os.PathLike)) else list(dataset_dirs)
    dirs = [part.strip() for entry in raw for part in os.fspath(entry).split(",") if part.strip()]
    if not dirs:
        raise ValueError(f"no dataset folder given (dataset_dirs={dataset_dirs!r}).")
    return dirs


def _key(item: dict) -> str:
    return f"{_source_of(item)}/{_id_of(item)}"


def _reuse_split(split_file: Path, items: list[dict], seed: int, val_fraction: float) -> dict | None:
    """The saved split applied to ``items`` if it was made from the same ids, seed and fraction, else None."""
    try:
        saved = json.loads(split_file.read_text(encoding="utf-8"))
        saved_val = {_key(d) for d in saved["validation"]}
        saved_all = {_key(d) for d in saved["training"]} | saved_val
        same = saved.get("seed") == seed and math.isclose(float(saved.get("val_fraction", -1)), val_fraction)
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.warn(f"{split_file}: unreadable split file ({err}); writing a new one", DermoscopyInputWarning)
        return None
    if not same or saved_all != {_key(d) for d in items}:
        return None
    # membership comes from the file, paths from the folders: the dataset may have moved since
    return {
        "training": [d for d in items if _key(d) not in saved_val],
        "validation": [d for d in items if _key(d) in saved_val],
    }


def _from_datalist_file(datalist_file: str, val_fraction: float, seed: int) -> dict:
    from monai.data import load_decathlon_datalist  # here: listing images for inference needs no MONAI

    path = Path(datalist_file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: datalist file not found.")
    content = json.loads(path.read_text(encoding="utf-8"))
    lists = {}
    for key in ("training", "validation"):
        if key in content:
            # MONAI resolves the relative paths against the file's folder
            lists[key] = [_complete_item(d) for d in load_decathlon_datalist(str(path), True, key)]
    if "training" not in lists:
        raise DermoscopyInputError(path, "no 'training' key in this datalist file")
    if "validation" not in lists:
        lists["training"], lists["validation"] = split_datalist(lists["training"], val_fraction, seed)
    return {"training": lists["training"], "validation": lists["validation"]}


def _complete_item(item: dict) -> dict:
    """Add ``id`` and ``source`` to a datalist entry that lacks them (needed by the split and by reports)."""
    out = {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in item.items()}
    first = out["image"][0] if isinstance(out["image"], (list, tuple)) else out["image"]
    image = Path(str(first))
    out.setdefault("id", image.stem)
    # the dataset folder: the parent of images/, or the folder holding the image
    out.setdefault("source", image.parent.parent.name if image.parent.name == "images" else image.parent.name)
    return out


def build_datalists(
    dataset_dirs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    val_fraction: float = 0.2,
    seed: int = 0,
    datalist_file: str | None = None,
) -> dict[str, list[dict]]:
    """Training and validation datalists, for a MONAI bundle config such as
    ``"$egeunet_monai.data.build_datalists(@dataset_dir, @output_dir)['training']"``.

    From folders: each dataset folder is paired with :func:`pair_images_and_masks`, the union is split with
    :func:`split_datalist` (stratified by folder), and the split is written to ``<output_dir>/datalist_split.json``
    (decathlon format, with ``seed`` and ``val_fraction``). When that file already holds a split of the same ids
    with the same seed and fraction, it is reused as it is, so a resumed training validates on the same images.

    From a file: when ``datalist_file`` is given (non-empty), it is read with
    ``monai.data.load_decathlon_datalist`` instead (relative paths are resolved against its folder); its
    ``"validation"`` list is used if present, otherwise its ``"training"`` list is split. Nothing is written.

    Args:
        dataset_dirs: a dataset folder, a comma-separated string of folders, or a list of folders.
        output_dir: where the split file goes (created if needed).
        val_fraction: fraction of each dataset held out for validation.
        seed: random seed of the split.
        datalist_file: an optional decathlon-format JSON file that replaces the folders.

    Returns:
        ``{"training": [...], "validation": [...]}``: plain lists of ``{"image", "label", "id", "source"}`` dicts.
    """
    val_fraction, seed = float(val_fraction), int(seed)
    if datalist_file:
        return _from_datalist_file(datalist_file, val_fraction, seed)
    items: list[dict] = []
    for folder in _split_dirs(dataset_dirs):
        items.extend(pair_images_and_masks(folder))
    keys = [_key(d) for d in items]
    if len(set(keys)) != len(keys):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise DermoscopyInputError(
            str(dataset_dirs), f"the same dataset/id appears twice (same folder given twice?): {_show(repeated)}"
        )
    out_dir = Path(os.fspath(output_dir)).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    split_file = out_dir / SPLIT_FILE_NAME
    if split_file.is_file():
        reused = _reuse_split(split_file, items, seed, val_fraction)
        if reused is not None:
            return reused
    training, validation = split_datalist(items, val_fraction, seed)
    write_json_atomic(
        split_file,
        {"training": training, "validation": validation, "seed": seed, "val_fraction": val_fraction},
    )
    return {"training": training, "validation": validation}


def list_images(path_or_folder: str | os.PathLike) -> list[dict]:
    """Images to run inference on: one file, or the images of a folder.

    A folder's images are the files with a suffix of :data:`IMAGE_SUFFIXES` directly inside it, or, when there
    are none, inside its ``images/`` subfolder (a dataset folder). Masks (``*_segmentation.*``), ISIC superpixel
    maps and hidden files are left out.

    Args:
        path_or_folder: an image file or a folder.

    Returns:
        ``[{"image": str, "id": str}, ...]`` sorted by file name, paths absolute.

    Raises:
        FileNotFoundError: the path does not exist.
        DermoscopyInputError: a file with an unsupported suffix, or a folder without images.
    """
    path = Path(os.fspath(path_or_folder)).expanduser().absolute()
    if path.is_file():
        if not _is_image_file(path):
            raise DermoscopyInputError(path, f"not a supported image file (suffixes: {', '.join(IMAGE_SUFFIXES)})")
        return [{"image": str(path), "id": path.stem}]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such image file or folder.")

    def photos(folder: Path) -> list[Path]:
        return [
            p
            for p in _visible_files(folder)
            if _is_image_file(p) and not p.stem.lower().endswith(_NON_PHOTO_STEM_SUFFIXES)
        ]

    found = photos(path)
    if not found and (path / "images").is_dir():
        found = photos(path / "images")
    if not found:
        raise DermoscopyInputError(
            path, f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder or in an images/ subfolder"
        )
    return [{"image": str(p), "id": p.stem} for p in found]
