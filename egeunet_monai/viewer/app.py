# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""A small local web app: upload a dermoscopy photograph, see the predicted lesion, download the mask.

Starlette (the ASGI toolkit under FastAPI) served by uvicorn: both are small, widely used and actively maintained;
the app needs four routes and a static page, which Starlette expresses directly, without FastAPI's schema layer or
a UI framework's dependencies and start-up cost. The photo is sent as the raw request body (``fetch`` with the
file as body), so no multipart parser is needed either.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from PIL import Image

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "ResultStore", "ViewerResult", "create_app", "serve"]

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
_ACCEPTED_FORMATS = {"JPEG": ".jpg", "PNG": ".png"}
_RESULT_ID = re.compile(r"^[0-9a-f]{32}$")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


@dataclass(frozen=True)
class ViewerResult:
    """One segmented upload; immutable, and found only by its server-generated ``result_id``."""

    result_id: str
    filename: str
    folder: Path
    stats: dict

    @property
    def mask_file(self) -> Path:
        return self.folder / f"{self.result_id}_mask.png"

    @property
    def overlay_file(self) -> Path:
        return self.folder / "overlay.jpg"

    @property
    def download_name(self) -> str:
        stem = _UNSAFE_NAME.sub("_", Path(self.filename).stem).strip(" .") or "image"
        return f"{stem}_mask.png"


class ResultStore:
    """The latest ``capacity`` results by id; older ones are forgotten and their files deleted."""

    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self._results: OrderedDict[str, ViewerResult] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, result: ViewerResult) -> None:
        with self._lock:
            self._results[result.result_id] = result
            while len(self._results) > self.capacity:
                _, old = self._results.popitem(last=False)
                shutil.rmtree(old.folder, ignore_errors=True)

    def get(self, result_id: str) -> ViewerResult | None:
        if not _RESULT_ID.match(result_id):
            return None
        with self._lock:
            return self._results.get(result_id)


class UploadError(Exception):
    """An upload refused with a message for the page, and its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _check_image(data: bytes, filename: str) -> str:
    """The file suffix for an upload that is a JPEG or PNG (by content, not by name), else ``UploadError``."""
    if not data:
        raise UploadError(400, f"{filename} is empty (0 bytes).")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
    except Exception:
        raise UploadError(415, f"{filename} is not an image: please choose a JPEG or PNG photograph.") from None
    if fmt not in _ACCEPTED_FORMATS:
        raise UploadError(415, f"{filename} is a {fmt} image: please choose a JPEG or PNG photograph.")
    return _ACCEPTED_FORMATS[fmt]


def _segment(predictor, store: ResultStore, work_dir: Path, data: bytes, filename: str) -> ViewerResult:
    """Run in a worker thread: save the upload under a new id, segment it, draw the overlay, store the result."""
    from egeunet_monai.inference import load_photo
    from egeunet_monai.visualize import draw_overlay

    suffix = _check_image(data, filename)
    result_id = uuid.uuid4().hex
    folder = work_dir / result_id
    folder.mkdir()
    upload = folder / f"{result_id}{suffix}"
    upload.write_bytes(data)
    try:
        mask, _, stats = predictor.predict_one(upload)
        # the predictor wrote <id>_mask.png into its folder: keep it with the result
        shutil.move(str(predictor.mask_path(upload)), folder / f"{result_id}_mask.png")
        overlay = draw_overlay(load_photo(upload), mask, fill_alpha=0.0)
        Image.fromarray(overlay).save(folder / "overlay.jpg", quality=90)
    except Exception as err:
        shutil.rmtree(folder, ignore_errors=True)
        problem = getattr(err, "problem", None) or f"{type(err).__name__}: {err}"
        raise UploadError(422, f"{filename} could not be segmented: {problem}.") from err
    result = ViewerResult(result_id=result_id, filename=filename, folder=folder, stats=stats.as_dict())
    store.add(result)
    return result


def create_app(predictor, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, work_dir: str | Path | None = None,
               capacity: int = 100):
    """The Starlette app around a loaded predictor of :func:`~egeunet_monai.inference.open_predictor` (the
    ``predict`` command's: its masks are the command's).

    Routes: ``GET /`` the page; ``POST /api/segment`` the photo as the raw body (``X-File-Name`` header: its
    URL-encoded name) -> JSON with the result id, the stats and the URLs below; ``GET /api/results/{id}/overlay.jpg``
    and ``/mask.png``. Errors are JSON ``{"error": message}`` with a 4xx status.

    Args:
        predictor: the model, loaded once and shared by all requests (its ``predict_one`` is thread-safe).
        max_upload_bytes: larger uploads are refused with 413.
        work_dir: where uploads and results are kept; default a new temporary folder, removed at shutdown.
        capacity: how many results are kept for display and download.
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from egeunet_monai.viewer.page import render_page

    own_dir = work_dir is None
    root = Path(tempfile.mkdtemp(prefix="egeunet_viewer_")) if own_dir else Path(work_dir)
    root.mkdir(parents=True, exist_ok=True)
    store = ResultStore(capacity)
    page = render_page(max_upload_bytes)
    limit_mb = f"{max_upload_bytes / (1024 * 1024):g} MB"

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def segment(request: Request) -> Response:
        filename = unquote(request.headers.get("x-file-name", "")).strip() or "the upload"
        filename = filename.replace("\\", "/").rsplit("/", 1)[-1][:200]
        too_big = f"{filename} is larger than the {limit_mb} limit: please upload a smaller photograph."
        body = bytearray()
        received = 0
        # the whole body is read even when it is too large (and the excess dropped): a server that answers before
        # the client has finished sending makes browsers and HTTP clients report a broken connection instead of
        # the message. Reading stops at 8x the limit, against a client that never stops.
        async for chunk in request.stream():
            received += len(chunk)
            if received <= max_upload_bytes:
                body += chunk
            elif received > 8 * max_upload_bytes:
                break
        if received > max_upload_bytes:
            return error(413, too_big)
        try:
            result = await run_in_threadpool(_segment, predictor, store, root, bytes(body), filename)
        except UploadError as err:
            return error(err.status, err.message)
        base = f"/api/results/{result.result_id}"
        return JSONResponse({
            "id": result.result_id,
            "filename": result.filename,
            **result.stats,
            "overlay_url": f"{base}/overlay.jpg",
            "mask_url": f"{base}/mask.png",
            "download_name": result.download_name,
        })

    async def result_file(request: Request) -> Response:
        result = store.get(request.path_params["result_id"])
        if result is None or request.path_params["name"] not in ("mask.png", "overlay.jpg"):
            return error(404, "no such result (it may have expired): please upload the image again.")
        if request.path_params["name"] == "mask.png":
            return FileResponse(result.mask_file, media_type="image/png", filename=result.download_name,
                                content_disposition_type="attachment" if "download" in request.query_params
                                else "inline")
        return FileResponse(result.overlay_file, media_type="image/jpeg")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            if own_dir:
                shutil.rmtree(root, ignore_errors=True)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/segment", segment, methods=["POST"]),
            Route("/api/results/{result_id}/{name:str}", result_file),
        ],
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.work_dir = root
    return app


def serve(predictor, host: str = "127.0.0.1", port: int = 8000,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> None:
    """Serve the viewer with uvicorn until interrupted (Ctrl+C)."""
    import uvicorn

    app = create_app(predictor, max_upload_bytes=max_upload_bytes)
    print(f"EGE-UNet viewer on http://{host}:{port}  (weights: {predictor.weights}; Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
