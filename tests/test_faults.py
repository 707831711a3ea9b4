"""Faults end in one line and leave a clean tree (issue 20): a full disk while checkpointing, a
stop asked by SIGTERM, leftovers of killed processes, and reruns in clones that sit elsewhere."""

from __future__ import annotations

import copy
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from dvc_repo import ROOT, SMALL, dvc, environment, make_repo, merge, run

from meli.errors import MeliError, remove_leftovers
from meli.errors import run as run_command
from meli.training import checkpoint


class FullDisk:
    """A file that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, stream, room: int):
        self.stream, self.room = stream, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.stream.write(data)

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stream.close()


def test_a_full_disk_while_checkpointing_is_one_line_and_leaves_no_partial_file(tmp_path,
                                                                                monkeypatch):
    checkpoint.save(tmp_path, {"epoch": 1, "weights": torch.ones(10)})
    opened = Path.open

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        stream = opened(path, mode, *args, **kwargs)
        return FullDisk(stream, room=4096) if ".partial-" in path.name else stream

    monkeypatch.setattr(Path, "open", open_on_a_full_disk)
    with pytest.raises(MeliError) as error:
        checkpoint.save(tmp_path, {"epoch": 2, "weights": torch.zeros(100_000)})
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / checkpoint.CHECKPOINT_FILE}: cannot write: "
                              f"No space left on device")
    # Nothing left to hold on to the space, and the previous epoch's checkpoint is intact.
    assert [path.name for path in tmp_path.iterdir()] == [checkpoint.CHECKPOINT_FILE]
    monkeypatch.undo()
    kept = torch.load(tmp_path / checkpoint.CHECKPOINT_FILE, weights_only=True)
    assert kept["epoch"] == 1


def test_the_fingerprint_is_the_same_in_clones_at_different_paths(tmp_path, monkeypatch):
    data = Path("data/features/train.tokens.npy")  # as the stage gives it: relative
    (tmp_path / data.parent).mkdir(parents=True)
    (tmp_path / data).write_bytes(b"1234")
    monkeypatch.chdir(tmp_path)
    fingerprints = []
    for clone in ("one", "elsewhere/two"):
        code = tmp_path / clone / "src/meli/training/loop.py"
        code.parent.mkdir(parents=True)
        code.write_text("code", encoding="utf-8")
        monkeypatch.setattr(checkpoint, "_PACKAGE_PARENT", (tmp_path / clone / "src").resolve())
        fingerprints.append(checkpoint.fingerprint({"lr": 0.1}, [code, data]))
    assert fingerprints[0] == fingerprints[1]
    code.write_text("other code", encoding="utf-8")
    assert checkpoint.fingerprint({"lr": 0.1}, [code, data]) != fingerprints[1]


def dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    return int(finished.stdout)


def test_a_command_starts_by_removing_leftovers_of_dead_processes_only(tmp_path, monkeypatch):
    dead, alive = dead_pid(), os.getpid()
    stale = [tmp_path / f"models/.embeddings.partial-{dead}",
             tmp_path / f"data/.raw.partial-{dead}-old",
             tmp_path / f"checkpoints/mlp/.checkpoint.pt.partial-{dead}",
             tmp_path / f"results/train/mlp/.metrics.json.partial-{dead}"]
    kept = [tmp_path / f"metrics/.data.json.partial-{alive}",  # being written right now
            tmp_path / "models/mlp/weights.pt", tmp_path / "data/.gitignore",
            tmp_path / f"src/.notes.partial-{dead}"]  # not a place stages write
    for path in [*stale, *kept]:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name.startswith(".embeddings") or path.name.startswith(".raw"):
            path.mkdir()
            (path / "matrix.npy").write_bytes(b"half")
        else:
            path.write_bytes(b"half")
    monkeypatch.chdir(tmp_path)
    assert run_command("anything", lambda: None) == 0
    assert [path for path in stale if path.exists()] == []
    assert [path for path in kept if not path.exists()] == []
    assert remove_leftovers() == []


# ---- through DVC: a stop by SIGTERM, reruns in clones ----------------------------------------

def python_path(repo: Path) -> dict[str, str]:
    """Each repository runs its own copy of the code, as a clone does."""
    return environment() | {"PYTHONPATH": str(repo / "src")}


def repro(repo: Path, *arguments: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "dvc", "repro", *arguments], cwd=repo,
                          env=python_path(repo), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return done


def git_status(repo: Path) -> str:
    return run(repo, "git", "status", "--porcelain").stdout


def with_gitignore(repo: Path) -> Path:
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    run(repo, "git", "add", ".gitignore")
    run(repo, "git", "commit", "-qm", "gitignore")
    return repo


@pytest.mark.slow
def test_sigterm_stops_training_in_one_line_and_the_next_repro_resumes(tmp_path):
    repo = with_gitignore(make_repo(tmp_path / "repo", merge(
        copy.deepcopy(SMALL), {"train": {"epochs": 40, "patience": 1000}})))
    dvc(repo, "repro", "embeddings")  # the inputs first: the stop is to land in training
    saved = repo / "checkpoints/mlp" / checkpoint.CHECKPOINT_FILE
    process = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "train@mlp"], cwd=repo,
                               env=python_path(repo), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not saved.exists():
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "training never checkpointed an epoch"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGTERM)  # as a CI job or a container being stopped
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert "Traceback" not in stderr
    said = [line for line in stderr.splitlines() if line.startswith("meli train:")]
    assert len(said) == 1, stderr[-3000:]
    found = re.fullmatch(r"meli train: stopped by SIGTERM after epoch (\d+) of 40; the next run "
                         r"\(`dvc repro`\) resumes from there \(checkpoints/mlp\)", said[0])
    assert found, said[0]
    epoch = int(found.group(1))
    assert torch.load(saved, weights_only=True)["epoch"] == epoch
    assert list(repo.rglob(".*.partial-*")) == []
    # A leftover of a process killed while writing an output that DVC then restored from its
    # cache (the stage never ran to remove it): whichever stage runs next removes it.
    leftover = repo / f"models/.embeddings.partial-{dead_pid()}"
    leftover.mkdir()

    again = repro(repo, "train@mlp")
    assert "Running stage 'embeddings'" not in again.stdout
    assert f"resuming after epoch {epoch} of 40" in again.stderr
    assert not leftover.exists()
    assert (repo / "models/mlp/weights.pt").exists()


@pytest.mark.slow
def test_clones_at_different_paths_rebuild_the_same_lock_and_leave_git_clean(tmp_path):
    first = with_gitignore(make_repo(tmp_path / "first", merge(copy.deepcopy(SMALL),
                                                               {"train": {"epochs": 2}})))
    repro(first, "train@mlp")
    run(first, "git", "add", "-A")
    run(first, "git", "commit", "-qm", "reproduced")
    second = tmp_path / "somewhere/else/second"
    run(tmp_path, "git", "clone", "-q", str(first), str(second))

    repro(second, "train@mlp")  # everything rebuilt: a clone has no DVC cache
    assert (second / "dvc.lock").read_text() == (first / "dvc.lock").read_text()
    assert git_status(second) == ""
    repro(first, "-f", "-s", "train@mlp")  # and a rerun where it was first built
    assert git_status(first) == ""
