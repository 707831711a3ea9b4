"""Training at scale: devices, several processes on 127.0.0.1, resuming after a kill, and the
guards that keep two trainings from writing one output."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from ports import free_port

from meli.errors import MeliError
from meli.files import read_json
from meli.models.mlp import MLPParams
from meli.params import TrainParams
from meli.stages import train as train_stage
from meli.training import checkpoint
from meli.training.data import Split
from meli.training.device import cpu_has_bf16, resolve_device, use_bf16
from meli.training.live import TrainingLog

SMALL_MLP = MLPParams(hidden_sizes=[32], dropout=0.1)


def weights(bundle_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(bundle_dir / "weights.pt", map_location="cpu", weights_only=True)


def same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def run_train(pipeline, output: Path, params: TrainParams, checkpoints: Path | None = None):
    return train_stage.train("mlp", params, SMALL_MLP, pipeline.features, pipeline.embeddings,
                             pipeline.prepared, output / "models/mlp",
                             output / "results/train/mlp", checkpoints)


# ---- devices and precision ------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_one_clear_error():
    with pytest.raises(MeliError, match="device cuda asked for, but PyTorch sees no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_precision_auto_is_bf16_on_cuda_and_on_a_cpu_only_when_checked():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert use_bf16("auto", cuda) is True
    assert use_bf16("auto", cpu) is False
    assert use_bf16("auto", cpu, validated_on_cpu=True) is cpu_has_bf16()
    assert use_bf16("fp32", cuda) is False
    assert use_bf16("bf16", cpu) is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_and_prediction_on_cuda(pipeline, tmp_path):
    from meli.bundles.load import load_classifier

    params = TrainParams(epochs=2, batch_size=64, threads=1, device="cuda")
    result = run_train(pipeline, tmp_path, params)
    cpu = run_train(pipeline, tmp_path / "cpu", TrainParams(epochs=2, batch_size=64, threads=1,
                                                            device="cpu"))
    assert abs(result.validation_balanced_accuracy - cpu.validation_balanced_accuracy) < 0.05
    classifier = load_classifier(tmp_path / "models/mlp", device="cuda")
    assert classifier.probabilities(["zapatillas running"]).shape[0] == 1


def test_the_bundle_records_whether_bf16_inference_kept_validation(pipeline, tmp_path):
    run_train(pipeline, tmp_path, TrainParams(epochs=2, batch_size=64, threads=1))
    config = read_json(tmp_path / "models/mlp/config.json")
    if not cpu_has_bf16():
        assert config["bf16_inference"] is False
        return
    gap = abs(config["bf16_validation_balanced_accuracy"]
              - config["validation_balanced_accuracy"])
    assert config["bf16_inference"] is (gap <= 0.001)
    assert config["bf16_check_rows"] == len(Split.load(pipeline.features, "validation"))


@pytest.mark.skipif(not cpu_has_bf16(), reason="no bf16 check on a CPU without native bf16")
def test_the_bf16_check_scores_a_sample_of_a_large_validation_split(pipeline, tmp_path,
                                                                   monkeypatch):
    """On the course's 485,000 validation titles the check was one more full pass on the CPU,
    after a training that may have run on a GPU: both precisions score the same sample."""
    from meli.training import loop

    scored = []
    evaluate = loop.evaluate

    def counting(model, data, *args, **kwargs):
        scored.append((len(data), kwargs.get("bf16", False)))
        return evaluate(model, data, *args, **kwargs)

    monkeypatch.setattr(loop, "BF16_CHECK_ROWS", 50)
    monkeypatch.setattr(loop, "evaluate", counting)
    run_train(pipeline, tmp_path, TrainParams(epochs=1, batch_size=64, threads=1))
    validation = len(Split.load(pipeline.features, "validation"))
    assert validation > 50
    # The epoch's own validation pass, then the sample in float32 and in bf16.
    assert scored == [(validation, False), (50, False), (50, True)]
    assert read_json(tmp_path / "models/mlp/config.json")["bf16_check_rows"] == 50


# ---- resuming --------------------------------------------------------------------------------

class Killed(Exception):
    """Stands for a kill: raised while an epoch is logged, after the previous checkpoint."""


def interrupt_at(monkeypatch, epoch: int) -> None:
    original, logged = TrainingLog.epoch, []

    def log_epoch(training_log, result):
        logged.append(result)
        if len(logged) == epoch:
            raise Killed
        original(training_log, result)

    monkeypatch.setattr(TrainingLog, "epoch", log_epoch)


PARAMS = TrainParams(epochs=5, batch_size=64, threads=1, patience=10)


@pytest.fixture(scope="module")
def uninterrupted(pipeline, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("uninterrupted")
    run_train(pipeline, output, PARAMS, output / "checkpoints/mlp")
    return output


def test_a_killed_run_resumes_from_its_last_epoch_bit_identical(pipeline, tmp_path, monkeypatch,
                                                                uninterrupted):
    checkpoints = tmp_path / "checkpoints/mlp"
    interrupt_at(monkeypatch, epoch=3)
    with pytest.raises(Killed):
        run_train(pipeline, tmp_path, PARAMS, checkpoints)
    assert torch.load(checkpoints / checkpoint.CHECKPOINT_FILE, weights_only=True)["epoch"] == 2
    assert not (tmp_path / "models/mlp").exists()
    monkeypatch.undo()
    # DVC deletes a stage's outputs before it runs again; the checkpoint is a persist output.
    shutil.rmtree(tmp_path / "results")
    result = run_train(pipeline, tmp_path, PARAMS, checkpoints)
    assert result.resumed_from_epoch == 2
    assert same_weights(weights(tmp_path / "models/mlp"), weights(uninterrupted / "models/mlp"))
    for name in ("metrics.json", "params.yaml", "plots/metrics/train/loss.tsv"):
        resumed = (tmp_path / "results/train/mlp" / name).read_text()
        whole = (uninterrupted / "results/train/mlp" / name).read_text()
        if name.endswith(".tsv"):  # each row holds a timestamp: compare steps and values
            resumed, whole = ([line.split("\t")[::2] for line in text.splitlines()]
                              for text in (resumed, whole))
        assert resumed == whole, name
    config = read_json(tmp_path / "models/mlp/config.json")
    assert config == read_json(uninterrupted / "models/mlp/config.json")
    # Finished: only a small record is left, the same as after an uninterrupted run.
    assert [p.name for p in checkpoints.iterdir()] == [checkpoint.FINISHED_FILE]
    assert read_json(checkpoints / checkpoint.FINISHED_FILE) == read_json(
        uninterrupted / "checkpoints/mlp" / checkpoint.FINISHED_FILE)


def test_a_checkpoint_of_other_params_is_never_resumed(pipeline, tmp_path, monkeypatch,
                                                       caplog):
    caplog.set_level(logging.INFO, logger="meli.training.checkpoint")
    checkpoints = tmp_path / "checkpoints/mlp"
    interrupt_at(monkeypatch, epoch=2)
    with pytest.raises(Killed):
        run_train(pipeline, tmp_path, PARAMS, checkpoints)
    monkeypatch.undo()
    other = dataclasses.replace(PARAMS, learning_rate=0.002)
    result = run_train(pipeline, tmp_path, other, checkpoints)
    assert result.resumed_from_epoch == 0
    assert "made under other params, code or data" in caplog.text
    run_train(pipeline, tmp_path / "fresh", other)
    assert same_weights(weights(tmp_path / "models/mlp"), weights(tmp_path / "fresh/models/mlp"))


@pytest.mark.parametrize("damage", ["text", "random bytes", "truncated"])
def test_a_damaged_checkpoint_is_set_aside(tmp_path, caplog, damage):
    path = tmp_path / checkpoint.CHECKPOINT_FILE
    if damage == "truncated":
        checkpoint.save(tmp_path, {"fingerprint": "anything", "weights": torch.ones(1000)})
        path.write_bytes(path.read_bytes()[:2000])
    else:
        path.write_bytes(b"not a checkpoint" if damage == "text"
                         else random.Random(0).randbytes(4096))
    assert checkpoint.load(tmp_path, "anything") is None
    assert "unreadable checkpoint" in caplog.text
    # One line, and none of PyTorch's advice to load it with weights_only=False (which would run
    # whatever code the file holds).
    assert caplog.messages == [f"{path}: unreadable checkpoint, set aside; training from the "
                               f"first epoch"]


def test_the_fingerprint_covers_settings_and_file_contents(tmp_path):
    data = tmp_path / "tokens.npy"
    data.write_bytes(b"1234")
    first = checkpoint.fingerprint({"lr": 0.1}, [data])
    assert checkpoint.fingerprint({"lr": 0.1}, [data]) == first
    assert checkpoint.fingerprint({"lr": 0.2}, [data]) != first
    data.write_bytes(b"1235")
    assert checkpoint.fingerprint({"lr": 0.1}, [data]) != first


def test_two_trainings_of_one_model_never_run_at_once(tmp_path):
    lock = tmp_path / "checkpoints/mlp"
    with (checkpoint.exclusive(lock, "mlp"),
          pytest.raises(MeliError, match="another training of mlp is running"),
          checkpoint.exclusive(lock, "mlp")):
        pass
    with checkpoint.exclusive(tmp_path / "checkpoints/mlp", "mlp"):
        pass  # released once the first is done


# ---- the stage as DVC runs it: processes, kills ----------------------------------------------

def workspace(pipeline, path: Path, params: str) -> Path:
    for part in ("data/prepared", "data/features", "models/embeddings"):
        shutil.copytree(pipeline.root / part, path / part)
    (path / "params.yaml").write_text(params, encoding="utf-8")
    return path


def stage_command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "meli.stages.train", "mlp", *extra]


def epochs_logged(repo: Path) -> int:
    path = repo / "results/train/mlp/plots/metrics/train/loss.tsv"
    try:
        return max(0, len(path.read_text(encoding="utf-8").splitlines()) - 1)
    except FileNotFoundError:
        return 0


def wait_for(condition, process: subprocess.Popen, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"the training ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in {seconds} s"
        time.sleep(0.02)


SMALL_STAGE = """\
train:
  epochs: {epochs}
  batch_size: 64
  learning_rate: 0.02
  patience: 1000
  threads: 1
  precision: {precision}
  processes: {processes}
mlp:
  hidden_sizes: [32]
  dropout: {dropout}
"""
LONG_STAGE = SMALL_STAGE.format(epochs=1000, processes=1, dropout=0.1, precision="auto")


# Without dropout, whose masks each rank draws from its own generator, several processes compute
# the same gradients as one, up to rounding; bf16 rounding would blur the comparison: float32.
EXACT_STAGE = SMALL_STAGE.format(epochs=6, processes="{processes}", dropout=0.0, precision="fp32")


def train_alone(repo: Path) -> dict:
    """Run the stage in `repo` and check that one writer wrote the outputs: one bundle, one
    log of 6 epochs; its best epoch's figures."""
    done = subprocess.run(stage_command(), cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (repo / "models/mlp/weights.pt").exists()
    assert epochs_logged(repo) == 6
    return read_json(repo / "results/train/mlp/metrics.json")["best"]


@pytest.fixture(scope="module")
def one_process(pipeline, tmp_path_factory) -> dict:
    """The best epoch of one process on EXACT_STAGE, which several processes must match."""
    best = train_alone(workspace(pipeline, tmp_path_factory.mktemp("one") / "repo",
                                 EXACT_STAGE.format(processes=1)))
    assert best["validation_balanced_accuracy"] > 0.5  # it learned something to compare
    return best


@pytest.mark.slow
def test_two_processes_on_localhost_train_like_one(pipeline, one_process, tmp_path):
    two = train_alone(workspace(pipeline, tmp_path / "p2", EXACT_STAGE.format(processes=2)))
    assert abs(two["validation_balanced_accuracy"]
               - one_process["validation_balanced_accuracy"]) <= 0.005


def rank_of(process: psutil.Process) -> int | None:
    try:
        rank = process.environ().get("RANK")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return int(rank) if rank is not None else None


@pytest.mark.slow
def test_a_dead_rank_ends_the_stage_with_one_line_naming_it(pipeline, tmp_path):
    two_processes = LONG_STAGE.replace("processes: 1", "processes: 2")
    repo = workspace(pipeline, tmp_path / "repo", two_processes)
    stage = subprocess.Popen(stage_command(), cwd=repo, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: epochs_logged(repo) >= 1, stage, "epoch logged")
        ranks = {rank_of(child): child for child in psutil.Process(stage.pid).children(True)}
        victim = ranks[1]
        victim.kill()
        killed_at = time.monotonic()
        _, stderr = stage.communicate(timeout=60)
        seconds = time.monotonic() - killed_at
    finally:
        if stage.poll() is None:
            stage.kill()
    assert stage.returncode == 1
    assert seconds < 15
    assert stderr.strip().splitlines()[-1] == (
        f"meli train: error: rank 1 of 2 (pid {victim.pid}) was killed by SIGKILL; every other "
        f"rank was stopped and no bundle was written")
    assert "Traceback" not in stderr
    assert not (repo / "models/mlp").exists()
    assert not ranks[0].is_running() or ranks[0].status() == psutil.STATUS_ZOMBIE


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_rerun_ends_bit_identical(pipeline, tmp_path):
    params = SMALL_STAGE.format(epochs=30, processes=1, dropout=0.1, precision="auto")
    whole = workspace(pipeline, tmp_path / "whole", params)
    subprocess.run(stage_command(), cwd=whole, check=True, capture_output=True, timeout=300)

    repo = workspace(pipeline, tmp_path / "repo", params)
    stage = subprocess.Popen(stage_command(), cwd=repo, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    saved = repo / "checkpoints/mlp" / checkpoint.CHECKPOINT_FILE
    wait_for(saved.exists, stage, "checkpoint written")
    # Anywhere in the epochs that follow, mid-batch or mid-checkpoint.
    time.sleep(random.Random(os.getpid()).uniform(0.0, 1.0))
    stage.kill()
    stage.wait(timeout=30)
    resumable = saved.exists()  # else it finished before the kill landed
    shutil.rmtree(repo / "results")  # as DVC does before running the stage again
    again = subprocess.run(stage_command(), cwd=repo, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert ("resuming after epoch" in again.stderr) is resumable
    assert same_weights(weights(repo / "models/mlp"), weights(whole / "models/mlp"))
    assert (read_json(repo / "results/train/mlp/metrics.json")
            == read_json(whole / "results/train/mlp/metrics.json"))


@pytest.mark.slow
def test_a_second_training_of_the_same_model_is_refused(pipeline, tmp_path):
    repo = workspace(pipeline, tmp_path / "repo", LONG_STAGE)
    first = subprocess.Popen(stage_command(), cwd=repo, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: epochs_logged(repo) >= 1, first, "epoch logged")
        second = subprocess.run(stage_command(), cwd=repo, capture_output=True, text=True,
                                timeout=120)
    finally:
        first.kill()
        first.wait(timeout=30)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1].startswith(
        "meli train: error: checkpoints/mlp: another training of mlp is running")


# What DVC runs a stage's command with: its SHELL (bash replaces itself with the command), else
# /bin/sh (dash on Debian, which stays alive between DVC and the command), or no shell at all.
STARTERS = [None] + sorted({shutil.which(name) for name in ("sh", "dash", "bash", "zsh")} - {None})


@pytest.mark.parametrize("shell", STARTERS, ids=lambda shell: Path(shell).name if shell else "none")
def test_a_training_dies_with_the_process_that_started_it_through_any_shell(shell, tmp_path):
    ready = tmp_path / "ready"
    training = ("import time; from meli.training.watcher import die_with_parent; "
                f"die_with_parent(); open({str(ready)!r}, 'w').close(); time.sleep(120)")
    command = [sys.executable, "-c", training]
    if shell:
        command = [shell, "-c", shlex.join(command)]
    # The starter plays DVC: it starts the command, then is killed and cannot stop it.
    starter = subprocess.Popen([sys.executable, "-c", "import subprocess, time; "
                                f"subprocess.Popen({command!r}); time.sleep(120)"])
    try:
        wait_for(ready.exists, starter, "start of the command", seconds=30)
        trainings = [p for p in psutil.Process(starter.pid).children(recursive=True)
                     if "die_with_parent" in " ".join(p.cmdline())
                     and Path(p.cmdline()[0]).name.startswith("python")]
        assert len(trainings) == 1
        starter.kill()
        starter.wait(timeout=10)
        _, alive = psutil.wait_procs(trainings, timeout=5)
    finally:
        if starter.poll() is None:
            starter.kill()
    for process in alive:
        process.kill()
    assert alive == [], f"the training outlived its starter{' behind ' + shell if shell else ''}"


@pytest.mark.slow
def test_two_machines_on_localhost_train_like_one_process(pipeline, one_process, tmp_path):
    """Two "machines" (two workspaces, two agents with --node-rank 0 and 1) meet at
    train.master_address:master_port; only machine 0 writes outputs."""
    two_nodes = EXACT_STAGE.format(processes=1).replace(
        "train:\n", f"train:\n  nodes: 2\n  master_address: 127.0.0.1\n"
                    f"  master_port: {free_port()}\n", 1)
    machines = [workspace(pipeline, tmp_path / f"machine{rank}", two_nodes) for rank in (0, 1)]
    started = [subprocess.Popen(stage_command("--node-rank", str(rank)), cwd=machine,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for rank, machine in enumerate(machines)]
    for process in started:
        _, errors = process.communicate(timeout=300)
        assert process.returncode == 0, errors
    # Machine 0 wrote the bundle and the log; machine 1 computed its share and wrote nothing.
    assert (machines[0] / "models/mlp/weights.pt").exists()
    assert epochs_logged(machines[0]) == 6
    assert not (machines[1] / "models/mlp").exists()
    assert epochs_logged(machines[1]) == 0
    two = read_json(machines[0] / "results/train/mlp/metrics.json")["best"]
    assert abs(two["validation_balanced_accuracy"]
               - one_process["validation_balanced_accuracy"]) <= 0.005
