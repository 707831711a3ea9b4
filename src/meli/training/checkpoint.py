"""Training checkpoints: one per finished epoch, written atomically, resumed only when the
params, code and data that made it are the ones of the run about to start.

A checkpoint is a single `torch.save` file (tensors, numbers, strings and lists only, loaded
with weights_only=True). It carries a fingerprint, the hash of everything the result depends
on; a checkpoint of other params, code or data is set aside, never resumed from.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from meli.errors import MeliError
from meli.files import write_json

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
FINISHED_FILE = "finished.json"


def fingerprint(settings: Any, files: Iterable[Path]) -> str:
    """A hash of `settings` (plain JSON-able values) and of the content of `files`."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in sorted(Path(file) for file in files):
        digest.update(f"\0{path.as_posix()}\0".encode())
        with path.open("rb") as stream:
            digest.update(hashlib.file_digest(stream, "blake2b").digest())
    return digest.hexdigest()


def package_code() -> list[Path]:
    """The files of every `meli` module this process has imported: the code that trains (the
    command line that may have started the stage is not part of it)."""
    files = set()
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if (name == "meli" or name.startswith("meli.")) and path \
                and name not in ("meli.cli", "meli.__main__"):
            files.add(Path(path))
    return sorted(files)


def save(directory: Path, state: dict[str, Any]) -> None:
    """Write the checkpoint so that a kill at any moment leaves the previous one or this one."""
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{CHECKPOINT_FILE}.partial-{os.getpid()}"
    with partial.open("wb") as out:
        torch.save(state, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, directory / CHECKPOINT_FILE)


def load(directory: Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint in `directory` if it was made under the same fingerprint, else None."""
    path = directory / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged or foreign file: train from the start instead
        log.warning("%s: unreadable checkpoint (%s); training from the first epoch", path,
                    str(error).splitlines()[0] if str(error) else type(error).__name__)
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != expected_fingerprint:
        log.info("%s: made under other params, code or data; training from the first epoch",
                 path)
        return None
    return state


def finish(directory: Path, record: dict[str, Any]) -> None:
    """Replace the checkpoint by a small record of the finished run.

    The directory is a DVC output: it must exist when the stage ends, and should not hold a
    copy of the weights (the bundle has them) once nothing is left to resume.
    """
    write_json(directory / FINISHED_FILE, record)
    for leftover in directory.glob(f".{CHECKPOINT_FILE}.partial-*"):
        leftover.unlink(missing_ok=True)
    (directory / CHECKPOINT_FILE).unlink(missing_ok=True)


@contextmanager
def exclusive(directory: Path, what: str) -> Iterator[None]:
    """Hold a lock on the checkpoint `directory` so that two trainings of one model never write
    the same outputs."""
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MeliError(f"{directory}: another training of {what} is running; two "
                            f"trainings must not write the same outputs (wait for it, or "
                            f"stop it)") from None
        yield
    finally:
        os.close(descriptor)
