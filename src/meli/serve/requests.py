"""What `meli serve` reads from a request and writes back: bodies read within a size limit and
parsed as JSON, `POST /predict` bodies checked into a `Job`, and the JSON answer of every job of
a batch the model scored together.

    {"titles": ["..."], "k": 3, "coverage": 0.95, "class_conditional": false,
     "min_confidence": 0.9}

`titles` and `k` as ever; the knobs (meli.bundles.answers) are optional, and a response has
their fields only when they are asked: per title, `set` (the categories, most probable first,
that hold the true one for that share of titles, from the bundle's calibration) and `abstain`
(true when the top probability is below `min_confidence`). Requests are checked by hand (a few
isinstance tests cost far less than a validation library per request); bad input is a
`BadRequest`, answered 4xx with a one-line JSON error naming the field.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import orjson
from starlette.requests import Request

from meli.serve.model import NO_KNOBS, Knobs, LoadedModel, answers_of, knob_problem, width


class Limits(Protocol):
    """What a /predict body may hold at most (the server's Settings)."""

    max_titles: int
    max_title_chars: int
    max_k: int

PREDICT_FIELDS = ("titles", "k", "coverage", "class_conditional", "min_confidence")


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Job:
    """One /predict request: an item of the batcher, as long as its number of titles (what
    `batched` counts against the batch's title limit)."""

    __slots__ = ("titles", "k", "knobs")

    def __init__(self, titles: list[str], k: int, knobs: Knobs = NO_KNOBS):
        self.titles, self.k, self.knobs = titles, k, knobs

    def __len__(self) -> int:
        return len(self.titles)


# ---- reading ------------------------------------------------------------------------------

async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_large = BadRequest(413, f"body: over the limit of {limit:,} bytes")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(400, "content-length: not a number")
        if int(declared) > limit:
            raise too_large
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise BadRequest(400, f"body: not valid UTF-8 (byte 0x{body[bad.start]:02x} at "
                                  f"offset {bad.start}); send JSON in UTF-8") from None
        if not body.strip():
            raise BadRequest(400, 'body: empty; send JSON such as {"titles": ["..."]}') from None
        raise BadRequest(400, f"body: not valid JSON: {error}") from None


_TYPES = {str: "a string", int: "a number", float: "a number", bool: "true or false",
          list: "a list", dict: "an object", type(None): "null"}


def kind(value: Any) -> str:
    return _TYPES.get(type(value), type(value).__name__)


def shown(value: Any) -> str:
    """A value as the client sent it, cut short."""
    return orjson.dumps(value).decode()[:40]


def parse_titles(data: Any, fields: tuple[str, ...], max_titles: int, max_title_chars: int,
                 example: str = '{"titles": ["..."]}', too_many: str = "") -> list[str]:
    """The titles of a request body (a JSON object of `fields`), checked alike for every
    endpoint that takes them; `too_many` says why there is a limit, after it."""
    if not isinstance(data, dict):
        raise BadRequest(422, f"body: must be a JSON object such as {example}, got {kind(data)}")
    for key in data:
        if key not in fields:
            raise BadRequest(422, f"{key}: unknown field (the fields are {', '.join(fields)})")
    titles = data.get("titles")
    if titles is None:
        raise BadRequest(422, f"titles: missing; give a list of 1 to {max_titles} titles")
    if not isinstance(titles, list):
        raise BadRequest(422, f"titles: must be a list of strings, got {kind(titles)}")
    if not titles:
        raise BadRequest(422, f"titles: empty list; give 1 to {max_titles} titles")
    if len(titles) > max_titles:
        raise BadRequest(422, f"titles: {len(titles):,} titles, at most {max_titles:,} per "
                              f"request{too_many}")
    for index, title in enumerate(titles):
        if not isinstance(title, str):
            raise BadRequest(422, f"titles[{index}]: must be a string, got {kind(title)}")
        if len(title) > max_title_chars:
            raise BadRequest(422, f"titles[{index}]: {len(title):,} characters, at most "
                                  f"{max_title_chars:,}")
        if not title.strip():
            raise BadRequest(422, f"titles[{index}]: empty")
    return titles


def parse_predict(data: Any, settings: Limits, model: LoadedModel | None = None) -> Job:
    """The job a /predict body asks for; the knobs are checked against `model`'s calibration
    (the one serving when the request arrives)."""
    titles = parse_titles(data, PREDICT_FIELDS, settings.max_titles, settings.max_title_chars,
                          example='{"titles": ["..."], "k": 3}')
    k = data.get("k", 3)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= settings.max_k:
        raise BadRequest(422, f"k: must be a whole number from 1 to {settings.max_k}, got "
                              f"{shown(k)}")
    return Job(titles, k, parse_knobs(data, model))


def parse_knobs(data: dict[str, Any], model: LoadedModel | None) -> Knobs:
    coverage = data.get("coverage")
    confidence = data.get("min_confidence")
    class_conditional = data.get("class_conditional", False)
    if not isinstance(class_conditional, bool):
        raise BadRequest(422, f"class_conditional: must be true or false, got "
                              f"{shown(class_conditional)}")
    for name, value in (("coverage", coverage), ("min_confidence", confidence)):
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise BadRequest(422, f"{name}: must be a number such as 0.95, got {shown(value)}")
    knobs = Knobs(coverage, confidence, class_conditional)
    if model is not None:
        problem = knob_problem(knobs, model.calibration, model.name)
        if problem:
            raise BadRequest(422, f"{problem[0]}: {problem[1]}")
    return knobs


# ---- answering ----------------------------------------------------------------------------

def answer_batch(model: LoadedModel, jobs: list[Job]) -> list[tuple[int, bytes]]:
    """The status and JSON body of each job of one batch, every title scored by `model` in
    one call: the most probable categories as deep as the widest job needs."""
    titles = [title for job in jobs for title in job.titles]
    labels = model.labels
    calibration = model.calibration
    # A job whose knobs this model cannot answer (a reload swapped in a bundle without a
    # calibration after the request was checked) gets its error; the others their answer.
    problems = [knob_problem(job.knobs, calibration, model.name) for job in jobs]
    widths = [width(job.k, job.knobs, calibration, len(labels))
              for job, problem in zip(jobs, problems, strict=True) if not problem]
    indices, probabilities, known = model.top_k(titles, max(widths, default=1))
    # The top k of every title at once, six decimals rounded exactly as `meli predict` writes
    # them; each job then takes its rows and its k, and its knobs' answers.
    k = min(max(job.k for job in jobs), indices.shape[1])
    rounded = (np.rint(probabilities[:, :k].astype(np.float64) * 1e6) / 1e6).tolist()
    names = [[labels[i] for i in line] for line in indices[:, :k].tolist()]
    known_words = known.tolist()
    header = {"model": model.name, "version": model.version}
    bodies, row = [], 0
    for job, problem in zip(jobs, problems, strict=True):
        rows = range(row, row + len(job.titles))
        row += len(job.titles)
        if problem:
            bodies.append((422, orjson.dumps({"error": f"{problem[0]}: {problem[1]}"})))
            continue
        sets = abstain = None
        if job.knobs != NO_KNOBS:
            part = slice(rows.start, rows.stop)
            answers = answers_of(indices[part], probabilities[part], known[part], job.k,
                                 job.knobs, calibration)
            sets = answers.sets()
            abstain = None if answers.abstain is None else answers.abstain.tolist()
        width_of_job = min(job.k, k)
        predictions = []
        for offset, index in enumerate(rows):
            prediction = {
                "categories": [{"category": name, "probability": probability}
                               for name, probability in zip(names[index][:width_of_job],
                                                            rounded[index][:width_of_job],
                                                            strict=True)],
                "known_words": known_words[index]}
            if sets is not None:
                prediction["set"] = [labels[i] for i in sets[offset]]
            if abstain is not None:
                prediction["abstain"] = abstain[offset]
            predictions.append(prediction)
        bodies.append((200, orjson.dumps(header | {"predictions": predictions})))
    return bodies
