#!/usr/bin/env python
# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Convert official ISIC (2016/2017/2018 Task 1) and PH2 downloads into this project's dataset layout.

Output layout (what ``egeunet_monai.data.pair_images_and_masks`` reads)::

    OUT/images/<id>.<ext>
    OUT/masks/<id>_segmentation.png      single channel, values 0 and 255

Standalone on purpose (PIL, numpy, tqdm only): it runs before anything else is installed and starts fast.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import sys
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

__all__ = ["Pair", "convert_pair", "find_isic", "find_ph2", "main"]

# the same suffixes as egeunet_monai.data.IMAGE_SUFFIXES (a test keeps them equal)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_MAX_SHOWN = 10

EPILOG = """\
examples:
  # ISIC 2017 training set from the zips as downloaded, squashed to 256x256
  # (like ../shared/data/isic2017_train_256):
  python scripts/prepare_isic.py isic --images ISIC-2017_Training_Data.zip \\
      --masks ISIC-2017_Training_Part1_GroundTruth.zip --out data/isic2017_train_256 --size 256

  # ISIC 2016 (masks named *_Segmentation.png), extracted folders, original size:
  python scripts/prepare_isic.py isic --images ISBI2016_ISIC_Part1_Training_Data \\
      --masks ISBI2016_ISIC_Part1_Training_GroundTruth --out data/isic2016_train

  # ISIC 2018, one folder (or zip) holding both the input and the ground-truth folders:
  python scripts/prepare_isic.py isic --images ISIC2018_Task1 --out data/isic2018_train --workers 8

  # PH2 (the official download is a .rar: extract it, or re-zip it), images re-encoded as JPEG:
  python scripts/prepare_isic.py ph2 --input PH2Dataset --out data/ph2 --image-format jpg

what is read:
  isic  images: <id>.jpg/.png in --images; masks: <id>_segmentation.png (any case) in --masks, or in
        --images when --masks is not given. Superpixel maps (*_superpixels.png), CSV/text files, __MACOSX
        and hidden files are skipped.
  ph2   images: */IMDxxx_Dermoscopic_Image/IMDxxx.bmp; masks: */IMDxxx_lesion/IMDxxx_lesion.bmp;
        the colour ROI maps (IMDxxx_roi) are skipped.

Images are copied byte for byte unless --size or --image-format asks for re-encoding. Masks are always
re-encoded as PNG 0/255 (grey levels, e.g. from JPEG, are thresholded at 128 and reported). Unpaired files
are reported; with --strict they make the exit status 1.
"""


@dataclass(frozen=True)
class FileRef:
    """A file in a folder or in a zip archive."""

    container: str  # the folder or the .zip given on the command line
    member: str  # path inside it (POSIX for zips)

    @property
    def name(self) -> str:
        return PurePosixPath(self.member.replace(os.sep, "/")).name

    @property
    def parent_name(self) -> str:
        return PurePosixPath(self.member.replace(os.sep, "/")).parent.name

    def __str__(self) -> str:
        return f"{self.container}:{self.member}" if is_zip(self.container) else str(Path(self.container) / self.member)


@dataclass(frozen=True)
class Pair:
    """One image and its mask, to be written under the id ``id``."""

    id: str
    image: FileRef
    mask: FileRef


@dataclass
class Found:
    """What was found in the inputs: pairs and the files that could not be paired."""

    pairs: list[Pair]
    images_without_mask: list[str]
    masks_without_image: list[str]
    duplicates: list[str]


@functools.lru_cache(maxsize=64)
def is_zip(path: str) -> bool:
    return Path(path).is_file() and zipfile.is_zipfile(path)


def _skipped(member: str) -> bool:
    parts = PurePosixPath(member.replace(os.sep, "/")).parts
    # macOS archives carry __MACOSX/ copies and "._" resource forks that look like images but are not
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def iter_files(source: str) -> Iterator[FileRef]:
    """Every file in a folder (recursively) or a zip archive, sorted, hidden files and __MACOSX left out."""
    if is_zip(source):
        with zipfile.ZipFile(source) as archive:
            names = sorted(i.filename for i in archive.infolist() if not i.is_dir())
        yield from (FileRef(source, n) for n in names if not _skipped(n))
    elif Path(source).is_dir():
        root = Path(source)
        for path in sorted(root.rglob("*")):
            member = path.relative_to(root).as_posix()
            if path.is_file() and not _skipped(member):
                yield FileRef(source, member)
    else:
        raise FileNotFoundError(f"{source}: not a folder or a zip file.")


_zip_cache: dict[str, zipfile.ZipFile] = {}


def read_bytes(ref: FileRef) -> bytes:
    if is_zip(ref.container):
        # one open archive per process: reopening a 10 GB zip for each of 2000 files would dominate the run
        archive = _zip_cache.get(ref.container)
        if archive is None:
            archive = _zip_cache[ref.container] = zipfile.ZipFile(ref.container)
        return archive.read(ref.member)
    return (Path(ref.container) / ref.member).read_bytes()


def _stem_suffix(name: str) -> tuple[str, str]:
    path = PurePosixPath(name)
    return path.stem, path.suffix.lower()


def _pair_up(images: dict[str, list[FileRef]], masks: dict[str, list[FileRef]]) -> Found:
    duplicates = sorted(
        f"{i} ({', '.join(str(r) for r in refs)})" for d in (images, masks) for i, refs in d.items() if len(refs) > 1
    )
    bad = {d.split(" ", 1)[0] for d in duplicates}
    pairs = [Pair(i, images[i][0], masks[i][0]) for i in sorted(set(images) & set(masks)) if i not in bad]
    return Found(pairs, sorted(set(images) - set(masks)), sorted(set(masks) - set(images)), duplicates)


def _collect(refs: Iterator[FileRef], classify) -> tuple[dict[str, list[FileRef]], dict[str, list[FileRef]]]:
    images: dict[str, list[FileRef]] = {}
    masks: dict[str, list[FileRef]] = {}
    for ref in refs:
        kind_id = classify(ref)
        if kind_id is not None:
            kind, id_ = kind_id
            (images if kind == "image" else masks).setdefault(id_, []).append(ref)
    return images, masks


def _isic_kind(ref: FileRef) -> tuple[str, str] | None:
    stem, suffix = _stem_suffix(ref.name)
    if suffix not in IMAGE_SUFFIXES:
        return None  # metadata CSVs, licence and attribution texts
    lower = stem.lower()
    if lower.endswith("_superpixels"):
        return None
    if lower.endswith("_segmentation"):  # 2017/2018 "_segmentation", 2016 "_Segmentation"
        return "mask", stem[: -len("_segmentation")]
    return "image", stem


def find_isic(images_source: str, masks_source: str | None = None) -> Found:
    """Pair ISIC Task 1 images with their masks by id, from folders or zips.

    Args:
        images_source: a folder or zip with the images (and the masks when ``masks_source`` is None).
        masks_source: a folder or zip with the ``*_segmentation.png`` masks.
    """
    images, masks = _collect(iter_files(images_source), _isic_kind)
    if masks_source is not None:
        masks = _collect(iter_files(masks_source), _isic_kind)[1]
    return _pair_up(images, masks)


def _ph2_kind(ref: FileRef) -> tuple[str, str] | None:
    stem, suffix = _stem_suffix(ref.name)
    if suffix not in IMAGE_SUFFIXES:
        return None
    if ref.parent_name.lower().endswith("_dermoscopic_image"):
        return "image", stem
    if stem.lower().endswith("_lesion"):
        return "mask", stem[: -len("_lesion")]
    return None  # IMDxxx_roi colour maps, anything else


def find_ph2(source: str) -> Found:
    """Pair PH2 dermoscopic images with their lesion masks, from the extracted folder or a zip.

    Args:
        source: the ``PH2Dataset`` folder (or any folder above ``IMDxxx/``), or a zip of it.
    """
    return _pair_up(*_collect(iter_files(source), _ph2_kind))


def _open(ref: FileRef) -> Image.Image:
    img = Image.open(io.BytesIO(read_bytes(ref)))
    img.load()
    # the size check and the resizing work on the photo as displayed, which is what the masks were drawn on
    return ImageOps.exif_transpose(img)


def binarise_mask(mask: Image.Image) -> tuple[np.ndarray, bool]:
    """A 0/255 ``uint8`` mask, and whether it had values other than {0, 255} / {0, 1} (then thresholded at 128)."""
    gray = np.asarray(mask.convert("L"))
    values = np.unique(gray)
    if np.isin(values, (0, 1)).all():
        return (gray > 0).astype(np.uint8) * 255, False
    return (gray >= 128).astype(np.uint8) * 255, not np.isin(values, (0, 255)).all()


@dataclass(frozen=True)
class Options:
    out: str
    size: int | None
    image_format: str
    jpeg_quality: int


def convert_pair(pair: Pair, options: Options) -> tuple[str, str | None, bool]:
    """Write one pair; returns ``(id, error message or None, mask had grey levels)``.

    Args:
        pair: the image and mask to convert.
        options: output folder and encoding choices.
    """
    try:
        image, mask = _open(pair.image), _open(pair.mask)
    except Exception as err:  # one corrupt file must not stop a 2000-image conversion
        return pair.id, f"unreadable ({type(err).__name__}: {err})", False
    if image.size != mask.size:
        (iw, ih), (mw, mh) = image.size, mask.size
        return pair.id, f"image {pair.image} is {iw}x{ih} but mask {pair.mask} is {mw}x{mh}", False
    mask_array, had_grey = binarise_mask(mask)

    source_suffix = _stem_suffix(pair.image.name)[1]
    reencode = options.size is not None or options.image_format != "keep"
    if options.size is not None:
        # a square squash like the shared isic2017_train_256: the network takes a fixed square input
        image = image.convert("RGB").resize((options.size, options.size), Image.Resampling.BILINEAR)
        mask_array = np.asarray(
            Image.fromarray(mask_array).resize((options.size, options.size), Image.Resampling.NEAREST)
        )
    if options.image_format == "keep":
        suffix = source_suffix if not reencode else (".jpg" if source_suffix in (".jpg", ".jpeg") else ".png")
    else:
        suffix = "." + options.image_format

    images_dir, masks_dir = Path(options.out) / "images", Path(options.out) / "masks"
    target = images_dir / f"{pair.id}{suffix}"
    for other in IMAGE_SUFFIXES:  # a previous run in another format would leave a second image with this id
        stale = images_dir / f"{pair.id}{other}"
        if stale != target and stale.exists():
            stale.unlink()
    if reencode:
        image = image.convert("RGB")
        if suffix == ".jpg":
            image.save(target, format="JPEG", quality=options.jpeg_quality)
        else:
            image.save(target, format="PNG")
    else:
        target.write_bytes(read_bytes(pair.image))  # exact copy: no second JPEG compression
    Image.fromarray(mask_array, mode="L").save(masks_dir / f"{pair.id}_segmentation.png", format="PNG")
    return pair.id, None, had_grey


def _convert_star(args: tuple[Pair, Options]) -> tuple[str, str | None, bool]:
    return convert_pair(*args)


def _show(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_MAX_SHOWN])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > _MAX_SHOWN else "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepare_isic.py",
        description="Convert ISIC challenge (2016/2017/2018 Task 1) and PH2 downloads into "
        "OUT/images/<id>.<ext> + OUT/masks/<id>_segmentation.png (0/255).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="{isic,ph2}")
    isic = sub.add_parser("isic", help="ISIC 2016/2017/2018 Task 1 (lesion segmentation)",
                          epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    isic.add_argument(
        "--images", required=True, help="folder or .zip with the images (e.g. ISIC-2017_Training_Data.zip)"
    )
    isic.add_argument("--masks", help="folder or .zip with the *_segmentation.png masks "
                      "(e.g. ISIC-2017_Training_Part1_GroundTruth.zip); default: look in --images")
    ph2 = sub.add_parser("ph2", help="PH2 dermoscopy database", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    ph2.add_argument("--input", required=True, help="the extracted PH2Dataset folder, or a .zip of it")
    for p in (isic, ph2):
        p.add_argument("--out", required=True, help="output dataset folder (images/ and masks/ are created)")
        p.add_argument("--size", type=int, default=None,
                       help="resize every pair to SIZE x SIZE (bilinear image, nearest-neighbour mask; the aspect "
                       "ratio is not kept); default: keep the original size")
        p.add_argument("--image-format", choices=("keep", "png", "jpg"), default="keep",
                       help="image file format: keep (copy the file as it is; when resized, JPEG stays JPEG and "
                       "the rest becomes PNG), png or jpg; default: keep")
        p.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality when writing JPEG (default: 95)")
        p.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
        p.add_argument("--strict", action="store_true", help="exit with status 1 when some files are unpaired")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    if args.size is not None and args.size < 1:
        print("error: --size must be a positive number of pixels", file=sys.stderr)
        return 2
    try:
        found = find_isic(args.images, args.masks) if args.dataset == "isic" else find_ph2(args.input)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    options = Options(str(out), args.size, args.image_format, args.jpeg_quality)
    tasks = [(pair, options) for pair in found.pairs]
    failures: list[str] = []
    grey: list[str] = []
    with tqdm(total=len(tasks), desc=f"{args.dataset} -> {out}", unit="pair") as progress:
        if args.workers > 1 and len(tasks) > 1:
            with ProcessPoolExecutor(max_workers=args.workers) as pool:
                results = pool.map(_convert_star, tasks, chunksize=8)
                for result in results:
                    _record(result, failures, grey)
                    progress.update()
        else:
            for task in tasks:
                _record(_convert_star(task), failures, grey)
                progress.update()

    written = len(tasks) - len(failures)
    print(f"{written} pairs written to {out}")
    if found.images_without_mask:
        print(f"{len(found.images_without_mask)} images without a mask (skipped): {_show(found.images_without_mask)}")
    if found.masks_without_image:
        print(f"{len(found.masks_without_image)} masks without an image (skipped): {_show(found.masks_without_image)}")
    if found.duplicates:
        print(f"{len(found.duplicates)} ids found more than once (skipped): {_show(found.duplicates)}")
    if grey:
        print(f"{len(grey)} masks had grey levels and were thresholded at 128: {_show(grey)}")
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    unpaired = found.images_without_mask or found.masks_without_image or found.duplicates
    if written == 0:
        print("error: no image/mask pair was written", file=sys.stderr)
        return 1
    return 1 if failures or (args.strict and unpaired) else 0


def _record(result: tuple[str, str | None, bool], failures: list[str], grey: list[str]) -> None:
    id_, error, had_grey = result
    if error is not None:
        failures.append(f"{id_}: {error}")
    elif had_grey:
        grey.append(id_)


if __name__ == "__main__":
    sys.exit(main())
