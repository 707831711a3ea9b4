"""Successive halving and shards: the rungs' budgets, which trials go on, the search driven
step by step against a stand-in for DVC, and the leaderboard by rung."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from meli.errors import MeliError
from meli.experiments import git_dvc, halving, search
from meli.experiments.halving import Outcome, Step, next_step, outcomes, plan
from meli.experiments.leaderboard import BASELINE, apply_best, collect, format_table, rank
from meli.experiments.names import rung_of, trial_name
from meli.models import params_classes
from meli.params import Params, parse_params, to_dict

SPACE = {"train.learning_rate": {"loguniform": [0.0005, 0.01]},
         "cnn.filters": {"int": [16, 64]}}


def params_with(epochs: int = 10, **search_params) -> Params:
    raw = to_dict(Params())
    raw["train"]["epochs"] = epochs
    raw["search"] |= {"space": SPACE, "strategy": "halving", **search_params}
    return parse_params(raw, models=params_classes())


# --- the plan -----------------------------------------------------------------------------------

def test_budgets_grow_by_eta_to_the_full_epochs():
    assert plan(params_with()).budgets == (1, 3, 10)
    assert plan(params_with(epochs=20, eta=2, min_epochs=2, rungs=4)).budgets == (2, 4, 8, 20)
    assert plan(params_with(rungs=1)).budgets == (10,)  # one rung: every trial, full budget
    assert plan(params_with()).keep(9) == 3
    assert plan(params_with()).keep(2) == 1  # never none


def test_budgets_that_do_not_grow_are_refused():
    with pytest.raises(MeliError, match=r"rung budgets of 4, 12, 10 epochs do not grow to "
                                        r"train.epochs \(10\): lower search.rungs \(3\)"):
        plan(params_with(min_epochs=4))


def test_the_space_cannot_draw_the_budget():
    raw = params_with()
    spaced = parse_params(to_dict(raw) | {"search": to_dict(raw)["search"] | {"space": {
        **SPACE, "train.epochs": {"int": [2, 8]}}}}, models=params_classes())
    with pytest.raises(MeliError, match="train.epochs is the budget successive halving sets"):
        plan(spaced)


def test_halving_is_a_params_choice_and_a_bad_one_is_named():
    assert Params().search.strategy == "random"
    raw = to_dict(Params())
    raw["search"]["strategy"] = "hyperband"
    with pytest.raises(MeliError, match="search.strategy"):
        parse_params(raw, models=params_classes())


# --- which trials go on -------------------------------------------------------------------------

def done(scores: dict[int, float | None]) -> dict[int, Outcome]:
    return {index: Outcome(index, "success" if score is not None else "failed", score,
                           None if score is not None else "meli train: error: out of memory")
            for index, score in scores.items()}


RUNGS = halving.Plan((1, 3, 10), 3)
NINE = list(range(1, 10))


def test_rung_zero_is_queued_first_and_only_what_is_missing():
    assert next_step({}, NINE, RUNGS) == Step("queue", 0, 1, tuple(NINE))
    partly = {0: done({1: 0.5, 2: 0.6})}  # an interrupted `meli search` queued two
    assert next_step(partly, NINE, RUNGS) == Step("queue", 0, 1, tuple(range(3, 10)))


def test_a_rung_with_trials_unfinished_is_waited_for():
    found = {0: done({i: 0.5 for i in NINE})}
    found[0][4] = Outcome(4, "running", None)
    found[0][8] = Outcome(8, "queued", None)
    assert next_step(found, NINE, RUNGS) == Step("wait", 0, 1, (4, 8))


def test_the_best_third_goes_on_with_three_times_the_budget():
    scores = {1: 0.50, 2: 0.71, 3: 0.40, 4: 0.69, 5: 0.70, 6: 0.10, 7: 0.72, 8: 0.30, 9: 0.20}
    assert next_step({0: done(scores)}, NINE, RUNGS) == Step("queue", 1, 3, (2, 5, 7))
    found = {0: done(scores), 1: done({2: 0.80, 5: 0.85, 7: 0.82})}
    assert next_step(found, NINE, RUNGS) == Step("queue", 2, 10, (5,))
    found[2] = done({5: 0.9})
    assert next_step(found, NINE, RUNGS) == Step("done", 2, 10, (5,))


def test_a_failed_trial_is_never_promoted():
    # Configuration 9 failed: the three best of those that finished go on.
    scores = {1: 0.5, 2: 0.6, 3: 0.4, 4: 0.1, 5: 0.2, 6: 0.3, 7: 0.7, 8: 0.05, 9: None}
    assert next_step({0: done(scores)}, NINE, RUNGS).indices == (1, 2, 7)
    # Only one of a rung of three finished: it alone goes on.
    found = {0: done(scores), 1: done({1: None, 2: None, 7: 0.8})}
    assert next_step(found, NINE, RUNGS) == Step("queue", 2, 10, (7,))


def test_a_rung_where_every_trial_failed_stops_the_search_with_one_line():
    found = {0: done({i: 0.5 for i in NINE}), 1: done({1: None, 2: None, 3: None})}
    with pytest.raises(MeliError) as raised:
        next_step(found, NINE, RUNGS)
    assert str(raised.value) == ("rung 1: all 3 trial(s) failed (configuration 01: meli train: "
                                 "error: out of memory); the search stops")


# --- the trials as DVC lists them ---------------------------------------------------------------

def shown(*experiments: tuple[str, str, dict[str, float]], epochs: int = 10) -> list:
    """`dvc exp show --json`: a commit of `epochs` epochs and (name, state, {model: validation})
    experiments."""
    def data(figures: dict[str, float], trial_epochs: int) -> dict:
        return {"params": {"params.yaml": {"data": {"train": {"epochs": trial_epochs}}}},
                "metrics": {f"results/train/{model}/metrics.json": {"data": {"best": {
                    "validation_balanced_accuracy": value}}} for model, value in figures.items()}}

    rows = []
    for name, state, figures in experiments:
        rung = rung_of(name)
        budget = epochs if rung is None else (1, 3, epochs)[rung]
        rows.append({"name": name, "executor": {"state": state, "local": {"log": None}},
                     "revs": [{"rev": "abc1234", "data": data(figures, budget)}]})
    return [{"rev": "1" * 40, "data": data({"cnn": 0.8, "mlp": 0.7}, epochs),
             "experiments": rows}]


def test_outcomes_are_read_from_the_names_for_this_search_and_shard_only():
    listed = shown(("cnn-s0-01-r0", "success", {"cnn": 0.6}),
                   ("cnn-s0-02-r0", "failed", {}),
                   ("cnn-s0-03-r0", "running", {}),
                   ("cnn-s0-01-r1", "success", {"cnn": 0.7}),
                   ("cnn-s1-01-r0", "success", {"cnn": 0.9}),  # another seed: another search
                   ("mlp-s0-01-r0", "success", {"mlp": 0.9}),  # another model
                   ("cnn-s0-04-r0", "success", {"cnn": 0.9}),  # another shard's
                   ("cnn-s0-05-3fa2c1", "success", {"cnn": 0.9}))  # a random search's trial
    found = outcomes(listed, "cnn-s0", ["cnn"], [1, 2, 3])
    assert found == {0: {1: Outcome(1, "success", 0.6), 2: Outcome(2, "failed", None,
                                                                    "no validation figure"),
                         3: Outcome(3, "running", None)},
                     1: {1: Outcome(1, "success", 0.7)}}


def test_a_search_of_two_models_ranks_by_their_mean():
    listed = shown(("mlp-cnn-s0-01-r0", "success", {"mlp": 0.6, "cnn": 0.8}))
    assert outcomes(listed, "mlp-cnn-s0", ["mlp", "cnn"], [1])[0][1].score == pytest.approx(0.7)


# --- the whole search against a stand-in for DVC ------------------------------------------------

class StandIn:
    """Queued experiments become finished ones when `run` is called; each trial's validation
    figure is its configuration's hidden quality plus what its budget adds."""

    def __init__(self, quality: dict[int, float], fails: set[str] = frozenset()):
        self.quality, self.fails = quality, fails
        self.queued: list[tuple[str, int]] = []
        self.finished: dict[str, tuple[str, dict[str, float]]] = {}
        self.runs: list[tuple[int, list[str]]] = []
        self.threads: dict[str, int | None] = {}

    def dvc(self, *arguments: str, check: bool = True):
        assert arguments[:3] == ("exp", "run", "--queue")
        name = arguments[arguments.index("-n") + 1]
        budget = int(arguments[arguments.index("-S") + 1].removeprefix("train.epochs="))
        self.threads[name] = next((int(value.split("=")[1]) for value in arguments
                                   if value.startswith("train.threads=")), None)
        assert arguments[-2:] == ("train@cnn", "evaluate@cnn")
        self.queued.append((name, budget))

    def exp_show(self) -> list:
        pending = [(name, "queued", {}) for name, _ in self.queued if name not in self.finished]
        done = [(name, state, figures) for name, (state, figures) in self.finished.items()]
        return shown(*done, *pending)

    def run(self, step: Step, names: list[str]) -> None:
        self.runs.append((step.rung, names))
        for name in names:
            index, budget = int(name.split("-")[2]), dict(self.queued)[name]
            self.finished[name] = ("failed", {}) if name in self.fails else (
                "success", {"cnn": self.quality[index] + budget / 100})


@pytest.fixture
def stand_in(monkeypatch):
    def make(quality, fails=frozenset()):
        dvc = StandIn(quality, fails)
        monkeypatch.setattr(git_dvc, "dvc", dvc.dvc)
        monkeypatch.setattr(git_dvc, "exp_show", dvc.exp_show)
        monkeypatch.setattr(git_dvc, "check_committed", lambda: None)
        return dvc
    return make


CNN_SEARCH = search.SearchSettings("halving", ("cnn",), 0, 9)


def drawn(params: Params) -> dict[int, search.Trial]:
    return dict(enumerate(search.sample_trials(params, 9, 0, ["cnn"]), start=1))


def test_run_goes_rung_after_rung_to_the_best_configuration(stand_in):
    quality = {1: 0.50, 2: 0.61, 3: 0.40, 4: 0.62, 5: 0.70, 6: 0.10, 7: 0.60, 8: 0.30, 9: 0.20}
    dvc = stand_in(quality)
    params = params_with()
    step = halving.advance(params, drawn(params), CNN_SEARCH, dvc.run)
    assert step == Step("done", 2, 10, (5,))
    assert [(rung, len(names)) for rung, names in dvc.runs] == [(0, 9), (1, 3), (2, 1)]
    assert dvc.runs[1][1] == ["cnn-s0-02-r1", "cnn-s0-04-r1", "cnn-s0-05-r1"]
    assert dvc.queued[-1] == ("cnn-s0-05-r2", 10)
    # 9 x 1 + 3 x 3 + 1 x 10 epochs, where random search trains 9 x 10.
    assert sum(budget for _, budget in dvc.queued) == 28


def test_a_rung_of_fewer_trials_than_jobs_shares_the_cores(stand_in, monkeypatch):
    monkeypatch.setattr(halving, "cores", lambda: 2)
    dvc = stand_in({i: i / 10 for i in range(1, 10)})
    raw = to_dict(params_with())
    raw["train"]["threads"] = 1  # one thread per trial, two trials at a time
    params = parse_params(raw, models=params_classes())
    halving.advance(params, drawn(params), CNN_SEARCH, dvc.run, jobs=2)
    # Rungs of 9 and 3 keep both cores busy; the last, one trial, gets both.
    assert {name: threads for name, threads in dvc.threads.items() if threads} == \
        {"cnn-s0-09-r2": 2}
    step = Step("queue", 2, 10, (9,))
    assert halving.threads_for(step, params, None, 2) is None  # queue started by hand
    assert halving.threads_for(step, params, 2, 16) == 16
    assert halving.threads_for(step, params_with(), 2, 2) is None  # already 2 (params.yaml)


def test_without_run_each_step_queues_one_rung_and_is_safe_to_repeat(stand_in):
    dvc = stand_in({i: i / 10 for i in range(1, 10)})
    params = params_with()
    trials = drawn(params)
    first = halving.advance(params, trials, CNN_SEARCH)
    assert (first.action, first.rung, len(first.indices)) == ("queue", 0, 9)
    again = halving.advance(params, trials, CNN_SEARCH)  # nothing ran yet: the same rung waits
    assert (again.action, again.rung, again.indices) == ("wait", 0, first.indices)
    assert len(dvc.queued) == 9  # nothing queued twice
    dvc.run(first, [name for name, _ in dvc.queued])
    promoted = halving.advance(params, trials, CNN_SEARCH)
    assert promoted == Step("queue", 1, 3, (7, 8, 9))
    # The trial keeps its drawn values on every rung.
    name = trial_name("cnn-s0", 9, 1)
    assert name == "cnn-s0-09-r1"


def test_a_run_stops_when_a_rung_fails_entirely(stand_in):
    quality = {i: i / 10 for i in range(1, 10)}
    dvc = stand_in(quality, fails={"cnn-s0-07-r1", "cnn-s0-08-r1", "cnn-s0-09-r1"})
    params = params_with()
    with pytest.raises(MeliError, match=r"^rung 1: all 3 trial\(s\) failed"):
        halving.advance(params, drawn(params), CNN_SEARCH, dvc.run)
    assert not [name for name, _ in dvc.queued if name.endswith("-r2")]


# --- resuming a search as it was started --------------------------------------------------------

def under_way(*searches: search.SearchSettings) -> list:
    """`dvc exp show --json` of a commit holding rung-0 trials of these searches."""
    return [{"rev": "1" * 40, "experiments": [
        {"name": trial_name(settings.prefix, index, 0), "revs": [{"data": {"params": {
            "params.yaml": {"data": {"search": {
                "strategy": settings.strategy, "models": list(settings.models),
                "seed": settings.seed, "trials": settings.trials}}}}}}]}
        for settings in searches for index in range(1, settings.trials + 1)]}]


def search_args(*flags: str):
    from meli.cli import build_parser

    return build_parser().parse_args(["search", *flags])


def test_next_rung_resumes_the_search_as_it_was_started():
    from meli.experiments.driver import settings_for

    params = params_with(trials=12, seed=0)  # what params.yaml says; the search said otherwise
    two = search.SearchSettings("halving", ("cnn",), 0, 2)
    assert settings_for(search_args("--next-rung"), params, under_way(two)) == two
    other = search.SearchSettings("halving", ("mlp",), 5, 3)
    assert settings_for(search_args("--strategy", "halving", "--model", "mlp", "--seed", "5"),
                        params, under_way(two, other)) == other
    with pytest.raises(MeliError, match=r"^--next-rung: 2 successive halving searches on this "
                                        r"commit \(cnn-s0 \(halving, 2 configuration\(s\) of "
                                        r"cnn, seed 0\); mlp-s5 .*\): say which with --model "
                                        r"and --seed$"):
        settings_for(search_args("--next-rung"), params, under_way(two, other))
    assert settings_for(search_args("--next-rung", "--seed", "5"), params,
                        under_way(two, other)) == other
    with pytest.raises(MeliError, match=r"^--trials 12: the search cnn-s0 \(halving, 2 "
                                        r"configuration\(s\) of cnn, seed 0\) is under way"):
        settings_for(search_args("--strategy", "halving", "--trials", "12"), params,
                     under_way(two))


def test_next_rung_with_no_search_to_promote_says_so():
    from meli.experiments.driver import settings_for

    params = params_with()
    with pytest.raises(MeliError, match=r"^--next-rung: no successive halving search on this "
                                        r"commit to promote; start one with `meli search "
                                        r"--strategy halving`$"):
        settings_for(search_args("--next-rung"), params, [])
    random_one = search.SearchSettings("random", ("cnn",), 0, 4)
    with pytest.raises(MeliError, match="no successive halving search of mlp-s0 on this"):
        settings_for(search_args("--next-rung", "--model", "mlp"), params,
                     under_way(random_one))
    # A new search: the flags, then params.yaml.
    assert settings_for(search_args("--strategy", "halving", "--trials", "3"), params,
                        under_way(random_one)) == search.SearchSettings("halving", ("cnn",), 0, 3)


# --- shards -------------------------------------------------------------------------------------

def test_shards_split_the_draw_disjoint_and_complete():
    params = params_with()
    trials = search.sample_trials(params, 9, 0, ["cnn"])
    first, second = search.shard(trials, 1, 2), search.shard(trials, 2, 2)
    assert list(first) == [1, 3, 5, 7, 9] and list(second) == [2, 4, 6, 8]
    assert [*first.values(), *second.values()].count(trials[3]) == 1
    assert sorted([*first, *second]) == list(range(1, 10))


@pytest.mark.parametrize("text", ["3/2", "0/2", "a/b", "1", "1/0"])
def test_a_bad_shard_is_named(text):
    with pytest.raises(MeliError, match=f"--shard {text}: "):
        search.parse_shard(text)


def test_dry_run_prints_the_rungs_and_the_shards_trials(tmp_path):
    raw = to_dict(params_with())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "meli", "search", "--strategy", "halving",
                             "--trials", "9", "--shard", "2/2", "--dry-run"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["rung 0: 4 trial(s) of 1 epoch(s)", "rung 1: 1 trial(s) of 3 epoch(s)",
                         "rung 2: 1 trial(s) of 10 epoch(s)"]
    assert [line.split()[1] for line in lines[3:]] == [
        "cnn-s0-02-r0", "cnn-s0-04-r0", "cnn-s0-06-r0", "cnn-s0-08-r0"]
    assert "shard 2/2 runs 4 of the 9 configurations (02, 04, 06, 08)" in result.stderr


# --- the leaderboard by rung --------------------------------------------------------------------

def test_full_budget_trials_rank_first_and_show_their_rung():
    listed = shown(("cnn-s0-01-r0", "success", {"cnn": 0.95}),  # one epoch, and lucky
                   ("cnn-s0-01-r1", "success", {"cnn": 0.85}),
                   ("cnn-s0-01-r2", "success", {"cnn": 0.82}))
    ranked, failed, pending = rank(collect(listed, ["cnn"]))
    assert [(e.name, e.rung, e.epochs, e.full) for e in ranked] == [
        ("cnn-s0-01-r2", 2, 10, True), (BASELINE, None, 10, True),
        ("cnn-s0-01-r1", 1, 3, False), ("cnn-s0-01-r0", 0, 1, False)]
    rows = [line.split() for line in format_table(ranked, failed, pending, 10).splitlines()[2:]]
    assert rows[0][:6] == ["1", "cnn-s0-01-r2", "cnn", "2", "10", "0.8200"]
    assert rows[3][:6] == ["4", "cnn-s0-01-r0", "cnn", "0", "1*", "0.9500"]


def test_apply_takes_the_best_full_budget_trial(monkeypatch):
    called = []
    monkeypatch.setattr(git_dvc, "dvc", lambda *arguments, **_: called.append(arguments))
    listed = shown(("cnn-s0-01-r0", "success", {"cnn": 0.95}),
                   ("cnn-s0-02-r2", "success", {"cnn": 0.85}))
    ranked, _, _ = rank(collect(listed, ["cnn"]))
    assert apply_best(ranked, remote="origin").name == "cnn-s0-02-r2"
    assert called == [("exp", "pull", "--force", "origin", "cnn-s0-02-r2"),
                      ("exp", "apply", "cnn-s0-02-r2")]
    early = shown(("cnn-s0-01-r0", "success", {"cnn": 0.95}))
    early[0]["data"]["metrics"] = {}  # the commit itself has no figures yet
    with pytest.raises(MeliError, match="no successful full-budget experiment to apply "
                                        r"\(only shorter rungs so far"):
        apply_best(rank(collect(early, ["cnn"]))[0])


# --- waiting on the queue -----------------------------------------------------------------------

class Starter:
    """`dvc queue start` as run_queue sees it: its output pipe stays open while the workers
    it started run (`polls` waits), then reads as closed."""

    def __init__(self, polls: int, output: str, returncode: int = 0):
        self.polls, self.output, self.returncode = polls, output, returncode

    def communicate(self, timeout=None):
        if self.polls > 0:
            self.polls -= 1
            raise subprocess.TimeoutExpired("dvc queue start", timeout)
        return self.output, None


def test_run_queue_counts_trials_until_the_workers_exit(monkeypatch):
    states = iter([{"a": "Running", "b": "Queued"}, {"a": "Success", "b": "Running"},
                   {"a": "Success", "b": "Failed", "other": "Success"}])
    monkeypatch.setattr(git_dvc, "queue_states", lambda: next(states))
    monkeypatch.setattr(git_dvc.subprocess, "Popen", lambda *a, **k: Starter(
        2, "Started '2' new experiments task queue workers.\n"))
    assert git_dvc.run_queue(2, ["a", "b"], poll_seconds=0) == {"a": "Success", "b": "Failed"}


def test_run_queue_says_when_its_workers_left_trials_unfinished(monkeypatch):
    monkeypatch.setattr(git_dvc, "queue_states", lambda: {"a": "Success", "b": "Queued"})
    monkeypatch.setattr(git_dvc.subprocess, "Popen", lambda *a, **k: Starter(
        0, "Started '1' new experiments task queue worker.\n"))
    with pytest.raises(MeliError, match=r"the queue's workers stopped with 1 trial\(s\) "
                                        r"unfinished \(b\)"):
        git_dvc.run_queue(1, ["a", "b"], poll_seconds=0)


def test_run_queue_waits_on_workers_someone_else_started(monkeypatch):
    # `dvc queue start` found the workers running: its pipe closes at once, they go on.
    states = iter([{"a": "Running"}] * 6 + [{"a": "Success"}])
    monkeypatch.setattr(git_dvc, "queue_states", lambda: next(states))
    monkeypatch.setattr(git_dvc.subprocess, "Popen", lambda *a, **k: Starter(
        0, "Started '0' new experiments task queue worker.\n"))
    assert git_dvc.run_queue(1, ["a"], poll_seconds=0) == {"a": "Success"}


def test_a_queue_that_cannot_start_is_one_line(monkeypatch):
    monkeypatch.setattr(git_dvc, "queue_states", lambda: {})
    monkeypatch.setattr(git_dvc.subprocess, "Popen", lambda *a, **k: Starter(
        0, "ERROR: you are not inside of a DVC repository\n", returncode=255))
    with pytest.raises(MeliError, match=r"^`dvc queue start` failed: ERROR: you are not inside"):
        git_dvc.run_queue(1, ["a"], poll_seconds=0)


def test_meli_search_accepts_the_linear_model_on_its_command_line(tmp_path):
    raw = to_dict(params_with())
    raw["search"]["space"]["linear.C"] = {"loguniform": [0.1, 2.0]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "meli", "search", "--model", "linear",
                             "--strategy", "random", "--trials", "2", "--dry-run"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    drawn = [line.split() for line in result.stdout.splitlines()]
    assert [words[1][:10] for words in drawn] == ["linear-s0-", "linear-s0-"]
    assert all(words[2].startswith("linear.C=") for words in drawn)
    rejected = subprocess.run([sys.executable, "-m", "meli", "search", "--model", "svm",
                               "--dry-run"], capture_output=True, text=True, cwd=tmp_path)
    assert rejected.returncode == 2 and "unknown model 'svm'" in rejected.stderr
    assert "linear" in rejected.stderr.splitlines()[-1]
