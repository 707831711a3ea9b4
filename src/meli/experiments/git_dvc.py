"""The git and DVC commands that search, the leaderboard and `meli pull` run, as subprocesses.

DVC runs as `python -m dvc` of this interpreter, so the version installed beside meli is the one
used. A failed command becomes a MeliError holding its last line of output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from meli.errors import MeliError

# What queued runs see is the last commit: these must hold no uncommitted change.
TRACKED_INPUTS = ("src", "params.yaml", "dvc.yaml", "pyproject.toml")
# The states `dvc queue status` reports for an experiment.
QUEUE_STATES = ("Queued", "Running", "Success", "Failed")


def run_command(command: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(list(command), capture_output=True, text=True)
    except FileNotFoundError:
        raise MeliError(f"{command[0]}: command not found") from None
    if check and result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit status {result.returncode}"
        raise MeliError(f"`{' '.join(command[:4])} ...` failed: {detail}")
    return result


def dvc(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_command([sys.executable, "-m", "dvc", *arguments], check=check)


def check_committed() -> None:
    """Refuse to queue when code or params differ from the last commit."""
    inside = run_command(["git", "rev-parse", "--verify", "HEAD"], check=False)
    if inside.returncode != 0:
        raise MeliError("queued experiments need a git repository with at least one commit")
    changed = run_command(["git", "status", "--porcelain", "--", *TRACKED_INPUTS]).stdout
    files = [line[3:] for line in changed.splitlines() if line.strip()]
    if files:
        shown = ", ".join(files[:5]) + (", ..." if len(files) > 5 else "")
        raise MeliError(f"uncommitted changes in {shown}: queued runs only see the last commit; "
                        f"commit (or stash) them first")


def exp_show() -> list[dict[str, Any]]:
    """`dvc exp show --json --no-fetch`, parsed: one entry per commit (and the workspace), each
    with its experiments."""
    return json.loads(dvc("exp", "show", "--json", "--no-fetch").stdout or "[]")


def queue_states() -> dict[str, str]:
    """{experiment name: Queued | Running | Success | Failed} from `dvc queue status`."""
    states = {}
    for line in dvc("queue", "status").stdout.splitlines()[1:]:
        columns = line.split()
        if len(columns) >= 4 and columns[-1] in QUEUE_STATES:
            states[columns[1]] = columns[-1]
    return states


def existing_experiments() -> set[str]:
    """Names of experiments already done, queued, running or failed."""
    names = set()
    for baseline in exp_show():
        for experiment in baseline.get("experiments") or []:
            if experiment.get("name"):
                names.add(experiment["name"])
    return names | set(queue_states())


def run_queue(jobs: int, names: Sequence[str], poll_seconds: float = 10.0,
              desc: str = "trials") -> dict[str, str]:
    """Start the queue's workers (`dvc queue start -j jobs`) and wait for `names` to finish,
    with a progress bar; {name: Success | Failed}.

    The workers are detached but inherit the output of `dvc queue start`: through a pipe, it
    reads as closed once the last worker exits, that is once the queue is empty, which ends
    the wait at once. Meanwhile `dvc queue status` counts the finished trials; each call costs
    about a CPU-second taken from the trials, hence the sparse polling.
    """
    from tqdm import tqdm

    starter = subprocess.Popen([sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    drained, ours, checks_after = False, True, 0
    finished: dict[str, str] = {}
    # A bar on a terminal only, not in a log or under CI.
    shown = sys.stderr.isatty() and not os.environ.get("CI")
    with tqdm(total=len(names), desc=desc, unit="trial", disable=not shown) as progress:
        while len(finished) < len(names):
            if drained:
                checks_after += 1
                # Every worker was ours and all have exited, yet trials are unfinished: say so
                # rather than wait forever.
                if ours and checks_after > 3:
                    left = [name for name in names if name not in finished]
                    raise MeliError(f"the queue's workers stopped with {len(left)} trial(s) "
                                    f"unfinished ({', '.join(left)}); see `dvc queue status`")
                time.sleep(poll_seconds)
            else:
                try:
                    output, _ = starter.communicate(timeout=poll_seconds)
                except subprocess.TimeoutExpired:
                    pass
                else:
                    drained = True
                    if starter.returncode != 0:
                        lines = output.strip().splitlines()
                        raise MeliError("`dvc queue start` failed: " + (
                            lines[-1] if lines else f"exit status {starter.returncode}"))
                    # Workers that were already running (`dvc queue start` by hand) are not
                    # ours: they may still be at work.
                    started = re.search(r"Started '(\d+)'", output)
                    ours = started is not None and int(started[1]) == jobs
            for name, state in queue_states().items():
                if name in names and name not in finished and state in ("Success", "Failed"):
                    finished[name] = state
                    progress.update(1)
    return finished
