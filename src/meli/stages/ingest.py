"""ingest: read `data.source` into one canonical table, `data/raw/titles.parquet`.

Run by dvc.yaml as `python -m meli.stages.ingest`; reads the `data` section of params.yaml.

Sources, told apart by their content rather than their name:
- `sample`: the synthetic set of `meli.sample`, generated offline;
- JSON lines, plain or gzip/bz2-compressed (the course's `spanish.train.jsonl.gz` and friends);
- the course tarball `meli-challenge-2019.tar.bz2` (its `<language>.<split>.jsonl.gz` members);
- the challenge's original `train.csv(.gz)` (header `title,label_quality,language,category`);
- a directory holding any of those, or an http(s) URL (or another fsspec URL such as s3://).

Rows stream through in batches, so a 20M-row source never sits in memory. A row that cannot be
used (malformed JSON, no title, no category, bytes that are not UTF-8, an absurdly long title) is
skipped and written with its reason to `rejected.jsonl`; a problem with the source as a whole
(missing, empty, truncated, unreadable, unreachable) stops the stage with one clear line.
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
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from meli import sample
from meli.command import run, stage_parser
from meli.errors import MeliError
from meli.files import atomic_directory, write_json
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
    """Validates rows, writes good ones to Parquet in batches and bad ones to rejected.jsonl."""

    def __init__(self, directory: Path, max_title_chars: int):
        self.max_title_chars = max_title_chars
        self.writer = pq.ParquetWriter(directory / RAW_TABLE_FILE, SCHEMA)
        self.rejected = (directory / REJECTED_FILE).open("w", encoding="utf-8")
        self.columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
        self.rows_read = self.rows_written = self.rows_rejected = 0
        self.first_reason: str | None = None

    def add(self, record: Any, where: str, split: str | None = None,
            language: str | None = None, raw: str = "") -> None:
        """Add one parsed record (normally a dict) read at `where` ("file:line")."""
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
        columns = self.columns
        columns["title"].append(title)
        columns["category"].append(category.strip())
        columns["language"].append(_label(record.get("language")) or language or "unknown")
        columns["label_quality"].append(_label(record.get("label_quality")) or "unknown")
        row_split = split or _label(record.get("split"))
        columns["split"].append(row_split if row_split in SPLITS else None)
        if len(columns["title"]) >= BATCH_ROWS:
            self.flush()

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

    def flush(self) -> None:
        if self.columns["title"]:
            batch = pa.RecordBatch.from_pydict(self.columns, schema=SCHEMA)
            self.writer.write_batch(batch)
            self.rows_written += batch.num_rows
            self.columns = {name: [] for name in SCHEMA.names}

    def close(self) -> None:
        self.flush()
        self.writer.close()
        self.rejected.close()


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


def _decoded_lines(stream: IO[bytes], name: str, sink: _TableSink,
                   line_number: list[int]) -> Iterator[str]:
    """Yield each line as text; a line that is not UTF-8 is rejected instead."""
    for number, raw in enumerate(stream, start=1):
        line_number[0] = number
        try:
            # utf-8-sig: a byte-order mark opening the file is not part of the first row.
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            sink.rows_read += 1
            sink.reject(f"{name}:{number}", "not_utf8",
                        f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at column "
                        f"{error.start + 1})", raw.decode("utf-8", errors="replace"))


def _read_json_lines(stream: IO[bytes], name: str, sink: _TableSink,
                     split: str | None = None, language: str | None = None) -> None:
    line_number = [0]
    for line in _decoded_lines(stream, name, sink, line_number):
        if not line.strip():
            continue
        where = f"{name}:{line_number[0]}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            sink.rows_read += 1
            sink.reject(where, "malformed_json",
                        f"malformed JSON: {error.msg} at column {error.colno}", line)
            continue
        sink.add(record, where, split=split, language=language, raw=line)


def _read_csv(stream: IO[bytes], name: str, sink: _TableSink) -> None:
    line_number = [0]
    lines = _decoded_lines(stream, name, sink, line_number)
    rows = csv.reader(lines)
    header = next(rows, None)
    if header is None:
        raise MeliError(f"{name}: file is empty")
    header = [column.strip().lstrip("\ufeff").lower() for column in header]
    missing = [column for column in CSV_COLUMNS if column not in header]
    if missing:
        raise MeliError(f"{name}: line 1: CSV header lacks column(s) {', '.join(missing)} "
                        f"(expected {','.join(CSV_COLUMNS)})")
    width = len(header)
    try:
        for fields in rows:
            if not fields or fields == [""]:
                continue
            where = f"{name}:{line_number[0]}"
            if len(fields) != width:
                sink.rows_read += 1
                sink.reject(where, "wrong_field_count",
                            f"expected {width} CSV fields, found {len(fields)}", ",".join(fields))
                continue
            sink.add(dict(zip(header, fields, strict=True)), where, raw=",".join(fields))
    except csv.Error as error:
        raise MeliError(f"{name}:{line_number[0]}: malformed CSV: {error}") from None


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
        result = ingest(params.data, RAW_DIR)
        log.info("ingest: %d rows read from %s (%s), %d written to %s, %d rejected",
                 result.rows_read, params.data.source, result.format, result.rows_written,
                 RAW_DIR, result.rows_rejected)

    return run("ingest", stage)


if __name__ == "__main__":
    sys.exit(main())
