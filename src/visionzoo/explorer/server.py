"""The explorer's web server: FastAPI routes over `Explorer`, and the static page.

Every route answers JSON; errors are `{"error": "..."}` with a 4xx status (5xx only for a
bug, and then without a stack trace). Runs are addressed by the ids of `/api/runs`; no
route opens a path that the browser sends. Uploads are capped at MAX_UPLOAD_BYTES and
decoded images at MAX_PIXELS (a decompression bomb is refused before it is decoded).

Requests must name this machine in their Host header: a loopback name, or the address given
to `--host` (`HostCheck`). A page on another site that rebinds its DNS name to 127.0.0.1
would otherwise read the runs. HEAD works wherever GET does.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from visionzoo.explorer.data import (
    BadRun,
    Explorer,
    Failed,
    NotFound,
    lab_plot,
    load_lab,
)

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # the image itself
MAX_BODY_BYTES = MAX_UPLOAD_BYTES + 64 * 1024  # plus the multipart envelope
MAX_PIXELS = 4096 * 4096  # decoded width x height


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def plotly_js() -> Path:
    """plotly.min.js as the plotly Python package ships it (the page needs no CDN)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found in {path.parent}")
    return path


def index_html(static_export: bool = False) -> str:
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    flag = "true" if static_export else "false"
    return page.replace("/*VZ_STATIC*/false", flag)


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})


def host_name(header: str) -> str:
    """A Host header without its port, lower case: "[::1]:8000" -> "[::1]"."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[: end + 1] if end > 0 else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def allowed_hosts(host: str | None = None) -> frozenset[str]:
    """The loopback names plus `host` (an IPv6 address is written in brackets)."""
    extra = set()
    if host:
        h = host.strip().lower()
        extra.add(f"[{h}]" if ":" in h and not h.startswith("[") else h)
    return LOOPBACK_HOSTS | extra


class HostCheck:
    """ASGI middleware: 400 without a Host header, 421 for a name this server does not answer
    to; HEAD is answered as GET without the body."""

    def __init__(self, app: Any, hosts: frozenset[str]) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"host")
        if raw is None:
            return await _send_error(send, 400, "the request has no Host header")
        if host_name(raw.decode("latin-1")) not in self.hosts:
            names = ", ".join(sorted(self.hosts))
            return await _send_error(send, 421, f"this server answers to {names} only")
        if scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def send_headers_only(message: dict) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)


async def _send_error(send: Any, status: int, message: str) -> None:
    body = JSONResponse({"error": message}).body
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    runs: Path | str | None = None,
    results: Path | str | None = None,
    explorer: Explorer | None = None,
    host: str | None = None,
) -> FastAPI:
    """The explorer app over a runs folder and a results folder (either may be None).

    It answers requests whose Host is a loopback name or `host` (what `--host` was given).
    """
    ex = explorer or Explorer(runs, results)
    app = FastAPI(title="visionzoo explorer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.explorer = ex
    app.add_middleware(HostCheck, hosts=allowed_hosts(host))
    _add_error_handlers(app)
    _add_page_routes(app)
    _add_model_routes(app, ex)
    _add_run_routes(app, ex)
    _add_gallery_routes(app)
    return app


# Each error the Explorer raises, and the HTTP status that answers it.
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (NotFound, 404),
    (BadRun, 422),
    (Failed, 500),
)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is answered as {"error": one line}; a bug never shows its traceback."""

    async def _explorer_error(request: Request, err: Exception) -> JSONResponse:
        status = next(code for kind, code in ERROR_STATUS if isinstance(err, kind))
        return _error(status, str(err))

    for kind, _ in ERROR_STATUS:
        app.add_exception_handler(kind, _explorer_error)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return _error(err.status, err.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        msg = "not found" if err.status_code == 404 else str(err.detail)
        return _error(err.status_code, msg)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"invalid request: {where}: {first.get('msg', 'bad value')}")

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(err).__name__}); see the server's log")


def _add_page_routes(app: FastAPI) -> None:
    """The page, its static files and plotly."""

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(index_html(), headers={"Cache-Control": "no-store"})

    @app.get("/static/plotly.min.js")
    def plotly() -> FileResponse:
        # 4.6 MB that only changes with the plotly package: let the browser keep it
        cache = {"Cache-Control": "public, max-age=86400"}
        return FileResponse(plotly_js(), media_type="text/javascript", headers=cache)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)


def _add_model_routes(app: FastAPI, ex: Explorer) -> None:
    """The registry's models (card, profile, diagram, source) and the lab's claims."""

    @app.get("/api/models")
    def models() -> dict[str, Any]:
        return ex.overview()

    @app.get("/api/models/{name}")
    def card(name: str) -> dict[str, Any]:
        return ex.card(name)

    @app.get("/api/models/{name}/profile")
    def profile(name: str) -> dict[str, Any]:
        return ex.profile(name)

    @app.get("/api/models/{name}/diagram")
    def diagram(name: str) -> dict[str, Any]:
        return ex.diagram(name)

    @app.get("/api/models/{name}/source")
    def source(name: str) -> dict[str, Any]:
        return ex.source(name)

    @app.get("/api/lab")
    def lab() -> dict[str, Any]:
        return {"claims": load_lab(ex.results_root)}

    @app.get("/api/lab/{claim_id}/plot.png")
    def lab_png(claim_id: str) -> FileResponse:
        return FileResponse(lab_plot(ex.results_root, claim_id), media_type="image/png")


def _add_run_routes(app: FastAPI, ex: Explorer) -> None:
    """The trained runs, and predictions of one on an uploaded image."""

    @app.get("/api/runs")
    def run_list() -> dict[str, Any]:
        return {"runs": ex.runs(refresh=True), "live": True}

    @app.get("/api/runs/{run_id}")
    def run(run_id: str) -> dict[str, Any]:
        return ex.run(run_id)

    @app.post("/api/runs/{run_id}/predict")
    async def predict(run_id: str, request: Request) -> dict[str, Any]:
        ex.run(run_id)  # 404 before reading a byte of the upload
        data = await _read_image_upload(request)
        image = await run_in_threadpool(_decode, data)
        return await run_in_threadpool(_analyse, ex, run_id, image)


def _add_gallery_routes(app: FastAPI) -> None:
    """Pretrained torchvision models on an uploaded image."""

    @app.get("/api/gallery")
    def gallery() -> dict[str, Any]:
        from visionzoo.explorer.gallery import gallery

        return gallery()

    @app.post("/api/gallery/predict")
    async def gallery_predict(request: Request) -> dict[str, Any]:
        from visionzoo.explorer.gallery import predict_all

        data = await _read_image_upload(request)
        image = await run_in_threadpool(_decode, data)
        return await run_in_threadpool(predict_all, image)


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise ApiError(413, f"upload too large: the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"upload too large: the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_image_upload(request: Request) -> bytes:
    """The image bytes: a multipart form's `file` field, or a raw image/* body."""
    body = await _read_body(request)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):

        async def once() -> AsyncGenerator[bytes, None]:
            yield body

        try:
            form = await MultiPartParser(request.headers, once(), max_files=1, max_fields=4).parse()
        except MultiPartException as err:
            raise ApiError(400, f"malformed upload: {err.message}") from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "no image in the upload: send it as the form field 'file'")
        data = await upload.read()
        await form.close()
    elif ctype.startswith("image/") or ctype == "application/octet-stream":
        data = body
    else:
        raise ApiError(415, "send the image as multipart/form-data (field 'file') or image/*")
    if not data:
        raise ApiError(400, "the uploaded file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(413, f"upload too large: the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    return data


def _decode(data: bytes) -> Any:
    """Check the header's size before decoding anything, then decode through visionzoo."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, f"image too large: more than {MAX_PIXELS:,} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ApiError(
            400, "not an image that can be decoded (PNG, JPEG, GIF, BMP, WebP)"
        ) from None
    if w * h > MAX_PIXELS:
        raise ApiError(413, f"image too large: {w}x{h} is more than {MAX_PIXELS:,} pixels")
    from visionzoo.predict import decode_image

    try:
        return decode_image(data, max_pixels=MAX_PIXELS)
    except Exception as err:  # noqa: BLE001 - any decoder complaint is the upload's fault
        raise ApiError(400, f"could not decode the image: {err}") from None


def _analyse(ex: Explorer, run_id: str, image: Any) -> dict[str, Any]:
    from visionzoo.explorer.insight import BlankImage

    try:
        return ex.analyse(run_id, image)
    except BlankImage as err:
        raise ApiError(422, str(err)) from None
    except ValueError as err:  # e.g. an image the model cannot take
        raise ApiError(400, f"could not run the model on this image: {err}") from None


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
