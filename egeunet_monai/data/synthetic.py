# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""A small synthetic dermoscopy-like dataset, for demos, smoke tests and CI without real data."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from egeunet_monai.data.errors import DermoscopyInputError

__all__ = ["MANIFEST_NAME", "SYNTHETIC_KEYWORD", "ensure_dataset_dir", "generate_synthetic_dataset"]

MANIFEST_NAME = "synthetic.json"
SYNTHETIC_KEYWORD = "synthetic"
# bump when the drawing changes, so that a folder made by an older version is regenerated
_GENERATOR_VERSION = 1
_NAME = re.compile(r"^syn_\d{4,}(_segmentation)?\.png$")

# skin tones from fair to tan, and lesion browns from light to dark (RGB)
_SKIN_LIGHT = np.array([238.0, 200.0, 178.0])
_SKIN_TAN = np.array([196.0, 146.0, 112.0])
_LESION_LIGHT = np.array([150.0, 96.0, 68.0])
_LESION_DARK = np.array([70.0, 40.0, 30.0])


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel row and column coordinates (float32), shared by every image of a size (read-only)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-std noise that varies over about ``size / cells`` pixels (bicubic upsampling: fast)."""
    small = rng.standard_normal((cells, cells), dtype=np.float32)
    field = np.asarray(Image.fromarray(small, mode="F").resize((size, size), Image.Resampling.BICUBIC))
    return (field - field.mean()) / (field.std() + 1e-6)


def _lesion_shape(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance-like field (positive inside) and the radius map of one irregular, smooth blob."""
    area = rng.uniform(0.10, 0.40) * size * size
    harmonics = np.arange(2, 7)
    amps = rng.uniform(0.0, 0.16, size=harmonics.size) / np.sqrt(harmonics - 1)
    phases = rng.uniform(0.0, 2 * math.pi, size=harmonics.size)
    # mean of R(theta)^2 over theta is r0^2 (1 + sum(a^2) / 2): choose r0 for the drawn area
    r0 = math.sqrt(area / (math.pi * (1.0 + float(np.sum(amps**2)) / 2.0)))
    r_max = r0 * (1.0 + float(np.sum(amps)))
    margin = 3.0
    lo, hi = r_max + margin, size - r_max - margin
    cx, cy = (rng.uniform(lo, hi) if hi > lo else size / 2.0 for _ in range(2))
    yy, xx = _grid(size)
    dx, dy = xx - np.float32(cx), yy - np.float32(cy)
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    wobble = np.zeros_like(theta)
    for k, a, phase in zip(harmonics.tolist(), amps.tolist(), phases.tolist()):
        wobble += np.float32(a) * np.cos(np.float32(k) * theta + np.float32(phase))
    radius = np.float32(r0) * (1.0 + wobble)
    return radius - r, radius


def _draw_hairs(rng: np.random.Generator, size: int) -> np.ndarray:
    """A 0..1 coverage map of a few thin dark curved hairs."""
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(0, 5))):
        p0, p1, p2 = (rng.uniform(-0.1, 1.1, size=2) * size for _ in range(3))
        t = np.linspace(0.0, 1.0, 40)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # quadratic Bezier
        draw.line([tuple(p) for p in curve.tolist()], fill=int(rng.integers(150, 230)), width=int(rng.integers(1, 3)))
    return np.asarray(layer, dtype=np.float32) / 255.0


def _make_pair(index: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One (RGB uint8 image, 0/255 uint8 mask) pair, a function of (seed, index) only."""
    rng = np.random.default_rng([seed, index])
    # skin: a base tone with slow illumination changes, fine texture and sensor noise
    skin = (_SKIN_LIGHT + rng.uniform(0, 1) * (_SKIN_TAN - _SKIN_LIGHT) + rng.uniform(-8, 8, size=3)).astype(np.float32)
    light = 1.0 + 0.05 * _smooth_noise(rng, size, 4) + 0.025 * _smooth_noise(rng, size, 32)
    img = skin[None, None, :] * light[..., None]

    # lesion: an irregular brown blob, darker towards its centre, with blotchy texture and a soft edge
    inside, radius = _lesion_shape(rng, size)
    mask = inside > 0
    depth = np.clip(inside / np.maximum(radius, 1.0), 0.0, 1.0)  # 0 at the border, 1 at the centre
    brown = (_LESION_LIGHT + rng.uniform(0, 1) * (_LESION_DARK - _LESION_LIGHT)).astype(np.float32)
    texture = 1.0 + 0.12 * _smooth_noise(rng, size, 12) + 0.06 * _smooth_noise(rng, size, 40)
    lesion = brown[None, None, :] * (texture * (1.0 - 0.35 * depth))[..., None]
    edge = np.float32(rng.uniform(1.5, 4.0))
    # the blend crosses 0.5 exactly on the mask boundary, so the mask stays the true outline
    alpha = np.clip(inside / edge + 0.5, 0.0, 1.0) * np.float32(rng.uniform(0.85, 1.0))
    img = img * (1 - alpha[..., None]) + lesion * alpha[..., None]

    # hairs over everything (not part of the mask), then the dark vignette of a dermatoscope lens
    hair = _draw_hairs(rng, size)[..., None] * 0.85
    img = img * (1 - hair) + np.array([45.0, 32.0, 28.0], dtype=np.float32) * hair
    yy, xx = _grid(size)
    rr = np.hypot(xx - np.float32(size / 2), yy - np.float32(size / 2)) / np.float32(size / 2)
    vignette = 1.0 - np.float32(rng.uniform(0.15, 0.45)) * np.clip(rr - 0.5, 0, None) ** 2
    if rng.uniform() < 0.3:  # some dermatoscopes show a black circular border in the corners
        vignette *= np.clip((np.float32(rng.uniform(1.15, 1.35)) - rr) / np.float32(0.06), 0.03, 1.0)
    img = img * vignette[..., None] + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(3.0)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), mask.astype(np.uint8) * 255


def _save_png(array: np.ndarray, path: Path) -> None:
    # write then rename: processes generating the same folder at once never see a half-written file
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".png.tmp", dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def generate_synthetic_dataset(
    output_dir: str | os.PathLike, num_images: int = 48, size: int = 256, seed: int = 0
) -> str:
    """Write a dermoscopy-like synthetic dataset in the layout of the real ones.

    ``images/syn_XXXX.png`` (RGB: skin-toned textured background, illumination changes, noise, a few hairs, a
    lens vignette) and ``masks/syn_XXXX_segmentation.png`` (0/255) with one irregular brown lesion covering 10-40%
    of the image. Deliberately easy (lesion and skin differ clearly in colour): it exercises pipelines and shows
    a model learning within minutes on a CPU; it says nothing about accuracy on real lesions.

    Each image depends only on ``(seed, index)``. If ``output_dir`` already holds this exact dataset (same
    ``num_images``, ``size``, ``seed`` in its ``synthetic.json`` manifest, and all files present), nothing is
    rewritten. A folder that holds other images is refused rather than mixed with synthetic ones.

    Args:
        output_dir: the dataset folder to create or complete.
        num_images: number of image/mask pairs.
        size: width and height in pixels.
        seed: random seed.

    Returns:
        ``output_dir`` as a string.
    """
    if num_images < 1 or size < 16:
        raise ValueError(f"need num_images >= 1 and size >= 16, got num_images={num_images}, size={size}.")
    root = Path(os.fspath(output_dir)).expanduser()
    images_dir, masks_dir = root / "images", root / "masks"
    manifest_path = root / MANIFEST_NAME
    manifest = {
        "generator": "egeunet_monai.data.synthetic",
        "version": _GENERATOR_VERSION,
        "num_images": int(num_images),
        "size": int(size),
        "seed": int(seed),
    }
    names = [f"syn_{i:04d}" for i in range(num_images)]
    expected = {images_dir / f"{n}.png" for n in names} | {masks_dir / f"{n}_segmentation.png" for n in names}

    if manifest_path.is_file():
        try:
            same = json.loads(manifest_path.read_text(encoding="utf-8")) == manifest
        except (OSError, ValueError):
            same = False
        if same and all(p.is_file() for p in expected):
            return str(root)

    for folder in (images_dir, masks_dir):
        folder.mkdir(parents=True, exist_ok=True)
        foreign = sorted(p.name for p in folder.iterdir() if not _NAME.match(p.name) and not p.name.endswith(".tmp"))
        if foreign:
            raise DermoscopyInputError(
                folder,
                f"holds files that are not synthetic ({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); "
                "refusing to mix a synthetic dataset with them: choose an empty folder",
            )
    manifest_path.unlink(missing_ok=True)  # a half-written folder must not pass for a complete one
    for folder in (images_dir, masks_dir):
        for stale in folder.iterdir():  # e.g. syn_0050.png left by a larger dataset
            if stale not in expected and _NAME.match(stale.name):
                stale.unlink(missing_ok=True)

    for index, name in enumerate(names):
        image, mask = _make_pair(index, size, seed)
        _save_png(image, images_dir / f"{name}.png")
        _save_png(mask, masks_dir / f"{name}_segmentation.png")
    manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")  # last: marks the folder complete
    return str(root)


def ensure_dataset_dir(dataset_dir: str | os.PathLike | None, default_dir: str | os.PathLike) -> str:
    """The dataset folder a bundle should use: the given one, or a synthetic dataset when none is given.

    Args:
        dataset_dir: a dataset folder; ``None``, ``""`` or ``"synthetic"`` ask for the synthetic dataset.
        default_dir: where the synthetic dataset is generated (or found, if already there).

    Returns:
        ``dataset_dir`` unchanged (as a string), or the synthetic dataset's folder.
    """
    if dataset_dir is None or os.fspath(dataset_dir).strip() in ("", SYNTHETIC_KEYWORD):
        return generate_synthetic_dataset(default_dir)
    return os.fspath(dataset_dir)
