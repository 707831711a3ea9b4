"""Training fastText (word vectors or the supervised baseline) reproducibly and with clear errors.

Three things about the pinned fastText 0.9.3 make a plain `fasttext.train_*` call unfit here:
- its Python `train_unsupervised` rejects the `seed` keyword that the C++ core understands;
- it allocates its input matrix uninitialized and, with fewer than 10 threads, randomizes only
  threads/10 of it, so the other rows start from whatever the heap held: runs differ, and some
  diverge (NaN);
- its failures surface as a bare `RuntimeError: Encountered NaN`;
- a stage training it is silent for as long as training lasts (many minutes on millions of
  titles): with several threads fastText rewrites a progress line on stderr ten times a second
  (a flood of carriage returns under `dvc repro` or in a log file), and with one thread, the
  reproducible setting, it says nothing until the end. So `TrainingProgress` logs a line every
  `meli.progress.LOG_INTERVAL` seconds instead, from fastText's own line when there is one, else
  from how far its one thread has read into the training file.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import select
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from meli import progress
from meli.errors import MeliError

log = logging.getLogger(__name__)

_M_PERTURB = -6  # glibc's mallopt(3) parameter number
# fastText's progress line (fasttext.cc, printInfo), e.g.
# "Progress:  42.1% words/sec/thread:  121503 lr:  0.028950 avg.loss:  2.311042 ETA:   0h 3m 2s"
_PROGRESS = re.compile(rb"Progress:\s*([\d.]+)%\s*words/sec/thread:\s*(\d+)\s*lr:\s*\S+\s*"
                       rb"avg\.loss:\s*(\S+)\s*ETA:\s*(\d+)h\s*(\d+)m\s*(\d+)s")
# The other things fastText writes on stderr: the words read so far while it builds its
# dictionary, and the dictionary's size once done ("Number of labels" last).
_FASTTEXT_LINES = (b"Read ", b"Number of ", b"Progress:")
_DICTIONARY_DONE = b"Number of labels"


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
                "verbose": 2, "thread": thread_count(settings.get("thread", 1))}
    try:
        args, manually_set = FastText.read_args((), settings, ["input", *defaults], defaults)
        built = FastText._build_args(args, manually_set)
        model = FastText._FastText(args=built)
        with (_zero_filled_allocations(),
              TrainingProgress(f"fastText ({kind}) on {what}", corpus, built.epoch, built.thread)):
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


class TrainingProgress:
    """While fastText trains (it releases the GIL), a thread reads what fastText writes on file
    descriptor 2 and logs a progress line every LOG_INTERVAL seconds:
    - with several threads, from fastText's own progress line (share done, words/s, loss, its
      estimate of the time left);
    - with one thread, from the training file's read position (/proc/self/fdinfo, Linux): the
      thread reads the file front to back once per epoch, so the bytes read over the file's
      size times the epochs is the share done;
    - else, that training goes on and for how long.
    Meanwhile the log handlers that wrote to stderr write to the real stderr directly: through
    the pipe, a log line could land between two of the many small writes that make one line of
    fastText's, and be taken for part of it. Anything else written on descriptor 2 goes through
    unchanged. Where there is no descriptor 2 to redirect, training runs as without this.
    """

    def __init__(self, description: str, corpus: Path, epochs: int, threads: int):
        self.description, self.corpus, self.epochs = description, corpus, epochs
        self.threads = threads
        self.size = corpus.stat().st_size
        self.saved: int | None = None

    def __enter__(self) -> TrainingProgress:
        try:
            self.saved = os.dup(2)
        except OSError:
            return self
        self.read_end, write_end = os.pipe()
        self.stderr = os.fdopen(os.dup(self.saved), "w", buffering=1, encoding="utf-8",
                                errors="backslashreplace")
        self.handlers = [(handler, handler.setStream(self.stderr))
                         for handler in _stderr_handlers()]
        os.dup2(write_end, 2)
        os.close(write_end)
        self.reader = threading.Thread(target=self._relay, name="fasttext-progress",
                                       daemon=True)
        self.reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            return
        # Descriptor 2 back to the real stderr: the pipe's last writer is gone, the reader sees
        # its end and stops.
        os.dup2(self.saved, 2)
        self.reader.join()
        for handler, stream in self.handlers:
            handler.setStream(stream)
        self.stderr.close()
        os.close(self.read_end)
        os.close(self.saved)

    def _relay(self) -> None:
        try:
            self._follow()
        except Exception as error:  # noqa: BLE001 (a bug here must not stop the training)
            # fastText would block on a full pipe that nobody reads: drain it to the end.
            log.warning("%s: no more progress lines (%s: %s)", self.description,
                        type(error).__name__, error)
            while os.read(self.read_end, 65536):
                pass

    def _follow(self) -> None:
        assert self.saved is not None
        started = time.monotonic()
        next_line = started + progress.LOG_INTERVAL
        pending, latest, training = b"", None, False
        reading = _ReadPosition(self.corpus, self.size)
        while True:
            ready, _, _ = select.select([self.read_end], [], [], 1.0)
            chunk = os.read(self.read_end, 65536) if ready else None
            # Segments end at "\r" (fastText rewriting its line) or "\n"; until the end of the
            # stream, the last one may be cut short and waits for the rest.
            segments = re.split(rb"[\r\n]", pending + (chunk or b""))
            pending = segments.pop() if chunk != b"" else b""
            for segment in segments:
                if not segment.startswith(_FASTTEXT_LINES):
                    if segment.strip():
                        os.write(self.saved, segment + b"\n")
                    continue
                training = training or segment.startswith(_DICTIONARY_DONE)
                latest = _PROGRESS.search(segment) or latest
            if chunk == b"":
                return
            if training and self.threads == 1:
                reading.poll()
            now = time.monotonic()
            if now >= next_line:
                next_line = now + progress.LOG_INTERVAL
                log.info("%s: %s", self.description, self._state(now - started, latest,
                                                                 reading if training else None))

    def _state(self, elapsed: float, latest: re.Match | None,
               reading: _ReadPosition | None) -> str:
        if latest is not None:
            percent, speed, loss, hours, minutes, seconds = latest.groups()
            left = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
            return (f"{float(percent):.1f}%, {progress.duration(elapsed)}, about "
                    f"{progress.duration(left)} left; {int(speed):,} words/s per thread, "
                    f"loss {loss.decode()}")
        if reading is not None and reading.read and self.threads == 1:
            share = min(1.0, reading.read / (self.size * self.epochs))
            epoch = min(self.epochs, 1 + reading.read // max(self.size, 1))
            left = elapsed * (1 - share) / max(share, 1e-9)
            return (f"epoch {epoch} of {self.epochs}, {share:.1%}, "
                    f"{progress.duration(elapsed)}, about {progress.duration(left)} left")
        what = "training" if reading is not None else "reading the titles"
        return f"{what}, {progress.duration(elapsed)} so far"


def _stderr_handlers() -> list[logging.StreamHandler]:
    """The log handlers, of every logger, that write to this process's stderr."""
    known = logging.Logger.manager.loggerDict.values()
    loggers = [logging.getLogger(), *(logger for logger in known
                                      if isinstance(logger, logging.Logger))]
    return [handler for logger in loggers for handler in logger.handlers
            if isinstance(handler, logging.StreamHandler)
            and getattr(handler, "stream", None) in (sys.stderr, sys.__stderr__)]


class _ReadPosition:
    """Bytes read so far from `path` through this process's one open descriptor on it, across
    the rewinds to its start that begin each epoch."""

    def __init__(self, path: Path, size: int):
        self.target, self.size = str(path.resolve()), size
        self.descriptor: str | None = None
        self.last = 0
        self.read = 0

    def poll(self) -> None:
        position = self._position()
        if position is None:
            return
        if self.read == 0 and self.last == 0 and position >= self.size:
            # The dictionary's reader, at the end of the file and about to be closed: training
            # opens the file anew.
            return
        if position < self.last:  # rewound: the epoch before ended at the file's end
            self.read += self.size - self.last + position
        else:
            self.read += position - self.last
        self.last = position

    def _position(self) -> int | None:
        try:
            if self.descriptor is None or os.readlink(
                    f"/proc/self/fd/{self.descriptor}") != self.target:
                self.descriptor = next((fd for fd in os.listdir("/proc/self/fd") if _points_to(
                    fd, self.target)), None)
                if self.descriptor is None:
                    return None
            with open(f"/proc/self/fdinfo/{self.descriptor}") as info:
                for line in info:
                    if line.startswith("pos:"):
                        return int(line.split()[1])
        except OSError:  # not Linux, or the descriptor closed meanwhile
            self.descriptor = None
        return None


def _points_to(descriptor: str, target: str) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{descriptor}") == target
    except OSError:
        return False
