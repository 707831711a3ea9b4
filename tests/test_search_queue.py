"""Successive halving and a search shared by two machines, through DVC's real experiment queue,
Git and DVC remotes.

What these tests check is the search's own machinery (queueing, promotion, names, shards, exp
push and pull, the leaderboard), not training: so the pipeline is a stand-in with the project's
stage names and metrics files, whose "training" computes a validation figure from the learning
rate and the epochs in a millisecond. The real pipeline goes through the queue in
test_search.py::test_search_through_the_dvc_queue.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_repo import ROOT, dvc, environment, merge, run

pytestmark = pytest.mark.slow

STAND_IN = """\
stages:
  train:
    matrix:
      model: [mlp, cnn, rnn]
    cmd: python stand_in.py train ${item.model}
    deps:
      - stand_in.py
    params:
      - train
      - ${item.model}
    outs:
      - models/${item.model}
    metrics:
      - results/train/${item.model}/metrics.json:
          cache: false
  ensemble:
    cmd: python stand_in.py ensemble ensemble
    deps:
      - stand_in.py
      - models/mlp
      - models/cnn
      - models/rnn
    outs:
      - models/ensemble
  evaluate:
    matrix:
      model: [mlp, cnn, rnn, ensemble]
    cmd: python stand_in.py evaluate ${item.model}
    deps:
      - stand_in.py
      - models/${item.model}
    params:
      - train
    metrics:
      - metrics/${item.model}.json:
          cache: false
"""

# Validation peaks at a learning rate of 0.003 and grows with the epochs trained.
STAND_IN_CODE = """\
import json, math, sys
from pathlib import Path
import yaml

step, model = sys.argv[1:]
train = yaml.safe_load(Path("params.yaml").read_text())["train"]
closeness = math.exp(-abs(math.log10(train["learning_rate"] / 0.003)))
validation = round(0.5 + 0.4 * closeness * train["epochs"] / (train["epochs"] + 1), 6)
if step in ("train", "ensemble"):
    Path(f"models/{model}").mkdir(parents=True, exist_ok=True)
    Path(f"models/{model}/weights.txt").write_text(f"{train['learning_rate']}\\n")
if step == "train":
    out = Path(f"results/train/{model}/metrics.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"best": {"validation_balanced_accuracy": validation}}))
if step == "evaluate":
    Path("metrics").mkdir(exist_ok=True)
    Path(f"metrics/{model}.json").write_text(
        json.dumps({"test": {"balanced_accuracy": round(validation - 0.01, 6)}}))
"""


def stand_in_repo(path, search: dict, epochs: int = 4, remote: Path | None = None):
    """A repository of the stand-in pipeline, run and committed as the search's baseline (with
    a learning rate every trial beats), its outputs pushed to the DVC `remote` if given."""
    path.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    merge(params, {"train": {"epochs": epochs, "learning_rate": 0.0001},
                   "search": {"models": ["cnn"], **search}})
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (path / "dvc.yaml").write_text(STAND_IN)
    (path / "stand_in.py").write_text(STAND_IN_CODE)
    run(path, "git", "init", "-q", "-b", "main")
    dvc(path, "init", "-q")
    dvc(path, "config", "core.analytics", "false")
    if remote is not None:
        dvc(path, "remote", "add", "-d", "storage", str(remote))
    dvc(path, "repro")
    run(path, "git", "add", "-A")
    run(path, "git", "commit", "-qm", "stand-in pipeline and its results")
    if remote is not None:
        dvc(path, "push")
    return path


def meli(repo, *arguments, check=True):
    return run(repo, sys.executable, "-m", "meli", *arguments, check=check)


def ranked_rows(board: str) -> list[list[str]]:
    return [line.split() for line in board.splitlines()[2:] if line[:1].isdigit()]


RATES = {"train.learning_rate": {"choice": [0.0003, 0.001, 0.003, 0.01, 0.03]}}


def test_halving_through_the_queue_promotes_the_best_and_applies_it(tmp_path):
    repo = stand_in_repo(tmp_path / "repo", {"space": RATES, "strategy": "halving",
                                             "trials": 3, "seed": 1, "eta": 3,
                                             "min_epochs": 1, "rungs": 2})
    first = meli(repo, "search")
    queued = [line.split()[1] for line in first.stdout.splitlines()]
    assert queued == ["cnn-s1-01-r0", "cnn-s1-02-r0", "cnn-s1-03-r0"]
    assert "rung 0 (the last is 1): 3 trial(s) of 1 epoch(s) queued" in first.stderr
    early = meli(repo, "search", "--next-rung", check=False)
    assert early.returncode == 1
    assert early.stderr.strip().splitlines() == [
        "meli search: error: rung 0: 3 trial(s) still queued or running (cnn-s1-01-r0, "
        "cnn-s1-02-r0, cnn-s1-03-r0); promote once they are done (`dvc queue status`)"]

    meli(repo, "search", "--run", "--jobs", "2")  # goes on from where the search is
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    experiments = {entry["name"]: entry["revs"][0]["data"]
                   for entry in shown[1]["experiments"]}
    assert len(experiments) == 4
    rung0 = {name: data["metrics"]["results/train/cnn/metrics.json"]["data"]["best"]
             ["validation_balanced_accuracy"] for name, data in experiments.items()
             if name.endswith("-r0")}
    best = max(rung0, key=rung0.get)
    promoted = [name for name in experiments if name.endswith("-r1")]
    assert promoted == [best.removesuffix("-r0") + "-r1"]
    trained = experiments[promoted[0]]["params"]["params.yaml"]["data"]
    assert trained["train"]["epochs"] == 4
    assert {experiments[name]["params"]["params.yaml"]["data"]["train"]["epochs"]
            for name in rung0} == {1}
    same = experiments[best]["params"]["params.yaml"]["data"]["train"]["learning_rate"]
    assert trained["train"]["learning_rate"] == same

    board = meli(repo, "leaderboard").stdout
    rows = ranked_rows(board)
    assert rows[0][1:5] == [promoted[0], "cnn", "1", "4"]  # full budget first
    assert ["(baseline)", "cnn", "-", "4"] in [row[1:5] for row in rows[1:]]
    trials = [row for row in rows if row[1] != "(baseline)"]
    assert {row[4] for row in trials[1:]} == {"1*"}  # then rung 0, after every full budget
    assert rows.index(trials[1]) > max(i for i, row in enumerate(rows) if row[4] == "4")
    finished = meli(repo, "search", "--next-rung")
    assert f"search: done; rung 1 (4 epochs) ranks {promoted[0]}" in finished.stderr
    meli(repo, "leaderboard", "--apply")
    applied = yaml.safe_load((repo / "params.yaml").read_text())["train"]
    assert applied["learning_rate"] == same and applied["epochs"] == 4


def test_two_machines_share_a_search_through_git_and_dvc_remotes(tmp_path):
    origin, storage = tmp_path / "origin.git", tmp_path / "storage"
    run(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    seed = stand_in_repo(tmp_path / "seed", {"space": RATES | {
        "cnn.dropout": {"uniform": [0.1, 0.5]}}, "trials": 8, "seed": 0}, remote=storage)
    run(seed, "git", "remote", "add", "origin", str(origin))
    run(seed, "git", "push", "-q", "origin", "main")
    machines = []
    for name in ("a", "b"):
        run(tmp_path, "git", "clone", "-q", str(origin), name)
        machines.append(tmp_path / name)
    # Both machines search at once, each its share, with no coordinator between them.
    searches = [subprocess.Popen([sys.executable, "-m", "meli", "search", "--shard", f"{i}/2",
                                  "--run"], cwd=machine, env=environment(), text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for i, machine in enumerate(machines, start=1)]
    shares = []
    for search in searches:
        out, err = search.communicate(timeout=600)
        assert search.returncode == 0, err
        shares.append([line.split()[1] for line in out.splitlines()
                       if line.startswith("queued ")])
    assert [len(share) for share in shares] == [4, 4]
    assert not set(shares[0]) & set(shares[1])
    for machine in machines:
        dvc(machine, "exp", "push", "origin")

    board = meli(machines[0], "leaderboard", "--remote", "origin", "--top", "20").stdout
    rows = ranked_rows(board)
    # The commit's own figures, one row per model it has, are beaten by every CNN trial.
    baseline = [row for row in rows if row[1] == "(baseline)"]
    assert [row[2] for row in baseline if row[2] == "cnn"] == ["cnn"]
    assert rows.index(next(row for row in baseline if row[2] == "cnn")) == 8
    rows = [row for row in rows if row[1] != "(baseline)"]
    assert sorted(row[1] for row in rows) == sorted(shares[0] + shares[1])
    validations = [float(row[5]) for row in rows]
    assert validations == sorted(validations, reverse=True)
    assert all(0.5 < value < 0.9 for value in validations)
    # The best may be the other machine's: its params and its models come from the remotes.
    best = rows[0][1]
    meli(machines[0], "leaderboard", "--remote", "origin", "--apply")
    rate = yaml.safe_load((machines[0] / "params.yaml").read_text())["train"]["learning_rate"]
    assert rate == float(rows[0][-1])  # the last column: train.learning_rate
    weights = (machines[0] / "models/cnn/weights.txt").read_text().strip()
    assert float(weights) == rate, f"{best}'s model was not brought from the DVC remote"
