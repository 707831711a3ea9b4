"""ingest: read `data.source` into one canonical table, `data/raw/titles.parquet`.

Run by dvc.yaml as `python -m meli.stages.ingest`; reads the `data` section of params.yaml.

Sources, told apart by their content rather than their name:
- `sample`: the synthetic set of `meli.data.sample`, generated offline;
- JSON lines, plain or gzip/bz2-compressed (the course's `spanish.train.jsonl.gz` and friends);
- the course tarball `meli-challenge-2019.tar.bz2` (its `<language>.<split>.jsonl.gz` members);
- the challenge's original `train.csv(.gz)` (header `title,label_quality,language,category`);
- a directory holding any of those, or an http(s) URL (or another fsspec URL such as s3://).

Compressed sources (gzip, bz2, xz, the tarball) are decompressed as a stream, in a thread, never
unpacked to disk. Lines go through in blocks of a few MB (`meli.data.blocks`): the lines whose
meaning is plain are parsed by Arrow's JSON or CSV reader, all the others by the row-by-row
reader, and the rows are put back in line order, so the output is what the row-by-row reader
alone would write (`meli.data.merge.VECTORIZED = False` makes it so; the tests compare both).
Memory holds a few blocks and one row group of the output, whatever the size of the source. A
row that cannot be used (malformed JSON, no title, no category, bytes that are not UTF-8, an
absurdly long title) is skipped and written with its line number and reason to
`rejected.jsonl`; a problem with the source as a whole (missing, empty, truncated, unreadable,
unreachable) stops the stage with one clear line.

The pieces live in `meli.data`: `sources` (reaching the source), `formats` (telling formats
apart), the readers `jsonl`, `challenge_csv` and `course_tar` (with `merge` and `blocks`), and
`sink` (the Parquet table and rejected.jsonl); this module only ties them together.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meli.data import sample
from meli.data.challenge_csv import read_csv
from meli.data.course_tar import read_tar
from meli.data.formats import (
    DECOMPRESSION_ERRORS,
    DECOMPRESSORS,
    MAGIC_BYTES,
    SUFFIX,
    compression_of,
    content_kind,
    head,
)
from meli.data.jsonl import read_json_lines
from meli.data.sink import TableSink
from meli.data.sources import files_of, local_copy, reason, size_of
from meli.errors import MeliError, run, stage_parser
from meli.files import atomic_directory, write_json, writing
from meli.layout import RAW_DIR, SOURCE_FILE
from meli.params import DataParams, load_params
from meli.progress import Ticker, duration

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    rows_read: int
    rows_written: int
    rows_rejected: int
    format: str


def ingest(params: DataParams, output_dir: str | Path) -> IngestResult:
    """Read the source named by `params.source` into `output_dir` (written atomically)."""
    with atomic_directory(output_dir) as partial:
        table = TableSink(partial, params.max_title_chars)
        try:
            if params.source == "sample":
                info: dict[str, Any] = {"source": "sample", "format": "synthetic sample",
                                        "seed": params.sample_seed}
                generated = sample.generate(params.sample_rows, params.sample_seed)
                table.add_table(generated)
            else:
                with local_copy(params.source, partial) as (path, sha256):
                    formats = [_read_path(file, name, table)
                               for file, name in files_of(path, params.source)]
                    info = {"source": params.source, "format": ", ".join(sorted(set(formats))),
                            "sha256": sha256, "bytes": size_of(path)}
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


def _read_path(path: Path, name: str, sink: TableSink) -> str:
    """Read one file into `sink`, whatever its format; return a short name of the format."""
    if path.stat().st_size == 0:
        raise MeliError(f"{name}: file is empty")
    with path.open("rb") as raw:
        magic = raw.read(MAGIC_BYTES)
    compression = compression_of(magic)
    try:
        kind = content_kind(head(path, compression), name, compression)
        size = path.stat().st_size
        with path.open("rb") as raw, Ticker(lambda elapsed: _reading(name, raw.tell(), size,
                                                                       sink, elapsed)):
            stream = DECOMPRESSORS[compression](raw) if compression else raw
            if kind == "tar":
                read_tar(stream, name, sink)
            elif kind == "jsonl":
                read_json_lines(stream, name, sink)
            else:
                read_csv(stream, name, sink)
    except DECOMPRESSION_ERRORS as error:
        what = f"{compression} data" if compression else "file"
        raise MeliError(f"{name}: unreadable or truncated {what} "
                        f"(after {sink.rows_read} rows): {reason(error)}") from None
    return f"{kind}.{SUFFIX[compression]}" if compression else kind


def _reading(name: str, done: int, size: int, sink: TableSink, elapsed: float) -> str:
    """How far ingest is into a file: its bytes read (compressed ones, as on disk)."""
    share = done / max(size, 1)
    left = elapsed * (1 - share) / share if share else 0
    return (f"ingest: {name}: {share:.0%} of {size / 1e6:,.0f} MB read, {sink.rows_read:,} "
            f"rows so far, {duration(elapsed)}, about {duration(left)} left")


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
