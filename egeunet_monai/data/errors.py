# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Errors and warnings for dermoscopy input files."""

from __future__ import annotations

import os

__all__ = ["DermoscopyInputError", "DermoscopyInputWarning"]


class DermoscopyInputError(ValueError):
    """A dermoscopy image, mask or dataset folder that cannot be used as it is.

    A ``ValueError`` subclass, so callers that already catch ``ValueError`` keep working. The message always
    starts with the offending path so that one bad file among thousands can be found from a training log.

    Args:
        path: the file or folder at fault.
        problem: what is wrong with it, in words a user can act on.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"

    def __reduce__(self):
        # keep the two-argument constructor picklable: DataLoader workers send exceptions across processes
        return (self.__class__, (self.path, self.problem))


class DermoscopyInputWarning(UserWarning):
    """An input file that was usable only after a conversion (e.g. grayscale to RGB), or that looks suspicious
    (e.g. an empty mask). A separate category so that it can be filtered with ``warnings.filterwarnings``."""
