# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Active learning by test-time-augmentation uncertainty, for the EGE-UNet bundle in MONAI Label 0.8.5.

- :class:`TTAUncertaintyScoring` (``POST /scoring/tta_uncertainty``) gives every unlabeled image of the datastore the
  uncertainty that ``egeunet-monai predict --tta`` reports for it: :func:`egeunet_monai.inference.predict_with_tta`
  (the eight dihedral views, averaged in probability) and its ``uncertainty``
  (:func:`egeunet_monai.inference.lesion_entropy`: the mean entropy, in bits, of the averaged probability over the
  pixels any view calls lesion; 0 = all views agree and are certain, 1 = they disagree everywhere). The image goes
  through ``configs/inference.json``'s own preprocessing, with the weights that the server's inference uses (the
  app's copy of the bundle, ``models/model.pt``, which MONAI Label's training replaces). Each score is stored in the
  image's datastore info, as MONAI Label's epistemic scoring does, with the version of the weights (the file's
  modification time in ns): a later run scores only images that are new or were scored with other weights.
- :class:`MostUncertain` (``POST /activelearning/tta_uncertainty``) serves the unlabeled image with the highest
  score among those not served in the last ``reset_s`` seconds (MONAI Label records when each image was served), so
  that asking again without saving a label, or a second annotator, gets the next one down the ranking. Images not
  yet scored come after the scored ones.

The computation is the ``egeunet_monai`` package's, which must be installed in the MONAI Label environment
(``scripts/setup_monailabel_env.sh`` installs it); the bundle alone (the zip) still infers and trains in the plain
``monaibundle`` app.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.utils.others.generic import name_to_device

__all__ = ["MODEL_KEY", "NAME", "SCORE_KEY", "MostUncertain", "TTAUncertaintyScoring"]

logger = logging.getLogger(__name__)

NAME = "tta_uncertainty"  # of the scoring method and of the strategy
SCORE_KEY = "tta_uncertainty"  # datastore image info: the score, a float in [0, 1]
MODEL_KEY = "tta_uncertainty_model"  # datastore image info: the weights' version it was computed with


def _reader_message(err: BaseException) -> str:
    """The message of the reader's ``DermoscopyInputError`` (it names the file and the problem) among the causes of
    ``err``: MONAI wraps a transform's error in "applying transform ..."; else ``err``'s own."""
    from egeunet_monai.data import DermoscopyInputError

    cause: BaseException | None = err
    for _ in range(16):  # a chain of causes is short; never loop on a cyclic one
        if cause is None or isinstance(cause, DermoscopyInputError):
            break
        cause = cause.__cause__ or cause.__context__
    found = cause if isinstance(cause, DermoscopyInputError) else err
    return f"{type(found).__name__}: {found}"


class TTAUncertaintyScoring(ScoringMethod):
    """Score each unlabeled image with the TTA uncertainty of the bundle's model (see the module docstring).

    Request option (the JSON body of ``POST /scoring/tta_uncertainty``): ``device`` (default CUDA when available,
    else CPU).

    Args:
        bundle_path: the bundle folder inside the app (``model/<name>``), whose ``models/model.pt`` is used.
    """

    def __init__(self, bundle_path: str | Path) -> None:
        super().__init__("Uncertainty of the 8-view test-time augmentation (egeunet_monai lesion_entropy)")
        self.bundle_path = Path(bundle_path)
        self._lock = threading.Lock()  # one scoring at a time in a process: the model uses all cores for one image
        self._loaded: tuple[Any, Any] | None = None  # (version, device) of the predictor below
        self._predictor = None
        self._scratch = tempfile.TemporaryDirectory(prefix="egeunet_scoring_")  # LesionPredictor's output_dir

    @property
    def model_file(self) -> Path:
        return self.bundle_path / "models" / "model.pt"

    def model_version(self) -> int:
        """The weights' version: ``models/model.pt``'s modification time in ns (training replaces the file)."""
        try:
            return self.model_file.stat().st_mtime_ns
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.model_file}: no weights to score with.") from None

    def _predictor_for(self, version: int, device: str):
        """The package's ``LesionPredictor`` (configs/inference.json, its preprocessing and network) with the
        bundle's current weights; rebuilt when the weights or the device change."""
        from egeunet_monai.inference import LesionPredictor
        from egeunet_monai.resources import bundle_dir

        if self._loaded != (version, device):
            # the package's inference.json: the same config as `egeunet-monai predict`; the app's copy of the bundle
            # names scripts.* and would need the bundle folder on sys.path
            self._predictor = LesionPredictor(
                self.model_file,
                bundle_root=self.bundle_path,
                config_file=bundle_dir() / "configs" / "inference.json",
                output_dir=self._scratch.name,
                device=device,
            )
            self._loaded = (version, device)
        return self._predictor

    def image_uncertainty(self, predictor, path: str) -> float:
        """``predict_with_tta(...).uncertainty`` of one image file, preprocessed as ``LesionPredictor.predict``
        does (the config's ``preprocessing``, a batch of one, on the config's device)."""
        import torch
        from monai.data import list_data_collate

        from egeunet_monai.inference import predict_with_tta

        threshold = float(predictor.config.get_parsed_content("threshold"))
        with torch.inference_mode():
            batch = list_data_collate([predictor.preprocessing({"image": path})])
            result = predict_with_tta(predictor.network, batch["image"].to(predictor.device), threshold)
        return float(result.uncertainty[0])

    def __call__(self, request: dict, datastore: Datastore) -> dict:
        with self._lock:
            version = self.model_version()
            images = datastore.get_unlabeled_images()
            todo = [i for i in images if datastore.get_image_info(i).get(MODEL_KEY) != version]
            logger.info(f"{NAME}: {len(images)} unlabeled images, {len(todo)} to score")
            start = time.perf_counter()
            scores: dict[str, float] = {}
            errors: dict[str, str] = {}
            if todo:
                predictor = self._predictor_for(version, name_to_device(request.get("device")))
                for image_id in todo:
                    try:
                        scores[image_id] = self.image_uncertainty(predictor, datastore.get_image_uri(image_id))
                    except Exception as err:  # a bad file fails alone
                        errors[image_id] = _reader_message(err)
                        logger.error(f"{NAME}: {image_id} not scored: {errors[image_id]}")
                        continue
                    datastore.update_image_info(image_id, {SCORE_KEY: scores[image_id], MODEL_KEY: version})
                    logger.info(f"{NAME}: {image_id} => {scores[image_id]:.6f}")
            latency = time.perf_counter() - start
        summary = {
            "total": len(images),
            "skipped": len(images) - len(todo),
            "executed": len(scores),
            "latency": round(latency, 3),
            "scores": scores,
            "errors": errors,
        }
        logger.info(f"{NAME}: {summary}")
        return summary


class MostUncertain(Strategy):
    """Serve the unlabeled image with the highest :class:`TTAUncertaintyScoring` score (see the module docstring).

    Args:
        reset_s: an image served less than this many seconds ago waits behind those not served since (default one
            day, as MONAI Label's epistemic strategy); when all were served, the one served longest ago comes first.
    """

    def __init__(self, reset_s: int = 24 * 60 * 60) -> None:
        super().__init__("Most uncertain unlabeled image first (test-time augmentation uncertainty)")
        self.reset_s = int(reset_s)

    def __call__(self, request: dict, datastore: Datastore) -> dict | None:
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if not images:
            return None
        strategy, now = request.get("strategy", NAME), int(time.time())

        def rank(image_id: str) -> tuple:
            info = datastore.get_image_info(image_id)
            served = info.get("strategy", {}).get(strategy, {}).get("ts", 0)
            score = info.get(SCORE_KEY)
            recent = served if now - served < self.reset_s else 0
            return recent, score is None, -(score or 0.0), image_id

        image = min(images, key=rank)
        score = datastore.get_image_info(image).get(SCORE_KEY)
        logger.info(f"{strategy}: selected {image} ({SCORE_KEY} {score})")
        return {"id": image, SCORE_KEY: score}
