# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The ``egeunet-monai`` command line (see ``egeunet-monai --help``)."""

from egeunet_monai.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
