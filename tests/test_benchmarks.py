"""The scale benchmarks' own logic: benchmarks/scale.py's stages and test files, and
benchmarks/gpu.sh, which must say so and run nothing where there is no GPU, and whose every
step runs on the CPU with --cpu-smoke."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import scale  # noqa: E402


def test_all_stages_are_dvc_yaml_s_in_order_then_the_registry():
    stages = scale.parse_stages("all")
    assert stages[0] == "check"  # params.yaml checked before anything is built
    stages = stages[1:]
    assert stages[:4] == ["ingest", "prepare", "featurize", "embeddings"]
    assert stages[4:7] == ["train@mlp", "train@cnn", "train@rnn"]
    assert stages[7:10] == ["baseline", "linear", "ensemble"]
    assert stages[10:16] == [f"evaluate@{model}" for model in
                             ("mlp", "cnn", "rnn", "fasttext", "linear", "ensemble")]
    assert stages[16:] == ["registry"]
    assert scale.parse_stages("train@rnn, evaluate@rnn") == ["train@rnn", "evaluate@rnn"]
    with pytest.raises(SystemExit, match="--stages: unknown train@svm, evaluate "):
        scale.parse_stages("train@svm,evaluate")


def test_each_stage_runs_as_dvc_yaml_s_command():
    assert scale._command("train@cnn") == ("meli.stages.train", ["cnn"])
    assert scale._command("ensemble") == ("meli.stages.ensemble", [])
    assert scale._command("registry") == ("meli.cli", ["registry", "--update"])


def test_a_file_is_the_same_bytes_built_in_one_process_or_several(tmp_path):
    """Every chunk is a gzip member of its own: the order of building does not matter."""
    rows = 3_000
    one, two = tmp_path / "one.jsonl.gz", tmp_path / "two.jsonl.gz"
    scale.build("jsonl", one, rows, 7, categories=30, jobs=1, chunk_rows=1_000)
    scale.build("jsonl", two, rows, 7, categories=30, jobs=2, chunk_rows=1_000)
    assert hashlib.sha256(one.read_bytes()).digest() == hashlib.sha256(two.read_bytes()).digest()
    lines = gzip.decompress(one.read_bytes()).splitlines()
    assert len(lines) == rows
    assert sum(not line.startswith(b'{"language":') for line in lines) > 0  # broken rows


def _gpu_sh(tmp_path: Path, *args: str, **environment: str) -> subprocess.CompletedProcess:
    env = os.environ | {"WORK": str(tmp_path / "work"), "PYTHON": sys.executable} | environment
    return subprocess.run(["bash", str(ROOT / "benchmarks/gpu.sh"), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: it would run")
def test_gpu_script_without_a_gpu_says_so_and_runs_nothing(tmp_path):
    done = _gpu_sh(tmp_path)
    assert done.returncode == 0
    assert done.stderr.startswith("benchmarks/gpu.sh: no CUDA GPU present (PyTorch sees none): "
                                  "nothing run.")
    assert not (tmp_path / "work").exists()


def test_gpu_script_stops_when_its_time_is_spent(tmp_path):
    done = _gpu_sh(tmp_path, "--cpu-smoke", TOTAL_SECONDS="0")
    assert done.returncode == 1
    assert "== build the 6000-row file: not run, the run's 0 s are spent" in done.stderr
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
def test_gpu_script_runs_every_step_on_the_cpu(tmp_path):
    """--cpu-smoke: the GPU run's steps and settings on a tiny file, on the CPU."""
    done = _gpu_sh(tmp_path, "--cpu-smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout[done.stdout.index("benchmarks/gpu.sh (cpu-smoke"):].splitlines()
    steps = [line.split(" | ")[0].removeprefix("| ") for line in table[3:]]
    assert steps == [
        "ingest", "prepare", "featurize", "embeddings", "train@mlp", "train@cnn", "train@rnn",
        "meli predict models/mlp --device cpu",
        "meli predict models/cnn --device cpu", "meli serve models/cnn --device cpu",
        "meli predict models/rnn --device cpu", "meli serve models/rnn --device cpu"]
    assert all("validation balanced accuracy 0." in line for line in table if "| train@" in line)
    workspace = tmp_path / "work" / "course-6000-c20"
    params = (workspace / "params.yaml").read_text()
    for setting in ("epochs: 1", "batch_size: 4096", "device: cpu"):
        assert setting in params
