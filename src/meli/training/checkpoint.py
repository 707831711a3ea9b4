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
from meli.files import write_json, writing

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
FINISHED_FILE = "finished.json"


def fingerprint(settings: Any, files: Iterable[Path]) -> str:
    """A hash of `settings` (plain JSON-able values) and of the content of `files`, each under
    its name (`_name`): the same in every clone of the repository, wherever it sits."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name, path in sorted((_name(Path(file)), Path(file)) for file in files):
        digest.update(f"\0{name}\0".encode())
        with path.open("rb") as stream:
            digest.update(hashlib.file_digest(stream, "blake2b").digest())
    return digest.hexdigest()


# The directory holding the `meli` package (src/ of a clone, or site-packages).
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def _name(path: Path) -> str:
    """The package's files by their place in it (meli/training/loop.py), since the clone's own
    path would make a record of the run (finished.json, hence dvc.lock) differ between clones;
    other files as given (the stages give paths relative to the repository)."""
    try:
        return path.resolve().relative_to(_PACKAGE_PARENT).as_posix()
    except ValueError:
        return path.as_posix()


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
    """Write the checkpoint so that a kill at any moment leaves the previous one or this one.

    A write that fails (a full disk) ends in one line naming the file, and its partial file is
    removed: left behind, it would hold on to the space that the failure ran out of.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    partial = directory / f".{CHECKPOINT_FILE}.partial-{os.getpid()}"
    try:
        with writing(path):
            try:
                with partial.open("wb") as out:
                    torch.save(state, out)
                    out.flush()
                    os.fsync(out.fileno())
            except RuntimeError as error:
                # torch.save reports a failed write as its own error, raised while handling the
                # OSError that says what failed: that one is for `writing` to report.
                cause = _os_error(error)
                if cause is None:
                    raise
                raise cause from None
            os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _os_error(error: BaseException) -> OSError | None:
    """The OSError among the exceptions that `error` was raised while handling, if any."""
    seen = error.__context__
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__context__
    return seen


def load(directory: Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint in `directory` if it was made under the same fingerprint, else None."""
    path = directory / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged or foreign file: train from the start instead
        # PyTorch's own message would suggest loading it with weights_only=False, which runs
        # whatever code the file holds: not advice to pass on for a file that failed to load.
        log.warning("%s: unreadable checkpoint, set aside; training from the first epoch", path)
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
