"""Helpers for tests that run DVC itself in a temporary git repository holding this project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLE = ROOT.parent / "shared" / "data" / "meli-es-sample.jsonl.gz"

# Small enough for seconds per stage, large enough that every stage does real work.
SMALL = {
    "data": {"sample_rows": 2500},
    "embeddings": {"dim": 16, "epochs": 2, "buckets": 5000},
    "train": {"epochs": 4, "batch_size": 32, "learning_rate": 0.01, "patience": 2},
    "mlp": {"hidden_sizes": [64]},
    "cnn": {"filters": 32, "kernel_sizes": [1, 2, 3]},
    "rnn": {"hidden_size": 16},
    "baseline": {"epochs": 10, "dim": 16, "buckets": 20000},
    "ensemble": {"rounds": 5},
}


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
        # search.space maps params keys to distributions: a new space replaces the old one.
        if isinstance(value, dict) and key != "space":
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


def copy_repo(repo: Path, target: Path) -> Path:
    """A copy of a test repository (workspace, git history, DVC cache) at `target`."""
    return Path(shutil.copytree(repo, target, symlinks=True))


def real_sample_repo(path: Path) -> Path:
    """A repository at `path` whose pipeline has run on the real sample (`dvc repro`, a few
    minutes): what the benchmarks measure when no `--repo` is given."""
    if not REAL_SAMPLE.exists():
        raise SystemExit(f"{REAL_SAMPLE}: real sample not found")
    repo = make_repo(path, {"data": {"source": str(REAL_SAMPLE.resolve())}})
    print("building the real-sample repository (dvc repro) ...", flush=True)
    dvc(repo, "repro")
    return repo


def workspace_metrics(exp_show: list) -> dict:
    """{metrics file: values} of the workspace row of `dvc exp show --json`."""
    row = next(entry for entry in exp_show if entry["rev"] == "workspace")
    return {path: value["data"] for path, value in row["data"]["metrics"].items()}
