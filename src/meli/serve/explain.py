"""`POST /explain` of `meli serve`: which words of a few titles made the model choose their
category, the figures `meli explain --json` prints (meli.bundles.explain).

The body is /predict's, `{"titles": [...]}` (a /predict body with its `k` is accepted: `k`
changes nothing here, one category is explained per title), with two optional fields:
`category` (explain that category for every title instead of each one's most probable) and
`method` (`decomposition`, the linear model's default, or `occlusion`). It is read and refused
as /predict's is: the same body and title limits, a 4xx JSON error naming the field, 503 before
the model is loaded. A request holds at most MAX_TITLES titles of at most 64 words (what `meli
explain` explains): with occlusion a title of n words costs n + 1 titles through the model. Like
the rest of the server, it reaches the bundle through meli.serve.model.

Requests are batched as /predict's are, by their own batcher: requests that arrive together are
explained in one `explain` call per method (one batch of occlusion titles through the model),
in a worker thread, by the model the batch read once. A request's category or method that the
model of its batch cannot explain (it changed by a reload since the request was read) answers
422 alone.

The body is read, parsed and its titles checked by /predict's own code (meli.serve.requests).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np
import orjson
from batched.aio import AsyncBatchProcessor
from starlette.requests import Request
from starlette.responses import Response

from meli.serve.model import LoadedModel, MeliError
from meli.serve.requests import BadRequest, parse_json, parse_titles, read_body

# Titles per request at most: a page's worth, each up to 65 titles through the model (a title
# of LoadedModel.explain_max_words words, 64, and itself).
MAX_TITLES = 16
# Occlusion titles per batch at most, as /predict's default batch of titles (a request is never
# split: one alone may exceed it).
MAX_BATCH_ROWS = 2048
FIELDS = ("titles", "category", "method", "k")


class Server(Protocol):
    """What this endpoint reads of the app's server (meli.serve.app.Server): the model, read
    once per batch; the limits and batching settings; the metrics, which it reports to."""

    model: LoadedModel | None
    settings: Any  # max_body_bytes, max_title_chars, max_batch_requests, batch_wait_ms
    metrics: Any   # .observe(endpoint, status, seconds)


class ExplainJob:
    """One /explain request; its length, what the batcher counts against MAX_BATCH_ROWS, is the
    titles it sends through the model when occluded (n + 1 per title of n words)."""

    __slots__ = ("titles", "category", "method", "rows")

    def __init__(self, titles: list[str], category: str | None, method: str | None):
        self.titles, self.category, self.method = titles, category, method
        self.rows = sum(len(title.split()) + 1 for title in titles)

    def __len__(self) -> int:
        return self.rows


def parse_explain(data: Any, max_title_chars: int, model: LoadedModel) -> ExplainJob:
    """The request, checked as /predict checks its own, and its category and method against
    the model being served."""
    titles = parse_titles(data, FIELDS, MAX_TITLES, max_title_chars,
                          too_many=" to /explain (each costs a title per word)")
    for index, title in enumerate(titles):
        if len(title.split()) > model.explain_max_words:
            raise BadRequest(422, f"titles[{index}]: {len(title.split())} words, at most "
                                  f"{model.explain_max_words} are explained")
    k = data.get("k", 1)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise BadRequest(422, "k: must be a whole number of 1 or more (it changes nothing "
                              "here: one category is explained per title)")
    category, method = data.get("category"), data.get("method")
    if category is not None and (not isinstance(category, str) or not category.strip()):
        raise BadRequest(422, "category: must be a category name, or absent for each title's "
                              "most probable")
    if method is not None and method not in model.explain_methods:
        raise BadRequest(422, f"method: must be one of {', '.join(model.explain_methods)}, or "
                              f"absent for the model's own")
    job = ExplainJob(titles, category, method)
    _check_against(job, model)
    return job


def _check_against(job: ExplainJob, model: LoadedModel) -> tuple[int, str]:
    """The job's class id (-1: each title's most probable) and method for `model`; BadRequest
    422 when the model cannot explain them."""
    wanted = -1
    if job.category is not None:
        try:
            wanted = model.explained_category(job.category)
        except MeliError as error:
            raise BadRequest(422, f"category: {error}") from None
    try:
        return wanted, model.explanation_method(job.method)
    except MeliError as error:
        raise BadRequest(422, f"method: {error}") from None


def explain_batch(model: LoadedModel, jobs: list[ExplainJob]) -> list[tuple[int, bytes]]:
    """The status and JSON body of each request of one batch, all explained by `model`, one
    `explain` call per method."""
    header = {"model": model.name, "version": model.version}
    answers: list[tuple[int, bytes] | None] = [None] * len(jobs)
    by_method: dict[str, list[tuple[int, int]]] = {}
    for number, job in enumerate(jobs):
        try:
            wanted, method = _check_against(job, model)
        except BadRequest as error:
            answers[number] = (error.status, orjson.dumps({"error": error.message}))
            continue
        by_method.setdefault(method, []).append((number, wanted))
    for method, members in by_method.items():
        titles = [title for number, _ in members for title in jobs[number].titles]
        wanted = [category for number, category in members
                  for _ in jobs[number].titles]
        explanations = iter(model.explanations(titles, np.array(wanted, dtype=np.int64),
                                               method))
        for number, _ in members:
            entries = [next(explanations) for _ in jobs[number].titles]
            answers[number] = (200, orjson.dumps(header | {"method": method,
                                                           "explanations": entries}))
    return [answer for answer in answers if answer is not None]


class ExplainEndpoint:
    """The route and its batcher; `start` and `stop` run in the app's lifespan."""

    def __init__(self, server: Server):
        self.server = server
        self.processor: AsyncBatchProcessor | None = None

    def start(self) -> None:
        self.processor = AsyncBatchProcessor(
            self.score, batch_size=self.server.settings.max_batch_requests,
            timeout_ms=self.server.settings.batch_wait_ms, max_batch_length=MAX_BATCH_ROWS)

    def stop(self) -> None:
        # The batcher's loop task starts with its first request and never ends by itself.
        task = getattr(self.processor, "_task", None)
        if task is not None:
            task.cancel()

    def score(self, jobs: list[ExplainJob]) -> list[tuple[int, bytes]]:
        model = self.server.model  # read once: the whole batch is explained by this version
        assert model is not None
        return explain_batch(model, jobs)

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        status = 200
        try:
            model = self.server.model
            if model is None:
                raise BadRequest(503, "model: not loaded yet; retry once /health says ready")
            body = await read_body(request, self.server.settings.max_body_bytes)
            job = parse_explain(parse_json(body), self.server.settings.max_title_chars,
                                model)
            assert self.processor is not None
            status, content = await self.processor(job)
            return Response(content, status_code=status, media_type="application/json")
        except BadRequest as error:
            status = error.status
            return Response(orjson.dumps({"error": error.message}), status_code=status,
                            media_type="application/json")
        except BaseException:
            status = 500
            raise
        finally:
            self.server.metrics.observe("explain", status, time.perf_counter() - started)
