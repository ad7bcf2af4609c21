# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Lesion masks for many photographs at once: the bundle's inference pipeline as a pipeline of threads.

``predict_folder("photos/", "masks/", "model.pt")`` writes ``<stem>_mask.png`` (and with ``save_probabilities``
``<stem>_prob.png``, with ``save_overlays`` ``<stem>_overlay.png``) for every image, as ``configs/inference.json``
does, and returns one :class:`ImageResult` per image. While the network computes one batch, worker threads decode
and resize the next images and write the masks of the previous batch (PIL, NumPy and SciPy release the GIL while they
work). A file that cannot be read is reported by name and skipped; the others go on. ``egeunet-monai predict`` and
the viewer (:meth:`BatchPredictor.predict_one`) segment with it, and it imports no MONAI: start-up is the seconds a
small folder takes.

The computation is the bundle's, image for image (``tests/inference/test_batch_predict.py`` compares the masks):
min-max scaling of the whole image to [0, 255], MONAI's ``Resize`` to 256 x 256 (bilinear, with its Gaussian
anti-aliasing), the network, sigmoid, bilinear resize back to the image's own size, threshold 0.5, the quality
flags of that mask, then the config's clean-up (hole filling by default). It is computed with NumPy, so that
``predict`` on an ONNX Runtime model imports no PyTorch either (its import took 1-2 s of a 7-10 s run on 300
photographs). Two things are done differently, for speed, each the same function up to float rounding:

- both resizes are MONAI's ``Resize`` (and the inverse's ``F.interpolate``) applied once per image size to the unit
  vectors of each axis, kept as two sparse matrices (256 x H and 256 x W), and applied as two sparse matrix
  products (SciPy), the min-max scaling after them: about 2 ms per 765 x 572 photograph on one thread instead of
  about 60 ms for MONAI's separable convolutions (the result differs by at most about 1e-4 on the [0, 255] scale);
- arrays are H x W (rows first), as images are shown and saved, without MONAI's metadata.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "BatchPredictor",
    "ImageResult",
    "fill_holes",
    "predict_folder",
    "prepare_image",
    "resize_matrix",
    "restore_mask",
]

# zlib level 1: a binary mask compresses almost as well as at the default level 6, several times faster
PNG_COMPRESS_LEVEL = 1


def resize_matrix(size: int, out: int) -> np.ndarray:
    """MONAI's ``Resize(mode="bilinear", anti_aliasing=True)`` along one axis of ``size`` pixels to ``out``, as an
    ``out x size`` float32 matrix: the transform applied to the unit vectors of that axis (the other axis is left as
    it is, which ``Resize`` does exactly). Resizing an image is separable, so ``A_h @ image @ A_w.T`` is MONAI's
    resize; when enlarging it is ``F.interpolate(mode="bilinear", align_corners=False)``, the inverse's resize.

    MONAI's operations, in float32 as PyTorch computes them (``predict`` imports neither): when shrinking,
    ``GaussianSmooth`` with skimage's sigma ``(size / out - 1) / 2`` (``gaussian_1d``, ``erf`` approximation,
    truncated at 4 sigma, zero padding), then ``F.interpolate`` (linear, ``align_corners=False``: source pixel
    ``(i + 0.5) * size / out - 0.5``, clamped at 0). ``tests/inference/test_batch_predict.py`` checks it against
    MONAI's ``Resize``."""
    f32 = np.float32
    offsets, kernel = np.zeros(1, np.int64), np.ones(1, f32)  # no smoothing when enlarging
    if out < size:
        # as MONAI computes it: factors = Tensor(in) / Tensor(out), sigma = max(0, (factor - 1) / 2)
        sigma = max(f32(0), (f32(size) / f32(out) - f32(1)) / f32(2))
        tail = int(max(float(sigma) * 4.0, 0.5) + 0.5)
        t = f32(0.70710678) / sigma
        x = np.arange(-tail, tail + 1, dtype=f32)
        kernel = np.array([max(0.0, 0.5 * (math.erf(t * (k + f32(0.5))) - math.erf(t * (k - f32(0.5))))) for k in x],
                          dtype=f32)
        offsets = x.astype(np.int64)
    source = np.maximum((np.arange(out, dtype=f32) + f32(0.5)) * (f32(size) / f32(out)) - f32(0.5), f32(0))
    first = source.astype(np.int64)
    weight = source - first.astype(f32)
    matrix = np.zeros((out, size), dtype=f32)
    rows = np.arange(out)
    # row i of the interpolation mixes input pixels first and first + 1 (the last one twice at the border); each of
    # those is, after the smoothing with zero padding, the kernel centred on it and cut at the image's edges
    for centre, share in ((first, f32(1) - weight), (np.minimum(first + 1, size - 1), weight)):
        for offset, tap in zip(offsets, kernel):
            column = centre + offset
            inside = (column >= 0) & (column < size)
            np.add.at(matrix, (rows[inside], column[inside]), share[inside] * tap)
    return matrix


@lru_cache(maxsize=512)  # a few KiB each: the photographs of a folder come in a handful of sizes
def _sparse_resize(size: int, out: int):
    """:func:`resize_matrix` in CSR form (each row has a few non-zeros: the Gaussian's and the interpolation's
    support), and its row sums (below 1 near the borders, where MONAI's smoothing pads with zeros)."""
    from scipy.sparse import csr_array

    matrix = resize_matrix(size, out)
    return csr_array(matrix), matrix.sum(1)


def prepare_image(array: np.ndarray, image_size: Sequence[int] = (256, 256)) -> np.ndarray:
    """The network input for one photograph: ``configs/inference.json``'s ``ScaleIntensityd(0, 255)`` and
    ``Resized(image_size, bilinear, anti_aliasing)``, on an H x W x 3 ``uint8`` array; returns 3 x h x w float32.

    Both are linear, so the min-max scaling is applied after the resize, to the smaller image:
    ``A (s x - s lo) = s (A x) - s lo (A 1)``."""
    height, width = array.shape[:2]
    out_h, out_w = (int(s) for s in image_size)
    lo, hi = float(array.min()), float(array.max())
    # rows first, the three channels interleaved in each row: the first product needs no transposed copy
    x = np.asarray(array).reshape(height, width * 3).astype(np.float32)
    rows_h = rows_w = None
    if height != out_h:
        matrix, rows_h = _sparse_resize(height, out_h)
        x = matrix @ x
    x = x.reshape(out_h, width, 3).transpose(1, 0, 2).reshape(width, out_h * 3)
    if width != out_w:
        matrix, rows_w = _sparse_resize(width, out_w)
        x = matrix @ x
    x = x.reshape(out_w, out_h, 3).transpose(2, 1, 0)
    ones = np.outer(rows_h if rows_h is not None else np.ones(out_h, np.float32),
                    rows_w if rows_w is not None else np.ones(out_w, np.float32))
    # MONAI's rescale_array: (x - min) / (max - min) * 255; a constant image becomes 0
    scale = np.float32(255.0 / (hi - lo) if hi > lo else 0.0)
    return np.ascontiguousarray((x - np.float32(lo) * ones) * scale, dtype=np.float32)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function in float32 (``torch.sigmoid``'s values up to float rounding)."""
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x < -88: 1 / (1 + inf) is the right 0
        return (1 / (1 + np.exp(-logits, dtype=np.float32))).astype(np.float32)


def restore_mask(probability: np.ndarray, height: int, width: int, threshold: float = 0.5):
    """The bundle's postprocessing after the sigmoid: ``Invertd`` of the resize (bilinear, no anti-aliasing) to
    ``height x width`` and ``AsDiscreted(threshold)`` (foreground where ``p >= threshold``).

    Args:
        probability: 1 x h x w sigmoid output of one image.

    Returns:
        ``(probability, mask)``: H x W float32 and H x W ``uint8`` 0/255.
    """
    prob = np.asarray(probability, dtype=np.float32)[0]
    if prob.shape[0] != height:
        prob = _sparse_resize(prob.shape[0], height)[0] @ prob
    if prob.shape[1] != width:
        prob = (_sparse_resize(prob.shape[1], width)[0] @ prob.T).T
    return prob, np.where(prob >= threshold, 255, 0).astype(np.uint8)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """MONAI's ``FillHoles()`` of one binary H x W mask: SciPy's ``binary_fill_holes`` with full connectivity,
    computed by labelling the background once (8-connected, as that structure) and keeping what touches the border:
    the same pixels (tests/inference/test_start_up.py), 2 ms instead of 9 ms for a PH2 photograph's lesion (one
    thread), where ``binary_fill_holes`` dilates from the border one step at a time."""
    from scipy import ndimage

    background, count = ndimage.label(~mask, structure=np.ones((3, 3), dtype=bool))
    filled = np.ones(count + 1, dtype=bool)  # per label: label 0 is the mask itself, kept
    filled[np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])] = False
    filled[0] = True
    return filled[background]


@dataclass(frozen=True)
class ImageResult:
    """What :meth:`BatchPredictor.predict` did with one image.

    Args:
        path: the image file.
        mask_path: the ``<stem>_mask.png`` written (``None`` when the image failed).
        probability_path: the ``<stem>_prob.png`` written, with ``save_probabilities``.
        overlay_path: the ``<stem>_overlay.png`` written (the outline on the photograph), with ``save_overlays``.
        height: image height in pixels (0 when it failed).
        width: image width in pixels.
        area_px: lesion pixels in the mask.
        mean_confidence: mean probability over the lesion pixels; NaN when the mask is empty.
        flags: the quality flags of the thresholded mask (:func:`~egeunet_monai.inference.quality.quality_flags`,
            before the clean-up of holes and pieces, as :class:`~egeunet_monai.inference.LesionPredictor` reports).
        error: why the image was skipped (the reader's message, which names the file), else ``None``.
    """

    path: Path
    mask_path: Path | None = None
    probability_path: Path | None = None
    overlay_path: Path | None = None
    height: int = 0
    width: int = 0
    area_px: int = 0
    mean_confidence: float = math.nan
    flags: tuple[str, ...] = ()
    error: str | None = None

    @property
    def stats(self):
        """The :class:`~egeunet_monai.inference.LesionStats` of this image (what the CSV and the viewer show)."""
        from egeunet_monai.inference.predictor import LesionStats

        return LesionStats(self.width, self.height, self.area_px, self.area_px / float(self.width * self.height),
                           self.mean_confidence, flags=self.flags)


class BatchPredictor:
    """Segment many images with a runtime of :func:`~egeunet_monai.inference.runtime.load_runtime` (or the
    PyTorch-free :func:`~egeunet_monai.inference.ort_session.open_cached_session`), in batches, with decoding,
    resizing and writing on worker threads.

    Args:
        runtime: ``logits = runtime.logits(images)`` on N x 3 x h x w float32 arrays; for throughput give it one
            thread (``load_runtime(w, threads=1)``) and the other cores to the workers.
        output_dir: where the masks go.
        batch_size: images per network call.
        workers: threads that decode, resize and write; default: the CPU count.
        threshold: probability threshold of the mask.
        image_size: (height, width) the network runs at.
        save_probabilities: also write ``<stem>_prob.png`` (probability x 255, as the bundle's ``SaveImaged``).
        save_overlays: also write ``<stem>_overlay.png``: the mask's outline on the photograph.
        fill_holes: fill the mask's holes (MONAI's ``FillHoles``), as ``configs/inference.json``'s ``fill_holes``.
        largest_component: keep the largest piece only (MONAI's ``KeepLargestConnectedComponent``, which
            runs on scikit-image on CPU), as the config's ``largest_component``.
    """

    def __init__(
        self,
        runtime,
        output_dir: str | os.PathLike,
        batch_size: int = 8,
        workers: int | None = None,
        threshold: float = 0.5,
        image_size: Sequence[int] = (256, 256),
        save_probabilities: bool = False,
        save_overlays: bool = False,
        fill_holes: bool = True,
        largest_component: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.runtime = runtime
        self.output_dir = Path(output_dir)
        self.batch_size = int(batch_size)
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self.threshold = float(threshold)
        self.image_size = tuple(int(s) for s in image_size)
        self.save_probabilities = bool(save_probabilities)
        self.save_overlays = bool(save_overlays)
        self.fill_holes = bool(fill_holes)
        self.largest_component = bool(largest_component)
        self.tta = False  # no test-time augmentation: that is LesionPredictor's (see open_predictor)
        #: the weights file the runtime was made from (the viewer shows it)
        self.weights = getattr(runtime, "weights", None)

    def _read(self, path: Path):
        """``(network input, (height, width), photograph or None)``; raises ``DermoscopyInputError``."""
        from egeunet_monai.data.photo import read_photo

        # the bundle reader's array (rows first, EXIF orientation, RGB) and checks, which name the failing file
        array = read_photo(path)
        photo = array if self.save_overlays else None  # kept only to draw on
        return prepare_image(array, self.image_size), array.shape[:2], photo

    def _load(self, path: Path):
        from egeunet_monai.data.errors import DermoscopyInputError

        try:
            return self._read(path)
        except DermoscopyInputError as err:
            return ImageResult(path, error=str(err))
        except Exception as err:  # one file's failure, whatever it is, must not stop the others
            return ImageResult(path, error=f"{path}: {type(err).__name__}: {err}")

    def _clean(self, mask: np.ndarray) -> np.ndarray:
        """The config's clean-up after the threshold: MONAI's ``KeepLargestConnectedComponent`` (only when asked:
        it imports MONAI), then MONAI's ``FillHoles`` as :func:`fill_holes` computes it."""
        if self.largest_component:
            import torch
            from monai.transforms import KeepLargestConnectedComponent

            kept = KeepLargestConnectedComponent()(torch.from_numpy((mask > 0).astype(np.float32))[None])
            mask = np.where(np.asarray(kept)[0] > 0, 255, 0).astype(np.uint8)
        if self.fill_holes:
            mask = np.where(fill_holes(mask > 0), 255, 0).astype(np.uint8)
        return mask

    def _finish(self, path: Path, logits: np.ndarray, height: int, width: int, photo):
        """Threshold, flags, clean-up and files of one image: ``(ImageResult, mask, probability)``."""
        from PIL import Image

        from egeunet_monai.inference.quality import quality_flags
        from egeunet_monai.visualize import draw_overlay

        # the sigmoid here, on a worker thread, rather than on the network's thread
        prob, thresholded = restore_mask(sigmoid(logits), height, width, self.threshold)
        flags = tuple(quality_flags(thresholded))
        mask = self._clean(thresholded)
        mask_path = self.mask_path(path)
        Image.fromarray(mask).save(mask_path, compress_level=PNG_COMPRESS_LEVEL)
        prob_path = None
        if self.save_probabilities:
            prob_path = self.probability_path(path)
            # the bundle's PILWriter: clip to [0, 1], scale by 255, cast (truncating) to uint8
            scaled = (np.clip(prob, 0.0, 1.0) * 255).astype(np.uint8)
            Image.fromarray(scaled).save(prob_path, compress_level=PNG_COMPRESS_LEVEL)
        overlay_path = None
        if photo is not None:
            overlay_path = self.output_dir / f"{path.stem}_overlay.png"
            Image.fromarray(draw_overlay(photo, mask)).save(overlay_path, compress_level=PNG_COMPRESS_LEVEL)
        lesion = mask > 0
        area = int(lesion.sum())
        confidence = float(prob[lesion].mean()) if area else math.nan
        result = ImageResult(path, mask_path, prob_path, overlay_path, height, width, area, confidence, flags)
        return result, mask, prob

    def _write(self, path: Path, logits: np.ndarray, height: int, width: int, photo) -> ImageResult:
        try:
            return self._finish(path, logits, height, width, photo)[0]
        except Exception as err:  # e.g. a full disk: reported for this file, the others go on
            return ImageResult(path, height=height, width=width, error=f"{path}: {type(err).__name__}: {err}")

    def _infer(self, images: list[np.ndarray]) -> np.ndarray:
        """The runtime's logits of a batch, float32."""
        return self.runtime.logits(np.stack(images))

    def mask_path(self, path: str | os.PathLike) -> Path:
        """Where the mask of ``path`` is written: ``<output_dir>/<stem>_mask.png``."""
        return self.output_dir / f"{Path(path).stem}_mask.png"

    def probability_path(self, path: str | os.PathLike) -> Path:
        """Where the probability map of ``path`` is written (with ``save_probabilities``)."""
        return self.output_dir / f"{Path(path).stem}_prob.png"

    def predict_one(self, path: str | os.PathLike):
        """One image, on the calling thread, by the same steps as :meth:`predict` (the viewer's request; the
        ``predict`` command's masks are these): a :class:`~egeunet_monai.inference.Prediction`, the mask written.

        Raises:
            egeunet_monai.data.DermoscopyInputError: the file cannot be read as a photograph (the message names it).
        """
        from egeunet_monai.inference.predictor import Prediction

        path = Path(path)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        image, (height, width), photo = self._read(path)
        result, mask, prob = self._finish(path, self._infer([image])[0], height, width, photo)
        return Prediction(mask, prob, result.stats)

    def predict(self, files: Iterable[str | os.PathLike]) -> Iterator[ImageResult]:
        """Segment ``files``, yielding one result per file in their order (failed files included, with
        ``error`` set), each once its mask is written."""
        paths = [Path(f) for f in files]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        # the parallelism is across images: NumPy's element-wise work and PIL's codecs run on one core each
        pool = ThreadPoolExecutor(self.workers, "egeunet-batch")
        try:
            yield from self._pipeline(paths, pool)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _pipeline(self, paths: list[Path], pool) -> Iterator[ImageResult]:
        loads: deque[tuple[Path, Future]] = deque()
        pending: deque[Future] = deque()  # one per image, in input order: its ImageResult
        upcoming = iter(paths)
        window = 2 * self.batch_size  # images decoded ahead of the network

        def refill() -> None:
            while len(loads) < window:
                path = next(upcoming, None)
                if path is None:
                    return
                loads.append((path, pool.submit(self._load, path)))

        def done(result: ImageResult) -> Future:
            future: Future = Future()
            future.set_result(result)
            return future

        refill()
        while loads:
            batch = []  # (path, network input, (height, width), photograph or None, its result to come)
            while loads and len(batch) < self.batch_size:
                path, future = loads.popleft()
                refill()
                loaded = future.result()
                if isinstance(loaded, ImageResult):  # unreadable: reported in its place, the rest goes on
                    pending.append(done(loaded))
                    continue
                placeholder: Future = Future()
                pending.append(placeholder)
                batch.append((path, *loaded, placeholder))
            if batch:
                logits = self._infer([item[1] for item in batch])
                for (path, _, (height, width), photo, placeholder), image_logits in zip(batch, logits):
                    write = pool.submit(self._write, path, image_logits, height, width, photo)
                    write.add_done_callback(lambda f, p=placeholder: _forward_result(f, p))
            while pending and pending[0].done():
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _forward_result(source: Future, target: Future) -> None:
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


def predict_folder(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    weights: str | os.PathLike,
    batch_size: int = 8,
    workers: int | None = None,
    runtime: str = "auto",
    threads: int | None = 1,
    save_probabilities: bool = False,
    save_overlays: bool = False,
    progress: bool = True,
) -> list[ImageResult]:
    """Masks for a folder (or a list) of photographs; see :class:`BatchPredictor`.

    Args:
        inputs: an image, a folder of images (or its ``images/`` subfolder; masks are left out, as by
            :func:`~egeunet_monai.data.list_images`), or a list of image files.
        output_dir: where ``<stem>_mask.png`` go.
        weights: ``.pt``/``.pth``/``.ts``/``.onnx`` (see :func:`~egeunet_monai.inference.runtime.load_runtime`; a
            cached ONNX export runs without importing PyTorch: :func:`~egeunet_monai.inference.ort_session.open_runtime`).
        batch_size: images per network call.
        workers: decoding/writing threads; default the CPU count.
        runtime: ``"auto"`` (the fastest installed) or ``"eager"``, ``"torchscript"``, ``"onnxruntime"``.
        threads: the network's intra-op threads (one leaves the other cores to the workers).
        save_probabilities: also write ``<stem>_prob.png``.
        save_overlays: also write ``<stem>_overlay.png``.
        progress: show a tqdm progress bar.
    """
    from tqdm import tqdm

    from egeunet_monai.data.datalist import list_images
    from egeunet_monai.inference.ort_session import open_runtime

    if isinstance(inputs, (str, os.PathLike)):
        files = [item["image"] for item in list_images(inputs)]
    else:
        files = [os.fspath(f) for f in inputs]
    net = open_runtime(weights, runtime=runtime, threads=threads)
    predictor = BatchPredictor(
        net, output_dir, batch_size, workers, save_probabilities=save_probabilities, save_overlays=save_overlays
    )
    results = []
    for result in tqdm(predictor.predict(files), total=len(files), unit="image", disable=not progress):
        if result.error is not None:
            tqdm.write(f"skipped {result.error}")
        results.append(result)
    return results
