# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""A MONAI PNG writer for arrays whose first spatial axis is the image's rows, as DermoscopyImageReader reads them."""

from __future__ import annotations

from typing import Any

from monai.config import PathLike
from monai.data import PILWriter

__all__ = ["RowsFirstPILWriter"]


class RowsFirstPILWriter(PILWriter):
    """MONAI's :class:`~monai.data.PILWriter` for (H, W) arrays: the picture is written as the array is laid out.

    ``PILWriter`` swaps the first two axes by default (``reverse_indexing=True`` of its ``write``), the inverse of
    ``PILReader``'s default; :class:`~egeunet_monai.data.DermoscopyImageReader` reads rows first (H x W), so
    writing its arrays back needs ``reverse_indexing=False``. A writer class rather than
    ``SaveImaged(...).set_options(write_kwargs={"reverse_indexing": False})``: the choice is one ``"writer"`` line of
    a bundle config, visible where the ``SaveImaged`` is declared, and it holds for every ``SaveImage`` that names it.
    An explicit ``reverse_indexing`` passed to :meth:`write` still wins.

    Example::

        SaveImaged(keys="pred", output_ext=".png", output_dtype=np.uint8, scale=255,
                   writer="egeunet_monai.data.RowsFirstPILWriter")
    """

    def write(self, filename: PathLike, verbose: bool = False, **kwargs: Any) -> None:
        """Write ``self.data_obj`` (set by ``set_data_array``) to ``filename``, without swapping its axes.

        Args:
            filename: the output file.
            verbose: log the progress.
            kwargs: as ``PILWriter.write`` (``image_mode``, PIL ``save`` options); ``reverse_indexing`` defaults to
                ``False``.
        """
        kwargs.setdefault("reverse_indexing", False)
        super().write(filename, verbose=verbose, **kwargs)
