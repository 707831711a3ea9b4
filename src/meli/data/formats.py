"""Which format a stream is: its compression (gzip, bz2, xz) by its magic bytes, and what the
decompressed content holds (JSON lines, the challenge's CSV, a tar archive) by its first bytes.

Nothing here reads rows: ingest picks a reader from `content_kind`, and `meli predict` undoes
gzip with the same `compression_of` check.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

from meli.errors import MeliError

# The header of the challenge's original train.csv (its columns may come in any order).
CSV_COLUMNS = ("title", "label_quality", "language", "category")
DECOMPRESSORS: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {
    "gzip": lambda raw: gzip.GzipFile(fileobj=raw),
    "bz2": lambda raw: bz2.BZ2File(raw),
    "xz": lambda raw: lzma.LZMAFile(raw),  # noqa: SIM115 (closed with the stream it wraps)
}
# What reading a damaged or truncated compressed stream (or tar archive) raises.
DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, tarfile.TarError)
# The file name suffix of each compression, as ingest names formats ("jsonl.gz").
SUFFIX = {"gzip": "gz", "bz2": "bz2", "xz": "xz"}
# Bytes enough for `compression_of`.
MAGIC_BYTES = 6


def compression_of(magic: bytes) -> str | None:
    """"gzip", "bz2" or "xz" when `magic` (a stream's first bytes) opens such data, else None."""
    if magic.startswith(b"\x1f\x8b"):
        return "gzip"
    if magic.startswith(b"BZh"):
        return "bz2"
    if magic.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return None


def head(path: Path, compression: str | None, size: int = 512) -> bytes:
    """The first `size` bytes of the file's content, decompressed."""
    with path.open("rb") as raw:
        stream = DECOMPRESSORS[compression](raw) if compression else raw
        return stream.read(size)


def content_kind(head: bytes, name: str, compression: str | None) -> str:
    """"tar", "jsonl" or "csv", told by the content's first bytes (`head`); an empty or
    unrecognized file stops with one line naming it."""
    if not head.strip():
        suffix = " after decompression" if compression else ""
        raise MeliError(f"{name}: file is empty{suffix}")
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"{") or text.startswith(b"["):
        return "jsonl"
    first_line = text.split(b"\n", 1)[0].decode("utf-8", errors="replace").lower()
    if "title" in first_line and "," in first_line:
        return "csv"
    raise MeliError(f"{name}: unrecognized format: expected JSON lines, a CSV with a "
                    f"'{','.join(CSV_COLUMNS)}' header or a tar archive of .jsonl.gz files")
