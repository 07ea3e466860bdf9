"""The HTTP app (Starlette): MLDB's REST shape for functions.

``GET /v1/functions``, ``GET /v1/functions/{name}``, ``POST /v1/functions/{name}/application``,
``GET /v1/health`` (and ``/healthz``). Every answer is JSON, errors too:
``{"error": "...", "status": 400}``; no request can stop the server.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..exceptions import MissingDependencyError, MlnbError, ModelNotFoundError
from ._batcher import MicroBatcher, Overloaded
from ._catalog import Catalog, Input, RequestError

log = logging.getLogger("mlnb.serve")


@dataclass
class ServeOptions:
    """How the server batches and what it accepts (see :func:`mlnb.serve.serve`)."""

    batching: bool = True
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    workers: int = 2
    max_body: int | None = None  # default: enough for mlnb.config.max_image_bytes as base64
    allow_urls: bool = True
    allow_paths: bool | str | os.PathLike[str] = False
    warmup: bool = False
    cache: bool = True  # keep posted images' features in the embedding cache (a repeated image is not recomputed)

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "workers"):
            if int(getattr(self, name)) < 1:
                raise MlnbError(f"{name} must be at least 1, not {getattr(self, name)!r}.")
        if self.max_wait_ms < 0 or (self.max_body is not None and self.max_body < 1):
            raise MlnbError("max_wait_ms must be 0 or more and max_body at least 1 byte.")
        if self.allow_paths not in (True, False, None) and not os.path.isdir(self.allow_paths):
            raise MlnbError(f"allow_paths names a folder that does not exist: {self.allow_paths!r}.")

    def body_limit(self) -> int:
        if self.max_body is not None:
            return int(self.max_body)
        from ..config import config

        return config.max_image_bytes * 4 // 3 + (64 << 10)


def _starlette() -> Any:
    try:
        import starlette  # noqa: F401
    except ImportError:
        raise MissingDependencyError("starlette", "serve", "mlnb serve") from None


# -- reading a request -----------------------------------------------------------
async def read_body(request: Any, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (before reading it when the client says its size)."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise _too_large(int(size), limit)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _too_large(total, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> RequestError:
    return RequestError(
        f"The request body is too large ({'over ' if size <= limit + 1 else ''}{size:,} bytes; the limit is {limit:,}). "
        "Send a smaller image, or start the server with a larger --max-body.",
        status=413,
    )


_KEYS = ("features", "image_base64", "url", "path", "args")
#: How image files begin: such a body is an image whatever its Content-Type says (curl --data-binary
#: sends application/x-www-form-urlencoded; a client may say JSON), as no JSON text begins so.
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def _looks_like_image(body: bytes) -> bool:
    return body.startswith(_IMAGE_MAGIC) or (body[:4] == b"RIFF" and body[8:12] == b"WEBP")


def parse_input(content_type: str, body: bytes, options: ServeOptions) -> Input:
    """One request's input: raw image bytes, or a JSON object with exactly one of
    ``features``, ``image_base64``, ``url``, ``path`` (when allowed) or ``args``
    (MLDB's ``{"input": {...}}`` wrapper is accepted too)."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype.startswith("image/") or ctype == "application/octet-stream" or _looks_like_image(body):
        if not body:
            raise RequestError("The request has no body: send the image's bytes.")
        return Input("bytes", body)
    if not body.strip():
        raise RequestError(
            'The request has no body: send an image\'s bytes (Content-Type: image/jpeg ...) or a JSON object such as '
            '{"url": "https://..."} or {"features": [...]}.'
        )
    if ctype not in ("application/json", "") and not ctype.endswith("+json"):
        raise RequestError(
            f"Unsupported Content-Type {ctype!r}: send image bytes (Content-Type: image/jpeg, image/png ...) "
            'or JSON (Content-Type: application/json) such as {"url": "https://..."} or {"features": [...]}.',
            status=415,
        )
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"The body is not valid JSON: {exc}.") from None
    except RecursionError:  # [[[[...]]]] nested deeper than Python's parser goes
        raise RequestError("The JSON body is nested too deeply: send one flat object such as {\"features\": [...]}.") from None
    if isinstance(doc, dict) and set(doc) == {"input"} and isinstance(doc["input"], dict):
        doc = doc["input"]
    if not isinstance(doc, dict):
        raise RequestError(f"The JSON body must be an object with one of {', '.join(_KEYS)}; got a {type(doc).__name__}.")
    given = [k for k in _KEYS if k in doc]
    if len(given) != 1:
        what = "none" if not given else " and ".join(given)
        raise RequestError(f"Send exactly one of {', '.join(map(repr, _KEYS))} in the JSON object (got {what}).")
    key = given[0]
    value = doc[key]
    if key == "features":
        return Input("features", _features(value))
    if key == "image_base64":
        return Input("bytes", _base64(value))
    if key == "args":
        if not isinstance(value, dict):
            raise RequestError('"args" must be an object of argument name -> value.')
        for v in value.values():
            if isinstance(v, str):
                _check_string_arg(v, options)
            _check_numbers(v)
        return Input("args", value)
    if not isinstance(value, str) or not value:
        raise RequestError(f'"{key}" must be a non-empty string.')
    if key == "url" and value.lower().startswith(("http://", "https://")):
        if not options.allow_urls:
            raise RequestError("This server does not fetch URLs: send the image's bytes.", status=403)
        return Input("url", value)
    return Input("path", check_path(value, options))


#: How deeply lists and objects in "args" may nest: SQL types nest as deep (INTEGER[][]...), and a
#: few hundred levels stall DuckDB's Arrow import and the server's SQL session with it.
MAX_ARG_DEPTH = 16


def _check_numbers(value: Any, depth: int = 0) -> None:
    """Whole numbers SQL can hold (BIGINT), inside lists and objects too, nested at most
    :data:`MAX_ARG_DEPTH` levels."""
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise RequestError(f"The number {value} is too large for SQL's BIGINT: send it as a float or a string.")
    if isinstance(value, (list, dict)) and depth >= MAX_ARG_DEPTH:
        raise RequestError(f'An argument in "args" nests lists or objects more than {MAX_ARG_DEPTH} levels deep.')
    if isinstance(value, list):
        for v in value:
            _check_numbers(v, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            _check_numbers(v, depth + 1)


def _features(value: Any) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise RequestError('"features" must be a non-empty list of numbers.')
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise RequestError('"features" must be a flat list of numbers (one feature vector).')
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise RequestError('"features" holds values that are not finite numbers.')
    return arr.astype(np.float32)


def _base64(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise RequestError('"image_base64" must be a non-empty base64 string.')
    if value.startswith("data:") and "," in value:  # a data URL
        value = value.split(",", 1)[1]
    # What encoders write: line breaks every 76 characters (the base64 command, MIME), the URL-safe
    # alphabet (- and _), padding left out. Anything else outside the alphabet is still refused.
    value = "".join(value.split())
    if "-" in value or "_" in value:
        value = value.replace("-", "+").replace("_", "/")
    value += "=" * (-len(value) % 4)
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f'"image_base64" is not valid base64 ({exc}).') from None
    if not data:
        raise RequestError('"image_base64" decodes to no bytes.')
    return data


def check_path(value: str, options: ServeOptions) -> str:
    """A file or archive member on the server, only where the server was started to allow it:
    ``allow_paths=True`` (anything this process can read) or a folder (plain paths under it)."""
    allow = options.allow_paths
    if allow is False or allow is None:
        raise RequestError(
            "This server does not read files by path (a request could read any image on the server). "
            'Send the image\'s bytes, {"image_base64": ...} or an http(s) {"url": ...}; or start the server with '
            "--allow-paths [FOLDER].",
            status=403,
        )
    if allow is True:
        return value
    root = os.path.realpath(allow)
    plain = value[7:] if value.lower().startswith("file://") else value
    if "://" in plain or "::" in plain or plain.lower().startswith("archive+"):
        raise RequestError(f"This server reads only plain file paths under {root}.", status=403)
    real = os.path.realpath(plain if os.path.isabs(plain) else os.path.join(root, plain))
    if os.path.commonpath([real, root]) != root:
        raise RequestError(f"{value!r} is not under the folder this server may read ({root}).", status=403)
    return real


def _check_string_arg(value: str, options: ServeOptions) -> None:
    """A string argument of a SQL function that names something on this machine (an existing
    file, an archive member, a non-http URL) counts as a path."""
    from ..images import source_key

    if value.lower().startswith(("http://", "https://")):
        if not options.allow_urls:
            raise RequestError("This server does not fetch URLs: send the image's bytes.", status=403)
        return
    if source_key(value) is not None or value.lower().startswith(("file://", "archive+", "zip://", "tar://")):
        check_path(value, options)


#: The longest error message a client gets.
MAX_ERROR = 400


def clip(message: str) -> str:
    """An error message for a client, at most :data:`MAX_ERROR` characters: a reason that quotes the
    request's input (a 5,000-character file name, a feature vector read as a path) keeps its start and end."""
    if len(message) <= MAX_ERROR:
        return message
    head, tail = MAX_ERROR - 100, 40
    return message[:head] + f" ... ({len(message) - head - tail:,} characters left out) ... " + message[-tail:]


# -- the app ---------------------------------------------------------------------
class ServeState:
    """What the app holds between requests: the catalog, batchers, the worker threads."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.catalog = Catalog(use_cache=options.cache)
        self.executor = ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="mlnb-serve")
        self.batchers: dict[tuple[Any, ...], MicroBatcher] = {}
        self.started = time.time()
        self.requests = 0
        self.errors = 0
        #: Requests being read and checked, not yet queued: a batch waits for them (and only for them).
        self.arriving = 0

    def batcher(self, endpoint: Any) -> MicroBatcher:
        b = self.batchers.get(endpoint.key)
        if b is None:
            o = self.options
            b = self.batchers[endpoint.key] = MicroBatcher(
                endpoint.apply,
                executor=self.executor,
                max_batch=o.max_batch if o.batching else 1,
                max_wait=o.max_wait_ms / 1000 if o.batching else 0.0,
                max_queue=o.max_queue,
                expecting=lambda: self.arriving,
            )
        return b

    def stats(self) -> dict[str, Any]:
        batches = sum(b.batches for b in self.batchers.values())
        items = sum(b.items for b in self.batchers.values())
        return {
            "requests": self.requests,
            "errors": self.errors,
            "batches": batches,
            "batched_items": items,
            "mean_batch": round(items / batches, 2) if batches else None,
            "queued": sum(b.queue.qsize() for b in self.batchers.values()),
        }

    def warm_up(self) -> list[str]:
        """Load every head and the backbones they embed with (one blank image each)."""
        from ..features.engine import embed_images
        from ..features.zoo import get_spec
        from ..heads.head import load_head

        done = []
        for ep in self.catalog.endpoints():
            if ep.kind not in ("classifier", "regressor"):
                continue
            try:
                load_head(f"{ep.name}@{ep.version}", ep.kind)
                if ep.backbone:
                    size = get_spec(ep.backbone).input_size
                    embed_images([np.zeros((size, size, 3), np.uint8)], model=ep.backbone, layer=ep.layer, use_cache=False, progress=False)
                done.append(ep.name)
            except MlnbError as exc:
                log.warning("warm-up of %s failed: %s", ep.name, exc)
        return done

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.catalog.close()


def create_app(options: ServeOptions | None = None, *, workspace: str | os.PathLike[str] | None = None) -> Any:
    """The Starlette app serving the workspace in use (or ``workspace``)."""
    _starlette()
    import contextlib

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    options = options or ServeOptions()
    if workspace is not None:
        from ..config import config

        config.workspace = Path(workspace)
    state = ServeState(options)

    def error(message: str, status: int, **extra: Any) -> JSONResponse:
        state.errors += 1
        return JSONResponse({"error": clip(message), "status": status, **extra}, status_code=status)

    def guarded(handler: Any) -> Any:
        """Every error a request can cause becomes a JSON answer; the server goes on."""

        async def run(request: Request) -> JSONResponse:
            try:
                return await handler(request)
            except RequestError as exc:
                return error(str(exc), exc.status, **exc.extra)
            except ModelNotFoundError as exc:
                return error(str(exc), 404)
            except MlnbError as exc:
                return error(str(exc), 400)
            except Exception as exc:  # noqa: BLE001 - a bug answers 500 and is logged; serving goes on
                log.exception("error serving %s %s", request.method, request.url.path)
                return error(f"Internal error: {type(exc).__name__}: {exc}", 500)

        return run

    @guarded
    async def functions(request: Request) -> JSONResponse:
        eps = await run_in_threadpool(state.catalog.endpoints)
        problems = await run_in_threadpool(state.catalog.problems)
        return JSONResponse({"functions": [e.describe() for e in eps], "problems": problems})

    @guarded
    async def describe(request: Request) -> JSONResponse:
        ep = await run_in_threadpool(state.catalog.resolve, request.path_params["name"])
        return JSONResponse(ep.describe())

    @guarded
    async def application(request: Request) -> JSONResponse:
        state.requests += 1
        state.arriving += 1
        try:
            ep = await run_in_threadpool(state.catalog.resolve, request.path_params["name"])
            body = await read_body(request, options.body_limit())
            item = ep.check(parse_input(request.headers.get("content-type", ""), body, options))
        finally:
            state.arriving -= 1
        try:
            result = await state.batcher(ep).submit(item)
        except Overloaded as exc:
            return error(f"The server is busy ({exc}); retry shortly.", 503)
        return JSONResponse(result)

    @guarded
    async def health(request: Request) -> JSONResponse:
        from ..config import config

        return JSONResponse(
            {
                "status": "ok",
                "mlnb_version": __version__,
                "workspace": str(config.workspace),
                "uptime_s": round(time.time() - state.started, 1),
                "batching": {"on": options.batching, "max_batch": options.max_batch, "max_wait_ms": options.max_wait_ms},
                **state.stats(),
            }
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        hint = ""
        if exc.status_code == 404:
            hint = " Endpoints: GET /v1/functions, POST /v1/functions/<name>/application, GET /v1/health."
        elif exc.status_code == 405:
            hint = " Apply a function with POST /v1/functions/<name>/application."
        response = error(f"{exc.detail}.{hint}", exc.status_code)
        if exc.headers:
            response.headers.update(exc.headers)  # Allow: on a 405
        return response

    def allowed(methods: str) -> Any:
        """OPTIONS: which methods the path takes (clients and proxies ask before they send)."""

        async def options(request: Request) -> Any:
            from starlette.responses import Response

            return Response(status_code=204, headers={"Allow": methods})

        return options

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        if options.warmup:
            warmed = await run_in_threadpool(state.warm_up)
            log.info("warmed up: %s", ", ".join(warmed) or "nothing to warm up")
        try:
            yield
        finally:
            for b in state.batchers.values():
                await b.close()
            state.close()

    endpoints = [
        ("/v1/functions", functions, "GET"),
        ("/v1/functions/{name}", describe, "GET"),
        ("/v1/functions/{name}/application", application, "POST"),
        ("/v1/health", health, "GET"),
        ("/healthz", health, "GET"),
    ]
    routes = []
    for path, handler, method in endpoints:
        # The same answer with a trailing slash: a redirect would make clients re-send a POST's body (or not).
        for p in (path, path + "/"):
            routes.append(Route(p, handler, methods=[method]))
            routes.append(Route(p, allowed(f"{method}, HEAD, OPTIONS" if method == "GET" else f"{method}, OPTIONS"),
                                methods=["OPTIONS"]))
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: on_http},
        lifespan=lifespan,
    )
    app.state.mlnb = state
    return app
