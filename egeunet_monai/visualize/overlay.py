# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Lesion outlines drawn on the photo, and contact sheets of several overlays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["PREDICTION_COLOUR", "GROUND_TRUTH_COLOUR", "mask_outline", "draw_overlay", "overlay_sheet"]

PREDICTION_COLOUR = (255, 40, 40)
GROUND_TRUTH_COLOUR = (40, 220, 40)


def mask_outline(mask: np.ndarray, thickness: int = 2) -> np.ndarray:
    """Boolean H x W map of the pixels on the boundary of a binary mask, ``thickness`` pixels wide inside it."""
    mask = np.asarray(mask) > 0
    inner = mask.copy()
    for _ in range(max(1, thickness)):
        eroded = inner.copy()
        eroded[1:, :] &= inner[:-1, :]
        eroded[:-1, :] &= inner[1:, :]
        eroded[:, 1:] &= inner[:, :-1]
        eroded[:, :-1] &= inner[:, 1:]
        inner = eroded
    return mask & ~inner


def draw_overlay(
    image: np.ndarray,
    prediction: np.ndarray | None = None,
    ground_truth: np.ndarray | None = None,
    fill_alpha: float = 0.25,
    thickness: int | None = None,
) -> np.ndarray:
    """The photo (H x W x 3 uint8) with the predicted lesion tinted and outlined in red and the ground truth
    outlined in green. Masks are H x W, non-zero inside the lesion."""
    # uint8 throughout, float only for the tinted pixels (the viewer draws on every upload): the same pixels as
    # blending the whole photo in float and truncating once
    out = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    thickness = thickness or max(1, round(max(out.shape[:2]) / 200))
    if prediction is not None:
        pred = np.asarray(prediction) > 0
        if fill_alpha:
            tinted = (1 - fill_alpha) * out[pred].astype(np.float32) + fill_alpha * np.array(
                PREDICTION_COLOUR, dtype=np.float32)
            out[pred] = np.clip(tinted, 0, 255).astype(np.uint8)
        out[mask_outline(pred, thickness)] = PREDICTION_COLOUR
    if ground_truth is not None:
        out[mask_outline(np.asarray(ground_truth) > 0, thickness)] = GROUND_TRUTH_COLOUR
    return out


def overlay_sheet(
    overlays: Sequence[np.ndarray], titles: Sequence[str] | None = None, columns: int = 4, tile: int = 256
) -> np.ndarray:
    """Several overlays as one contact sheet (each resized to ``tile`` pixels high, with its title below)."""
    if not overlays:
        raise ValueError("overlay_sheet needs at least one image.")
    label_h = 18
    rows = (len(overlays) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * tile, rows * (tile + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, ov in enumerate(overlays):
        img = Image.fromarray(ov)
        img.thumbnail((tile, tile))
        x, y = (i % columns) * tile, (i // columns) * (tile + label_h)
        sheet.paste(img, (x + (tile - img.width) // 2, y + (tile - img.height) // 2))
        if titles is not None:
            draw.text((x + 4, y + tile + 2), str(titles[i])[:40], fill=(0, 0, 0))
    return np.asarray(sheet)
