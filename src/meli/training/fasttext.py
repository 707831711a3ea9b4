"""Training fastText (word vectors or the supervised baseline) reproducibly and with clear errors.

Three things about the pinned fastText 0.9.3 make a plain `fasttext.train_*` call unfit here:
- its Python `train_unsupervised` rejects the `seed` keyword that the C++ core understands;
- it allocates its input matrix uninitialized and, with fewer than 10 threads, randomizes only
  threads/10 of it, so the other rows start from whatever the heap held: runs differ, and some
  diverge (NaN);
- its failures surface as a bare `RuntimeError: Encountered NaN`.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from meli.errors import MeliError

_M_PERTURB = -6  # glibc's mallopt(3) parameter number


def thread_count(threads: int | str) -> int:
    """`embeddings.threads`/`baseline.threads` as a number: "auto" is every core this process
    may run on."""
    if threads == "auto":
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1
    return int(threads)


def train(kind: str, corpus: Path, settings: dict[str, Any], what: str, rate_key: str) -> Any:
    """Train a fastText model (`kind` "unsupervised" or "supervised") on the `corpus` file.

    `settings` are fastText's own argument names; `seed` is shifted by one because fastText's
    generator (minstd_rand) treats seeds 0 and 1 alike. Failures become one MeliError line
    naming `what` was being trained on and the params key (`rate_key`) to lower on divergence.
    """
    from fasttext import FastText

    defaults = dict(FastText.unsupervised_default)
    if kind == "supervised":
        # What fasttext.train_supervised puts in place of the unsupervised defaults.
        defaults |= {"model": "supervised", "lr": 0.1, "minCount": 1, "minn": 0, "maxn": 0,
                     "loss": "softmax"}
    settings = {**settings, "input": str(corpus), "seed": settings.get("seed", 0) + 1,
                "verbose": 0, "thread": thread_count(settings.get("thread", 1))}
    try:
        args, manually_set = FastText.read_args((), settings, ["input", *defaults], defaults)
        built = FastText._build_args(args, manually_set)
        model = FastText._FastText(args=built)
        with _zero_filled_allocations():
            FastText.fasttext.train(model.f, built)
        model.set_args(model.f.getArgs())
        return model
    except (RuntimeError, ValueError) as error:
        words = _distinct_words(corpus)
        if "NaN" in str(error):
            raise MeliError(f"{what}: fastText training diverged (NaN loss) on {words} distinct "
                            f"words; lower {rate_key} or train on more varied data") from None
        raise MeliError(f"{what}: fastText could not train on {words} distinct words: "
                        f"{error}") from None


def write_corpus(source: Path, corpus: Path, labelled: bool) -> None:
    """fastText's input from a split's Parquet file, one normalized title per line, prefixed by
    `__label__<label id>` when `labelled` (ids, since category names may hold spaces).

    Streamed in batches and joined by Arrow: the file's bytes are those of the joined strings.
    """
    columns = ["text", "label"] if labelled else ["text"]
    with corpus.open("wb") as out:
        # pre_buffer=False: a pre-buffering reader keeps what it read until it is closed.
        split = pq.ParquetFile(source, pre_buffer=False)
        for batch in split.iter_batches(100_000, columns=columns):
            pieces = [batch.column("text"), "\n"]
            if labelled:
                pieces = ["__label__", pc.cast(batch.column("label"), pa.string()), " ", *pieces]
            lines = pc.binary_join_element_wise(*pieces, "")
            _, offsets, data = lines.buffers()
            offsets = np.frombuffer(offsets, np.int32)[lines.offset:lines.offset + len(lines) + 1]
            if data is not None:
                out.write(memoryview(data)[offsets[0]:offsets[-1]])


def _distinct_words(corpus: Path) -> int:
    with corpus.open(encoding="utf-8") as lines:
        return len({word for line in lines for word in line.split()
                    if not word.startswith("__label__")})


@contextmanager
def _zero_filled_allocations() -> Iterator[None]:
    """Have malloc hand out zero-filled memory while fastText allocates its matrices.

    glibc's M_PERTURB fills every allocation with the complement of the given byte (0xff gives
    zeros): the rows fastText leaves uninitialized then start at zero, as in fastText 0.9.2.
    Elsewhere (not glibc) nothing changes.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        yield
        return
    mallopt(_M_PERTURB, 0xFF)
    try:
        yield
    finally:
        mallopt(_M_PERTURB, 0)
