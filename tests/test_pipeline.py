"""End to end: the real dvc.yaml run by DVC itself in a temporary git repository.

The pipeline runs on a small synthetic sample with small models, so the whole file takes about a
minute; what is checked is DVC's view of it (stages, lock, metrics, plots, experiments).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLE = ROOT.parent / "shared" / "data" / "meli-es-sample.jsonl.gz"

# Small enough for seconds per stage, large enough that every stage does real work.
SMALL = {
    "data": {"sample_rows": 2500},
    "embeddings": {"dim": 16, "epochs": 2, "buckets": 5000},
    "train": {"epochs": 3, "batch_size": 64, "patience": 2},
    "mlp": {"hidden_sizes": [64]},
    "cnn": {"filters": 32, "kernel_sizes": [1, 2, 3]},
    "baseline": {"epochs": 10, "dim": 16, "buckets": 20000},
}

pytestmark = pytest.mark.slow


def environment() -> dict[str, str]:
    env = dict(os.environ)
    # Stage commands say `python -m meli`: make that the interpreter running the tests.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@example.com"
    return env


def run(repo: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=repo, env=environment(), capture_output=True,
                            text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def dvc(repo: Path, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(repo, sys.executable, "-m", "dvc", *arguments, check=check)


def merge(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict):
            merge(base.setdefault(key, {}), value)
        else:
            base[key] = value
    return base


def make_repo(path: Path, changes: dict) -> Path:
    """A git + DVC repository holding this project's pipeline, code and (changed) params."""
    path.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, path / name)
    shutil.copytree(ROOT / "src", path / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (path / "params.yaml").write_text(yaml.safe_dump(merge(params, changes), sort_keys=False))
    run(path, "git", "init", "-q", "-b", "main")
    dvc(path, "init", "-q")
    dvc(path, "config", "core.analytics", "false")
    run(path, "git", "add", "-A")
    run(path, "git", "commit", "-qm", "pipeline")
    return path


def workspace_metrics(exp_show: list) -> dict:
    """{metrics file: values} of the workspace row of `dvc exp show --json`."""
    row = next(entry for entry in exp_show if entry["rev"] == "workspace")
    return {path: value["data"] for path, value in row["data"]["metrics"].items()}


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("e2e") / "repo", SMALL)
    dvc(repo, "repro")
    return repo


def test_repro_builds_every_stage(reproduced):
    lock = yaml.safe_load((reproduced / "dvc.lock").read_text())
    expected = {"ingest", "prepare", "featurize", "embeddings", "train@mlp", "train@cnn",
                "baseline", "evaluate@mlp", "evaluate@cnn", "evaluate@fasttext"}
    assert set(lock["stages"]) == expected
    for bundle in ("mlp", "cnn", "fasttext"):
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
            "results/evaluate/fasttext/per_class_recall.csv"} <= set(shown)
    page = tmp_path / "plots"
    dvc(reproduced, "plots", "show", "-o", str(page))
    assert (page / "index.html").stat().st_size > 0


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
