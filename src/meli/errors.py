"""The one exception type a user is meant to see, and how every command ends with it: one line
on stderr and a non-zero exit, never a traceback. A stop asked from outside (Ctrl-C, SIGTERM)
ends the same way.

Each stage module (`python -m meli.stages.<name>`, the form dvc.yaml runs) and the `meli`
command for people go through `run`, which also removes, as a command starts, what killed runs
left behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from meli.layout import (
    CHECKPOINTS_DIR,
    METRICS_DIR,
    MODELS_DIR,
    PARAMS_FILE,
    RAW_DIR,
    RESULTS_DIR,
)


class MeliError(Exception):
    """A problem with the user's input, data or params.

    The CLI prints its message as a single line and exits non-zero; the message names the file,
    line or key that is wrong, so no traceback is needed to act on it.
    """


class Stopped(BaseException):
    """The process was asked to stop from outside: SIGTERM (`kill`, a CI job or container being
    stopped, or the `dvc repro` that started a training dying). Raised in the main thread, as
    KeyboardInterrupt is for Ctrl-C, so that a stop unwinds like one: partial outputs are
    removed, and `run` prints the message, if any, as one line."""

    def __init__(self, message: str | None = "stopped (SIGTERM)",
                 status: int = 128 + signal.SIGTERM):
        super().__init__(message)
        self.message, self.status = message, status


def _stop(signum: int, frame: object) -> None:
    # A second SIGTERM (a process group's and a parent-death signal both come) must not cut the
    # unwinding of the first short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped


def stage_parser(stage: str, description: str | None) -> argparse.ArgumentParser:
    """The argument parser of a pipeline stage: `--params` and whatever the stage adds."""
    summary = (description or "").strip().splitlines()[0] if description else None
    parser = argparse.ArgumentParser(prog=f"python -m meli.stages.{stage}", description=summary)
    parser.add_argument("--params", default=PARAMS_FILE, help="params file (default: %(default)s)")
    return parser


def run(name: str, action: Callable[[], None]) -> int:
    """Run `action` as the command `name`; return the process exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # Signal handlers can be set from the main thread only (tests call stages from others).
    handling = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if handling else None
    try:
        remove_leftovers()
        action()
    except MeliError as error:
        print(f"meli {name}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"meli {name}: interrupted", file=sys.stderr)
        return 130
    except Stopped as stop:
        if stop.message:
            print(f"meli {name}: {stop.message}", file=sys.stderr)
        return stop.status
    except BrokenPipeError:
        return 141
    finally:
        if handling:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return 0


# What an atomic write leaves while it works (meli.files, meli.training.checkpoint): a sibling
# named .<output>.partial-<pid>, or .<output>.partial-<pid>-old for the output it replaces.
_PARTIAL = re.compile(r"\..+\.partial-(\d+)(-old)?")
# Where stages write, relative to the repository root where DVC runs them.
_OUTPUT_PLACES = (RAW_DIR.parent, MODELS_DIR, METRICS_DIR, RESULTS_DIR, CHECKPOINTS_DIR)


def remove_leftovers(root: str | Path = ".") -> list[Path]:
    """Remove the partial files and directories of processes that are gone (killed while
    writing); those of live processes stay. The removed paths.

    A stage removes the leftovers of its own outputs when it runs, but DVC may restore a killed
    stage's outputs from its cache instead of running it: then whichever command runs next
    removes them.
    """
    removed = []
    for place in _OUTPUT_PLACES:
        for directory, subdirectories, files in os.walk(Path(root) / place):
            for name in [*subdirectories, *files]:
                found = _PARTIAL.fullmatch(name)
                if found is None or _alive(int(found.group(1))):
                    continue
                path = Path(directory) / name
                try:
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                except OSError:  # gone meanwhile, or not ours to remove: leave it
                    continue
                removed.append(path)
            subdirectories[:] = [name for name in subdirectories
                                 if _PARTIAL.fullmatch(name) is None]
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True
