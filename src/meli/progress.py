"""Progress of a long loop that a person can follow wherever the output goes.

On a terminal, a tqdm bar. Everywhere else (under `dvc repro`, which hands the stage a pipe, in
CI, into a log file) a bar would be either hidden or a flood of carriage returns, so a plain log
line is written instead every `LOG_INTERVAL` seconds: what is done out of what, the elapsed time
and an estimate of the time left. A loop shorter than the interval logs nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Seconds between two log lines: a stage never stays silent for a minute, and a 20-minute epoch
# writes 40 lines, not thousands.
LOG_INTERVAL = 30.0


def on_terminal() -> bool:
    """A bar on a terminal, never in a pipe, a file or CI."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`: the shortest form a person reads at a glance."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """`update(done)` as the loop advances; `close()` (or a `with` block) at the end. `unit` is
    what is counted, in the plural ("batches").

    `note`, if given, is called only when a line is written (it may be costly: a GPU sync for a
    running loss) and its text appended. `enabled=False` (another rank than 0) shows nothing.
    `ticking=True`, for a loop of few long steps (an ensemble's members), also has a thread
    write the lines, every interval even while one step lasts longer than that.
    """

    def __init__(self, description: str, total: int | None, unit: str,
                 enabled: bool = True, note: Callable[[], str] | None = None,
                 interval: float | None = None, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = log, terminal: bool | None = None,
                 ticking: bool = False):
        self.description, self.total, self.unit = description, total, unit
        self.note, self.clock, self.logger = note, clock, logger
        self.interval = LOG_INTERVAL if interval is None else interval
        self.enabled = enabled
        self.done = 0
        self.started = clock()
        self.next_line = self.started + self.interval
        self.bar = None
        self.ticking: threading.Event | None = None
        if enabled and (on_terminal() if terminal is None else terminal):
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=description, unit=unit, leave=False,
                            mininterval=1.0)
        elif enabled and ticking:
            self.ticking = threading.Event()
            threading.Thread(target=self._tick, args=(self.ticking,), name="progress",
                             daemon=True).start()

    def update(self, done: int) -> None:
        """`done` units are finished so far (a count, not an increment)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(done - self.done)
            self.done = done
            return
        self.done = done
        self._maybe_log()

    def _maybe_log(self) -> None:
        now = self.clock()
        if now >= self.next_line:
            self.next_line = now + self.interval
            self.logger.info("%s", self.line(now))

    def _tick(self, stopped: threading.Event) -> None:
        # A quarter of the interval: a line written by `update` meanwhile postpones the next.
        while not stopped.wait(max(self.interval / 4, 0.01)):
            self._maybe_log()

    def line(self, now: float) -> str:
        elapsed = now - self.started
        text = f"{self.description}: {self.done:,}"
        if self.total:
            text += f" of {self.total:,} {self.unit} ({self.done / self.total:.0%})"
        else:
            text += f" {self.unit}"
        text += f", {duration(elapsed)}"
        if self.total and self.done:
            left = elapsed * (self.total - self.done) / self.done
            text += f", about {duration(left)} left"
        if self.note is not None:
            text += f"; {self.note()}"
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.ticking is not None:
            self.ticking.set()
            self.ticking = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Ticker:
    """For work whose loop is not this code's (a reader in another module, a library's C++):
    a thread logs `describe(elapsed seconds)` every LOG_INTERVAL seconds until the `with` block
    ends. `describe` runs in that thread: it reads counters, it changes nothing."""

    def __init__(self, describe: Callable[[float], str], logger: logging.Logger = log,
                 interval: float | None = None):
        self.describe, self.logger = describe, logger
        self.interval = LOG_INTERVAL if interval is None else interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self.stop.wait(self.interval):
            try:
                line = self.describe(time.monotonic() - started)
            except (OSError, ValueError):  # what it reads was just closed: the work is done
                return
            self.logger.info("%s", line)

    def __enter__(self) -> Ticker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
