"""Random search: the space, the trials drawn from it, the leaderboard, and a real DVC queue."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest
import yaml
from dvc_repo import ROOT, SMALL, dvc, make_repo, run

from meli.errors import MeliError
from meli.leaderboard import BASELINE, Entry, collect, differing_keys, format_table, rank
from meli.params import Params, _Loader, load_params, parse_params, to_dict
from meli.search import Trial, parse_space, sample_trials, targets

SPACE = {
    "train.learning_rate": {"loguniform": [0.0005, 0.01]},
    "train.label_smoothing": {"uniform": [0.0, 0.2]},
    "cnn.filters": {"int": [16, 64]},
    "cnn.kernel_sizes": {"choice": [[1, 2], [2, 3, 4]]},
    "mlp.hidden_sizes": {"choice": [[32], [64, 32]]},
}


def params_with(space: dict, **search) -> Params:
    raw = to_dict(Params())
    raw["search"] |= {"space": space, **search}
    return parse_params(raw)


# --- the space ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("space", "expected"), [
    ({"train.lerning_rate": {"uniform": [0.1, 0.2]}}, "no params key 'train.lerning_rate'"),
    ({"train": {"uniform": [0.1, 0.2]}}, "'train' is a whole section"),
    ({"train.epochs.x": {"int": [1, 2]}}, "no params key 'train.epochs.x'"),
    ({"search.trials": {"int": [1, 2]}}, "the search section itself"),
    ({"cnn.filters": {"choice": []}}, "choice needs a non-empty list"),
    ({"cnn.filters": {"normal": [0, 1]}}, "unknown distribution 'normal'"),
    ({"cnn.filters": {"int": [64, 16]}}, "low < high"),
    ({"cnn.filters": {"int": [1.5, 16]}}, "two integers"),
    ({"train.learning_rate": {"uniform": [0.1]}}, "[low, high]"),
    ({"train.learning_rate": {"loguniform": [0.0, 0.1]}}, "loguniform needs low > 0"),
    ({"train.learning_rate": {"uniform": [0.1, 0.2], "choice": [1]}}, "one distribution"),
    ({"train.learning_rate": 0.01}, "one distribution"),
])
def test_a_bad_space_is_one_clear_error_naming_the_key(space, expected):
    with pytest.raises(MeliError) as caught:
        params_with(space)
    message = str(caught.value)
    assert expected in message
    assert "search.space." in message
    assert "\n" not in message


def test_the_repository_space_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert parse_space(params.search.space, params)


def test_same_seed_same_trials_other_seed_other_trials():
    params = params_with(SPACE)
    first = sample_trials(params, 5, seed=3, models=["cnn"])
    assert first == sample_trials(params, 5, seed=3, models=["cnn"])
    assert first != sample_trials(params, 5, seed=4, models=["cnn"])
    # Asking for more trials extends the list: the first ones keep their names and values.
    assert sample_trials(params, 7, seed=3, models=["cnn"])[:5] == first


def test_trials_are_distinct_within_bounds_and_only_for_their_models():
    params = params_with(SPACE)
    trials = sample_trials(params, 8, seed=0, models=["cnn"])
    assert len({trial.name for trial in trials}) == 8
    assert len({json.dumps(trial.values, sort_keys=True) for trial in trials}) == 8
    for trial in trials:
        assert set(trial.values) == {k for k in SPACE if not k.startswith("mlp.")}
        assert 0.0005 <= trial.values["train.learning_rate"] <= 0.01
        assert 0.0 <= trial.values["train.label_smoothing"] <= 0.2
        assert isinstance(trial.values["cnn.filters"], int)
        assert 16 <= trial.values["cnn.filters"] <= 64
        assert trial.values["cnn.kernel_sizes"] in ([1, 2], [2, 3, 4])
        assert trial.name.startswith("cnn-s0-")
    both = sample_trials(params, 2, seed=0, models=["mlp", "cnn"])
    assert all("mlp.hidden_sizes" in trial.values for trial in both)
    assert targets(["mlp", "cnn"]) == ["train@mlp", "evaluate@mlp", "train@cnn", "evaluate@cnn"]


def test_loguniform_spreads_over_orders_of_magnitude():
    params = params_with({"train.learning_rate": {"loguniform": [1e-5, 1e-1]}})
    rates = [t.values["train.learning_rate"]
             for t in sample_trials(params, 60, seed=1, models=["cnn"])]
    decades = {math.floor(math.log10(rate)) for rate in rates}
    assert decades >= {-5, -4, -3, -2}


def test_a_sampled_value_out_of_range_fails_before_anything_is_queued():
    params = params_with({"cnn.filters": {"choice": [32, 0]}})
    with pytest.raises(MeliError, match="cnn.filters must be >= 1"):
        sample_trials(params, 2, seed=0, models=["cnn"])


def test_too_small_a_space_for_the_trials_asked():
    params = params_with({"cnn.filters": {"choice": [16, 32]}})
    with pytest.raises(MeliError, match="only 2 distinct configurations"):
        sample_trials(params, 3, seed=0, models=["cnn"])


def test_set_params_values_read_back_as_the_same_values():
    values = {"train.weight_decay": 1e-05, "cnn.kernel_sizes": [1, 2, 3],
              "data.source": "sample", "train.freeze_embeddings": True, "x.y": "yes"}
    arguments = Trial("t", values).set_params()
    assert arguments[::2] == ["-S"] * len(values)
    for argument in arguments[1::2]:
        key, text = argument.split("=", 1)
        assert yaml.load(text, Loader=_Loader) == values[key]


# --- the leaderboard ----------------------------------------------------------------------------

def experiment(name: str, validation: float | None, test: float | None, state: str = "success",
               log: str | None = None, rate: float = 0.002) -> dict:
    metrics = {}
    if validation is not None:
        metrics["results/train/cnn/metrics.json"] = {
            "data": {"best": {"validation_balanced_accuracy": validation}}}
    if test is not None:
        metrics["metrics/cnn.json"] = {"data": {"test": {"balanced_accuracy": test}}}
    data = {"params": {"params.yaml": {"data": {"train": {"learning_rate": rate, "epochs": 4},
                                                "search": {"seed": 0}}}},
            "metrics": metrics}
    return {"name": name, "executor": {"state": state, "local": {"log": log}},
            "revs": [{"rev": "abc1234", "name": name, "data": data}]}


def exp_show(tmp_path) -> list:
    log = tmp_path / "failed.out"
    log.write_text("Running stage 'ingest'\nmeli ingest: error: /x: no such file\n"
                   "ERROR: failed to reproduce 'ingest'\n")
    baseline = experiment(BASELINE, 0.80, 0.79)
    return [
        {"rev": "workspace", "data": baseline["revs"][0]["data"]},
        {"rev": "1" * 40, "name": "main", "data": baseline["revs"][0]["data"], "experiments": [
            experiment("low", 0.70, 0.95, rate=0.01),   # best test, worst validation
            experiment("high", 0.90, 0.60, rate=0.005),
            experiment("broken", None, None, "failed", str(log), rate=0.1),
            experiment("waiting", None, None, "queued", rate=0.2),
        ]},
    ]


def test_leaderboard_ranks_by_validation_never_by_test(tmp_path):
    done, failed, pending = rank(collect(exp_show(tmp_path), ["cnn"]))
    assert [entry.name for entry in done] == ["high", BASELINE, "low"]
    assert [entry.test for entry in done] == [0.60, 0.79, 0.95]
    assert [entry.name for entry in failed] == ["broken"]
    assert failed[0].error == "meli ingest: error: /x: no such file"
    assert [entry.name for entry in pending] == ["waiting"]


def test_leaderboard_table_shows_differing_params_and_marks_failures(tmp_path):
    done, failed, pending = rank(collect(exp_show(tmp_path), ["cnn"]))
    table = format_table(done, failed, pending, top=2)
    lines = table.splitlines()
    assert lines[1].split() == ["rank", "experiment", "model", "validation", "test",
                                "train.learning_rate"]
    assert lines[2].split()[:5] == ["1", "high", "cnn", "0.9000", "0.6000"]
    assert "low" not in table.split("FAILED")[0]  # --top 2 leaves the third out
    assert "FAILED  broken: meli ingest: error: /x: no such file" in table
    assert "1 trial(s) queued or running: waiting" in table


def test_differing_keys_ignore_equal_values_and_the_search_section():
    entries = [Entry("a", "cnn", "success", 0.5, None, {"x": 1, "y": [1], "search.seed": 0}),
               Entry("b", "cnn", "success", 0.6, None, {"x": 1, "y": [2], "search.seed": 1})]
    assert differing_keys(entries) == ["y"]


# --- a real queue -------------------------------------------------------------------------------

def meli(repo, *arguments, check=True):
    return run(repo, sys.executable, "-m", "meli", *arguments, check=check)


@pytest.mark.slow
def test_search_through_the_dvc_queue(tmp_path):
    space = {"train.learning_rate": {"choice": [0.0005, 0.003, 0.02]}}
    repo = make_repo(tmp_path / "repo", {**SMALL, "search": {"trials": 3, "seed": 5,
                                                             "space": space}})
    dvc(repo, "repro")
    (repo / "src/meli/notes.py").write_text("# not committed yet\n")
    refused = meli(repo, "search", check=False)
    assert refused.returncode == 1
    assert "uncommitted changes in src/meli/notes.py" in refused.stderr
    (repo / "src/meli/notes.py").unlink()
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline results")

    # A trial that cannot work (no such data) queued beside the search: it must fail alone.
    dvc(repo, "exp", "run", "--queue", "-n", "broken", "-S", "data.source=/no/such/titles.jsonl",
        "train@cnn", "evaluate@cnn")
    searched = meli(repo, "search", "--run", "--jobs", "2")
    queued = [line.split()[1] for line in searched.stdout.splitlines()
              if line.startswith("queued ")]
    assert len(queued) == 3
    deadline = time.time() + 300
    while "Running" in dvc(repo, "queue", "status").stdout or \
            "Queued" in dvc(repo, "queue", "status").stdout:
        assert time.time() < deadline, "the queue did not finish"
        time.sleep(2)

    board = meli(repo, "leaderboard", "--top", "10").stdout
    ranked = [line.split() for line in board.splitlines()[2:] if line[:1].isdigit()]
    names = [row[1] for row in ranked]
    assert set(queued) <= set(names)
    validations = [float(row[3]) for row in ranked]
    assert validations == sorted(validations, reverse=True)
    rates = {row[1]: row[-1] for row in ranked}
    assert len({rates[name] for name in queued}) == 3  # distinct params, all finished
    assert "FAILED  broken: meli ingest: error: /no/such/titles.jsonl" in board

    again = meli(repo, "search")
    assert "0 trial(s) queued, 3 already queued or done" in again.stderr

    best = ranked[0][1]
    applied = meli(repo, "leaderboard", "--apply", check=False)
    if best == BASELINE:
        assert applied.returncode == 1
        assert "nothing to apply" in applied.stderr
    else:
        assert applied.returncode == 0
        rate = yaml.safe_load((repo / "params.yaml").read_text())["train"]["learning_rate"]
        assert str(rate) == rates[best]


def test_search_outside_git_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"search": {"space": {"cnn.filters": {"choice": [16, 32]}}, "trials": 2}}))
    result = subprocess.run([sys.executable, "-m", "meli", "search"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "git repository with at least one commit" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
