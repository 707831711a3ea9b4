"""End to end: the real dvc.yaml run by DVC itself in a temporary git repository.

The pipeline runs on a small synthetic sample with small models, so the whole file takes about a
minute; what is checked is DVC's view of it (stages, lock, metrics, plots, experiments).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from dvc_repo import (
    REAL_SAMPLE,
    SMALL,
    copy_repo,
    dvc,
    environment,
    make_repo,
    run,
    workspace_metrics,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reproduced(small_repo, tmp_path_factory) -> Path:
    return copy_repo(small_repo, tmp_path_factory.mktemp("e2e") / "repo")


def test_repro_builds_every_stage(reproduced):
    lock = yaml.safe_load((reproduced / "dvc.lock").read_text())
    expected = {"check", "ingest", "prepare", "featurize", "embeddings", "train@mlp", "train@cnn",
                "train@rnn", "baseline", "linear", "ensemble", "evaluate@mlp", "evaluate@cnn",
                "evaluate@rnn", "evaluate@fasttext", "evaluate@linear", "evaluate@ensemble"}
    assert set(lock["stages"]) == expected
    for bundle in ("mlp", "cnn", "rnn", "fasttext", "linear", "ensemble"):
        assert (reproduced / "models" / bundle / "config.json").exists()


def test_nothing_changed_runs_nothing(reproduced):
    status = dvc(reproduced, "status")
    assert "up to date" in status.stdout
    again = dvc(reproduced, "repro")
    assert "Running stage" not in again.stdout


def test_exp_show_lists_both_models_validation_balanced_accuracy(reproduced):
    shown = json.loads(dvc(reproduced, "exp", "show", "--json").stdout)
    found = workspace_metrics(shown)
    for model in ("mlp", "cnn", "fasttext"):
        best = found[f"results/train/{model}/metrics.json"]["best"]
        assert 0.0 < best["validation_balanced_accuracy"] <= 1.0
    row = next(entry for entry in shown if entry["rev"] == "workspace")
    params = row["data"]["params"]["params.yaml"]["data"]
    assert params["train"]["epochs"] == SMALL["train"]["epochs"]
    assert params["cnn"]["filters"] == SMALL["cnn"]["filters"]


def test_metrics_show_has_test_metrics(reproduced):
    shown = json.loads(dvc(reproduced, "metrics", "show", "--json").stdout)
    metrics = next(iter(shown.values()))["data"]
    for model in ("mlp", "cnn", "fasttext"):
        test = metrics[f"metrics/{model}.json"]["data"]["test"]
        assert 0.0 < test["balanced_accuracy"] <= 1.0
        assert test["rows"] == pq.read_metadata(
            reproduced / "data/prepared/test.parquet").num_rows
    data = metrics["metrics/data.json"]["data"]
    assert data["rows_read"] == SMALL["data"]["sample_rows"]


def test_plots_show_draws_both_learning_curves(reproduced, tmp_path):
    shown = json.loads(dvc(reproduced, "plots", "show", "--json").stdout)["data"]
    assert {"Validation balanced accuracy", "Loss", "Learning rate"} <= set(shown)
    points = shown["Validation balanced accuracy"][0]["content"]["data"]["values"]
    epochs = json.loads((reproduced / "results/train/cnn/metrics.json").read_text())["step"] + 1
    per_model = {model: [p for p in points if p["filename"].startswith(f"{model}/")]
                 for model in ("mlp", "cnn")}
    assert len(per_model["cnn"]) == epochs
    assert len(per_model["mlp"]) >= 1
    assert {"results/evaluate/cnn/confusion.csv",
            "results/evaluate/fasttext/worst_recall.csv"} <= set(shown)
    page = tmp_path / "plots"
    dvc(reproduced, "plots", "show", "-o", str(page))
    assert (page / "index.html").stat().st_size > 0


def test_plots_show_draws_reliability_and_risk_coverage_of_every_model(reproduced, tmp_path):
    shown = json.loads(dvc(reproduced, "plots", "show", "--json").stdout)["data"]
    models = ("mlp", "cnn", "rnn", "fasttext", "linear", "ensemble")
    for title, name in (("Reliability on test", "reliability.csv"),
                        ("Risk-coverage on test", "risk_coverage.csv")):
        points = shown[title][0]["content"]["data"]["values"]
        by_model = {model: [p for p in points
                            if p["filename"] == f"{model}/{name}"]
                    for model in models}
        assert all(by_model.values()), title
        for model, rows in by_model.items():
            assert all(0 <= float(row["accuracy"]) <= 1 for row in rows), model
            if name == "risk_coverage.csv":
                assert [int(row["coverage"]) for row in rows] == list(range(5, 101, 5))
    page = tmp_path / "plots"
    dvc(reproduced, "plots", "show", "-o", str(page))
    html = (page / "index.html").read_text(encoding="utf-8")
    assert "Reliability on test" in html and "Risk-coverage on test" in html
    # Every bundle carries its calibration, and its metrics the figures of its sets on test.
    for model in models:
        assert (reproduced / "models" / model / "calibration.json").exists()
        figures = json.loads((reproduced / "metrics" / f"{model}.json").read_text())["test"]
        assert set(figures["sets"]) == {"at_90", "at_95"}
        assert figures["calibration"]["bins"] == 15


def test_predict_from_the_trained_bundle(reproduced):
    train = pq.read_table(reproduced / "data/prepared/train.parquet").slice(0, 1).to_pylist()[0]
    result = run(reproduced, sys.executable, "-m", "meli", "predict", "--model", "models/cnn",
                 "-k", "2", train["title"])
    lines = result.stdout.splitlines()
    assert lines[0] == train["title"]
    assert len(lines) == 3
    labels = json.loads((reproduced / "models/cnn/labels.json").read_text())
    assert lines[1].split()[-1] in labels


@pytest.mark.real_data
def test_real_sample_through_exp_run(tmp_path):
    """`dvc exp run -S data.source=<real file>` reruns the stages on it; then nothing is stale."""
    if not REAL_SAMPLE.exists():
        pytest.skip(f"real MeLi sample not found at {REAL_SAMPLE}")
    repo = make_repo(tmp_path / "repo", SMALL)
    dvc(repo, "repro", "featurize")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "synthetic run")
    result = dvc(repo, "exp", "run", "-S", f"data.source={REAL_SAMPLE}", "featurize")
    for stage in ("ingest", "prepare", "featurize"):
        assert f"Running stage '{stage}'" in result.stdout
    data = json.loads((repo / "metrics/data.json").read_text())
    assert data["rows_read"] == 42_667
    assert data["classes"] == 632
    source = json.loads((repo / "data/raw/source.json").read_text())
    assert source["source"] == str(REAL_SAMPLE)
    again = dvc(repo, "repro", "featurize")
    assert "Running stage" not in again.stdout


def training_processes(repo: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        arguments = process.info["cmdline"] or [""]
        # The Python process itself, not a shell that runs it (whose command line names it too).
        if Path(arguments[0]).name.startswith("python") and "meli.stages.train" in arguments \
                and process.info["cwd"] == str(repo):
            found.append(process)
    return found


def kill_repro_after_a_checkpoint(repo: Path, saved: Path) -> None:
    """Start `dvc repro -f -s train@mlp` and SIGKILL DVC alone (as a closed terminal or an
    out-of-memory killer would) once its training checkpointed an epoch; check that the training
    dies with it instead of living on to race the next run for the same outputs. DVC runs the
    command through /bin/sh, as it does where SHELL is unset: dash, Debian's sh, stays between
    DVC and the training, where bash would replace itself with it."""
    command = [sys.executable, "-m", "dvc", "repro", "-f", "-s", "train@mlp"]
    process = subprocess.Popen(command, cwd=repo, env=environment() | {"SHELL": "/bin/sh"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 120
    try:
        while not saved.exists():
            assert process.poll() is None, "training ended before it was killed"
            assert time.time() < deadline, "training never checkpointed an epoch"
            time.sleep(0.02)
        trainings = training_processes(repo)
        assert len(trainings) == 1
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        _, alive = psutil.wait_procs(trainings, timeout=10)
        assert alive == [], "the training outlived the dvc repro that ran it"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def test_a_killed_repro_leaves_no_training_behind_and_the_next_one_resumes(reproduced, tmp_path):
    # A copy with 40 short epochs, so that the kill lands while most of them are still to run
    # (with the fixture's 4 epochs of a tiny MLP, training could end between two polls).
    repo = shutil.copytree(reproduced, tmp_path / "repo", symlinks=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(epochs=40, patience=1000)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(repo, "repro", "train@mlp")  # the uninterrupted run to compare with
    weights = (repo / "models/mlp/weights.pt").read_bytes()
    metrics = (repo / "results/train/mlp/metrics.json").read_text()
    saved = repo / "checkpoints/mlp/checkpoint.pt"
    assert not saved.exists()  # a finished run leaves no checkpoint to resume
    kill_repro_after_a_checkpoint(repo, saved)
    # A training that lived on would have finished and removed its checkpoint.
    assert saved.exists(), "the killed training left no checkpoint to resume"
    killed = torch.load(saved, map_location="cpu", weights_only=True)
    assert 1 <= killed["epoch"] < 40
    bundle = repo / "models/mlp"
    assert not bundle.exists() or (bundle / "weights.pt").read_bytes() == weights
    assert "train@mlp" in dvc(repo, "status", "train@mlp").stdout
    again = dvc(repo, "repro", "train@mlp")
    assert "Running stage 'train@mlp'" in again.stdout
    finished = json.loads((repo / "checkpoints/mlp/finished.json").read_text())
    assert finished["fingerprint"] == killed["fingerprint"], "other params, code or data"
    assert f"resuming after epoch {killed['epoch']} of 40" in again.stderr, again.stderr[-3000:]
    # Same seed, same params: the resumed run ends exactly where an uninterrupted one does.
    assert (bundle / "weights.pt").read_bytes() == weights
    assert (repo / "results/train/mlp/metrics.json").read_text() == metrics
    assert "up to date" in dvc(repo, "status", "train@mlp").stdout
