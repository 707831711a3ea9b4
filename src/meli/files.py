"""Small file helpers shared by the stages: outputs appear complete or not at all, and one clear
line when an output cannot be written (a full disk, a read-only or missing place).

Outputs are built under temporary names and renamed into place only once complete
(`atomic_directory`), so a stage that fails to write leaves the previous outputs.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from meli.errors import MeliError


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary sibling name; move it into place only once complete.

    A stage killed midway leaves the previous output (or none) rather than a half-written one
    that a later stage would accept. Leftovers of a killed run are removed on the next run.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(f".{path.name}.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    partial = path.parent / f".{path.name}.partial-{os.getpid()}"
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    previous = path.parent / f".{path.name}.partial-{os.getpid()}-old"
    if path.exists():
        os.replace(path, previous)
    os.replace(partial, path)
    shutil.rmtree(previous, ignore_errors=True)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file written under a temporary sibling name and renamed into place on success."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with partial.open("wb") as out:
            yield out
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)


def write_json(path: str | Path, value: Any) -> None:
    """Write pretty JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# What a user fixes outside the program: space, permissions, a path that is not a directory.
_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
           errno.EISDIR, errno.EFBIG}
# Arrow's own I/O errors carry the errno in their text only.
_PHRASES = ("No space left on device", "Disk quota exceeded", "Permission denied",
            "Read-only file system", "Not a directory", "File too large")


@contextmanager
def writing(*outputs: str | Path) -> Iterator[None]:
    """Turn an OSError of that kind, inside the block, into a MeliError naming the file (or
    the outputs being written when the error does not say which file)."""
    try:
        yield
    except OSError as error:
        text = str(error)
        phrase = next((p for p in _PHRASES if p in text), None)
        # mkdir of a directory where a file stands says "File exists".
        in_the_way = (error.errno == errno.EEXIST and error.filename is not None
                      and not Path(error.filename).is_dir())
        if error.errno not in _ERRNOS and phrase is None and not in_the_way:
            raise
        reason = ("a file stands where a directory is needed" if in_the_way
                  else error.strerror or phrase or text)
        written = ", ".join(str(output) for output in outputs)
        if error.filename is not None and not _is_output(error.filename, outputs):
            raise MeliError(f"{error.filename}: cannot read: {reason}") from None
        where = error.filename or written
        raise MeliError(f"{where}: cannot write: {reason} (writing {written})") from None


def _is_output(filename: str, outputs: tuple[str | Path, ...]) -> bool:
    """Whether `filename` is one of the outputs, inside one, a temporary sibling of one
    (".raw.partial-123"), or a directory on the way to one."""
    path = Path(filename).absolute()
    for output in outputs:
        output = Path(output).absolute()
        if path == output or output in path.parents or path in output.parents:
            return True
        if path.parent == output.parent and path.name.startswith(f".{output.name}"):
            return True
        if output.parent in path.parents and path.relative_to(output.parent).parts[0].startswith(
                f".{output.name}"):
            return True
    return False
