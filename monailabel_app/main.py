# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The MONAI Label app for the EGE-UNet bundle: MONAI Label's ``monaibundle`` sample app (inference and training of
the bundles in ``model/``) plus active learning by test-time-augmentation uncertainty (``tta_uncertainty.py``):
the scoring method and the strategy ``tta_uncertainty``, for the bundle ``egeunet_skin_lesion_segmentation``,
whose infer task runs the network as ``egeunet-monai predict`` and the scorer do (:class:`RuntimeBundleInferTask`).

``scripts/build_bundle.py --monailabel-app DIR`` makes the app: the sample app from the monailabel wheel, its
``main.py`` renamed ``monaibundle_main.py``, and this folder's files.

Options (``--conf NAME VALUE`` of ``monailabel start_server``), besides the sample app's:

- ``tta_uncertainty_model``: the bundle to score with (default: the first of ``--conf models`` whose name starts
  with ``egeunet_skin_lesion_segmentation``); ``none`` turns scoring off.
- ``tta_uncertainty_reset_s``: seconds before an image served by the strategy is served again (default 86400).
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os

import monaibundle_main  # the sample app's main.py: a module, not `from ... import MyApp` (see below)
import torch
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.infer.bundle import BundleInferTask
from tta_uncertainty import NAME, MostUncertain, TTAUncertaintyScoring

logger = logging.getLogger(__name__)

BUNDLE_PREFIX = "egeunet_skin_lesion_segmentation"  # also matches the model zoo's versioned names (..._v0.3.0)


class RuntimeBundleInferTask(BundleInferTask):
    """MONAI Label's bundle infer task (the bundle's preprocessing, inferer and postprocessing: the masks line up
    with their images as before) with the network of the package's commands: ``egeunet_monai.inference.load_runtime``
    of the bundle's weights (ONNX Runtime, exported once per weights file and cached by its sha256; without
    onnxruntime, TorchScript or the PyTorch network; on a GPU, the PyTorch network), made again when a training
    writes new weights."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.runtimes: dict[str, tuple[torch.nn.Module, float]] = {}  # device -> (runtime, mtime of its weights)

    def runtime(self, device: str) -> torch.nn.Module:
        from egeunet_monai.inference import load_runtime

        path = self.get_path()
        mtime = os.stat(path).st_mtime
        cached = self.runtimes.get(device)
        if cached is None or cached[1] != mtime:
            # the bundle's network_def (None for a TorchScript-only bundle: load_runtime reads the .ts itself)
            network = copy.deepcopy(self.network) if self.network is not None else None
            cached = self.runtimes[device] = (load_runtime(path, device=device, network=network), mtime)
        return cached[0]

    def run_inferer(self, data, convert_to_batch=True, device="cuda"):
        """``BasicInferTask.run_inferer`` (the override point MONAI Label documents) with :meth:`runtime` as the
        network, instead of ``network_def`` with the weights loaded."""
        inputs = data[self.input_key]
        inputs = inputs if torch.is_tensor(inputs) else torch.from_numpy(inputs)
        inputs = (inputs[None] if convert_to_batch else inputs).to(torch.device(device))
        with torch.no_grad():
            outputs = self.inferer(data)(inputs, self.runtime(device))
        data[self.output_label_key] = outputs[0] if convert_to_batch else outputs
        return data


# MONAI Label takes the first class of main.py whose *direct* bases include one named MONAILabelApp, hence the
# second base (the sample's MyApp already derives from it) and the sample imported as a module, not as a class
class EGEUNetApp(monaibundle_main.MyApp, MONAILabelApp):
    """The ``monaibundle`` app with the ``tta_uncertainty`` scoring method and active-learning strategy."""

    def _scoring_bundle(self) -> tuple[str, str] | None:
        wanted = self.conf.get("tta_uncertainty_model")
        if wanted and wanted.lower() == "none":
            return None
        for name, path in self.models.items():
            if name == wanted or (not wanted and name.startswith(BUNDLE_PREFIX)):
                return name, path
        logger.warning(f"{NAME}: no bundle {wanted or BUNDLE_PREFIX + '*'} among the models {list(self.models)}")
        return None

    def init_infers(self):
        infers = super().init_infers()
        if importlib.util.find_spec("egeunet_monai") is None:  # load_runtime is the package's
            logger.warning("egeunet_monai is not installed in this environment: the bundle's infer task runs its "
                           "network_def (pip install egeunet-monai, or scripts/setup_monailabel_env.sh)")
            return infers
        for name, path in self.models.items():
            if name.startswith(BUNDLE_PREFIX) and name in infers:
                infers[name] = RuntimeBundleInferTask(path, self.conf)
                logger.info(f"+++ Inferer:: {name} runs egeunet_monai.inference.load_runtime")
        return infers

    def init_scoring_methods(self):
        methods = super().init_scoring_methods()
        bundle = self._scoring_bundle()
        if bundle is None:
            return methods
        if importlib.util.find_spec("egeunet_monai") is None:
            logger.warning(
                f"{NAME}: scoring off, egeunet_monai is not installed in this environment "
                "(pip install egeunet-monai, or scripts/setup_monailabel_env.sh)"
            )
            return methods
        methods[NAME] = TTAUncertaintyScoring(bundle[1])
        logger.info(f"+++ Adding Scoring Method:: {NAME} => {bundle[1]}")
        return methods

    def init_strategies(self):
        strategies = super().init_strategies()
        strategies[NAME] = MostUncertain(reset_s=int(self.conf.get("tta_uncertainty_reset_s", 24 * 60 * 60)))
        logger.info(f"Active Learning Strategies:: {list(strategies)}")
        return strategies
