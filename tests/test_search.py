"""Random search: the trials drawn from the space, how they are queued, the leaderboard, and a
real DVC queue. The space's grammar is tested in test_space.py."""

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
from meli.experiments import git_dvc
from meli.experiments.leaderboard import (
    BASELINE,
    Entry,
    apply_best,
    best_experiment,
    collect,
    differing_keys,
    format_table,
    rank,
)
from meli.experiments.search import (
    SearchSettings,
    Trial,
    queue,
    recorded_searches,
    sample_trials,
    searchable,
    targets,
)
from meli.models import names, params_classes
from meli.params import Params, parse_params, to_dict
from meli.params.load import _Loader

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
    return parse_params(raw, models=params_classes())


# --- the trials ---------------------------------------------------------------------------------

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
    assert all(set(trial.values) == set(SPACE) for trial in both)
    assert targets(["mlp", "cnn"]) == ["train@mlp", "evaluate@mlp", "train@cnn", "evaluate@cnn"]
    # The ensemble reads every model: only a trial of them all reproduces it.
    assert targets(searchable())[-2:] == ["ensemble", "evaluate@ensemble"]
    assert "ensemble" not in targets(names())


def test_a_linear_search_draws_only_linear_keys_and_runs_only_its_stage():
    space = SPACE | {"linear.C": {"loguniform": [0.1, 2.0]},
                     "linear.char_ngrams": {"choice": [[2, 5], [3, 6]]}}
    trials = sample_trials(params_with(space), 4, seed=0, models=["linear"])
    assert all(set(trial.values) == {"linear.C", "linear.char_ngrams"} for trial in trials)
    assert all(0.1 <= trial.values["linear.C"] <= 2.0 for trial in trials)
    assert targets(["linear"]) == ["linear", "evaluate@linear"]
    # A CNN trial leaves the linear model's keys alone, as it leaves the MLP's.
    assert not any(key.startswith("linear.")
                   for trial in sample_trials(params_with(space), 3, seed=0, models=["cnn"])
                   for key in trial.values)
    with pytest.raises(MeliError, match="no key for linear"):
        sample_trials(params_with(SPACE), 2, seed=0, models=["linear"])


def test_a_trial_of_the_mlp_leaves_every_other_model_alone():
    # The models not searched come from the registry: no key of theirs is drawn.
    trials = sample_trials(params_with(SPACE), 3, seed=0, models=["mlp"])
    others = set(names()) - {"mlp"}
    assert others
    for trial in trials:
        assert set(trial.values) == {k for k in SPACE if k.split(".")[0] not in others}
        assert trial.name.startswith("mlp-s0-")


@pytest.mark.parametrize(("models", "expected"), [
    (["transformer"], "search.models: unknown model 'transformer' (searchable: "),
    (["cnn", "cnn"], "search.models: a model is named twice"),
    ([], "search.models: name at least one model"),
])
def test_the_searched_models_must_be_registered(models, expected):
    with pytest.raises(MeliError) as caught:
        sample_trials(params_with(SPACE), 2, seed=0, models=models)
    assert expected in str(caught.value)


def test_a_space_with_no_key_for_the_models_searched():
    params = params_with({"cnn.filters": {"int": [16, 64]}})
    with pytest.raises(MeliError, match="search.space has no key for mlp"):
        sample_trials(params, 2, seed=0, models=["mlp"])


def test_a_bad_space_fails_before_anything_is_drawn():
    params = params_with({"cnn.filterz": {"int": [16, 64]}})
    with pytest.raises(MeliError, match=r"search.space.cnn.filterz: no params key"):
        sample_trials(params, 2, seed=0, models=["cnn"])


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


def test_queue_records_what_the_search_is_in_each_trial(monkeypatch):
    runs = []
    monkeypatch.setattr(git_dvc, "check_committed", lambda: None)
    monkeypatch.setattr(git_dvc, "existing_experiments", lambda: {"mlp-done"})
    monkeypatch.setattr(git_dvc, "dvc", lambda *arguments, check=True: runs.append(arguments))
    trials = [Trial("mlp-done", {"train.learning_rate": 0.01}),
              Trial("mlp-new", {"train.learning_rate": 1e-05, "mlp.hidden_sizes": [64, 32]})]
    assert queue(trials, SearchSettings("random", ("mlp",), 3, 2)) == trials[1:]
    assert runs == [("exp", "run", "--queue", "-n", "mlp-new",
                     "-S", "train.learning_rate=1.0e-05", "-S", "mlp.hidden_sizes=[64, 32]",
                     "-S", "search.strategy=random", "-S", "search.models=[mlp]",
                     "-S", "search.seed=3", "-S", "search.trials=2", "train@mlp", "evaluate@mlp")]
    recorded = SearchSettings("halving", ("mlp", "cnn"), 0, 12).set_params()
    assert {key: yaml.load(text, Loader=_Loader) for key, text in (
        argument.split("=", 1) for argument in recorded[1::2])} == {
        "search.strategy": "halving", "search.models": ["mlp", "cnn"], "search.seed": 0,
        "search.trials": 12}


def test_the_searches_under_way_are_read_from_their_trials_params():
    def trial(name: str, section: dict) -> dict:
        return {"name": name, "revs": [{"data": {"params": {"params.yaml": {"data": {
            "search": {"space": {}, "eta": 3} | section}}}}}]}

    halving = {"strategy": "halving", "models": ["cnn"], "seed": 0, "trials": 2}
    shown = [{"rev": "workspace"}, {"rev": "1" * 40, "experiments": [
        trial("cnn-s0-01-r0", halving), trial("cnn-s0-02-r0", halving),
        trial("mlp-s4-01-5e1f0a", {"strategy": "random", "models": ["mlp"], "seed": 4,
                                   "trials": 5}),
        # params.yaml's own section in a plain `dvc exp run`, and a trial of an older meli
        trial("exp-1a2b3", {"strategy": "random", "models": ["cnn"], "seed": 0, "trials": 12}),
        trial("cnn-s1-01-r0", {"models": ["cnn"], "seed": 1})]}]
    assert recorded_searches(shown) == [SearchSettings("halving", ("cnn",), 0, 2),
                                        SearchSettings("random", ("mlp",), 4, 5)]


def test_no_stage_reads_the_search_section():
    # `-S search.models=...` must leave every stage up to date: no stage lists `search` among
    # its params (nor the whole params file, which would include it), but the check of the
    # whole file, whose output is the same for any valid params (test_check.py).
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert stages["check"]["params"] == [{"params.yaml": None}]
    for name, stage in stages.items():
        if name == "check":
            continue
        for entry in stage.get("params") or []:
            keys = [entry] if isinstance(entry, str) else [
                key for listed in entry.values() for key in (listed or ["<all>"])]
            assert not [key for key in keys if key.split(".")[0] in ("search", "<all>")], name


# --- the leaderboard ----------------------------------------------------------------------------

def figures(*per_model: tuple[str, float | None, float | None]) -> dict:
    """`dvc exp show` metrics: (model, validation, test) each, None where the file is absent."""
    metrics = {}
    for model, validation, test in per_model:
        if validation is not None:
            metrics[f"results/train/{model}/metrics.json"] = {
                "data": {"best": {"validation_balanced_accuracy": validation}}}
        if test is not None:
            metrics[f"metrics/{model}.json"] = {"data": {"test": {"balanced_accuracy": test}}}
    return metrics


def row_data(metrics: dict, rate: float, searched: list[str]) -> dict:
    return {"params": {"params.yaml": {"data": {
        "train": {"learning_rate": rate, "epochs": 4},
        "search": {"seed": 0, "models": searched}}}},
        "metrics": metrics}


def experiment(name: str, validation: float | None, test: float | None, state: str = "success",
               log: str | None = None, rate: float = 0.002, searched: list[str] | None = None,
               metrics: dict | None = None) -> dict:
    if metrics is None:
        metrics = figures(("cnn", validation, test))
    data = row_data(metrics, rate, searched or ["cnn"])
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
    assert lines[1].split() == ["rank", "experiment", "model", "rung", "epochs", "validation",
                                "test", "train.learning_rate"]
    assert lines[2].split()[:7] == ["1", "high", "cnn", "-", "4", "0.9000", "0.6000"]
    assert "low" not in table.split("FAILED")[0]  # --top 2 leaves the third out
    assert "FAILED  broken: meli ingest: error: /x: no such file" in table
    assert "1 trial(s) queued or running: waiting" in table


def searched_by_each(commit_searches: list[str]) -> list:
    """A commit whose workspace searched the CNN, an MLP trial and a CNN trial of it. Each trial
    keeps the commit's figures of the model it did not train (DVC leaves them in place)."""
    commit = figures(("mlp", 0.70, 0.69), ("cnn", 0.80, 0.79))
    mlp = figures(("mlp", 0.75, 0.74), ("cnn", 0.80, 0.79))
    cnn = figures(("mlp", 0.70, 0.69), ("cnn", 0.85, 0.84))
    return [{"rev": "1" * 40, "name": "main", "data": row_data(commit, 0.002, commit_searches),
             "experiments": [
                 experiment("mlp-s0-01", None, None, rate=0.01, searched=["mlp"], metrics=mlp),
                 experiment("cnn-s0-01", None, None, rate=0.003, searched=["cnn"], metrics=cnn),
             ]}]


def test_each_trial_is_ranked_by_the_models_it_searched():
    done, failed, pending = rank(collect(searched_by_each(["cnn"])))
    assert [(e.name, e.model, e.validation, e.test) for e in done] == [
        ("cnn-s0-01", "cnn", 0.85, 0.84),
        (BASELINE, "cnn", 0.80, 0.79),
        ("mlp-s0-01", "mlp", 0.75, 0.74),  # its own figures, not the CNN's 0.80 left in place
        (BASELINE, "mlp", 0.70, 0.69),  # the commit: for every model its experiments searched
    ]
    assert not failed and not pending
    table = format_table(done, failed, pending, top=10)
    rows = [line.split() for line in table.splitlines()[2:]]
    assert rows[2] == ["3", "mlp-s0-01", "mlp", "-", "4", "0.7500", "0.7400", "0.01"]


def test_a_model_named_keeps_the_experiments_that_retrained_it():
    done, _, _ = rank(collect(searched_by_each(["cnn"]), ["cnn"]))
    assert [(e.name, e.model, e.validation) for e in done] == [
        ("cnn-s0-01", "cnn", 0.85), (BASELINE, "cnn", 0.80)]  # not the MLP trial's stale 0.80
    done, _, _ = rank(collect(searched_by_each(["cnn"]), ["mlp", "cnn"]))
    assert [(e.name, e.model) for e in done] == [
        ("cnn-s0-01", "cnn"), (BASELINE, "cnn"), ("mlp-s0-01", "mlp"), (BASELINE, "mlp")]


# What the walk met: a commit with figures of every bundle (its ensemble and linear model
# best on validation), CNN trials and a linear trial, as `dvc exp show --json` gives them, with
# the hashes of the outputs that tell which bundles each experiment retrained.
COMMIT_FIGURES = {"mlp": 0.9317, "cnn": 0.9316, "rnn": 0.9258, "fasttext": 0.8535,
                  "linear": 0.9360, "ensemble": 0.9363}
COMMIT_PARAMS = {"train": {"epochs": 10, "learning_rate": 0.004},
                 "cnn": {"filters": 256, "kernel_sizes": [1, 2, 3]},
                 "linear": {"C": 0.5}, "baseline": {"epochs": 30},
                 "search": {"models": ["cnn"], "seed": 0}}


def walked(*experiments: tuple[str, dict[str, float], dict]) -> list:
    """A commit and its experiments: (name, {retrained bundle: validation}, params changes)."""
    def data(figures: dict[str, float], params: dict, outs: dict[str, str]) -> dict:
        metrics = {f"results/train/{model}/metrics.json": {"data": {"best": {
            "validation_balanced_accuracy": value}}} for model, value in figures.items()}
        return {"params": {"params.yaml": {"data": params}}, "metrics": metrics,
                "outs": {f"models/{model}": {"hash": digest} for model, digest in outs.items()}}

    commit_outs = {model: f"{model}-commit" for model in COMMIT_FIGURES}
    rows = []
    for name, figures, changes in experiments:
        params = json.loads(json.dumps(COMMIT_PARAMS))
        for section, values in changes.items():
            params.setdefault(section, {}).update(values)
        rows.append({"name": name, "executor": {"state": "success", "local": {"log": None}},
                     "revs": [{"rev": "abc1234", "data": data(
                         COMMIT_FIGURES | figures, params,
                         commit_outs | {model: f"{model}-{name}" for model in figures})}]})
    return [{"rev": "workspace", "data": data(COMMIT_FIGURES, COMMIT_PARAMS, commit_outs)},
            {"rev": "1" * 40, "name": "main",
             "data": data(COMMIT_FIGURES, COMMIT_PARAMS, commit_outs), "experiments": rows}]


CNN_TRIALS = (("cnn-s0-01-aaaaaa", {"cnn": 0.9290}, {"cnn": {"filters": 128}}),
              ("cnn-s0-02-bbbbbb", {"cnn": 0.9324}, {"cnn": {"filters": 512},
                                                      "search": {"models": ["cnn"]}}))


def test_a_search_is_ranked_against_the_commit_on_its_own_models_and_its_best_applied(
        monkeypatch):
    done, failed, pending = rank(collect(walked(*CNN_TRIALS)))
    # The commit's ensemble (0.9363) and linear model (0.9360) are not what a CNN search beats.
    assert [(e.name, e.model, e.validation) for e in done] == [
        ("cnn-s0-02-bbbbbb", "cnn", 0.9324), (BASELINE, "cnn", 0.9316),
        ("cnn-s0-01-aaaaaa", "cnn", 0.9290)]
    called = []
    monkeypatch.setattr(git_dvc, "dvc", lambda *arguments, **_: called.append(arguments))
    applied = apply_best(done)
    assert (applied.name, applied.models, applied.score, applied.commit) == (
        "cnn-s0-02-bbbbbb", ("cnn",), 0.9324, 0.9316)
    assert called == [("exp", "apply", "cnn-s0-02-bbbbbb")]


def test_rows_show_only_the_params_their_model_reads():
    linear = ("linear-s0-01-cccccc", {"linear": 0.9370}, {"linear": {"C": 1.5}})
    plain = ("exp-1a2b3", {"mlp": 0.9330, "cnn": 0.9300, "rnn": 0.9260, "ensemble": 0.9365},
             {"train": {"learning_rate": 0.003}})
    done, failed, pending = rank(collect(walked(*CNN_TRIALS, linear, plain)))
    board = {(e.name, e.model): e for e in done}
    # A plain `dvc exp run` is ranked by every bundle it retrained, the commit by the same.
    assert {model for name, model in board if name == "exp-1a2b3"} == {
        "mlp", "cnn", "rnn", "ensemble"}
    assert {model for name, model in board if name == BASELINE} == {
        "mlp", "cnn", "rnn", "linear", "ensemble"}  # not fastText: nothing retrained it
    lines = format_table(done, failed, pending, top=20).splitlines()
    header = lines[1].split()
    assert header[7:] == ["cnn.filters", "linear.C", "train.learning_rate"]
    rows = {(row[1], row[2]): dict(zip(header, row, strict=True))
            for row in (line.split() for line in lines[2:])}
    assert rows["linear-s0-01-cccccc", "linear"] | {"rank": ""} == {
        "rank": "", "experiment": "linear-s0-01-cccccc", "model": "linear", "rung": "-",
        "epochs": "-", "validation": "0.9370", "test": "-", "cnn.filters": "-",
        "linear.C": "1.5", "train.learning_rate": "-"}
    assert [rows["cnn-s0-02-bbbbbb", "cnn"][key] for key in header[4:]] == [
        "10", "0.9324", "-", "512", "-", "0.004"]
    assert [rows[BASELINE, "mlp"][key] for key in header[7:]] == ["-", "-", "0.004"]
    assert [rows["exp-1a2b3", "ensemble"][key] for key in header[7:]] == ["256", "0.5", "0.003"]


def test_apply_refuses_to_choose_between_models_and_says_how(monkeypatch):
    linear = ("linear-s0-01-cccccc", {"linear": 0.9370}, {"linear": {"C": 1.5}})
    monkeypatch.setattr(git_dvc, "dvc", lambda *arguments, **_: pytest.fail("applied"))
    done, _, _ = rank(collect(walked(*CNN_TRIALS, linear)))
    with pytest.raises(MeliError) as refused:
        apply_best(done)
    assert str(refused.value) == (
        "experiments that retrained different models beat the last commit "
        "(linear-s0-01-cccccc (linear: 0.9370 against the commit's 0.9360); "
        "cnn-s0-02-bbbbbb (cnn: 0.9324 against the commit's 0.9316)): choose one with --model")
    done, _, _ = rank(collect(walked(*CNN_TRIALS, linear), ["cnn"]))
    assert best_experiment(done).name == "cnn-s0-02-bbbbbb"


def test_apply_refuses_when_the_commit_is_still_the_best():
    worse = ("cnn-s0-03-dddddd", {"cnn": 0.9301}, {"cnn": {"filters": 384}})
    done, _, _ = rank(collect(walked(CNN_TRIALS[0], worse)))
    with pytest.raises(MeliError, match=r"^nothing to apply: no experiment beats the last commit "
                                        r"on the models it retrained \(the best: cnn-s0-03-dddddd "
                                        r"\(cnn: 0.9301 against the commit's 0.9316\)\)$"):
        best_experiment(done)


def test_a_commit_shows_every_model_it_has_figures_of():
    shown = searched_by_each(["mlp"])
    shown[0]["experiments"] = []
    ensemble = figures(("ensemble", 0.90, 0.89))
    shown[0]["data"]["metrics"] |= ensemble
    done, _, _ = rank(collect(shown))
    assert [(e.name, e.model, e.validation) for e in done] == [
        (BASELINE, "ensemble", 0.90), (BASELINE, "cnn", 0.80), (BASELINE, "mlp", 0.70)]


def test_differing_keys_ignore_equal_values_and_the_search_section():
    entries = [Entry("a", "cnn", "success", 0.5, None, {"x": 1, "y": [1], "search.seed": 0}),
               Entry("b", "cnn", "success", 0.6, None, {"x": 1, "y": [2], "search.seed": 1})]
    assert differing_keys(entries) == ["y"]


# --- a real queue -------------------------------------------------------------------------------

def meli(repo, *arguments, check=True):
    return run(repo, sys.executable, "-m", "meli", *arguments, check=check)


def wait_for_the_queue(repo, seconds: float = 600) -> None:
    deadline = time.time() + seconds
    while any(state in dvc(repo, "queue", "status").stdout for state in ("Running", "Queued")):
        assert time.time() < deadline, "the queue did not finish"
        time.sleep(2)


def bundles_in(repo) -> dict[str, bytes]:
    return {path.relative_to(repo).as_posix(): path.read_bytes()
            for path in sorted((repo / "models").rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_the_readme_search_sequence_end_to_end(tmp_path):
    """The README's "Hyperparameter search" commands in order, on the default (synthetic)
    sample, small: commit, `meli search`, `dvc queue start`, `meli leaderboard`, `dvc exp show
    --sort-order desc`, `dvc plots diff`, `meli leaderboard --apply`, and the commit "Model
    registry" makes of it; then a misspelled key, which must stop before DVC removes anything,
    and the way back to the committed params."""
    # The commit trains its PyTorch models with a learning rate too small for 2 epochs, so
    # that the trials' rates beat its MLP while its linear model and ensemble stay ahead of
    # them: what `--apply` once refused to see past.
    space = {"train.learning_rate": {"choice": [0.01, 0.02]}}
    repo = make_repo(tmp_path / "repo", {**SMALL, "train": {
        **SMALL["train"], "epochs": 2, "learning_rate": 0.0003},
        "search": {"trials": 12, "seed": 5, "models": ["cnn"], "space": space}})
    dvc(repo, "repro")
    (repo / "src/meli/notes.py").write_text("# not committed yet\n")
    refused = meli(repo, "search", "--trials", "2", "--model", "mlp", check=False)
    assert refused.returncode == 1
    assert "uncommitted changes in src/meli/notes.py" in refused.stderr
    (repo / "src/meli/notes.py").unlink()
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline results")

    # A run that cannot work (no such data) queued beside the search: it fails alone, at the
    # check of the params.
    dvc(repo, "exp", "run", "--queue", "-n", "broken", "-S", "data.source=/no/such/titles.jsonl",
        "train@cnn", "evaluate@cnn")
    searched = meli(repo, "search", "--trials", "2", "--model", "mlp")
    queued = [line.split()[1] for line in searched.stdout.splitlines()
              if line.startswith("queued ")]
    assert len(queued) == 2 and all(name.startswith("mlp-s5-") for name in queued)
    dvc(repo, "queue", "start", "-j", "2")
    wait_for_the_queue(repo)

    board = meli(repo, "leaderboard", "--top", "5").stdout
    lines = board.splitlines()
    header = lines[1].split()
    ranked = [dict(zip(header, line.split(), strict=True)) for line in lines[2:]
              if line[:1].isdigit()]
    validations = [float(row["validation"]) for row in ranked]
    assert validations == sorted(validations, reverse=True)
    trials = [row for row in ranked if row["experiment"] in queued]
    assert [row["model"] for row in trials] == ["mlp", "mlp"]
    best, other = trials
    # Only the models the experiments trained have a commit's row: the MLP, and the broken
    # run's CNN (not the linear model, the ensemble, fastText).
    commit_rows = {row["model"]: row for row in ranked if row["experiment"] == BASELINE}
    assert set(commit_rows) == {"mlp", "cnn"}
    assert "FAILED  broken: meli check: error: data.source: /no/such/titles.jsonl: no such file " \
           "or directory" in board
    assert "train.learning_rate" in header  # and no other model's params on the MLP's rows
    assert not [key for key in header if key.startswith(("cnn.", "rnn.", "linear.", "mlp."))]
    committed = json.loads((repo / "results/train/linear/metrics.json").read_text())
    assert committed["best"]["validation_balanced_accuracy"] > float(best["validation"])
    assert float(best["validation"]) > float(commit_rows["mlp"]["validation"])

    again = meli(repo, "search", "--trials", "2", "--model", "mlp")
    assert "0 trial(s) queued, 2 already queued or done" in again.stderr

    shown = dvc(repo, "exp", "show", "--only-changed", "--sort-by",
                "results/train/mlp/metrics.json:best.validation_balanced_accuracy",
                "--sort-order", "desc").stdout
    assert shown.index(best["experiment"]) < shown.index(other["experiment"])  # best first
    dvc(repo, "plots", "diff", best["experiment"], other["experiment"])
    page = (repo / "dvc_plots/index.html").read_text()
    assert best["experiment"] in page and other["experiment"] in page

    applied = meli(repo, "leaderboard", "--apply")
    assert (f"applied {best['experiment']} (mlp: {best['validation']} against the commit's "
            f"{commit_rows['mlp']['validation']})") in applied.stderr
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert str(params["train"]["learning_rate"]) == best["train.learning_rate"]
    assert {key: params["search"][key] for key in ("strategy", "models", "seed", "trials")} == {
        "strategy": "random", "models": ["mlp"], "seed": 5, "trials": 2}
    # "Model registry" commits what `dvc exp apply` changed: the params too.
    run(repo, "git", "add", "params.yaml", "dvc.yaml", "dvc.lock", "metrics", "results")
    run(repo, "git", "commit", "-qm", "the best MLP trial")
    assert run(repo, "git", "status", "--porcelain", "--", *git_dvc.TRACKED_INPUTS).stdout == ""

    # A misspelled key stops at the check: nothing is removed, nothing trained.
    status, bundles = dvc(repo, "status").stdout, bundles_in(repo)
    typo = dvc(repo, "exp", "run", "-S", "+train.learnig_rate=0.01", check=False)
    assert typo.returncode != 0
    assert "meli check: error: params.yaml: unknown key 'train.learnig_rate' (did you mean " \
           "'train.learning_rate'?)" in typo.stdout + typo.stderr
    assert "Running stage 'train@" not in typo.stdout
    assert bundles_in(repo) == bundles
    # DVC leaves the value in params.yaml; the README's way back restores the commit.
    assert "learnig_rate" in (repo / "params.yaml").read_text()
    run(repo, "git", "checkout", "HEAD", "--", "params.yaml", "dvc.lock", "metrics", "results")
    dvc(repo, "checkout")
    assert run(repo, "git", "status", "--porcelain", "--", "params.yaml", "dvc.lock", "metrics",
               "results").stdout == ""
    assert dvc(repo, "status").stdout == status


def test_search_outside_git_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"search": {"space": {"cnn.filters": {"choice": [16, 32]}}, "trials": 2}}))
    result = subprocess.run([sys.executable, "-m", "meli", "search"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "git repository with at least one commit" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
