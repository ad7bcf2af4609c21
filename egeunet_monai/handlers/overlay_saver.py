# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""An Ignite handler that saves overlay PNGs (photo, ground truth, prediction) for the first few images."""

from __future__ import annotations

import os

import numpy as np
import torch
from ignite.engine import Engine, Events
from PIL import Image

from egeunet_monai.visualize import draw_overlay, overlay_sheet

__all__ = ["OverlaySaver"]


def _to_hw(x: torch.Tensor) -> np.ndarray:
    """C x H x W (the bundle's reader keeps rows first) to H x W x C / H x W numpy."""
    arr = np.moveaxis(x.detach().cpu().numpy(), 0, -1)
    return arr[..., 0] if arr.shape[-1] == 1 else arr


class OverlaySaver:
    """Saves ``<id>_overlay.png`` for the first ``max_images`` images an evaluator sees, and a contact sheet
    ``overlays.png`` of them when it completes. MONAI's SaveImage writes arrays, not annotated pictures,
    hence this small handler.

    Args:
        output_dir: folder for the PNGs.
        max_images: how many images to draw.
        image_key, label_key, pred_key: keys of the photo (scaled to [0, 255]), the ground truth and the binary
            prediction in each decollated output item.
    """

    def __init__(
        self, output_dir: str, max_images: int = 8, image_key: str = "image", label_key: str = "label", pred_key: str = "pred"
    ) -> None:
        self.output_dir = output_dir
        self.max_images = max_images
        self.keys = (image_key, label_key, pred_key)
        self._overlays: list[np.ndarray] = []
        self._titles: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write_sheet)

    def _reset(self, engine: Engine) -> None:
        self._overlays, self._titles = [], []

    def _collect(self, engine: Engine) -> None:
        image_key, label_key, pred_key = self.keys
        for item in engine.state.output:
            if len(self._overlays) >= self.max_images:
                return
            image = item[image_key]
            name = os.path.basename(str(getattr(image, "meta", {}).get("filename_or_obj", f"image_{len(self._overlays)}")))
            stem = os.path.splitext(name)[0]
            photo = np.clip(_to_hw(image), 0, 255).astype(np.uint8)
            label = _to_hw(item[label_key]) if label_key in item else None
            overlay = draw_overlay(photo, _to_hw(item[pred_key]) > 0.5, None if label is None else label > 0.5)
            os.makedirs(self.output_dir, exist_ok=True)
            Image.fromarray(overlay).save(os.path.join(self.output_dir, f"{stem}_overlay.png"))
            self._overlays.append(overlay)
            self._titles.append(stem)

    def _write_sheet(self, engine: Engine) -> None:
        if self._overlays:
            sheet = overlay_sheet(self._overlays, self._titles)
            Image.fromarray(sheet).save(os.path.join(self.output_dir, "overlays.png"))
