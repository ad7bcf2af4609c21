# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Quality flags of one predicted lesion mask: what a reader should look at before trusting it.

:func:`quality_flags` returns the names of the flags that apply, in the order of :data:`QUALITY_FLAGS`;
:func:`format_flags` joins them for a CSV cell (``"touches_border;low_confidence"``, empty when none).

How the default thresholds (:class:`QualityThresholds`) were chosen, on the release's split
(``bundle/splits/isic2017_ph2_seed0.json``):

- ``tiny`` / ``huge``: the 1st and 99th percentiles of the lesion area fraction of the 1,716 training masks
  (0.0079 and 0.81; rounded to 0.008 and 0.81), so about 1 % of real lesions fall on each side.
- ``touches_border``: more than 1 % of the pixels of the image's outermost ring are lesion (6.6 % of the training
  masks do; 7.6 % have at least one such pixel): a lesion that runs off the photograph, whose size and
  shape the mask cannot show. The 1 % ignores a few stray pixels.
- ``multiple_components``: two or more 8-connected pieces each of at least 0.1 % of the image (a second piece that
  large occurs in 0.1 % of the training masks; 2.4 % have smaller specks, which do not count).
- ``low_confidence``: test-time-augmentation uncertainty (:func:`egeunet_monai.inference.tta.lesion_entropy`)
  above 0.5, its 90th percentile (0.498) on the 429 validation images with the 0.1.0 weights, so that it marked
  the 10 % that the risk-coverage figures set aside: their mean Dice was 0.60, against 0.90 for the images with
  no flag (the released weights' percentile: the model card); ``scripts/uncertainty_report.py`` prints it for
  any weights.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["QUALITY_FLAGS", "QualityThresholds", "format_flags", "quality_flags"]

#: Every flag :func:`quality_flags` can return, in the order it returns them.
QUALITY_FLAGS: tuple[str, ...] = ("empty", "touches_border", "multiple_components", "tiny", "huge", "low_confidence")

# 8-connectivity, as MONAI's KeepLargestConnectedComponent (connectivity=None) counts pieces of a 2-D mask
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class QualityThresholds:
    """When each flag applies; the defaults and how they were chosen are in the module docstring.

    Args:
        tiny_area_fraction: ``tiny`` when the lesion covers less than this fraction of the image.
        huge_area_fraction: ``huge`` when it covers more.
        border_fraction: ``touches_border`` when more than this fraction of the image's outermost pixels are lesion.
        min_component_fraction: pieces smaller than this fraction of the image do not count for
            ``multiple_components``.
        max_uncertainty: ``low_confidence`` when the image's uncertainty is above this.
    """

    tiny_area_fraction: float = 0.008
    huge_area_fraction: float = 0.81
    border_fraction: float = 0.01
    min_component_fraction: float = 0.001
    max_uncertainty: float = 0.5

    def __post_init__(self) -> None:
        for name in ("tiny_area_fraction", "huge_area_fraction", "border_fraction", "min_component_fraction",
                     "max_uncertainty"):  # fmt: skip
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"QualityThresholds.{name} should be in [0, 1], got {value}.")
        if self.tiny_area_fraction >= self.huge_area_fraction:
            raise ValueError(
                f"tiny_area_fraction ({self.tiny_area_fraction}) should be below huge_area_fraction "
                f"({self.huge_area_fraction})."
            )


def _as_2d_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    torch = sys.modules.get("torch")  # a tensor comes only from a loaded PyTorch: predict's masks are NumPy arrays
    array = mask.detach().cpu().numpy() if torch is not None and isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"expected a non-empty H x W (or 1 x H x W) mask, got shape {tuple(array.shape)}.")
    return array > 0


def quality_flags(
    mask: np.ndarray | torch.Tensor,
    uncertainty: float | None = None,
    thresholds: QualityThresholds | None = None,
) -> list[str]:
    """The flags (names from :data:`QUALITY_FLAGS`) that apply to one predicted mask.

    An empty mask gets only ``empty`` (and ``low_confidence`` if it applies): its area, border and pieces say
    nothing. Give the mask before any ``KeepLargestConnectedComponent`` clean-up, or ``multiple_components`` can
    never apply.

    Args:
        mask: H x W (or 1 x H x W) mask; values above 0 are lesion. Orientation does not matter.
        uncertainty: the image's uncertainty in [0, 1]; ``None`` (no test-time augmentation) skips
            ``low_confidence``.
        thresholds: when each flag applies; default :class:`QualityThresholds`.
    """
    # imported on use: importing egeunet_monai.inference (predict's start-up) does not pay for scipy
    from scipy import ndimage

    thresholds = thresholds or QualityThresholds()
    lesion = _as_2d_mask(mask)
    flags = []
    area_fraction = float(lesion.mean())
    if area_fraction == 0.0:
        flags.append("empty")
    else:
        ring = np.concatenate([lesion[0], lesion[-1], lesion[1:-1, 0], lesion[1:-1, -1]])
        if ring.mean() > thresholds.border_fraction:
            flags.append("touches_border")
        labels, count = ndimage.label(lesion, structure=_EIGHT_CONNECTED)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        if int((sizes >= thresholds.min_component_fraction * lesion.size).sum()) > 1:
            flags.append("multiple_components")
        if area_fraction < thresholds.tiny_area_fraction:
            flags.append("tiny")
        if area_fraction > thresholds.huge_area_fraction:
            flags.append("huge")
    if uncertainty is not None and uncertainty > thresholds.max_uncertainty:
        flags.append("low_confidence")
    return flags


def format_flags(flags: Iterable[str]) -> str:
    """Flags as one CSV cell: semicolon-separated, ``""`` when there are none."""
    return ";".join(flags)
