"""The git and DVC commands that search, the leaderboard and `meli pull` run, as subprocesses.

DVC runs as `python -m dvc` of this interpreter, so the version installed beside meli is the one
used. A failed command becomes a MeliError holding its last line of output.
"""

from __future__ import annotations

import json
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


def run_queue(jobs: int, names: Sequence[str], poll_seconds: float = 5.0,
              desc: str = "trials") -> dict[str, str]:
    """Start the queue's workers and wait for `names` to finish, with a progress bar;
    {name: Success | Failed}.

    Each `dvc queue status` costs about a CPU-second, taken from the trials: poll sparingly.
    """
    from tqdm import tqdm

    dvc("queue", "start", "-j", str(jobs))
    finished: dict[str, str] = {}
    with tqdm(total=len(names), desc=desc, unit="trial") as progress:
        while len(finished) < len(names):
            time.sleep(poll_seconds)
            for name, state in queue_states().items():
                if name in names and name not in finished and state in ("Success", "Failed"):
                    finished[name] = state
                    progress.update(1)
    return finished
