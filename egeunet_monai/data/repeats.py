# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Listing the training images whose lesion fills most of the frame more than once, so each epoch sees them more.

Why: the network outlines the dark centre of a lesion that covers the whole field of view and misses the rest
(PH2 has four times ISIC 2017's share of such photographs); listed three times, they raised the pooled DSC on all
150 PH2 photographs for each of three seeds (docs/recipes.md, ``isic50zo``). PyTorch's ``WeightedRandomSampler``
would draw with replacement, so an epoch would miss some images and repeat others: a longer list keeps every image
in every epoch and works with ``DistributedSampler`` unchanged."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["lesion_share", "repeat_large_lesions"]


def lesion_share(mask_file: str) -> float:
    """The fraction of a mask's pixels that are lesion, read with the bundle's checked mask reader.

    Raises:
        DermoscopyInputError: the mask is missing, unreadable or not binary (the message names the file).
    """
    from egeunet_monai.data.reader import DermoscopyImageReader  # imports MONAI: only training lists need it

    reader = DermoscopyImageReader(kind="mask")
    mask, _ = reader.get_data(reader.read(mask_file))
    return float(mask.mean())


def repeat_large_lesions(items: Sequence[dict], repeats: int = 1, min_share: float = 0.5) -> list[dict]:
    """The training datalist with each image whose lesion covers more than ``min_share`` of its mask listed
    ``repeats`` times (next to each other: the loader shuffles). The validation list is not for this function: a
    repeated image there would weigh twice in the mean Dice that picks the best epoch.

    Args:
        items: ``{"image", "label", ...}`` dicts, as ``build_datalists(...)["training"]`` gives them.
        repeats: how many times such an image is listed; 1 returns the list as it is, without reading a mask.
        min_share: the lesion's share of the mask's pixels above which an image is repeated, in ``[0, 1)``.

    Returns:
        a new list; a repeated image is the same dict each time.
    """
    repeats, min_share = int(repeats), float(min_share)  # bundle command lines may hand over strings
    if repeats < 1:
        raise ValueError(f"repeats must be 1 (off) or more, got {repeats}.")
    if not 0.0 <= min_share < 1.0:
        raise ValueError(f"min_share must be in [0, 1), got {min_share}.")
    if repeats == 1:
        return list(items)
    out: list[dict] = []
    large = 0
    for item in items:
        times = repeats if lesion_share(str(item["label"])) > min_share else 1
        large += times > 1
        out.extend([item] * times)
    print(
        f"large lesions: {large} of {len(items)} training images have a lesion over {min_share:.0%} of the frame, "
        f"each listed {repeats} times: {len(out)} samples per epoch"
    )
    return out
