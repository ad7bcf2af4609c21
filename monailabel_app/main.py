# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The MONAI Label app for the EGE-UNet bundle: MONAI Label's ``monaibundle`` sample app (inference and training of
the bundles in ``model/``) plus active learning by test-time-augmentation uncertainty (``tta_uncertainty.py``):
the scoring method and the strategy ``tta_uncertainty``, for the bundle ``egeunet_skin_lesion_segmentation``.

``scripts/build_bundle.py --monailabel-app DIR`` makes the app: the sample app from the monailabel wheel, its
``main.py`` renamed ``monaibundle_main.py``, and this folder's files.

Options (``--conf NAME VALUE`` of ``monailabel start_server``), besides the sample app's:

- ``tta_uncertainty_model``: the bundle to score with (default: the first of ``--conf models`` whose name starts
  with ``egeunet_skin_lesion_segmentation``); ``none`` turns scoring off.
- ``tta_uncertainty_reset_s``: seconds before an image served by the strategy is served again (default 86400).
"""

from __future__ import annotations

import importlib.util
import logging

import monaibundle_main  # the sample app's main.py: a module, not `from ... import MyApp` (see below)
from monailabel.interfaces.app import MONAILabelApp
from tta_uncertainty import NAME, MostUncertain, TTAUncertaintyScoring

logger = logging.getLogger(__name__)

BUNDLE_PREFIX = "egeunet_skin_lesion_segmentation"  # also matches the model zoo's versioned names (..._v0.3.0)


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
