"""Random hyperparameter search through the DVC experiment queue (`meli search`).

DVC offers grids (`-S key=a,b`) but no random search. The `search:` section of params.yaml
describes a space, one distribution per params key:

    search:
      trials: 12
      seed: 0
      models: [cnn]
      space:
        train.learning_rate: {loguniform: [0.0005, 0.01]}
        cnn.kernel_sizes: {choice: [[1, 2, 3], [2, 3, 4]]}
        train.label_smoothing: {uniform: [0.0, 0.2]}
        cnn.filters: {int: [128, 512]}

`meli search` draws the trials from the seed (the same seed and count give the same trials),
checks each against the params' types and ranges, and queues one `dvc exp run --queue` per trial
that reproduces only the chosen models' stages. `dvc queue start` (or `--run`) runs them.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import yaml

from meli.errors import MeliError

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int")
# What queued runs see is the last commit: these must hold no uncommitted change.
TRACKED_INPUTS = ("src", "params.yaml", "dvc.yaml", "pyproject.toml")


@dataclass(frozen=True)
class Dimension:
    key: str
    kind: str
    values: tuple

    def sample(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return self.values[rng.randrange(len(self.values))]
        low, high = self.values
        if self.kind == "int":
            return rng.randint(low, high)
        if self.kind == "uniform":
            return _round(rng.uniform(low, high))
        return _round(math.exp(rng.uniform(math.log(low), math.log(high))))


@dataclass(frozen=True)
class Trial:
    name: str
    values: dict[str, Any]

    def set_params(self) -> list[str]:
        """`-S key=value` arguments, each value written as YAML that reads back as the same
        value (JSON would write 1e-05, which YAML reads as a string)."""
        arguments = []
        for key, value in self.values.items():
            text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000)
            text = text.removesuffix("\n").removesuffix("\n...")  # YAML's end-of-document mark
            arguments += ["-S", f"{key}={text}"]
        return arguments


def _round(value: float) -> float:
    """Four significant digits: readable in names and tables, and still continuous enough."""
    return float(f"{value:.4g}")


def parse_space(space: dict[str, Any], params: Any) -> list[Dimension]:
    """Check the space against the params (keys exist, distributions well formed)."""
    dimensions = []
    for key in sorted(space):
        where = f"search.space.{key}"
        if key.split(".")[0] == "search":
            raise MeliError(f"{where}: the search section itself cannot be searched")
        _check_leaf(params, key, where)
        spec = space[key]
        if not isinstance(spec, dict) or len(spec) != 1:
            raise MeliError(f"{where}: must be one distribution, e.g. {{choice: [a, b]}}, "
                            f"{{uniform: [low, high]}}, {{loguniform: [low, high]}} or "
                            f"{{int: [low, high]}}")
        ((kind, values),) = spec.items()
        if kind not in DISTRIBUTIONS:
            raise MeliError(f"{where}: unknown distribution '{kind}' "
                            f"(use one of {', '.join(DISTRIBUTIONS)})")
        if kind == "choice":
            if not isinstance(values, list) or not values:
                raise MeliError(f"{where}: choice needs a non-empty list of values")
            dimensions.append(Dimension(key, kind, tuple(values)))
            continue
        numbers = int if kind == "int" else (int, float)
        if (not isinstance(values, list) or len(values) != 2
                or not all(isinstance(v, numbers) and not isinstance(v, bool) for v in values)):
            expected = "integers" if kind == "int" else "numbers"
            raise MeliError(f"{where}: {kind} needs [low, high], two {expected}")
        low, high = values
        if not low < high:
            raise MeliError(f"{where}: {kind} needs low < high, got [{low}, {high}]")
        if kind == "loguniform" and low <= 0:
            raise MeliError(f"{where}: loguniform needs low > 0, got {low}")
        dimensions.append(Dimension(key, kind, (low, high)))
    return dimensions


def _check_leaf(params: Any, key: str, where: str) -> None:
    node = params
    for depth, part in enumerate(key.split(".")):
        names = [f.name for f in fields(node)] if is_dataclass(node) else []
        if part not in names:
            prefix = ".".join(key.split(".")[:depth])
            known = ", ".join(names) if names else "nothing (it is a value)"
            raise MeliError(f"{where}: no params key '{key}' ('{prefix or 'params'}' holds "
                            f"{known})")
        node = getattr(node, part)
    if is_dataclass(node):
        raise MeliError(f"{where}: '{key}' is a whole section; name one of its keys")


def sample_trials(params: Any, trials: int, seed: int, models: Sequence[str]) -> list[Trial]:
    """`trials` distinct configurations drawn from the seed, each valid params."""
    from meli.params import parse_params, to_dict

    # A trial of the CNN alone leaves the MLP's section as it is, and the other way round.
    others = {"mlp", "cnn"} - set(models)
    dimensions = [dimension for dimension in parse_space(params.search.space, params)
                  if dimension.key.split(".")[0] not in others]
    if not dimensions:
        raise MeliError(f"search.space has no key for {', '.join(models)}: give at least one "
                        f"params key and its distribution (see params.yaml)")
    rng = random.Random(seed)
    found: list[Trial] = []
    seen: set[str] = set()
    attempts = 0
    while len(found) < trials:
        attempts += 1
        if attempts > 100 * trials:
            raise MeliError(f"search.space has only {len(found)} distinct configurations; "
                            f"ask for fewer trials than {trials}")
        values = {d.key: d.sample(rng) for d in dimensions}
        digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:6]
        if digest in seen:
            continue
        seen.add(digest)
        candidate = to_dict(params)
        for key, value in values.items():
            *path, leaf = key.split(".")
            section = candidate
            for part in path:
                section = section[part]
            section[leaf] = value
        try:
            parse_params(candidate, source="a sampled trial")
        except MeliError as error:
            raise MeliError(f"search.space: trial {values} is not valid params: "
                            f"{str(error).split(': ', 1)[1]}") from None
        name = f"{'-'.join(models)}-s{seed}-{len(found) + 1:02d}-{digest}"
        found.append(Trial(name, values))
    return found


def targets(models: Sequence[str]) -> list[str]:
    """The stages a trial reproduces: only its models' training and evaluation (and what
    they depend on, if a trial's values make it stale)."""
    return [stage for model in models for stage in (f"train@{model}", f"evaluate@{model}")]


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


def existing_experiments() -> set[str]:
    """Names of experiments already done, queued, running or failed."""
    names = set()
    shown = json.loads(dvc("exp", "show", "--json", "--no-fetch").stdout or "[]")
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            if experiment.get("name"):
                names.add(experiment["name"])
    return names | set(queue_states())


def queue(trials: Sequence[Trial], models: Sequence[str], force: bool = False) -> list[Trial]:
    """Queue the trials not already known to DVC (all of them with `force`)."""
    check_committed()
    known = set() if force else existing_experiments()
    queued = []
    for trial in trials:
        if trial.name in known:
            continue
        dvc("exp", "run", "--queue", "-n", trial.name, *(["-f"] if force else []),
            *trial.set_params(), *targets(models))
        queued.append(trial)
    return queued


def run_queue(jobs: int, names: Sequence[str], poll_seconds: float = 5.0) -> dict[str, str]:
    """Start the queue's workers and wait for `names` to finish, with a progress bar.

    Each `dvc queue status` costs about a CPU-second, taken from the trials: poll sparingly.
    """
    from tqdm import tqdm

    dvc("queue", "start", "-j", str(jobs))
    finished: dict[str, str] = {}
    with tqdm(total=len(names), desc="trials", unit="trial") as progress:
        while len(finished) < len(names):
            time.sleep(poll_seconds)
            for name, state in queue_states().items():
                if name in names and name not in finished and state in ("Success", "Failed"):
                    finished[name] = state
                    progress.update(1)
    return finished


def queue_states() -> dict[str, str]:
    """{experiment name: Queued | Running | Success | Failed} from `dvc queue status`."""
    states = {}
    for line in dvc("queue", "status").stdout.splitlines()[1:]:
        columns = line.split()
        if len(columns) >= 4 and columns[-1] in ("Queued", "Running", "Success", "Failed"):
            states[columns[1]] = columns[-1]
    return states
