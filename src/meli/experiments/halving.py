"""Successive halving through the DVC experiment queue (`meli search --strategy halving`).

Rung 0 queues every drawn configuration with a small epoch budget (`search.min_epochs`). Once a
rung is done, the best 1/eta of its trials by validation balanced accuracy (the mean over the
searched models) go on to the next rung with eta times the budget; the last of `search.rungs`
rungs trains the full `train.epochs`. With N = 9, eta = 3, 3 rungs and 10 epochs: 9 trials of 1
epoch, 3 of 3, 1 of 10, which is 28 epochs where random search trains 90.

Each rung's trials are ordinary queued DVC experiments (`dvc exp show` lists them, `dvc exp
apply` brings one back), named for their lineage: `cnn-s0-07-r1` is configuration 07 of seed 0
on rung 1. A promoted trial retrains from the first epoch with `train.epochs` set to its rung's
budget, so its learning-rate schedule spans that budget and the last rung's model is exactly the
one a plain run of the same params gives (the train stage's checkpoints resume an interrupted
run of the same params only; they are not carried from one experiment to the next).

No state is kept besides DVC's own experiments: each step reads `dvc exp show`, works out which
rung is current from the trials' names, and queues what is missing, waits, promotes, or stops.
A step is therefore safe to repeat, after an interruption or on another day. A trial that failed
is never promoted; a rung whose trials all failed stops the search with one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meli.errors import MeliError
from meli.experiments import git_dvc
from meli.experiments.leaderboard import collect
from meli.experiments.names import HALVING_NAME as NAME
from meli.experiments.names import trial_name
from meli.experiments.search import SearchSettings, Trial, targets
from meli.params import Params


@dataclass(frozen=True)
class Plan:
    budgets: tuple[int, ...]  # the epochs of each rung, the last one train.epochs
    eta: int

    @property
    def last(self) -> int:
        return len(self.budgets) - 1

    def keep(self, trials: int) -> int:
        """How many of a rung of `trials` go on to the next one."""
        return max(1, trials // self.eta)


def plan(params: Params) -> Plan:
    """The rungs' budgets from the `search:` section and `train.epochs`."""
    search, full = params.search, params.train.epochs
    budgets = [search.min_epochs * search.eta ** rung for rung in range(search.rungs - 1)]
    budgets.append(full)
    if any(low >= high for low, high in zip(budgets, budgets[1:], strict=False)):
        raise MeliError(
            f"search: rung budgets of {', '.join(map(str, budgets))} epochs do not grow to "
            f"train.epochs ({full}): lower search.rungs ({search.rungs}) or search.min_epochs "
            f"({search.min_epochs}), or raise train.epochs")
    if "train.epochs" in search.space:
        raise MeliError("search.space: train.epochs is the budget successive halving sets; "
                        "drop it from the space, or use search.strategy: random")
    return Plan(tuple(budgets), search.eta)


@dataclass(frozen=True)
class Outcome:
    """A halving trial as DVC has it."""

    index: int
    state: str  # queued | running | success | failed
    score: float | None  # mean validation balanced accuracy over the searched models
    error: str | None = None


@dataclass(frozen=True)
class Step:
    """What the search does next: queue trials on a rung, wait for a rung, or nothing (done)."""

    action: str  # queue | wait | done
    rung: int
    budget: int
    indices: tuple[int, ...]  # queue: the trials to queue; wait: the ones not finished;
    # done: the last rung's trials, best first


def outcomes(exp_show: list[dict], search_prefix: str, models: Sequence[str],
             indices: Sequence[int]) -> dict[int, dict[int, Outcome]]:
    """{rung: {trial index: outcome}} of this search's trials among `indices` (a shard's)."""
    wanted = set(indices)
    scores: dict[str, list[float | None]] = {}
    found: dict[int, dict[int, Outcome]] = {}
    entries = [entry for entry in collect(exp_show, models)
               if (match := NAME.match(entry.name)) and match["prefix"] == search_prefix
               and int(match["index"]) in wanted]
    for entry in entries:
        scores.setdefault(entry.name, []).append(entry.validation)
    for entry in entries:
        match = NAME.match(entry.name)
        assert match is not None
        values = scores[entry.name]
        score = None if any(value is None for value in values) else sum(values) / len(values)
        state = entry.state if entry.state != "success" or score is not None else "failed"
        found.setdefault(int(match["rung"]), {})[int(match["index"])] = Outcome(
            int(match["index"]), state, score,
            entry.error or ("no validation figure" if state == "failed" else None))
    return found


def next_step(found: dict[int, dict[int, Outcome]], indices: Sequence[int], rungs: Plan) -> Step:
    """Walk the rungs from 0: the first with a trial missing is queued, the first with trials
    unfinished is waited for, a finished one promotes its best to the next."""
    expected = tuple(sorted(indices))
    for rung, budget in enumerate(rungs.budgets):
        have = found.get(rung, {})
        missing = tuple(index for index in expected if index not in have)
        if missing:
            return Step("queue", rung, budget, missing)
        unfinished = tuple(index for index in expected
                           if have[index].state in ("queued", "running"))
        if unfinished:
            return Step("wait", rung, budget, unfinished)
        succeeded = sorted((have[index] for index in expected if have[index].state == "success"),
                           key=lambda outcome: (-(outcome.score or 0.0), outcome.index))
        if not succeeded:
            first = have[expected[0]]
            raise MeliError(f"rung {rung}: all {len(expected)} trial(s) failed (configuration "
                            f"{first.index:02d}: {first.error or 'see `dvc queue logs`'}); "
                            f"the search stops")
        if rung == rungs.last:
            return Step("done", rung, budget, tuple(outcome.index for outcome in succeeded))
        expected = tuple(sorted(outcome.index for outcome in
                                succeeded[:rungs.keep(len(expected))]))
    raise AssertionError("unreachable: the last rung returns")


def threads_for(step: Step, params: Params, jobs: int | None, cores: int) -> int | None:
    """The `train.threads` of a rung's trials when they run `jobs` at a time on `cores` cores,
    if more than params.yaml's: a rung of fewer trials than jobs (the last rung is one trial)
    would otherwise leave cores idle. None: params.yaml's threads."""
    if jobs is None:
        return None  # the queue is started by hand: how many run at once is not known
    share = max(1, cores // min(jobs, len(step.indices)))
    return share if share > params.train.threads else None


def queue_rung(step: Step, trials: dict[int, Trial], settings: SearchSettings,
               threads: int | None = None) -> list[str]:
    """Queue `step`'s trials on its rung with its budget (and `threads`, when given); their
    names. A value the trial drew from the space comes last, so it wins."""
    names = []
    extra = [] if threads is None else ["-S", f"train.threads={threads}"]
    for index in step.indices:
        name = trial_name(settings.prefix, index, step.rung)
        git_dvc.dvc("exp", "run", "--queue", "-n", name,
                     "-S", f"train.epochs={step.budget}", *extra, *trials[index].set_params(),
                     *settings.set_params(), *targets(settings.models))
        names.append(name)
    return names


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def advance(params: Params, trials: dict[int, Trial], settings: SearchSettings,
            run: Callable[[Step, list[str]], None] | None = None,
            jobs: int | None = None) -> Step:
    """One step of the search `settings` (`run` None), or every step until the last rung is
    done, `run` starting the queue with `jobs` workers and waiting for a rung's trials.
    `trials` are this machine's configurations, by their place in the whole draw. The step the
    search stopped at."""
    rungs = plan(params)
    waited: Step | None = None
    while True:
        found = outcomes(git_dvc.exp_show(), settings.prefix, settings.models, list(trials))
        step = next_step(found, list(trials), rungs)
        if step == waited:
            raise MeliError(f"rung {step.rung}: the queue is done but DVC still lists "
                            f"{len(step.indices)} trial(s) as queued or running; see "
                            f"`dvc queue status` and `dvc queue logs`")
        if step.action == "queue":
            git_dvc.check_committed()
            names = queue_rung(step, trials, settings,
                               threads_for(step, params, jobs if run else None, cores()))
            if run is None:
                return step
            run(step, names)
        elif step.action == "wait":
            if run is None:
                return step
            run(step, [trial_name(settings.prefix, index, step.rung) for index in step.indices])
            waited = step
        else:
            return step
