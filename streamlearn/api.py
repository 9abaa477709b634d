"""The HTTP API: model info, embeddings and predictions from the latest snapshot, weights, drift, metrics.

Handlers only read the immutable :class:`~streamlearn.snapshot_store.ModelState`
(never the live learner), so serving never blocks learning. Admin actions
(rollback, reset) are passed to hooks that run them on the learner thread.

Status codes: bad input is 422 (413 for too many rows), a model that cannot
serve yet is 409, and every error body is ``{"detail": "<reason>"}``.
``/readyz`` is 200 once a learner is loaded (restored or fresh) and the
consumer owns partitions; before the first valid sample fixes the feature
dimension it is ready but ``/v1/embed`` answers 409.
Admin endpoints answer 404 while no ``api.admin_token`` is configured (they
are off, as if absent), and 401 without the right ``Authorization: Bearer``
token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field, StrictFloat
from starlette.exceptions import HTTPException as StarletteHTTPException

from streamlearn import __version__
from streamlearn.checkpoint import EXPORT_FILE, version_of
from streamlearn.config import Settings
from streamlearn.snapshot_store import ModelState, SnapshotStore

__all__ = ["create_app", "MAX_ROWS", "MAX_VALUES", "AdminHooks", "row_limit"]

logger = logging.getLogger(__name__)

#: Most rows one /v1/embed or /v1/predict request may carry...
MAX_ROWS = 10_000
#: ...and most feature values in all (a model of 1,000 features takes 1,000 rows at a time).
MAX_VALUES = 1_000_000
# Requests with a body parsed at once; more wait (their bodies unread) up to _QUEUE_WAIT_S, then get 503.
# Parsing holds the interpreter: more at once would only add memory, and delay the learner beside them.
_PARALLEL_BODIES = 2
_QUEUE_WAIT_S = 30.0

# JSON text of one feature value, indented on a line of its own, is at most this long
# ("      -1.2345678901234567e-05,\n"), and a row's brackets and indentation add at most
# _ROW_CHARS: with the row limit, they bound the body any valid request needs, pretty-printed
# or not, so a larger one is refused before it is parsed.
_VALUE_CHARS = 40
_ROW_CHARS = 32
_BODY_SLACK = 65_536

#: Admin actions by name ("rollback", "reset"); each runs on the learner thread and returns a JSON-able dict.
AdminHooks = Mapping[str, Callable[[], dict]]


class FeaturesRequest(BaseModel):
    """Rows of raw features, each with the model's n_features numbers."""

    features: list[list[StrictFloat]] = Field(description="rows of raw feature values (finite numbers)")


class EmbedResponse(BaseModel):
    """Embeddings of the request's rows, in order, and the model version that made them."""

    embeddings: list[list[float]]
    model_version: int


class PredictResponse(BaseModel):
    """Labels from the leading head (null before any class is known) and squared distances to their prototypes."""

    predictions: list[str | int | None]
    distances: list[float | None]
    model_version: int


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=detail, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    """One readable line for the first problem of a rejected request body."""
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    if first.get("type") == "json_invalid":  # its loc holds a character position, not a field
        position = first.get("loc", ("body", "?"))[-1]
        reason = first.get("ctx", {}).get("error", "")
        return f"body is not valid JSON: {reason or first.get('msg', 'decode error')} at character {position}"
    path = [p for p in first.get("loc", ()) if p != "body"]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "body"
    if first.get("type") == "list_type" and len(path) == 2 and path[0] == "features":  # a flat list of numbers
        return (f"{loc}: expected a row (a list of numbers): features is a list of rows, "
                f'e.g. {{"features": [[0.5, 1.0]]}} for one row of two values{more}')
    return f"{loc}: {first.get('msg', 'invalid value')}{more}"


def _unparsable_detail(cause: BaseException) -> str | None:
    """Why a body that got past the JSON decoder's own errors could not be parsed (None: not a body problem).

    FastAPI answers these "There was an error parsing the body", which tells the sender nothing.
    """
    if isinstance(cause, UnicodeDecodeError):  # the decoder reads UTF-8, or UTF-16/32 by their first bytes
        return f"body is not valid JSON: it is not {cause.encoding.upper()} text " \
               f"(byte 0x{cause.object[cause.start]:02x} at position {cause.start})"
    if isinstance(cause, RecursionError):
        return "body is not valid JSON a request can be: it nests too deeply"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return f"body is not valid JSON a request can be: a number has more than {sys.get_int_max_str_digits()} digits"
    if isinstance(cause, ValueError):
        return f"body is not valid JSON a request can be: {cause}"
    return None


def _is_json(content_type: str | None) -> bool:
    """Whether a Content-Type header names JSON (``application/json``, with parameters, or ``+json``)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _serving_state(store: SnapshotStore) -> ModelState:
    state = store.current()
    if state is None:
        raise _error(409, "model not ready: no model has been loaded yet")
    if state.snapshot is None:
        raise _error(409, "model not ready: it is built when the first valid sample fixes the feature dimension")
    return state


def _features(request: FeaturesRequest, n_features: int, max_rows: int) -> np.ndarray:
    """The request's rows as a float32 matrix, or a 4xx naming what is wrong with them."""
    rows = request.features
    if not rows:
        raise _error(422, "features: must contain at least one row")
    if len(rows) > (most := row_limit(n_features, max_rows)):
        raise _error(413, f"features: {len(rows)} rows, at most {most} per request"
                          + (f" ({MAX_VALUES} values of {n_features} features)" if most < max_rows else ""))
    for i, row in enumerate(rows):
        if len(row) != n_features:
            raise _error(422, f"features[{i}]: expected {n_features} values (the model's n_features), got {len(row)}")
    with np.errstate(over="ignore"):
        x = np.asarray(rows, dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise _error(422, f"features[{i}][{j}]: {rows[i][j]!r} is not a finite float32")
    return x


@dataclass(frozen=True)
class _Limits:
    """What a request body may hold for the served model: bytes, and commas (which bound its values)."""

    max_bytes: int
    max_commas: int
    why: str


class _BodyLimit:
    """ASGI middleware: a body that cannot be a valid request is answered 413 before it is parsed.

    Parsing a body into rows costs far more memory and time than its bytes, and holds the
    interpreter (the learner beside it waits): one request of 26 MB of ``0,`` took 8 s and
    640 MB to refuse. So a body is refused by its length (``Content-Length``, or as it is read)
    and then by its commas: JSON rows of n values in all hold at least n - 1 of them, so
    ``0,0,0,...`` cannot pass for a few long numbers. Only ``_PARALLEL_BODIES`` bodies are read
    and parsed at a time; the others wait unread (503 after ``_QUEUE_WAIT_S``).
    """

    def __init__(self, app: Any, limit: Callable[[], _Limits]) -> None:
        self.app = app
        self.limit = limit
        self._gate: asyncio.Semaphore | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and not length.isdigit():
            await _refuse(send, 400, "invalid Content-Length header")
            return
        if length is not None and int(length) > limit.max_bytes:
            await _refuse(send, 413, f"request body is {int(length)} bytes, at most {limit.max_bytes} ({limit.why})")
            return
        if length in (None, b"0") and b"transfer-encoding" not in headers:  # no body (an admin action)
            await self.app(scope, receive, send)
            return
        if encoding := _content_encoding(scope["headers"]):
            await _refuse(send, 415, f"Content-Encoding {encoding!r} is not supported: send the JSON body uncompressed")
            return
        if self._gate is None:
            self._gate = asyncio.Semaphore(_PARALLEL_BODIES)
        try:
            await asyncio.wait_for(self._gate.acquire(), _QUEUE_WAIT_S)
        except TimeoutError:
            await _refuse(send, 503, f"busy: {_PARALLEL_BODIES} requests are being served; retry shortly",
                          retry_after=1)
            return
        try:
            await self._serve(scope, receive, send, limit)
        finally:
            self._gate.release()

    async def _serve(self, scope: dict, receive: Callable, send: Callable, limit: _Limits) -> None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            size += len(message.get("body", b""))
            if size > limit.max_bytes:
                await _refuse(send, 413, f"request body is over {limit.max_bytes} bytes ({limit.why})")
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body, handed = b"".join(chunks), False
        if (commas := body.count(b",")) > limit.max_commas:
            await _refuse(send, 413, f"request body holds {commas} commas, so more values than a request may "
                                     f"carry ({limit.why})")
            return

        async def replay() -> dict:
            nonlocal handed
            if handed:
                return await receive()
            handed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _content_encoding(headers: list[tuple[bytes, bytes]]) -> str:
    """The body's ``Content-Encoding`` codings other than ``identity``, from every such header ("" if none).

    >>> _content_encoding([(b"content-encoding", b"identity, GZIP"), (b"content-encoding", b" identity")])
    'gzip'
    """
    codings = [c.strip().lower() for name, value in headers if name == b"content-encoding"
               for c in value.decode("latin-1").split(",")]
    return ", ".join(c for c in codings if c not in ("", "identity"))


class _HeadAsGet:
    """ASGI middleware: HEAD is answered as GET without the body (monitors and ``curl -I`` use it)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: dict) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app(dict(scope, method="GET"), receive, headers_only)


async def _refuse(send: Callable, status: int, detail: str, retry_after: int | None = None) -> None:
    body = JSONResponse(status_code=status, content={"detail": detail}).body
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def row_limit(n_features: int, max_rows: int = MAX_ROWS) -> int:
    """Most rows of ``n_features`` values one request may carry: ``max_rows``, and MAX_VALUES values in all.

    >>> row_limit(64), row_limit(1_000), row_limit(10**7)
    (10000, 1000, 1)
    """
    return max(1, min(max_rows, MAX_VALUES // max(1, n_features)))


def _body_limit(store: SnapshotStore, max_rows: int) -> _Limits:
    """Largest request body a served model can need: its row limit of n_features values each."""
    state = store.current()
    n_features = None if state is None else state.n_features
    if not n_features:
        return _Limits(_BODY_SLACK * 16, _BODY_SLACK, "no model dimension yet")
    rows = row_limit(n_features, max_rows)
    # A valid body of r rows of f values has r * f - 1 commas between values and rows, and a few more
    # between its keys; any extra key of a few kilobytes is allowed for.
    return _Limits(rows * (n_features * _VALUE_CHARS + _ROW_CHARS) + _BODY_SLACK, rows * n_features + 1_024,
                   f"{rows} rows of {n_features} features at most")


def _model_info(state: ModelState) -> dict[str, Any]:
    last_drift = state.drift_events[-1].to_dict() if state.drift_events else None
    return {
        "model_version": state.model_version,
        "n_features": state.n_features,
        "embedding_dim": state.embedding_dim,
        "samples_seen": state.samples_seen,
        "classes": list(state.classes),
        "last_update": state.last_update,
        "last_drift": last_drift,
        "checkpoint": state.checkpoint_path,
        # The version GET /v1/model/weights serves: the latest checkpoint's, behind model_version while learning.
        "checkpoint_version": version_of(state.checkpoint_path) if state.checkpoint_path else None,
        "meta_updates": state.meta_updates,
        # None until a class is known: before the first sample, and after a reset (the dimension stays).
        "predictor": state.snapshot.predictor if state.snapshot is not None and state.classes else None,
        "version": __version__,
    }


def create_app(store: SnapshotStore, metrics_registry: CollectorRegistry, settings: Settings,
               admin: AdminHooks | None = None, *, ready: Callable[[], bool] | None = None,
               max_rows: int = MAX_ROWS) -> FastAPI:
    """Build the API over ``store``; ``ready`` says whether the consumer owns partitions (default: yes)."""
    app = FastAPI(title="streamlearn", version=__version__,
                  description="Online meta-learned feature extractor: model, embeddings, drift, metrics.")
    token = settings.api.admin_token
    consumer_ready = ready or (lambda: True)
    app.add_middleware(_BodyLimit, limit=lambda: _body_limit(store, max_rows))
    app.add_middleware(_HeadAsGet)

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type")
        if request.method == "POST" and not _is_json(content_type):
            # The body is not read as JSON at all (curl -d sends a form): say so, not "should be a valid dictionary".
            got = f"'{content_type}'" if content_type else "none"
            return JSONResponse(status_code=415, content={
                "detail": f"the body must be JSON sent with Content-Type: application/json (got {got})"})
        return JSONResponse(status_code=422, content={"detail": _validation_detail(exc)})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.__cause__ is not None and (detail := _unparsable_detail(exc.__cause__)):
            return JSONResponse(status_code=400, content={"detail": detail})
        return await http_exception_handler(request, exc)

    # The probes are coroutines: they answer on the event loop even while every worker thread embeds.
    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="A model is loaded and the consumer owns partitions",
             responses={503: {"description": "not ready, with the reason"}})
    async def readyz() -> JSONResponse:
        state = store.current()
        if state is None:
            return JSONResponse(status_code=503, content={"detail": "model not loaded"})
        if not consumer_ready():
            return JSONResponse(status_code=503, content={"detail": "consumer has no partitions assigned"})
        return JSONResponse(content={"status": "ready", "model_version": state.model_version,
                                     "n_features": state.n_features})

    @app.get("/v1/model", summary="The served model: version, dimensions, classes, drift, checkpoint")
    def model() -> dict[str, Any]:
        state = store.current()
        if state is None:
            raise _error(409, "model not ready: no model has been loaded yet")
        return _model_info(state)

    @app.get("/v1/model/weights", summary="The latest model for inference (safetensors with JSON metadata)",
             response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}})
    def weights() -> Response:
        state = store.current()
        path = None if state is None else state.checkpoint_path
        if path is None:
            raise _error(404, "no checkpoint has been written yet")
        # The inference-only export beside the checkpoint: the full checkpoint holds raw training
        # samples (replay memory) that must not leave the service.
        export = Path(path).with_name(EXPORT_FILE)
        path = export if export.is_file() else path
        try:
            with open(path, "rb") as fh:  # read whole: a pruned file must not fail mid-response
                body = fh.read()
        except FileNotFoundError as exc:
            raise _error(404, f"the latest checkpoint file is gone ({path}); retry shortly") from exc
        return Response(content=body, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{Path(path).name}"'})

    @app.post("/v1/embed", response_model=EmbedResponse, summary="Embed rows of raw features (no learning)",
              responses={409: {"description": "model not ready"}, 413: {"description": "too many rows"},
                         415: {"description": "body not sent as JSON"}})
    def embed(request: FeaturesRequest) -> dict[str, Any]:
        state = _serving_state(store)
        x = _features(request, state.snapshot.n_features, max_rows)
        z = state.snapshot.embed(x)
        return {"embeddings": np.asarray(z, dtype=np.float32).tolist(),
                "model_version": int(state.snapshot.model_version)}

    @app.post("/v1/predict", response_model=PredictResponse,
              summary="Predict labels with the head that leads (prototypes, neighbour vote or linear)",
              responses={409: {"description": "model not ready"}, 413: {"description": "too many rows"},
                         415: {"description": "body not sent as JSON"}})
    def predict(request: FeaturesRequest) -> dict[str, Any]:
        state = _serving_state(store)
        x = _features(request, state.snapshot.n_features, max_rows)
        labels, distances = state.snapshot.predict(x)
        dist = [float(d) if math.isfinite(d) else None for d in np.asarray(distances, dtype=np.float64).tolist()]
        return {"predictions": list(labels), "distances": dist, "model_version": int(state.snapshot.model_version)}

    @app.get("/v1/drift", summary="Recent drift events, oldest first")
    def drift() -> dict[str, Any]:
        state = store.current()
        events = [] if state is None else [e.to_dict() for e in state.drift_events]
        return {"events": events}

    def _admin(name: str, authorization: str | None) -> dict:
        if token is None:
            raise _error(404, "admin endpoints are off: no api.admin_token is configured")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 token.get_secret_value().encode()):
            raise _error(401, "a valid 'Authorization: Bearer <admin token>' header is required",
                         headers={"WWW-Authenticate": "Bearer"})
        hook = (admin or {}).get(name)
        if hook is None:
            raise _error(409, f"{name} is not available in this process")
        try:
            result = hook()
        except TimeoutError as exc:
            raise _error(503, f"{name} did not run in time (the learner is busy); it may still be applied, "
                              "check GET /v1/model before retrying", headers={"Retry-After": "1"}) from exc
        except Exception as exc:  # the action itself failed: say so, never a bare 500
            logger.error("admin action failed", extra={"action": name, "error": f"{type(exc).__name__}: {exc}"})
            raise _error(503, f"{name} failed: {type(exc).__name__}: {exc}") from exc
        logger.info("admin action", extra={"action": name, "result": result})
        return result

    @app.post("/v1/model/rollback", summary="Restore the last good model (admin token required)",
              responses={401: {"description": "missing or wrong token"}, 404: {"description": "admin off"}})
    def rollback(authorization: str | None = Header(default=None)) -> dict:
        result = _admin("rollback", authorization)
        if not result.get("rolled_back", True):
            raise _error(409, "nothing to roll back to: no earlier good snapshot")
        return result

    @app.post("/v1/model/reset", summary="Start over with a fresh model (admin token required)",
              responses={401: {"description": "missing or wrong token"}, 404: {"description": "admin off"}})
    def reset(authorization: str | None = Header(default=None)) -> dict:
        return _admin("reset", authorization)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(content=generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return app
