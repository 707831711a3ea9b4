"""Ends a training together with the `dvc repro` that started it (Linux), so that no orphaned
training later writes outputs that a new run is writing too. Used by every training process,
alone or one rank of several.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # prctl(2)

# Shells that DVC may run a stage's command with (its SHELL, else /bin/sh). Bash replaces itself
# with a lone command; dash, Debian's /bin/sh, does not, and stays between DVC and the stage.
_SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh", "ash", "busybox", "fish"})


def die_with_parent() -> None:
    """Ask Linux to stop this process when the process that started it dies, so that a training
    whose `dvc repro` was killed does not live on and later write outputs that a new run is
    writing too. When that parent is a shell running only this command (`sh -c ...`), a killed
    DVC leaves the shell alive; then the shell's parent is watched too.

    The stop is a SIGTERM, which meli.errors.run turns into a clean stop (partial files removed,
    one line saying where the training stopped); a thread follows it with a SIGKILL when the
    process has not ended `STOP_GRACE_SECONDS` later (a main thread stuck in a long call)."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: nothing to ask
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    starter = _parent_of(parent) if _runs_a_command(parent) else None
    if starter is not None and starter <= 1:
        starter = None
    threading.Thread(target=_end_when_orphaned, args=(parent, starter),
                     name="die-with-starter", daemon=True).start()


# How long a stopped process may take to end before it is killed.
STOP_GRACE_SECONDS = 30.0


def _runs_a_command(pid: int) -> bool:
    """Whether `pid` is a shell started as `<shell> [options] -c <command>`."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return name in _SHELLS and b"-c" in arguments[1:]


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (command name) state ppid ...": the name may hold spaces and parentheses.
    return int(stat[stat.rindex(")") + 2:].split()[1])


def _orphaned(parent: int, starter: int | None) -> bool:
    """Whether this process lost its parent, or the shell it runs under lost the starter."""
    return os.getppid() != parent or (starter is not None and _parent_of(parent) != starter)


def _end_when_orphaned(parent: int, starter: int | None, every: float = 0.25) -> None:
    while not _orphaned(parent, starter):
        time.sleep(every)
    os.kill(os.getpid(), signal.SIGTERM)  # the parent-death signal's, when that came first
    time.sleep(STOP_GRACE_SECONDS)
    os.kill(os.getpid(), signal.SIGKILL)
