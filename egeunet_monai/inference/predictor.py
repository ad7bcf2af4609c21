# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Single-image lesion segmentation with the bundle's own inference pipeline, for the CLI and the web viewer."""

from __future__ import annotations

import math
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from egeunet_monai.inference.ort_session import ONNX_INSTALL_HINT
from egeunet_monai.inference.weights_file import check_weights_file, not_an_onnx_model

__all__ = [
    "ONNX_INSTALL_HINT",
    "LesionPredictor",
    "LesionStats",
    "Prediction",
    "default_bundle_root",
    "inference_config",
    "load_photo",
    "open_predictor",
]


def default_bundle_root() -> Path:
    """The bundle root that commands read ``models/model.pt`` from and write ``runs/`` into: the repository root
    for a source checkout (the package lives in ``<root>/egeunet_monai``), else the current folder (an installed
    package; its configs are then the packaged ones, see :func:`egeunet_monai.resources.configs_dir`)."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "configs" / "inference.json").is_file():
        return checkout
    return Path.cwd()


@dataclass(frozen=True)
class LesionStats:
    """What the page and the CSV report for one image.

    Args:
        width: image width in pixels (as displayed, EXIF orientation applied).
        height: image height in pixels.
        area_px: number of lesion pixels in the mask at the original size.
        area_fraction: ``area_px / (width * height)``.
        mean_confidence: mean sigmoid probability over the predicted lesion pixels; NaN when the mask is empty.
        uncertainty: with test-time augmentation, the image's uncertainty in [0, 1]
            (:func:`~egeunet_monai.inference.tta.lesion_entropy` of the eight views); ``None`` without.
        flags: the quality flags that apply (:func:`~egeunet_monai.inference.quality.quality_flags`, in the order of
            ``QUALITY_FLAGS``; ``low_confidence`` only with test-time augmentation).
    """

    width: int
    height: int
    area_px: int
    area_fraction: float
    mean_confidence: float
    uncertainty: float | None = None
    flags: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly: a NaN confidence becomes ``None``, the flags a list."""
        out = asdict(self)
        if math.isnan(out["mean_confidence"]):
            out["mean_confidence"] = None
        out["flags"] = list(self.flags)
        return out


class Prediction(NamedTuple):
    """The result of :meth:`LesionPredictor.predict`.

    Args:
        mask: H x W ``uint8``, 255 inside the lesion and 0 elsewhere, at the image's original size (the pixels of
            the ``<id>_mask.png`` the bundle writes).
        probability: H x W ``float32`` sigmoid probability, resized back to the original size before thresholding.
        stats: area and confidence.
    """

    mask: np.ndarray
    probability: np.ndarray
    stats: LesionStats


def load_photo(path: str | os.PathLike) -> np.ndarray:
    """The photograph as H x W x 3 ``uint8``, read with the same checks (and EXIF orientation) as the bundle's
    reader, so that an overlay lines up with the mask (:func:`egeunet_monai.data.read_photo`, without MONAI)."""
    from egeunet_monai.data.photo import read_photo

    return np.ascontiguousarray(read_photo(path))


def _user_error_in(err: BaseException) -> BaseException | None:
    """The first ``ImportError``, ``FileNotFoundError`` or ``ValueError`` among ``err`` and its causes, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (ImportError, FileNotFoundError, ValueError)):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _input_error_in(err: BaseException) -> BaseException | None:
    """The ``DermoscopyInputError`` among the causes of ``err``, if any."""
    from egeunet_monai.data import DermoscopyInputError

    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, DermoscopyInputError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def inference_config(
    weights: str | os.PathLike | None = None,
    bundle_root: str | os.PathLike | None = None,
    config_file: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    save_probabilities: bool = False,
    device: str | None = None,
    tta: bool | None = None,
    runtime: str | None = None,
    overrides: dict[str, Any] | None = None,
):
    """``configs/inference.json`` as a MONAI ``ConfigParser``, set up to segment the user's files one call at a time
    (no datalist); the arguments are those of :class:`LesionPredictor`.

    Raises:
        FileNotFoundError: no config, or no weights file at ``weights``.
        ValueError: ``weights`` has an unknown suffix.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_root) if bundle_root is not None else default_bundle_root()
    if config_file is None:
        from egeunet_monai.resources import configs_dir

        config_file = configs_dir(root) / "inference.json"
    config_file = Path(config_file)
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: inference config not found (pass --bundle-root).")
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(root)
    if output_dir is not None:
        parser["output_dir"] = os.fspath(output_dir)
    parser["save_probabilities"] = bool(save_probabilities)
    # images come one at a time through predict(), never from the config's datalist
    parser["input_path"] = ""
    parser["datalist"] = []
    if device is not None:
        parser["device"] = f"$torch.device('{device}')"
    if tta is not None:
        parser["tta"] = bool(tta)
    if runtime is not None:
        parser["runtime"] = runtime
    for key, value in (overrides or {}).items():
        parser[key] = value
    if weights is not None:
        parser["ckpt_path"] = os.fspath(check_weights_file(weights))
    return parser


def config_network(parser):
    """The config's ``network`` (:func:`~egeunet_monai.inference.runtime.load_runtime` of its weights), with the
    runtime's own error (which names the file, or what to install) instead of MONAI's wrapper around it."""
    try:
        return parser.get_parsed_content("network")
    except Exception as err:
        cause = _user_error_in(err)
        if cause is None:
            raise
        raise cause from err


# configs/inference.json's ids that the batch predictor uses
_BATCH_IDS = ("tta", "threshold", "fill_holes", "largest_component", "image_size", "runtime", "runtime_threads")


def _is_expression(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("$", "@", "%"))


def _batch_settings(config_file: Path, root: Path, weights, device, tta, runtime, overrides) -> dict | None:
    """The batch predictor's settings from the config read as JSON, without MONAI's ``ConfigParser`` (importing MONAI
    takes several seconds and hundreds of MiB, longer than segmenting a folder of photographs): plain values as they
    are; the ``device`` expression (no ``@`` references) evaluated with ``torch`` (the packaged one without it when the
    installed PyTorch cannot see a GPU: :func:`_torch_can_use_a_gpu`), as a string; ``ckpt_path``, when no weights are
    given, as the packaged config computes it (:func:`egeunet_monai.resources.default_weights`) if it is the packaged
    expression. ``None`` when anything else is an expression, or ``network_def`` is not the packaged network: then
    MONAI's parser resolves the config."""
    import json

    from egeunet_monai.resources import bundle_dir, default_weights

    config = json.loads(config_file.read_text(encoding="utf-8"))
    packaged = config
    packaged_file = bundle_dir() / "configs" / "inference.json"
    if packaged_file.resolve() != config_file.resolve():
        packaged = json.loads(packaged_file.read_text(encoding="utf-8"))
    values = {key: config.get(key) for key in (*_BATCH_IDS, "device", "ckpt_path", "onnx_path", "network_def")}
    values.update(overrides or {})
    for key, value in (("tta", tta), ("runtime", runtime), ("device", device)):
        if value is not None:
            values[key] = value
    if values["network_def"] != packaged.get("network_def"):
        return None
    if values["device"] == packaged.get("device") and not _torch_can_use_a_gpu():
        values["device"] = "cpu"  # what `cuda:0 if torch.cuda.is_available() else cpu` gives, without importing torch
    elif _is_expression(values["device"]) and "@" not in values["device"]:
        import torch

        try:  # as MONAI evaluates it, with the config's `import torch`
            values["device"] = str(eval(values["device"][1:], {"torch": torch}))
        except Exception:  # anything more than torch: MONAI's parser, with all the config's imports
            return None
    if weights is not None:
        values["weights"] = os.fspath(weights)
    elif values["onnx_path"] and not _is_expression(values["onnx_path"]):
        values["weights"] = values["onnx_path"]
    elif values["ckpt_path"] == packaged.get("ckpt_path") and not values["onnx_path"]:
        values["weights"] = default_weights(root)
    elif values["ckpt_path"] and not _is_expression(values["ckpt_path"]):
        values["weights"] = values["ckpt_path"]
    else:
        return None
    if any(_is_expression(values[key]) for key in (*_BATCH_IDS, "device")):
        return None
    return values


def _torch_can_use_a_gpu() -> bool:
    """Whether the installed PyTorch is built for a GPU (its CUDA or ROCm library is there), told without importing
    it (1-2 s): a CPU-only build's ``torch.cuda.is_available()`` is always false."""
    import importlib.util

    spec = importlib.util.find_spec("torch")  # finds the package without running its __init__
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    return any(any((Path(folder) / "lib").glob(f"*torch_{gpu}*")) for folder in folders for gpu in ("cuda", "hip"))


def open_predictor(
    weights: str | os.PathLike | None = None,
    bundle_root: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    save_probabilities: bool = False,
    save_overlays: bool = False,
    device: str | None = None,
    tta: bool | None = None,
    runtime: str | None = None,
    threads: int | None = None,
    batch_size: int = 8,
    overrides: dict[str, Any] | None = None,
):
    """What ``egeunet-monai predict`` and the viewer segment with, by the config's ``tta``:

    - without test-time augmentation, a :class:`~egeunet_monai.inference.batch.BatchPredictor` around the config's
      network (:func:`~egeunet_monai.inference.runtime.load_runtime` of its weights, ``runtime`` and
      ``runtime_threads``), with the config's ``image_size``, ``threshold``, ``fill_holes`` and
      ``largest_component``: decoding, resizing and writing on worker threads, batched network calls. The config's
      plain values are read as JSON, so that MONAI is not imported (see :func:`_batch_settings`), and a cached ONNX
      export runs without PyTorch (:func:`~egeunet_monai.inference.ort_session.open_runtime`);
    - with it, a :class:`LesionPredictor` (the config's pipeline image by image, its TTA inferer over the same
      runtime).

    Both have ``predict_one(path)`` (the viewer's call) and ``mask_path(path)``, ``weights`` and ``tta``.

    Args:
        threads: the batch predictor's runtime's intra-op threads (else the config's ``runtime_threads``; ``None``:
            one per core). The ``predict`` command gives the network one and the other cores to the workers.
        batch_size: images per network call of the batch predictor.
        others: as for :class:`LesionPredictor`; ``save_overlays`` writes ``<stem>_overlay.png`` (batch predictor).

    Raises:
        FileNotFoundError, ValueError, ImportError: as :class:`LesionPredictor` and
            :func:`~egeunet_monai.inference.runtime.load_runtime` (missing files, unknown formats, no ONNX Runtime).
    """
    from egeunet_monai.flags import flag
    from egeunet_monai.inference.batch import BatchPredictor
    from egeunet_monai.inference.ort_session import open_runtime
    from egeunet_monai.resources import configs_dir

    root = Path(bundle_root) if bundle_root is not None else default_bundle_root()
    config_file = configs_dir(root) / "inference.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: inference config not found (pass --bundle-root).")
    if weights is not None:
        check_weights_file(weights)
    settings = _batch_settings(config_file, root, weights, device, tta, runtime, overrides)
    if settings is None:  # an edited config with expressions: MONAI's parser resolves it
        parser = inference_config(weights, root, config_file, output_dir, save_probabilities, device, tta, runtime,
                                  overrides)
        settings = {key: parser.get_parsed_content(key) for key in _BATCH_IDS}
        settings["device"] = parser.get_parsed_content("device")
        if not flag(settings["tta"], "tta"):
            if threads is not None:
                parser["runtime_threads"] = int(threads)
            network = config_network(parser)
    elif not flag(settings["tta"], "tta"):
        # a cached ONNX export runs without importing PyTorch (open_runtime), else load_runtime's choice
        try:
            network = open_runtime(settings["weights"], settings["runtime"] or "auto",
                                   threads=threads if threads is not None else settings["runtime_threads"],
                                   device=settings["device"], image_size=settings["image_size"])
        except Exception as err:
            # open_runtime opens an .onnx file itself, without load_runtime's checks: say what load_runtime says
            if Path(settings["weights"]).suffix.lower() != ".onnx" or _user_error_in(err) is not None:
                raise
            raise not_an_onnx_model(Path(settings["weights"]), err) from err
    if flag(settings["tta"], "tta"):
        return LesionPredictor(weights, root, config_file, output_dir, save_probabilities, device, tta, runtime,
                               overrides)
    return BatchPredictor(
        network,
        output_dir if output_dir is not None else tempfile.mkdtemp(prefix="egeunet_"),
        batch_size=batch_size,
        threshold=float(settings["threshold"]),
        image_size=settings["image_size"],
        save_probabilities=save_probabilities,
        save_overlays=save_overlays,
        fill_holes=flag(settings["fill_holes"], "fill_holes"),
        largest_component=flag(settings["largest_component"], "largest_component"),
    )


class LesionPredictor:
    """Segment one dermoscopy image at a time with the MONAI bundle's ``configs/inference.json``.

    The config is parsed once: its ``preprocessing``, ``inferer`` and ``postprocessing`` (sigmoid, inversion of the
    resize back to the original size, threshold, and the ``SaveImaged`` transforms that write ``<id>_mask.png``
    and, with ``save_probabilities``, ``<id>_prob.png`` into ``output_dir``) run exactly as in
    ``python -m monai.bundle run --config_file configs/inference.json``; only the batching over a datalist is
    replaced by one call per image, so that a bad file fails alone.

    Weights: the config's ``network`` is :func:`~egeunet_monai.inference.runtime.load_runtime` of the weights file
    (``.pt``/``.pth``/``.ts``/``.onnx``): ONNX Runtime by default, exported once per weights file, or the runtime
    that ``runtime`` (the config's ``runtime`` id) asks for. ``None`` uses the config's ``ckpt_path``
    (``egeunet_monai.engines.default_weights``: ``models/model.pt``, else the released weights).

    With ``tta`` (the config's ``tta`` id) the config's inferer is :class:`~egeunet_monai.inference.tta.
    DihedralTTAInferer`: the eight dihedral views are averaged, and :attr:`LesionStats.uncertainty` is their
    per-image uncertainty. Every prediction gets its quality flags (:attr:`LesionStats.flags`), measured on the
    thresholded mask before the config's clean-up (``largest_component``, ``fill_holes``).

    :meth:`predict` may be called from several threads: each call works on its own data, and the calls are
    serialised by a lock (one image at a time keeps memory bounded on a small machine, and the model already uses
    all cores for one image).

    Args:
        weights: model weights, or ``None`` for the bundle's default.
        bundle_root: the bundle folder (``models/model.pt`` inside, when trained); default :func:`default_bundle_root`.
        config_file: the inference config; default ``<bundle_root>/configs/inference.json``, else the packaged one.
        output_dir: where the bundle's ``SaveImaged`` writes the masks; default a new temporary folder.
        save_probabilities: also write ``<id>_prob.png`` (probability x 255).
        device: ``"cpu"``, ``"cuda:0"``...; default the config's (CUDA when available).
        tta: test-time augmentation over the eight dihedral views (8 forward passes per image); ``None`` keeps the
            config's ``tta`` (false in the bundle's).
        runtime: ``"auto"``, ``"onnxruntime"``, ``"torchscript"`` or ``"eager"``; ``None`` keeps the config's
            ``runtime`` (``"auto"``).
        overrides: further config ids to override, e.g. ``{"threshold": 0.4}``.
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        bundle_root: str | os.PathLike | None = None,
        config_file: str | os.PathLike | None = None,
        output_dir: str | os.PathLike | None = None,
        save_probabilities: bool = False,
        device: str | None = None,
        tta: bool | None = None,
        runtime: str | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        from monai.transforms import AsDiscreted

        from egeunet_monai.inference.tta import DihedralTTAInferer

        self._as_discrete = AsDiscreted
        self.output_dir = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="egeunet_"))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        parser = inference_config(weights, bundle_root, config_file, self.output_dir, save_probabilities, device, tta,
                                  runtime, overrides)
        self.config = parser
        self.device = parser.get_parsed_content("device")
        self.preprocessing = parser.get_parsed_content("preprocessing")
        self.inferer = parser.get_parsed_content("inferer")
        #: whether predictions average the eight dihedral views (and report their uncertainty)
        self.tta = isinstance(self.inferer, DihedralTTAInferer)
        self.postprocessing = parser.get_parsed_content("postprocessing")
        self.weights = os.fspath(parser.get_parsed_content("ckpt_path"))
        #: the config's network: an :class:`~egeunet_monai.inference.runtime.InferenceRuntime`
        self.network = config_network(parser)
        self._lock = threading.Lock()

    def predict(self, path: str | os.PathLike) -> Prediction:
        """Segment one image file; the bundle's postprocessing also writes ``<stem>_mask.png`` to ``output_dir``.

        Args:
            path: a JPEG or PNG dermoscopy photograph (any format the bundle's reader accepts).

        Raises:
            egeunet_monai.data.DermoscopyInputError: the file is missing, not an image, truncated, too large...
        """
        import torch
        from monai.data import decollate_batch, list_data_collate

        from egeunet_monai.inference.quality import quality_flags

        with self._lock, torch.inference_mode():
            try:
                item = self.preprocessing({"image": os.fspath(path)})
            except Exception as err:
                # MONAI wraps a transform's error in "RuntimeError: applying transform ...": surface the reader's
                # message, which names the file and the problem
                cause = _input_error_in(err)
                if cause is None:
                    raise
                raise cause from err
            batch = list_data_collate([item])
            image = batch["image"].to(self.device)
            uncertainty = None
            if self.tta:
                batch["pred"], views = self.inferer.with_uncertainty(image, self.network)
                uncertainty = float(views.uncertainty[0])
            else:
                batch["pred"] = self.inferer(image, self.network)
            result = decollate_batch(batch)[0]
            probability = thresholded = None
            for transform in self.postprocessing.transforms:
                at_threshold = thresholded is None and isinstance(transform, self._as_discrete)
                if at_threshold:
                    probability = result["pred"]  # after sigmoid and resize back, before the threshold
                result = transform(result)
                if at_threshold:
                    # the flags' mask, before any clean-up of its pieces and holes: a copy, as MONAI's FillHolesd
                    # and KeepLargestConnectedComponentd change their input in place
                    thresholded = result["pred"].clone()
        if thresholded is None:
            raise ValueError("the inference postprocessing has no AsDiscreted threshold.")
        # the network works rows first (H x W); the config's last steps hand the mask over in MONAI's (x, y) order,
        # for MONAI Label's writers: turn it back to H x W, as the photo is shown and as the PNG was written
        prob = np.ascontiguousarray(np.asarray(probability.detach().cpu(), dtype=np.float32)[0])
        pred = np.asarray(result["pred"].detach().cpu())
        mask = np.ascontiguousarray(np.where(pred.reshape(pred.shape[-2:]).T > 0, 255, 0).astype(np.uint8))
        if mask.shape != prob.shape:
            raise ValueError(f"the inference postprocessing gave a {pred.shape} mask for a {prob.shape} image.")
        lesion = mask > 0
        area = int(lesion.sum())
        height, width = mask.shape
        stats = LesionStats(
            width=width,
            height=height,
            area_px=area,
            area_fraction=area / float(width * height),
            mean_confidence=float(prob[lesion].mean()) if area else float("nan"),
            uncertainty=uncertainty,
            flags=tuple(quality_flags(thresholded, uncertainty)),
        )
        return Prediction(mask, prob, stats)

    def predict_one(self, path: str | os.PathLike) -> Prediction:
        """:meth:`predict`; the name :class:`~egeunet_monai.inference.batch.BatchPredictor` shares, so that the
        viewer takes either."""
        return self.predict(path)

    def mask_path(self, path: str | os.PathLike) -> Path:
        """Where :meth:`predict` wrote the mask of ``path`` (the bundle's ``SaveImaged`` naming)."""
        return self.output_dir / f"{Path(path).stem}_mask.png"

    def probability_path(self, path: str | os.PathLike) -> Path:
        """Where :meth:`predict` wrote the probability map of ``path`` (with ``save_probabilities``)."""
        return self.output_dir / f"{Path(path).stem}_prob.png"
