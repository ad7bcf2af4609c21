# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The local web viewer of ``egeunet-monai serve``."""

from egeunet_monai.viewer.app import DEFAULT_MAX_UPLOAD_BYTES, ResultStore, ViewerResult, create_app, serve

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "ResultStore", "ViewerResult", "create_app", "serve"]
