# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Test-time augmentation over the eight symmetries of the square (the dihedral group D4).

A dermoscopy photograph has no preferred orientation, so the network is run on the image, its two mirror images,
its three 90-degree rotations and its two transposes; each output is turned back and the eight sigmoid
probabilities are averaged. The entropy of that mean over the lesion is the per-image uncertainty
(:func:`lesion_entropy`): high where the views disagree or all hesitate.

Every view is a transpose of the last two axes (or not) followed by a flip of the rows and/or of the columns,
``(transpose, flip_rows, flip_columns)``; the inverse applies the same flips first, then the transpose. Images are
``N x C x H x W``, rows first. A transposing view turns an H x W image into a W x H one, so for a non-square
image the views are run in two batches (one per shape), for a square one in a single batch of ``8 N``. Either way
H and W must be what the network accepts (EGE-UNet: multiples of 32).

The same implementation serves the Python API (:func:`predict_with_tta`) and MONAI bundle configs
(:class:`DihedralTTAInferer`, a drop-in for ``SimpleInferer`` that keeps the config's sigmoid and threshold).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type, convert_to_tensor

__all__ = [
    "DIHEDRAL_VIEWS",
    "DihedralTTAInferer",
    "DihedralView",
    "TTAResult",
    "binary_entropy",
    "dihedral_inverse",
    "dihedral_transform",
    "dihedral_views",
    "inverse_dihedral_views",
    "lesion_entropy",
    "predict_with_tta",
    "tta_inferer",
    ]


class DihedralView(NamedTuple):
    """One symmetry of the square: optional transpose of the last two axes, then optional flips.

    Args:
        name: what the view is, in words.
        transpose: swap the last two axes first.
        flip_rows: then reverse the row axis (-2): an upside-down image.
        flip_columns: then reverse the column axis (-1): a left-right mirror image.
    """

    name: str
    transpose: bool
    flip_rows: bool
    flip_columns: bool


#: The eight elements of D4; the identity comes first. ``rotate_90`` is ``torch.rot90(x, 1, dims=(-2, -1))``
#: (counter-clockwise as the image is shown).
DIHEDRAL_VIEWS: tuple[DihedralView, ...] = (
    DihedralView("identity", False, False, False),
    DihedralView("flip_left_right", False, False, True),
    DihedralView("flip_up_down", False, True, False),
    DihedralView("rotate_180", False, True, True),
    DihedralView("transpose", True, False, False),
    DihedralView("rotate_90", True, True, False),
    DihedralView("rotate_270", True, False, True),
    DihedralView("anti_transpose", True, True, True),
)


def _flip_dims(view: DihedralView) -> list[int]:
    return [d for d, flip in ((-2, view.flip_rows), (-1, view.flip_columns)) if flip]


def dihedral_transform(x: torch.Tensor, view: DihedralView) -> torch.Tensor:
    """``x`` (``... x H x W``) as seen in ``view``: ``... x H x W``, or ``... x W x H`` for a transposing view."""
    if view.transpose:
        x = x.transpose(-2, -1)
    dims = _flip_dims(view)
    return torch.flip(x, dims) if dims else x


def dihedral_inverse(y: torch.Tensor, view: DihedralView) -> torch.Tensor:
    """Undo :func:`dihedral_transform`: ``dihedral_inverse(dihedral_transform(x, v), v)`` equals ``x`` exactly."""
    dims = _flip_dims(view)
    if dims:
        y = torch.flip(y, dims)
    return y.transpose(-2, -1) if view.transpose else y


def dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The eight views of ``x`` (``... x H x W``), in the order of :data:`DIHEDRAL_VIEWS`."""
    return [dihedral_transform(x, view) for view in DIHEDRAL_VIEWS]


def inverse_dihedral_views(views: list[torch.Tensor]) -> torch.Tensor:
    """The eight outputs of :func:`dihedral_views`' inputs turned back, stacked on a new axis 1:
    ``N x 8 x ... x H x W`` from eight ``N x ... x H' x W'`` tensors."""
    if len(views) != len(DIHEDRAL_VIEWS):
        raise ValueError(f"expected {len(DIHEDRAL_VIEWS)} views (one per DIHEDRAL_VIEWS entry), got {len(views)}.")
    return torch.stack([dihedral_inverse(y, view) for y, view in zip(views, DIHEDRAL_VIEWS)], dim=1)


def binary_entropy(probability: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of a Bernoulli variable with this probability, per element: 0 at 0 and 1, 1 at 0.5."""
    p = probability.clamp(0.0, 1.0)
    # xlogy: 0 * log(0) is 0, so certain pixels give exactly 0
    return -(torch.xlogy(p, p) + torch.xlogy(1.0 - p, 1.0 - p)) / math.log(2.0)


def lesion_entropy(view_probabilities: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image uncertainty in [0, 1]: the mean binary entropy (bits) of the view-averaged probability over the
    pixels that at least one view calls lesion.

    It grows where the views disagree (half of them say lesion: entropy 1) and where all of them hesitate, and it
    is measured over the lesion as any view draws it, so that a small lesion is not averaged away in the
    background. 0 when every view gives the same mask with probabilities of exactly 0 and 1, and when no view
    finds a lesion (the ``empty`` quality flag covers that case).

    Chosen for ranking the released model's errors best among the measures ``scripts/uncertainty_report.py``
    compares (this one; the same entropy over the mean prediction's mask only; 1 - IoU of the intersection and
    the union of the views' masks; 1 - mean pairwise IoU of the views' masks): Spearman correlation with 1 - Dice
    0.72 (bootstrap 95 % interval 0.67-0.77) on the 429 validation images of
    ``bundle/splits/isic2017_ph2_seed0.json`` with the 0.1.0 weights, where each of the others reaches 0.70;
    setting the 10 % most uncertain aside raised mean Dice from 0.871 to 0.902 (the released weights' figures: the
    model card, from ``scripts/evaluation_report.py --tta``).

    Args:
        view_probabilities: ``N x V x C x H x W`` probabilities of V views, already turned back
            (:attr:`TTAResult.view_probabilities`).
        threshold: the probability at which a pixel counts as lesion, as in the inference config.

    Returns:
        tensor of length N, in the dtype of ``view_probabilities``.
    """
    if view_probabilities.ndim < 3:
        raise ValueError(f"expected N x V x spatial view probabilities, got shape {tuple(view_probabilities.shape)}.")
    union = (view_probabilities >= threshold).any(dim=1).flatten(1)
    entropy = binary_entropy(view_probabilities.mean(dim=1)).flatten(1)
    area = union.sum(dim=1)
    mean_entropy = (entropy * union).sum(dim=1) / area.clamp(min=1)
    return torch.where(area > 0, mean_entropy, torch.zeros_like(mean_entropy))


class TTAResult(NamedTuple):
    """What :func:`predict_with_tta` returns for a batch of N images.

    Args:
        probability: ``N x C x H x W`` mean of the views' probabilities, the TTA prediction.
        view_probabilities: ``N x 8 x C x H x W`` each view's probability, turned back to the input's orientation,
            in the order of :data:`DIHEDRAL_VIEWS` (index 0 is the plain prediction without TTA).
        uncertainty: length-N per-image uncertainty in [0, 1] (:func:`lesion_entropy`).
    """

    probability: torch.Tensor
    view_probabilities: torch.Tensor
    uncertainty: torch.Tensor

    @property
    def uncertainty_map(self) -> torch.Tensor:
        """``N x C x H x W`` per-pixel uncertainty in [0, 1]: the binary entropy (bits) of the mean probability
        (the per-image :attr:`uncertainty` is its mean over the lesion)."""
        return binary_entropy(self.probability)


def predict_with_tta(
    network: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    threshold: float = 0.5,
) -> TTAResult:
    """Run ``network`` on the eight dihedral views of ``images`` and average the sigmoid probabilities.

    The views of a square batch go through the network as one batch of ``8 N`` images; a non-square batch takes
    two forward passes (H x W views and W x H views). Gradient mode is the caller's (wrap the call in
    ``torch.inference_mode()`` for inference).

    Args:
        network: returns logits of the same spatial size as its input (an ``EGEUNet`` in eval mode, a TorchScript
            module, an ONNX predictor...).
        images: ``N x C x H x W``, rows first; H and W as the network accepts them. A ``MetaTensor``'s metadata
            is dropped: the results are plain tensors.
        threshold: probability at which a pixel counts as lesion, for the uncertainty.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {list(images.shape)}.")
    images = convert_to_tensor(images, track_meta=False)
    views = dihedral_views(images)
    outputs: list[torch.Tensor | None] = [None] * len(views)
    # one forward per view shape: all eight at once when H == W
    for shape in dict.fromkeys(tuple(v.shape) for v in views):
        indices = [i for i, v in enumerate(views) if tuple(v.shape) == shape]
        logits = network(torch.cat([views[i] for i in indices]))
        for i, part in zip(indices, torch.chunk(torch.sigmoid(logits), len(indices))):
            outputs[i] = part
    view_probabilities = inverse_dihedral_views(outputs)  # type: ignore[arg-type]
    return TTAResult(
        probability=view_probabilities.mean(dim=1),
        view_probabilities=view_probabilities,
        uncertainty=lesion_entropy(view_probabilities, threshold),
    )


class DihedralTTAInferer(Inferer):
    """MONAI inferer with test-time augmentation over the eight dihedral views (:func:`predict_with_tta`).

    Returns ``logit(mean probability)``, so that a config's postprocessing (``Activationsd(sigmoid=True)``,
    ``AsDiscreted(threshold=...)``) works unchanged::

        "inferer": {"_target_": "egeunet_monai.inference.DihedralTTAInferer"}

    The mean probability is clamped to ``[eps, 1 - eps]`` first: a view-averaged probability of exactly 0 or 1
    would give an infinite logit, and a later bilinear resize mixing ``+inf`` and ``-inf`` gives NaN. The clamp
    moves no pixel across any threshold in ``(eps, 1 - eps)``.

    :meth:`with_uncertainty` also returns the :class:`TTAResult` (the views and the per-image uncertainty), for
    callers that report it (``egeunet-monai predict --tta``).

    Args:
        eps: smallest and largest probability kept, ``1e-6`` by default (logits within +-13.8; 1 - 1e-6 is still
            below 1 in float32).
        threshold: the probability at which a view's pixel counts as lesion, for the uncertainty
            (:func:`lesion_entropy`); the config's ``threshold``.
    """

    def __init__(self, eps: float = 1e-6, threshold: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < eps < 0.5:
            raise ValueError(f"eps should be in (0, 0.5), got {eps}.")
        self.eps = eps
        self.threshold = threshold

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """``logit`` of the TTA probability of ``inputs`` (``N x C x H x W``).

        Args:
            inputs: the batch of images.
            network: the model; extra ``args`` and ``kwargs`` are passed to it with each batch of views.
            args: optional positional arguments of ``network``.
            kwargs: optional keyword arguments of ``network``.
        """
        return self.with_uncertainty(inputs, network, *args, **kwargs)[0]

    def with_uncertainty(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, TTAResult]:
        """What :meth:`__call__` returns, and the :class:`TTAResult` it comes from (``.uncertainty``: one value
        in [0, 1] per image). Arguments as for :meth:`__call__`."""
        result = predict_with_tta(lambda x: network(x, *args, **kwargs), inputs, self.threshold)
        logits = torch.logit(result.probability, eps=self.eps)
        if isinstance(inputs, MetaTensor):
            # as MONAI's sliding-window inferer: the output carries the input's metadata, for Invertd and SaveImaged
            logits = convert_to_dst_type(logits, MetaTensor([]).copy_meta_from(inputs, copy_attr=False))[0]
        return logits, result


def tta_inferer(enabled: object, threshold: float = 0.5) -> Inferer:
    """The inference config's ``inferer``: :class:`DihedralTTAInferer` when ``enabled`` (the config's ``tta``, a
    bool or ``"true"``/``"false"`` as given on the command line), else MONAI's ``SimpleInferer``."""
    from monai.inferers import SimpleInferer

    from egeunet_monai.flags import flag

    return DihedralTTAInferer(threshold=threshold) if flag(enabled, "tta") else SimpleInferer()
