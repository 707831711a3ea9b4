"""The model registry: every bundle is a DVC artifact whose meta tells the truth, and a user
with nothing but a Git URL gets a version with `dvc artifacts get` and predicts as the
repository does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_repo import ROOT, copy_repo, dvc, run

from meli.bundles import registry

GTO = str(Path(sys.executable).parent / "gto")


@pytest.fixture(scope="module")
def declared() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))


def test_every_bundle_is_a_model_artifact(declared):
    artifacts = declared["artifacts"]
    assert list(artifacts) == registry.models()
    outputs = {out if isinstance(out, str) else next(iter(out))
               for stage in declared["stages"].values() for out in stage.get("outs", [])}
    for name, entry in artifacts.items():
        assert entry["type"] == "model"
        assert entry["desc"]
        assert name in entry["labels"]
        assert entry["path"] == f"models/{name}"
        # A bundle some stage writes (the train matrix writes models/${item.model}).
        assert entry["path"] in outputs or "models/${item.model}" in outputs


def committed(path: str) -> str:
    shown = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True,
                           text=True)
    if shown.returncode != 0:
        pytest.skip(f"{path}: no committed version to read (not a git checkout)")
    return shown.stdout


def test_the_meta_figures_are_those_of_the_metrics_files():
    # The committed record against the committed metrics: a `dvc repro` here rewrites the
    # metrics files, and on another CPU trained weights (so figures) may move in the last bits.
    declared = yaml.safe_load(committed("dvc.yaml"))
    for name, entry in declared["artifacts"].items():
        meta = entry["meta"]
        test = json.loads(committed(f"metrics/{name}.json"))["test"]
        validation = json.loads(committed(f"results/train/{name}/metrics.json"))
        assert meta["test_balanced_accuracy"] == round(test["balanced_accuracy"], 4), (
            f"{name}: run `meli registry --update` after `dvc repro`")
        assert meta["validation_balanced_accuracy"] == round(
            validation["best"]["validation_balanced_accuracy"], 4)
        assert meta["trained_on"].startswith("synthetic sample")


def meli(cwd: Path, *arguments: str) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "meli", *arguments)


@pytest.mark.slow
def test_dvc_artifacts_get_by_version_and_stage_then_predict_as_the_repository(small_repo,
                                                                                  tmp_path):
    repo = copy_repo(small_repo, tmp_path / "repo")  # `dvc repro` has run
    storage, origin = tmp_path / "storage", tmp_path / "origin.git"
    dvc(repo, "remote", "add", "-d", "storage", str(storage))
    meli(repo, "registry", "--update")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "trained")
    dvc(repo, "push")
    run(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    run(repo, "git", "remote", "add", "origin", str(origin))
    run(repo, "git", "push", "-q", "origin", "main")
    run(repo, GTO, "register", "cnn", "--version", "v1.0.0")
    run(repo, GTO, "assign", "cnn", "--version", "v1.0.0",
        "--stage", "prod")
    run(repo, "git", "push", "-q", "origin", "--tags")

    titles = ["Zapatillas Nike Air Max Talle 42", "Funda Silicona iPhone 11"]
    source = tmp_path / "titles.txt"
    source.write_text("\n".join(titles) + "\n", encoding="utf-8")
    expected = meli(repo, "predict", "--model", "models/cnn", "--input", str(source)).stdout

    for how in (["--rev", "v1.0.0"], ["--stage", "prod"], []):
        empty = tmp_path / f"user-{'-'.join(how).strip('-') or 'latest'}"
        empty.mkdir()
        dvc(empty, "artifacts", "get", str(origin), "cnn", *how, "-o", "cnn")
        assert sorted(p.name for p in (empty / "cnn").iterdir()) == sorted(
            p.name for p in (repo / "models/cnn").iterdir())
        got = meli(empty, "predict", "--model", "cnn", "--input", str(source)).stdout
        assert got == expected
