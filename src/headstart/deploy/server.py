"""The prediction server of ``headstart serve RUN``: a FastAPI app over a run folder, with dynamic batching.

Endpoints: ``POST /predict`` (image runs: multipart image files in the field ``files``; text runs:
JSON ``{"texts": [...]}``; ``?top_k=``; ``?explain=true``: heat maps or words), ``GET /health``,
``GET /metadata``, OpenAPI docs at ``/docs``.
``/predict`` answers the same rows as ``headstart predict RUN ... --format json`` (``path`` is the
uploaded file's name). The model is loaded once per worker process; the items of concurrent requests
run as one forward pass (``batching.Batcher``). Every refused request is a 4xx JSON
``{"error": ..., "expected": ..., "found": ...}`` and the server goes on answering.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import socket
import tempfile
import threading
import time
from contextlib import asynccontextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from headstart import __version__
from headstart.core import runfolder
from headstart.deploy.batching import Batcher
from headstart.errors import HeadstartError
from headstart.tasks import task_of_run
from headstart.tasks.text import joined

FIELD = "files"  # the multipart field that holds the images of a request
ENVIRONMENT = "HEADSTART_SERVE"  # --workers N: how each worker process learns its run and limits
ENDPOINTS = "POST /predict, GET /health, GET /metadata, GET /docs"


@dataclass
class Limits:
    """Batching knobs and request limits of one server."""

    max_batch: int = 32  # items per forward pass (1: no batching, each request alone)
    max_wait_ms: float = 5.0  # how long the first waiting request waits for others to join its batch
    max_items: int = 64  # items per request
    max_bytes: int = 32 * 2**20  # request body size
    timeout: float = 30.0  # seconds a request may wait for its answer
    max_pixels: int = 40_000_000  # pixels per image, read from its header before it is decoded

    def check(self) -> None:
        for name in ("max_batch", "max_items", "max_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, found {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.timeout <= 0:
            raise ValueError(f"--max-wait-ms must be 0 or more and --timeout more than 0, found {self.max_wait_ms} "
                             f"and {self.timeout}")


class ErrorBody(BaseModel):
    """Every refused request: what went wrong, what the server expected and what it found."""

    error: str
    expected: Any = None
    found: Any = None


class RequestError(Exception):
    """A request the server refuses: the HTTP status and the three fields of ``ErrorBody``."""

    def __init__(self, status: int, error: str, expected: Any = None, found: Any = None) -> None:
        super().__init__(error)
        self.status, self.error, self.expected, self.found = status, error, expected, found

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "expected": self.expected, "found": self.found}, self.status)


# ----------------------------------------------------------------------------------------------- the model
class ModelService:
    """A run's estimator, loaded once, and the one function the batcher calls: items -> one result each."""

    def __init__(self, run: str | Path, limits: Limits, workers: int = 1) -> None:
        self.run, self.limits = Path(run), limits
        self.task = task_of_run(run)
        self.estimator = self.task.estimator_class().load(run)
        self.takes_texts = self.task.inputs == "texts"
        cfg = self.estimator.config
        cfg.data.strict = False  # an unreadable upload is that request's error, not the batch's
        cfg.data.max_pixels = min(cfg.data.max_pixels, limits.max_pixels)
        cfg.data.inference_batch_size = cfg.data.inference_batch_size or limits.max_batch  # one forward per batch
        if workers > 1 and not cfg.device.threads:
            cfg.device.threads = max(1, (os.cpu_count() or 1) // workers)  # workers share the cores
        self.classes = list(self.estimator.classes_)
        self.sha256 = runfolder.file_sha256(self.run / "model.safetensors")
        self.spec = runfolder.read_spec(self.run)
        self.meta = runfolder.read_meta(self.run)

    @property
    def explains(self) -> str | None:
        """What ``?explain=true`` adds to this model's rows: ``heatmap_png`` (image classifiers), ``evidence`` (text
        classifiers), or None (detection, segmentation)."""
        return {"image": "heatmap_png", "multilabel": "heatmap_png", "text": "evidence",
                "text-multilabel": "evidence"}.get(self.task.name)

    def predict_batch(self, items: list[tuple[Any, bool]]) -> list[dict[str, Any]]:
        """One row per ``(item, explain)`` (every class in ``top_k``, every detection); ``{"error": ...}`` for an
        unreadable image. The explained items of a batch run as one call, the others as another."""
        rows: list[dict[str, Any]] = [{} for _ in items]
        for explain in (False, True):
            at = [i for i, (_, wanted) in enumerate(items) if wanted == explain]
            if at:
                for i, row in zip(at, self._predict([items[i][0] for i in at], explain), strict=True):
                    rows[i] = row
        return rows

    def _predict(self, items: list[Any], explain: bool) -> list[dict[str, Any]]:
        """The rows of ``items`` (texts, or ``(name, bytes)`` images), with what they rest on where ``explain``."""
        if self.takes_texts:
            rows = self.estimator.predict(items, top_k=len(self.classes), **({"evidence": True} if explain else {}))
            if len(rows) != len(items):
                raise RuntimeError(f"{len(rows)} predictions for {len(items)} texts")
            return rows
        top = {"top_k": None} if self.task.name == "detection" else {"top_k": len(self.classes)}
        with tempfile.TemporaryDirectory(prefix="headstart-serve-") if explain else nullcontext() as drawn:
            # errors: a row saying why an image was not read
            rows = self.estimator.predict(items, errors=True, **top, **({"save_heatmaps": drawn} if explain else {}))
            rows = [_png_as_base64(r, "heatmap", "heatmap_png") for r in rows]
        if self.task.name == "segmentation":
            rows = [_mask_as_png(r) for r in rows]
        by_name = {r.get("path"): r for r in rows}
        lost = {"error": "the file could not be decoded as an image (truncated or damaged)"}
        return [by_name.get(name, lost) for name, _ in items]

    def metadata(self) -> dict[str, Any]:
        backbone = self.spec.get("backbone", {})
        skip = {"groups", "num_params", "feature_dim", "source"}
        preprocessing = {k: v for k, v in backbone.items() if k not in skip}
        if self.task.name == "detection":
            preprocessing["image_size"] = self.estimator.config.detection.image_size
        if self.task.name == "segmentation":  # shorter side resized to it; masks come back at the image's own size
            preprocessing["image_size"] = self.estimator.config.segmentation.image_size
        item = ({"content_type": "application/json", "body": {"texts": ["..."]}} if self.takes_texts else
                {"content_type": "multipart/form-data", "field": FIELD, "max_pixels": self.limits.max_pixels})
        meta = {"task": self.task.name, "run_kind": self.task.run_kind, "classes": self.classes,
                "inputs": self.task.inputs, "request": item, "preprocessing": preprocessing,
                "model_file": "model.safetensors", "model_sha256": self.sha256, "headstart_version": __version__,
                "trained_with": self.meta.get("headstart_version"), "run": str(self.run.resolve()),
                "limits": asdict(self.limits)}
        if self.takes_texts and len(self.spec.get("text_columns") or []) > 1:  # each text as a list of its parts
            item["body"] = {"texts": [[f"<{c}>" for c in self.spec["text_columns"]]]}
            meta["text_columns"] = self.spec["text_columns"]
        if hasattr(self.estimator, "thresholds_"):  # multi-label: a label applies at its class's threshold
            meta["thresholds"] = dict(zip(self.classes, self.estimator.thresholds_))
        meta["explain"] = self.explains  # what ?explain=true adds to each row
        if getattr(self.estimator, "operating_point_", None) is not None:  # p(positive) >= threshold decides
            meta["operating_point"] = self.estimator.operating_point_.to_dict(self.classes)
        return meta


def _png_as_base64(row: dict[str, Any], key: str, into: str) -> dict[str, Any]:
    """A row whose ``key`` names a PNG file, with the file's bytes in base64 as ``into`` instead."""
    if key not in row:
        return row
    import base64

    out = {k: v for k, v in row.items() if k != key}
    out[into] = base64.b64encode(Path(row[key]).read_bytes()).decode("ascii")
    return out


def _mask_as_png(row: dict[str, Any]) -> dict[str, Any]:
    """A segmentation row for JSON: the (H, W) class-index mask as a base64 PNG (``mask_png``, one byte per pixel)."""
    if "mask" not in row:
        return row
    import base64

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(row["mask"]).save(buffer, format="PNG")
    out = {k: v for k, v in row.items() if k != "mask"}
    out["mask_png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
    return out


# ----------------------------------------------------------------------------------------------- requests
async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``max_bytes``."""
    declared = request.headers.get("content-length")
    too_large = RequestError(413, "request body too large", f"at most {max_bytes} bytes (--max-bytes)",
                             f"{declared} bytes" if declared else f"more than {max_bytes} bytes")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def parse_texts(body: bytes, media: str, max_items: int) -> list[str]:
    """The texts of a JSON request ``{"texts": [...]}``, each a string or a list of its parts (``[title, body]``,
    ``[premise, hypothesis]``); RequestError naming what is wrong."""
    expected = 'a JSON body {"texts": ["a text", ...]} (Content-Type: application/json)'
    if media.startswith("multipart/") or media.startswith("image/"):
        raise RequestError(415, "this server classifies texts, the request sends files", expected, media)
    if not body.strip():
        raise RequestError(422, "empty request", expected, "an empty body")
    if media not in ("", "application/json", "text/json") and not media.endswith("+json"):
        raise RequestError(415, "unsupported content type", expected, media)
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise RequestError(400, "the body is not UTF-8 JSON", expected, f"{len(body)} bytes of binary data") from None
    except json.JSONDecodeError as exc:
        raise RequestError(400, "malformed JSON", expected,
                           f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict) or "texts" not in data:
        found = f"an object with keys {sorted(data)}" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise RequestError(422, "no 'texts' in the request", expected, found)
    texts = data["texts"]
    if not isinstance(texts, list):
        raise RequestError(422, "'texts' must be a list of strings", expected, f"'texts' is a {_json_type(texts)}")
    if not texts:
        raise RequestError(422, "empty request: 'texts' is an empty list", expected, "[]")
    if len(texts) > max_items:
        raise RequestError(413, "too many texts in one request", f"at most {max_items} (--max-items)", len(texts))
    for i, text in enumerate(texts):
        parts = text if isinstance(text, list) and text else [text]
        if not all(isinstance(p, str) for p in parts):
            raise RequestError(422, f"texts[{i}] is not a string", "strings (or lists of strings: a text's parts, for "
                               "a model trained on several text columns)", f"a {_json_type(text)}: {text!r:.60}")
        if not "".join(parts).strip():
            raise RequestError(422, f"texts[{i}] is empty", "non-empty strings", repr(text))
    return [joined(t) for t in texts]


def _json_type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__)


async def parse_images(request: Request, body: bytes, media: str, limits: Limits) -> list[tuple[str, bytes]]:
    """``(file name, bytes)`` of each image of a multipart request, checked from their headers (format, pixels)."""
    expected = f"multipart/form-data with one or more image files in the field '{FIELD}'"
    if media in ("application/json", "text/json") or media.endswith("+json") or media.startswith("text/"):
        raise RequestError(415, "this server takes images, the request sends text", expected,
                           f"{media}: {body[:60].decode('utf-8', 'replace')!r}")
    if not body.strip():
        raise RequestError(422, "empty request", expected, "an empty body")
    if media not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise RequestError(415, "unsupported content type", expected, media or "no Content-Type")

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=limits.max_items, max_fields=limits.max_items,
                                                         max_part_size=limits.max_bytes)
    except StarletteHTTPException as exc:  # starlette's multipart parser: malformed, too many parts
        if "Too many" in str(exc.detail):
            raise RequestError(413, "too many images in one request", f"at most {limits.max_items} (--max-items)",
                               f"more than {limits.max_items} parts") from None
        raise RequestError(400, "malformed multipart body", expected, str(exc.detail)) from None
    try:
        values = form.getlist(FIELD)
        if not values:
            found = f"fields {sorted(set(form.keys()))}" if form else "no fields"
            raise RequestError(422, f"no field '{FIELD}' in the request", expected, found)
        texts = [v for v in values if not isinstance(v, UploadFile)]
        if texts:
            raise RequestError(422, f"field '{FIELD}' holds text, not a file: this server takes images", expected,
                               f"a text value {str(texts[0])[:60]!r}")
        images = []
        for i, upload in enumerate(values):
            name = upload.filename or f"file {i}"
            data = await upload.read()
            images.append((name, data))
            _check_image(name, data, upload.content_type, limits.max_pixels)
        return images
    finally:
        await form.close()


def _check_image(name: str, data: bytes, content_type: str | None, max_pixels: int) -> None:
    """An image file from its header only (nothing is decoded): a format PIL reads, at most ``max_pixels``."""
    from PIL import Image

    from headstart.tasks.image.decode import CodecError, image_header, quiet_pil

    expected = "an image file (JPEG, PNG, BMP, GIF, WebP, TIFF, HEIC, AVIF, DICOM)"
    if not data:
        raise RequestError(422, f"'{name}' is empty", expected, "0 bytes")
    try:
        with quiet_pil():
            fmt, width, height = image_header(data)
    except Image.DecompressionBombError as exc:
        raise RequestError(413, f"'{name}' has too many pixels", f"at most {max_pixels} pixels", str(exc)) from None
    except CodecError as exc:  # a format the server cannot decode until a package is installed
        raise RequestError(415, f"'{name}' cannot be decoded here", expected, str(exc)) from None
    except Exception:  # noqa: BLE001 - PIL raises many types for what is not an image
        raise RequestError(422, f"'{name}' is not an image", expected, _describe_bytes(data, content_type)) from None
    if width * height > max_pixels:
        raise RequestError(413, f"'{name}' has too many pixels", f"at most {max_pixels} pixels (--max-pixels)",
                           f"{fmt} {width} x {height} = {width * height} pixels")


def _describe_bytes(data: bytes, content_type: str | None) -> str:
    """What an upload that is not an image looks like: text (its start) or binary (its first bytes)."""
    sent = f"{content_type}, " if content_type else ""
    try:
        text = data[:4096].decode("utf-8")
        return f"{sent}{len(data)} bytes of text: {text[:60]!r}"
    except UnicodeDecodeError:
        return f"{sent}{len(data)} bytes starting {data[:8].hex(' ')}"


def shape_rows(rows: list[dict[str, Any]], top_k: int | None, classes: list[str]) -> list[dict[str, Any]]:
    """Rows cut to ``top_k`` as ``headstart predict --top-k`` would give them (classes: default 1; boxes and
    multi-label tags: all)."""
    shaped = []
    for row in rows:
        row = dict(row)
        if "top_k" in row:
            row["top_k"] = [list(pair) for pair in row["top_k"][: max(1, min(top_k or 1, len(classes)))]]
        for every in ("detections", "labels"):
            if every in row and top_k:
                row[every] = row[every][:top_k]
        shaped.append(row)
    return shaped


# ----------------------------------------------------------------------------------------------- the app
def create_app(run: str | Path, limits: Limits | None = None, workers: int = 1,
               service: ModelService | None = None) -> FastAPI:
    """The FastAPI app serving the model of ``run``, loaded now, once (or ``service``'s, already loaded)."""
    limits = limits or Limits()
    limits.check()
    service = service or ModelService(run, limits, workers)
    batcher = Batcher(service.predict_batch, limits.max_batch, limits.max_wait_ms)
    names = itertools.count()  # unique item names inside a batch

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        batcher.close()

    errors = {status: {"model": ErrorBody} for status in (400, 413, 415, 422, 503)}
    app = FastAPI(title=f"headstart: {service.task.name} model of {Path(run).name}", version=__version__,
                  lifespan=lifespan, description=f"Serves the {service.task.run_kind} model in {run}: "
                  f"{', '.join(service.classes[:10])}{' ...' if len(service.classes) > 10 else ''}.")
    app.state.service, app.state.batcher = service, batcher

    if service.takes_texts:
        body_doc = {"application/json": {"schema": {
            "type": "object", "required": ["texts"],
            "properties": {"texts": {"type": "array", "maxItems": limits.max_items, "items": {"oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "description": "a text's parts (GET /metadata: "
                 "text_columns), for a model trained on several text columns"}]}}}}}}
    else:
        body_doc = {"multipart/form-data": {"schema": {
            "type": "object", "required": [FIELD],
            "properties": {FIELD: {"type": "array", "items": {"type": "string", "format": "binary"},
                                   "maxItems": limits.max_items}}}}}

    @app.post("/predict", responses=errors, openapi_extra={"requestBody": {"required": True, "content": body_doc}},
              summary="Predict the items of the request (texts or image files)")
    async def predict(request: Request, top_k: int | None = Query(
            None, ge=1, description="classes per item (default 1); detection: boxes per image (default all)"),
            explain: bool = Query(False, description="what each prediction rests on: image classifiers, a Grad-CAM "
                                  "heat map over the image as the model saw it (heatmap_png, a base64 PNG); text "
                                  "classifiers, the words with their weights (evidence)")):
        """The same rows as ``headstart predict RUN ITEMS --format json``, one per item, in order (``explain``: as
        with ``--save-heatmaps`` or ``--evidence``)."""
        if explain and service.explains is None:
            raise RequestError(422, f"explain applies to image and text classifiers, not to a {service.task.name} "
                               "model", "no explain parameter", "explain=true")
        body = await _read_body(request, limits.max_bytes)
        media = _media_type(request)
        if service.takes_texts:
            texts = parse_texts(body, media, limits.max_items)
            items: list[Any] = texts
        else:
            images = await parse_images(request, body, media, limits)
            if len(images) > limits.max_items:
                raise RequestError(413, "too many images in one request", f"at most {limits.max_items} (--max-items)",
                                   len(images))
            items = [(str(next(names)), data) for _, data in images]
        try:
            results = await batcher.run([(item, explain) for item in items], limits.timeout)
        except TimeoutError:
            raise RequestError(503, "the model did not answer in time", f"an answer within {limits.timeout} s "
                               "(--timeout)", "the server is busy: retry, or send fewer items") from None
        except (HeadstartError, ValueError) as exc:
            raise RequestError(422, "the items could not be predicted", "items the model can read", str(exc)) from None
        if not service.takes_texts:
            bad = [(name, r["error"]) for (name, _), r in zip(images, results) if "error" in r]
            if bad:
                raise RequestError(422, f"{len(bad)} of {len(images)} file(s) could not be read as images",
                                   "complete image files (JPEG, PNG, BMP, GIF, WebP, TIFF, DICOM)",
                                   "; ".join(f"'{n}': {why}" for n, why in bad))
            results = [{**r, "path": name} for (name, _), r in zip(images, results)]
        return shape_rows(results, top_k, service.classes)

    @app.get("/health", summary="Whether the model is loaded and answering")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "task": service.task.name, "model_sha256": service.sha256,
                "batching": batcher.stats.to_dict()}

    @app.get("/metadata", summary="Task, classes, preprocessing, model hash and versions")
    async def metadata() -> dict[str, Any]:
        return service.metadata()

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = first.get("loc", ("request",))[-1]
        return RequestError(422, f"invalid {where}: {first.get('msg', exc)}",
                            "top_k: an integer of at least 1", first.get("input")).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return RequestError(exc.status_code, str(exc.detail), ENDPOINTS,
                            f"{request.method} {request.url.path}").response()

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return RequestError(500, f"internal error: {type(exc).__name__}: {exc}", "a prediction",
                            "an error inside the server (it keeps running)").response()

    return app


def app_from_environment() -> FastAPI:
    """The app of one uvicorn worker process (``--workers N``): run and limits from ``$HEADSTART_SERVE``."""
    settings = json.loads(os.environ[ENVIRONMENT])
    return create_app(settings["run"], Limits(**settings["limits"]), settings["workers"])


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          limits: Limits | None = None, log_level: str = "info") -> None:
    """Serve ``run`` until interrupted; ``workers`` > 1 starts that many processes, each with its own model."""
    import uvicorn

    limits = limits or Limits()
    limits.check()
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, found {workers}")
    if workers == 1:
        uvicorn.run(create_app(run, limits), host=host, port=port, log_level=log_level)
        return
    os.environ[ENVIRONMENT] = json.dumps({"run": str(Path(run).resolve()), "limits": asdict(limits),
                                          "workers": workers})
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level=log_level)


class BackgroundServer:
    """An app served by uvicorn in a thread of this process, on a free loopback port (tests, benchmarks, notebooks).

    >>> with BackgroundServer(create_app("runs/demo")) as url:
    ...     httpx.get(url + "/health").json()
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.host, self.port = app, host, port
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> str:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="headstart-server")
        self._thread.start()
        ends = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > ends:
                raise RuntimeError(f"the server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        self.url = f"http://{self.host}:{self.port}"
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
