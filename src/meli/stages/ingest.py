"""ingest: read `data.source` into one canonical table, `data/raw/titles.parquet`.

Run by dvc.yaml as `python -m meli.stages.ingest`; reads the `data` section of params.yaml.

Sources, told apart by their content rather than their name:
- `sample`: the synthetic set of `meli.data.sample`, generated offline;
- JSON lines, plain or gzip/bz2-compressed (the course's `spanish.train.jsonl.gz` and friends);
- the course tarball `meli-challenge-2019.tar.bz2` (its `<language>.<split>.jsonl.gz` members);
- the challenge's original `train.csv(.gz)` (header `title,label_quality,language,category`);
- a directory holding any of those, or an http(s) URL (or another fsspec URL such as s3://).

Compressed sources (gzip, bz2, xz, the tarball) are decompressed as a stream, in a thread, never
unpacked to disk. Lines go through in blocks of a few MB (`meli.data.blocks`): the lines whose meaning
is plain are parsed by Arrow's JSON or CSV reader, all the others by the row-by-row reader, and
the rows are put back in line order, so the output is what the row-by-row reader alone would
write (`VECTORIZED = False` makes it so; the tests compare both). Memory holds a few blocks and
one row group of the output, whatever the size of the source. A row that cannot be used
(malformed JSON, no title, no category, bytes that are not UTF-8, an absurdly long title) is
skipped and written with its line number and reason to `rejected.jsonl`; a problem with the
source as a whole (missing, empty, truncated, unreadable, unreachable) stops the stage with one
clear line.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import json
import logging
import lzma
import queue
import re
import shutil
import sys
import tarfile
import tempfile
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from meli.data import sample
from meli.data.blocks import LineBlock, blank, map_distinct, read_blocks
from meli.errors import MeliError, run, stage_parser
from meli.files import atomic_directory, write_json, writing
from meli.layout import RAW_DIR, RAW_TABLE_FILE, REJECTED_FILE, SOURCE_FILE, SPLITS
from meli.params import DataParams, load_params

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("title", pa.string()),
        ("category", pa.string()),
        ("language", pa.string()),
        ("label_quality", pa.string()),
        # train / validation / test when the source has its own split, else null.
        ("split", pa.string()),
    ]
)
CSV_COLUMNS = ("title", "label_quality", "language", "category")
BATCH_ROWS = 100_000
DOWNLOAD_TIMEOUT_S = 30
# Members of the course tarball that hold titles, e.g. "meli/spanish.train.jsonl.gz".
_COURSE_MEMBER = re.compile(r"(?:^|/)(spanish|portuguese)\.(train|validation|test)\.jsonl(\.gz)?$")
_DECOMPRESSORS: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {
    "gzip": lambda raw: gzip.GzipFile(fileobj=raw),
    "bz2": lambda raw: bz2.BZ2File(raw),
    "xz": lambda raw: lzma.LZMAFile(raw),  # noqa: SIM115 (closed with the stream it wraps)
}
_DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, tarfile.TarError)


@dataclass
class IngestResult:
    rows_read: int
    rows_written: int
    rows_rejected: int
    format: str


def ingest(params: DataParams, output_dir: str | Path) -> IngestResult:
    """Read the source named by `params.source` into `output_dir` (written atomically)."""
    with atomic_directory(output_dir) as partial:
        table = _TableSink(partial, params.max_title_chars)
        try:
            if params.source == "sample":
                info: dict[str, Any] = {"source": "sample", "format": "synthetic sample",
                                        "seed": params.sample_seed}
                generated = sample.generate(params.sample_rows, params.sample_seed)
                table.add_table(generated)
            else:
                with _local_copy(params.source, partial) as (path, sha256):
                    formats = [_read_path(file, name, table)
                               for file, name in _files_of(path, params.source)]
                    info = {"source": params.source, "format": ", ".join(sorted(set(formats))),
                            "sha256": sha256, "bytes": _size_of(path)}
        except BaseException:
            table.abort()
            raise
        table.close()
        if table.rows_written == 0:
            detail = f"; first reason: {table.first_reason}" if table.first_reason else ""
            raise MeliError(f"{params.source}: no usable rows "
                            f"({table.rows_read} read, {table.rows_rejected} rejected{detail})")
        info |= {"rows_read": table.rows_read, "rows_written": table.rows_written,
                 "rows_rejected": table.rows_rejected}
        write_json(partial / SOURCE_FILE, info)
    return IngestResult(table.rows_read, table.rows_written, table.rows_rejected, info["format"])


class _TableSink:
    """Writes good rows to Parquet in batches of BATCH_ROWS and bad ones to rejected.jsonl.

    Rows arrive one at a time (`add`) or as whole Arrow tables already judged (`add_rows`), in
    file order; both end up in the same row groups as if every row had come alone.
    """

    def __init__(self, directory: Path, max_title_chars: int):
        self.max_title_chars = max_title_chars
        self.writer = _BackgroundWriter(pq.ParquetWriter(directory / RAW_TABLE_FILE, SCHEMA))
        self.rejected = (directory / REJECTED_FILE).open("w", encoding="utf-8")
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.rows_read = self.rows_written = self.rows_rejected = 0
        self.first_reason: str | None = None

    def add(self, record: Any, where: str, split: str | None = None,
            language: str | None = None, raw: str = "") -> None:
        """Add one parsed record (normally a dict) read at `where` ("file:line")."""
        row = self.judge(record, where, split, language, raw)
        if row is not None:
            self.add_rows(_rows_table([row]))

    def judge(self, record: Any, where: str, split: str | None = None,
              language: str | None = None, raw: str = "") -> tuple | None:
        """The canonical row of one parsed record, or None once it is rejected (and counted)."""
        self.rows_read += 1
        if not isinstance(record, dict):
            return self.reject(where, "not_an_object", "not a JSON object", raw)
        title = record.get("title")
        category = record.get("category")
        if not isinstance(title, str) or not title.strip():
            return self.reject(where, "empty_title", "empty or missing title", raw)
        if not isinstance(category, str) or not category.strip():
            return self.reject(where, "missing_category", "empty or missing category", raw)
        if len(title) > self.max_title_chars:
            return self.reject(where, "title_too_long",
                               f"title has {len(title)} characters, more than "
                               f"data.max_title_chars={self.max_title_chars}", raw)
        row_split = split or _label(record.get("split"))
        return (title, category.strip(),
                _label(record.get("language")) or language or "unknown",
                _label(record.get("label_quality")) or "unknown",
                row_split if row_split in SPLITS else None)

    def add_rows(self, table: pa.Table) -> None:
        """Add valid rows in the canonical SCHEMA, in file order (counted as read)."""
        if len(table):
            self.pending.append(table)
            self.pending_rows += len(table)
            if self.pending_rows >= BATCH_ROWS:
                self.flush(whole_batches_only=True)

    def add_table(self, table: pa.Table) -> None:
        """Add rows that are known to be valid (the generated sample)."""
        self.flush()
        table = table.append_column("split", pa.nulls(len(table), pa.string()))
        self.writer.write_table(table.select(SCHEMA.names).cast(SCHEMA))
        self.rows_read += len(table)
        self.rows_written += len(table)

    def reject(self, where: str, kind: str, reason: str, raw: str) -> None:
        """Write a skipped row with a short `kind` (counted in metrics) and a readable reason."""
        self.rows_rejected += 1
        self.first_reason = self.first_reason or f"{where}: {reason}"
        entry = {"where": where, "kind": kind, "reason": reason, "row": raw[:500]}
        self.rejected.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def flush(self, whole_batches_only: bool = False) -> None:
        """Write pending rows in row groups of BATCH_ROWS (the last one may be shorter)."""
        if not self.pending:
            return
        table = pa.concat_tables(self.pending) if len(self.pending) > 1 else self.pending[0]
        start = 0
        while len(table) - start >= BATCH_ROWS or (not whole_batches_only and start < len(table)):
            # One contiguous chunk per column: the same file bytes however the rows arrived.
            part = table.slice(start, BATCH_ROWS).combine_chunks()
            self.writer.write_table(part)
            self.rows_written += len(part)
            start += len(part)
        rest = table.slice(start)
        self.pending = [rest] if len(rest) else []
        self.pending_rows = len(rest)

    def close(self) -> None:
        self.flush()
        self.writer.close()
        self.rejected.close()

    def abort(self) -> None:
        """Stop writing after a failure (the partial output is then removed)."""
        self.writer.abort()
        self.rejected.close()


class _BackgroundWriter:
    """Encodes and writes Parquet row groups in a thread (Arrow releases the GIL meanwhile), so
    that reading the next block overlaps with writing this one; at most two wait."""

    def __init__(self, writer: pq.ParquetWriter):
        self.writer = writer
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="meli-write", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (table := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write_table(table)
                except BaseException as error:  # raised in the stage's thread by _check
                    self.error = error

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def write_table(self, table: pa.Table) -> None:
        self._check()
        self.queue.put(table)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._check()
        self.writer.close()

    def abort(self) -> None:
        self.error = self.error or RuntimeError("aborted")  # the thread skips what is queued
        self.queue.put(None)
        self.thread.join()
        with suppress(OSError):
            self.writer.close()


def _rows_table(rows: list[tuple]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in SCHEMA.names]
    return pa.table([pa.array(list(column), pa.string()) for column in columns], schema=SCHEMA)


def _label(value: Any) -> str | None:
    """A lower-case label such as "spanish", or None when absent or blank."""
    if not isinstance(value, str):
        return None
    return value.strip().lower() or None


# --- where the bytes come from ------------------------------------------------------------------

@contextmanager
def _local_copy(source: str, scratch: Path) -> Iterator[tuple[Path, str]]:
    """Yield a local path for `source` (downloading a URL into `scratch`) and its SHA-256."""
    if "://" not in source:
        path = Path(source).expanduser()
        if not path.exists():
            raise MeliError(f"{source}: no such file or directory")
        yield path, _sha256_of(path)
        return
    download = Path(tempfile.mkdtemp(dir=scratch, prefix="download-"))
    name = Path(source.split("?")[0].rstrip("/")).name or "download"
    target = download / name
    digest = hashlib.sha256()
    try:
        with _open_url(source) as response, target.open("wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except MeliError:
        raise
    except (OSError, ValueError) as error:
        raise MeliError(f"{source}: download failed: {_reason(error)}") from None
    try:
        yield target, digest.hexdigest()
    finally:
        shutil.rmtree(download, ignore_errors=True)


def _open_url(url: str) -> IO[bytes]:
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        try:
            return urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)
        except urllib.error.HTTPError as error:
            raise MeliError(f"{url}: server answered HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError) as error:
            raise MeliError(f"{url}: no answer from the server: {_reason(error)}") from None
    try:
        import fsspec

        return fsspec.open(url, "rb").open()
    except ImportError as error:
        raise MeliError(f"{url}: reading {scheme}:// needs an extra package ({error.name}); "
                        f"see the README's install section") from None
    except (OSError, ValueError) as error:
        raise MeliError(f"{url}: cannot open: {_reason(error)}") from None


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None) or error
    return str(reason).strip() or type(error).__name__


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    for file, name in _files_of(path, str(path)):
        if path.is_dir():
            digest.update(name.encode() + b"\0")
        with file.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _size_of(path: Path) -> int:
    return sum(file.stat().st_size for file, _ in _files_of(path, str(path)))


def _files_of(path: Path, display: str) -> list[tuple[Path, str]]:
    """The files to read: the path itself, or every visible file under a directory, sorted."""
    if not path.is_dir():
        return [(path, display)]
    files = sorted(p for p in path.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.parts[-1:]))
    if not files:
        raise MeliError(f"{display}: directory holds no files")
    return [(file, f"{display.rstrip('/')}/{file.relative_to(path)}") for file in files]


# --- formats ------------------------------------------------------------------------------------

def _read_path(path: Path, name: str, sink: _TableSink) -> str:
    """Read one file into `sink`, whatever its format; return a short name of the format."""
    if path.stat().st_size == 0:
        raise MeliError(f"{name}: file is empty")
    with path.open("rb") as raw:
        magic = raw.read(6)
    compression = _compression_of(magic)
    try:
        kind = _content_kind(_head(path, compression), name, compression)
        with path.open("rb") as raw:
            stream = _DECOMPRESSORS[compression](raw) if compression else raw
            if kind == "tar":
                _read_tar(stream, name, sink)
            elif kind == "jsonl":
                _read_json_lines(stream, name, sink)
            else:
                _read_csv(stream, name, sink)
    except _DECOMPRESSION_ERRORS as error:
        what = f"{compression} data" if compression else "file"
        raise MeliError(f"{name}: unreadable or truncated {what} "
                        f"(after {sink.rows_read} rows): {_reason(error)}") from None
    return f"{kind}.{_SUFFIX[compression]}" if compression else kind


_SUFFIX = {"gzip": "gz", "bz2": "bz2", "xz": "xz"}


def _compression_of(magic: bytes) -> str | None:
    if magic.startswith(b"\x1f\x8b"):
        return "gzip"
    if magic.startswith(b"BZh"):
        return "bz2"
    if magic.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return None


def _head(path: Path, compression: str | None, size: int = 512) -> bytes:
    with path.open("rb") as raw:
        stream = _DECOMPRESSORS[compression](raw) if compression else raw
        return stream.read(size)


def _content_kind(head: bytes, name: str, compression: str | None) -> str:
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


# --- JSON lines and CSV, a block of lines at a time --------------------------------------------
#
# Each block's lines are first screened, all at once, for those whose meaning no parser can
# disagree on: a JSON line that is valid UTF-8, opens with "{" and closes with "}"; a CSV line
# that is valid UTF-8 and has exactly the header's number of fields, quoted only in the plain
# way ("a, b" and "a ""b"""). Arrow parses those lines in one call; every other line, and every
# parsed row that is not plainly valid (empty title, missing category, too long, a label that
# needs Python's case rules), goes through the row-by-row reader below, which decides and names
# it exactly as before. Both kinds of rows are put back in line order before they are written.

# False sends every line through the row-by-row reader (the tests compare both ways).
VECTORIZED = True
# Columns of a JSON record that ingest reads; other fields are ignored.
_JSON_SCHEMA = pa.schema([(name, pa.string()) for name in
                          ("title", "category", "language", "label_quality", "split")])
# Retries of a block whose JSON Arrow refused (each sets the line it names aside) before the
# rest of the block goes through the row-by-row reader.
_MAX_JSON_RETRIES = 16
# Python's csv module refuses fields longer than this: such lines keep its error.
_CSV_FIELD_LIMIT = csv.field_size_limit()
_ROW_IN_ERROR = re.compile(r"in row (\d+)")


def _decode_line(raw: bytes, number: int, where: str, sink: _TableSink) -> str | None:
    """A line as text; a line that is not UTF-8 is rejected (and counted) instead."""
    try:
        # utf-8-sig: a byte-order mark opening the file is not part of the first row.
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as error:
        sink.rows_read += 1
        sink.reject(where, "not_utf8",
                    f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at column "
                    f"{error.start + 1})", raw.decode("utf-8", errors="replace"))
        return None


def _json_line(raw: bytes, number: int, name: str, sink: _TableSink, split: str | None,
               language: str | None) -> tuple | None:
    """The row-by-row reader of one JSON line: its canonical row, or None (rejected or blank)."""
    where = f"{name}:{number}"
    line = _decode_line(raw, number, where, sink)
    if line is None or not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        sink.rows_read += 1
        sink.reject(where, "malformed_json",
                    f"malformed JSON: {error.msg} at column {error.colno}", line)
        return None
    return sink.judge(record, where, split=split, language=language, raw=line)


def _read_json_lines(stream: IO[bytes], name: str, sink: _TableSink,
                     split: str | None = None, language: str | None = None) -> None:
    for block in read_blocks(stream):
        _json_block(block, name, sink, split, language)


def _json_block(block: LineBlock, name: str, sink: _TableSink, split: str | None,
                language: str | None) -> None:
    count = len(block)
    ends = block.content_ends()
    nonempty = ends > block.starts
    plain = nonempty.copy()
    plain[nonempty] = ((block.bytes[block.starts[nonempty]] == ord("{"))
                       & (block.bytes[ends[nonempty] - 1] == ord("}")))
    plain[block.invalid_utf8()] = False
    plain &= VECTORIZED
    parsed = None
    for _ in range(_MAX_JSON_RETRIES):
        if not plain.any():
            break
        text = block.join(plain)
        try:
            parsed = pa_json.read_json(
                pa.BufferReader(text),
                read_options=pa_json.ReadOptions(use_threads=False, block_size=len(text) + 1),
                parse_options=pa_json.ParseOptions(explicit_schema=_JSON_SCHEMA,
                                                   unexpected_field_behavior="ignore",
                                                   newlines_in_values=False))
        except (pa.ArrowInvalid, OSError) as error:
            # Arrow names the row (of the lines given) where it stopped, or the one after:
            # both go to the row-by-row reader, which names the problem as before.
            found = _ROW_IN_ERROR.search(str(error))
            given = np.flatnonzero(plain)
            row = int(found.group(1)) if found else -1
            if not 0 <= row <= len(given):
                plain[:] = False
                break
            plain[given[max(row - 1, 0):row + 1]] = False
            continue
        if parsed.num_rows != int(plain.sum()):  # two objects on a line: no telling which
            plain[:] = False
            parsed = None
        break
    else:
        plain[:] = False
        parsed = None
    if parsed is None or not plain.any():
        plain[:] = False
        parsed = _JSON_SCHEMA.empty_table()

    def slow(index: int) -> tuple | None:
        return _json_line(block.line(index), block.first_number + index, name, sink, split,
                          language)

    def flagged(index: int, row: int) -> tuple | None:
        where = f"{name}:{block.first_number + index}"
        return sink.judge(parsed.slice(row, 1).to_pylist()[0], where, split=split,
                          language=language, raw=block.line(index).decode("utf-8"))

    _merge_block(sink, count, plain, parsed, slow, flagged, split, language)


def _merge_block(sink: _TableSink, count: int, plain: np.ndarray, parsed: pa.Table,
                 slow: Callable[[int], tuple | None],
                 flagged: Callable[[int, int], tuple | None],
                 split: str | None, language: str | None,
                 consumed: Callable[[int], int] | None = None, first: int = 0) -> None:
    """Judge a block's rows and hand them to `sink` in line order.

    `parsed` holds the rows Arrow read from the `plain` lines; the rows among them that are not
    plainly valid go to `flagged(line, row of parsed)`, and the other lines to `slow(line)`, both of
    which judge like the row-by-row reader. `consumed(line)`, for CSV, tells how far a record
    read by `slow` reached (a quoted field may span lines), so that those lines are not read
    again. Lines before `first` were read already.
    """
    lines = np.flatnonzero(plain)
    title = parsed.column("title")
    bad = (blank(title) | blank(parsed.column("category"))
           | ~pc.fill_null(pc.less_equal(pc.utf8_length(title), sink.max_title_chars),
                           False).to_numpy(zero_copy_only=False))
    good = ~bad
    todo = np.union1d(np.flatnonzero(~plain[first:]) + first, lines[bad])
    row_of_line = np.full(count, -1, dtype=np.int64)
    row_of_line[lines] = np.arange(len(lines))
    python_rows: list[tuple] = []
    python_keys: list[int] = []
    skip_to = 0
    for index in todo.tolist():
        if index < skip_to:
            continue
        key = index
        if plain[index]:
            row = flagged(index, int(row_of_line[index]))
        else:
            row = slow(index)
            if consumed is not None:
                # Lines read into this record (a quoted field may hold line breaks) are done.
                skip_to = consumed(index)
                key = skip_to - 1
                inside = row_of_line[index + 1:min(skip_to, count)]
                good[inside[inside >= 0]] = False
        if row is not None:
            python_rows.append(row)
            python_keys.append(key)
    fast = _canonical(parsed.filter(pa.array(good)), split, language)
    sink.rows_read += len(fast)
    if python_rows:
        keys = np.concatenate([lines[good], np.array(python_keys, dtype=np.int64)])
        both = pa.concat_tables([fast, _rows_table(python_rows)])
        fast = both.take(pa.array(np.argsort(keys, kind="stable")))
    sink.add_rows(fast)


def _canonical(parsed: pa.Table, split: str | None, language: str | None) -> pa.Table:
    """Rows Arrow parsed, as ingest's table: category trimmed, labels lower-cased or "unknown",
    split kept when it is one of train/validation/test (exactly what `_TableSink.judge` does,
    applied once per distinct value)."""
    rows = len(parsed)

    def column(name: str) -> pa.Array:
        if name in parsed.column_names:
            return parsed.column(name).combine_chunks()
        return pa.nulls(rows, pa.string())

    if split:
        splits = pa.array([split] * rows, pa.string()) if rows else pa.array([], pa.string())
    else:
        splits = map_distinct(column("split"),
                              lambda value: value if (value := _label(value)) in SPLITS else None)
    return pa.table([
        column("title"),
        map_distinct(column("category"), lambda value: value.strip()),
        map_distinct(column("language"), lambda value: _label(value) or language or "unknown"),
        map_distinct(column("label_quality"), lambda value: _label(value) or "unknown"),
        splits,
    ], schema=SCHEMA)


class _LineCursor:
    """The lines of a stream, block after block, read one at a time by Python's csv reader."""

    def __init__(self, stream: IO[bytes]):
        self.blocks = read_blocks(stream)
        self.block: LineBlock | None = next(self.blocks, None)
        self.index = 0
        self.number = 0  # of the last line handed out

    def next_line(self) -> bytes | None:
        while self.block is not None and self.index >= len(self.block):
            self.block = next(self.blocks, None)
            self.index = 0
        if self.block is None:
            return None
        line = self.block.line(self.index)
        self.number = self.block.first_number + self.index
        self.index += 1
        return line

    def decoded(self, name: str, sink: _TableSink) -> Iterator[str]:
        """Lines as text for csv.reader; a line that is not UTF-8 is rejected instead."""
        while (raw := self.next_line()) is not None:
            text = _decode_line(raw, self.number, f"{name}:{self.number}", sink)
            if text is not None:
                yield text


def _read_csv(stream: IO[bytes], name: str, sink: _TableSink) -> None:
    lines = _LineCursor(stream)
    rows = csv.reader(lines.decoded(name, sink))
    try:
        header = next(rows, None)
    except csv.Error as error:
        raise MeliError(f"{name}:{lines.number}: malformed CSV: {error}") from None
    if header is None:
        raise MeliError(f"{name}: file is empty")
    header = [column.strip().lstrip("\ufeff").lower() for column in header]
    missing = [column for column in CSV_COLUMNS if column not in header]
    if missing:
        raise MeliError(f"{name}: line 1: CSV header lacks column(s) {', '.join(missing)} "
                        f"(expected {','.join(CSV_COLUMNS)})")
    width = len(header)
    # A field: quoted in the plain way, or unquoted without quotes, commas or line breaks.
    field = r'(?:"(?:[^"\r\n\x00]|"")*"|[^",\r\n\x00]*)'
    plain_line = f"^{field}(?:,{field}){{{width - 1}}}\\r?\\n$"
    # The column each key is read from: the last of that name, as dict(zip(header, ...)) does.
    wanted = {key: max(i for i, column in enumerate(header) if column == key)
              for key in (*CSV_COLUMNS, "split") if key in header}

    def record_row(fields: list[str], where: str) -> tuple | None:
        if not fields or fields == [""]:
            return None
        if len(fields) != width:
            sink.rows_read += 1
            sink.reject(where, "wrong_field_count",
                        f"expected {width} CSV fields, found {len(fields)}", ",".join(fields))
            return None
        return sink.judge(dict(zip(header, fields, strict=True)), where, raw=",".join(fields))

    try:
        while lines.block is not None:
            block, start = lines.block, lines.index
            if start >= len(block):
                lines.next_line()  # moves to the next block, or ends
                if lines.block is not None:
                    lines.index = 0
                continue
            _csv_block(block, start, name, sink, lines, rows, plain_line, width,
                       wanted, record_row)
    except csv.Error as error:
        raise MeliError(f"{name}:{lines.number}: malformed CSV: {error}") from None


def _csv_block(block: LineBlock, start: int, name: str, sink: _TableSink, lines: _LineCursor,
               rows: Iterator[list[str]], pattern: str, width: int, wanted: dict[str, int],
               record_row: Callable[[list[str], str], tuple | None]) -> None:
    count = len(block)
    plain = np.zeros(count, dtype=bool)
    matches = pc.match_substring_regex(block.lines_array(start), pattern)
    plain[start:] = matches.to_numpy(zero_copy_only=False)
    plain[block.invalid_utf8()] = False
    plain &= (block.stops - block.starts) < _CSV_FIELD_LIMIT
    # A byte-order mark opening a line would be dropped by Arrow, kept by Python.
    plain[block.bytes[np.minimum(block.starts, len(block.data) - 1)] == 0xEF] = False
    plain &= VECTORIZED
    names = [f"f{i}" for i in range(width)]
    parsed = None
    if plain.any():
        text = block.join(plain)
        parsed = pa_csv.read_csv(
            pa.BufferReader(text),
            read_options=pa_csv.ReadOptions(column_names=names, use_threads=False,
                                            block_size=len(text) + 1),
            parse_options=pa_csv.ParseOptions(quote_char='"', double_quote=True,
                                              escape_char=False, newlines_in_values=False,
                                              ignore_empty_lines=False),
            convert_options=pa_csv.ConvertOptions(
                column_types={column: pa.string() for column in names}, null_values=[],
                strings_can_be_null=False, quoted_strings_can_be_null=False))
        if parsed.num_rows != int(plain.sum()):
            plain[:] = False
            parsed = None
    if parsed is None:
        parsed = pa.table({column: pa.array([], pa.string()) for column in names})
    fields = parsed
    parsed = pa.table({key: fields.column(index) for key, index in wanted.items()})
    if "split" not in parsed.column_names:
        parsed = parsed.append_column("split", pa.nulls(len(parsed), pa.string()))

    def slow(index: int) -> tuple | None:
        lines.block, lines.index = block, index
        record = next(rows, None)
        if record is None:
            return None
        return record_row(record, f"{name}:{lines.number}")

    def consumed(index: int) -> int:
        """Lines of this block that the last record read (a record may end in the next one)."""
        if lines.block is not block:
            return count + 1
        return lines.index

    def flagged(index: int, row: int) -> tuple | None:
        values = fields.slice(row, 1).to_pylist()[0]
        return record_row([values[column] for column in names],
                          f"{name}:{block.first_number + index}")

    _merge_block(sink, count, plain, parsed, slow, flagged, None, None, consumed, start)
    if lines.block is block:
        lines.index = count


def _read_tar(stream: IO[bytes], name: str, sink: _TableSink) -> None:
    found = []
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            match = _COURSE_MEMBER.search(member.name)
            if not member.isfile() or not match:
                log.info("%s: skipping member %s", name, member.name)
                continue
            language, split, compressed = match.groups()
            found.append(member.name)
            content = archive.extractfile(member)
            assert content is not None
            lines = gzip.GzipFile(fileobj=content) if compressed else content
            _read_json_lines(io.BufferedReader(lines) if compressed else lines,
                             f"{name}:{member.name}", sink, split=split, language=language)
    if not found:
        raise MeliError(f"{name}: tar archive holds no <language>.<split>.jsonl(.gz) members "
                        f"(expected e.g. spanish.train.jsonl.gz)")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("ingest", __doc__)
    args = parser.parse_args(argv)

    def stage() -> None:
        params = load_params(args.params)
        with writing(RAW_DIR):
            result = ingest(params.data, RAW_DIR)
        log.info("ingest: %d rows read from %s (%s), %d written to %s, %d rejected",
                 result.rows_read, params.data.source, result.format, result.rows_written,
                 RAW_DIR, result.rows_rejected)

    return run("ingest", stage)


if __name__ == "__main__":
    sys.exit(main())
