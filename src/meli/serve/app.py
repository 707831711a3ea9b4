"""The ASGI app of `meli serve`: Starlette routes, dynamic batching, metrics, reload.

Starlette (the toolkit FastAPI is built on) rather than FastAPI itself: the routes take raw
bodies and answer raw JSON, so FastAPI's layers (its request validation, dependency injection,
OpenAPI) would do nothing here but cost CPU on every request (measured: 67 against 33 us of
server CPU per request for the same trivial route under uvicorn).

- `POST /predict` takes `{"titles": [...], "k": 3}` and the knobs of the bundle's calibration
  (`coverage`, `class_conditional`, `min_confidence`). The request is checked by hand
  (meli.serve.requests, which also writes the answers) and queued as one item of
  `batched`'s dynamic batcher: requests that arrive within `batch_wait_ms` of each other are
  scored as one batch of at most `max_batch_titles` titles, in a worker thread, so the event
  loop keeps accepting connections while the model runs. A request is never split between
  batches, and a batch reads the current model once: every title of a response was scored by
  the one version the response names.
- `POST /reload` (or SIGHUP) loads the new bundle aside, in a thread, scores a few titles with
  it, then swaps the reference the next batch reads. Requests in flight finish on the old
  version, and none fails.
- `POST /explain` (meli.serve.explain): the words that made the model choose each title's
  category, batched by a batcher of its own.
- Bad input gets a 4xx JSON `{"error": "<field>: <what is wrong>"}`, never a 500.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from batched.aio import AsyncBatchProcessor
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from meli.serve.explain import ExplainEndpoint
from meli.serve.model import MAX_TITLE_CHARS, LoadedModel, MeliError, ModelSource
from meli.serve.requests import (
    BadRequest,
    Job,
    answer_batch,
    parse_json,
    parse_predict,
    read_body,
)

log = logging.getLogger("meli")


@dataclass(frozen=True)
class Settings:
    """Limits on a request, and how requests are batched (`meli serve --help` explains each)."""

    max_titles: int = 1024
    max_title_chars: int = MAX_TITLE_CHARS
    max_body_bytes: int = 1 << 20
    max_k: int = 100
    max_batch_titles: int = 2048
    max_batch_requests: int = 256
    batch_wait_ms: float = 2.0


class Metrics:
    """Prometheus metrics of one app (its own registry: several apps can live in a process)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("meli_requests", "HTTP requests, by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.errors = Counter("meli_request_errors", "requests answered with a 4xx or 5xx status",
                              ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "meli_request_duration_seconds", "time from a request's arrival to its answer",
            ["endpoint"], registry=r,
            buckets=(.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5))
        self.batch_titles = Histogram(
            "meli_batch_titles", "titles per batch scored by the model", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192))
        self.batch_requests = Histogram(
            "meli_batch_requests", "requests per batch scored by the model", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
        self.batch_seconds = Histogram(
            "meli_batch_duration_seconds", "time the model takes to score one batch",
            registry=r, buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2))
        self.titles = Counter("meli_titles", "titles classified", registry=r)
        self.reloads = Counter("meli_reloads", "model reloads, by outcome", ["outcome"],
                               registry=r)
        self.model = Gauge("meli_model_info", "the model being served (value 1)",
                           ["name", "version"], registry=r)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def serving(self, model: LoadedModel, previous: LoadedModel | None) -> None:
        if previous is not None:
            self.model.remove(previous.name, previous.version)
        self.model.labels(model.name, model.version).set(1)


def _json(status: int, content: Any) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def error_response(status: int, message: str) -> Response:
    return _json(status, {"error": message})


class Server:
    """The state behind the routes: the model, its source, the batcher, the metrics."""

    def __init__(self, model: LoadedModel | None, source: ModelSource | None,
                 settings: Settings):
        self.model = model
        self.source = source
        self.settings = settings
        self.metrics = Metrics()
        self.processor: AsyncBatchProcessor | None = None
        self.reloading: asyncio.Lock | None = None
        if model is not None:
            self.metrics.serving(model, None)

    # ---- scoring (runs in the batcher's worker thread) ------------------------------------

    def score(self, jobs: list[Job]) -> list[tuple[int, bytes]]:
        """The status and JSON body of each request of one batch, all scored by the same
        model."""
        started = time.perf_counter()
        model = self.model  # read once: the whole batch is scored by this version
        assert model is not None
        bodies = answer_batch(model, jobs)
        titles = sum(len(job) for job in jobs)
        self.metrics.batch_titles.observe(titles)
        self.metrics.batch_requests.observe(len(jobs))
        self.metrics.titles.inc(titles)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        return bodies

    # ---- reload ---------------------------------------------------------------------------

    async def reload(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Load the source (with `changes`) aside, then swap it in between two batches."""
        assert self.source is not None and self.reloading is not None
        if self.reloading.locked():
            raise BadRequest(409, "reload: another reload is running; try again once it ends")
        async with self.reloading:
            started = time.perf_counter()
            try:
                source = self.source.with_changes(**changes)
                model = await asyncio.to_thread(source.load)
            except MeliError as error:
                self.metrics.reloads.labels("failed").inc()
                kept = self.model.version if self.model else "none"
                raise BadRequest(422, f"model: {error} (still serving version {kept})") from None
            previous, self.model, self.source = self.model, model, source
            self.metrics.serving(model, previous)
            self.metrics.reloads.labels("done").inc()
            if previous is not None:
                # Batches already running hold their own reference; the fetched files can go.
                previous.discard()
            seconds = time.perf_counter() - started
            log.info("serve: reloaded %s: version %s -> %s in %.1fs", model.name,
                     previous.version if previous else "none", model.version, seconds)
            return {"name": model.name, "version": model.version,
                    "previous": previous.version if previous else None,
                    "seconds": round(seconds, 3)}

    def reload_changes(self, body: Any) -> dict[str, Any]:
        """The source changes a /reload body asks for: none, {"model": dir}, or, for a server
        started from the registry, {"rev": version} or {"stage": name}."""
        assert self.source is not None
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise BadRequest(422, 'body: must be a JSON object such as {"model": "models/cnn"}, '
                                  "or empty")
        allowed = ("rev", "stage") if self.source.artifact is not None else ("model",)
        for key, value in body.items():
            if key not in allowed:
                raise BadRequest(422, f"{key}: unknown field for this server (it takes "
                                      f"{' or '.join(allowed)})")
            if not isinstance(value, str) or not value.strip():
                raise BadRequest(422, f"{key}: must be a non-empty string")
        if "model" in body:
            return {"directory": Path(body["model"])}
        if "rev" in body and "stage" in body:
            raise BadRequest(422, "rev: give rev or stage, not both")
        if "rev" in body:
            return {"rev": body["rev"], "stage": None}
        if "stage" in body:
            return {"stage": body["stage"], "rev": None}
        return {}

    def sighup(self) -> None:
        async def reload() -> None:
            try:
                await self.reload({})
            except BadRequest as error:
                log.error("serve: SIGHUP reload failed: %s", error.message)

        asyncio.get_running_loop().create_task(reload())


# ---- the app ------------------------------------------------------------------------------

def create_app(model: LoadedModel | None, source: ModelSource | None = None,
               settings: Settings | None = None, handle_sighup: bool = False) -> Starlette:
    """The app serving `model` (None: not ready yet, /health says 503); `source` is where
    /reload and SIGHUP load from."""
    server = Server(model, source, settings or Settings())
    metrics = server.metrics
    explainer = ExplainEndpoint(server)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        s = server.settings
        server.processor = AsyncBatchProcessor(
            server.score, batch_size=s.max_batch_requests, timeout_ms=s.batch_wait_ms,
            max_batch_length=s.max_batch_titles)
        server.reloading = asyncio.Lock()
        explainer.start()
        loop = asyncio.get_running_loop()
        if handle_sighup:
            loop.add_signal_handler(signal.SIGHUP, server.sighup)
        yield
        if handle_sighup:
            loop.remove_signal_handler(signal.SIGHUP)
        # The batcher's loop task starts with its first request and never ends by itself.
        task = getattr(server.processor, "_task", None)
        if task is not None:
            task.cancel()
        explainer.stop()

    async def http_error(request: Request, error: HTTPException) -> Response:
        message = {404: f"{request.url.path}: no such endpoint (/predict, /explain, /health, "
                        f"/model, /metrics, /reload, /)",
                   405: f"{request.url.path}: method {request.method} not allowed"}
        return error_response(error.status_code,
                              message.get(error.status_code, str(error.detail)))

    async def internal_error(request: Request, error: Exception) -> Response:
        log.exception("serve: %s %s failed", request.method, request.url.path)
        return error_response(500, f"internal error: {type(error).__name__}")

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        status = 200
        try:
            if server.model is None:
                raise BadRequest(503, "model: not loaded yet; retry once /health says ready")
            body = await read_body(request, server.settings.max_body_bytes)
            job = parse_predict(parse_json(body), server.settings, server.model)
            assert server.processor is not None
            status, content = await server.processor(job)
            return Response(content, status_code=status, media_type="application/json")
        except BadRequest as error:
            status = error.status
            return error_response(error.status, error.message)
        except BaseException:
            status = 500
            raise
        finally:
            metrics.observe("predict", status, time.perf_counter() - started)

    def timed(endpoint: str, handler: Callable[[], Response]) -> Response:
        started = time.perf_counter()
        response = handler()
        metrics.observe(endpoint, response.status_code, time.perf_counter() - started)
        return response

    async def health(request: Request) -> Response:
        def answer() -> Response:
            if server.model is None:
                return _json(503, {"status": "loading"})
            return _json(200, {"status": "ready", "model": server.model.name,
                               "version": server.model.version})
        return timed("health", answer)

    async def model_info(request: Request) -> Response:
        def answer() -> Response:
            if server.model is None:
                return error_response(503, "model: not loaded yet")
            return _json(200, server.model.describe() | {"serving": asdict(server.settings)})
        return timed("model", answer)

    async def prometheus(request: Request) -> Response:
        return timed("metrics", lambda: Response(generate_latest(metrics.registry),
                                                 media_type=CONTENT_TYPE_LATEST))

    async def reload(request: Request) -> Response:
        started = time.perf_counter()
        status = 200
        try:
            if server.source is None:
                raise BadRequest(409, "reload: this server has no source to reload from")
            body = await read_body(request, 64 << 10)
            changes = server.reload_changes(parse_json(body) if body.strip() else None)
            return _json(200, await server.reload(changes))
        except BadRequest as error:
            status = error.status
            return error_response(error.status, error.message)
        finally:
            metrics.observe("reload", status, time.perf_counter() - started)

    page = resources.files("meli.serve").joinpath("page.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return timed("page", lambda: HTMLResponse(page))

    app = Starlette(
        routes=[Route("/predict", predict, methods=["POST"]),
                Route("/explain", explainer.handle, methods=["POST"]),
                Route("/health", health, methods=["GET"]),
                Route("/model", model_info, methods=["GET"]),
                Route("/metrics", prometheus, methods=["GET"]),
                Route("/reload", reload, methods=["POST"]),
                Route("/", index, methods=["GET"])],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan)
    app.state.server = server
    return app
