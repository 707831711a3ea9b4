"""Reaching a source: a local file or directory as it is, a URL downloaded into a scratch
directory (http(s) with urllib, other schemes such as s3:// through fsspec), the files a
directory holds, and the SHA-256 and size of what was read.

A source that cannot be reached (missing, an empty directory, a server error, no answer)
stops with one line naming it.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from meli.errors import MeliError

DOWNLOAD_TIMEOUT_S = 30


@contextmanager
def local_copy(source: str, scratch: Path) -> Iterator[tuple[Path, str]]:
    """Yield a local path for `source` (downloading a URL into `scratch`) and its SHA-256."""
    if "://" not in source:
        path = Path(source).expanduser()
        if not path.exists():
            raise MeliError(f"{source}: no such file or directory")
        yield path, sha256_of(path)
        return
    download = Path(tempfile.mkdtemp(dir=scratch, prefix="download-"))
    name = Path(source.split("?")[0].rstrip("/")).name or "download"
    target = download / name
    digest = hashlib.sha256()
    try:
        with open_url(source) as response, target.open("wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except MeliError:
        raise
    except (OSError, ValueError) as error:
        raise MeliError(f"{source}: download failed: {reason(error)}") from None
    try:
        yield target, digest.hexdigest()
    finally:
        shutil.rmtree(download, ignore_errors=True)


def open_url(url: str) -> IO[bytes]:
    """A binary stream of `url`; a failure to open it stops with one line naming it."""
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        try:
            return urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)
        except urllib.error.HTTPError as error:
            raise MeliError(f"{url}: server answered HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError) as error:
            raise MeliError(f"{url}: no answer from the server: {reason(error)}") from None
    try:
        import fsspec

        return fsspec.open(url, "rb").open()
    except ImportError as error:
        raise MeliError(f"{url}: reading {scheme}:// needs an extra package ({error.name}); "
                        f"see the README's install section") from None
    except (OSError, ValueError) as error:
        raise MeliError(f"{url}: cannot open: {reason(error)}") from None


def reason(error: BaseException) -> str:
    """An error's reason in a few words (a URL error's own reason, else its message)."""
    found = getattr(error, "reason", None) or error
    return str(found).strip() or type(error).__name__


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, or of a directory's files (each preceded by its relative name)."""
    digest = hashlib.sha256()
    for file, name in files_of(path, str(path)):
        if path.is_dir():
            digest.update(name.encode() + b"\0")
        with file.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    """Bytes of a file, or of all the files a directory holds."""
    return sum(file.stat().st_size for file, _ in files_of(path, str(path)))


def files_of(path: Path, display: str) -> list[tuple[Path, str]]:
    """The files to read: the path itself, or every visible file under a directory, sorted."""
    if not path.is_dir():
        return [(path, display)]
    files = sorted(p for p in path.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.parts[-1:]))
    if not files:
        raise MeliError(f"{display}: directory holds no files")
    return [(file, f"{display.rstrip('/')}/{file.relative_to(path)}") for file in files]
