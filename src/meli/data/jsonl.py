"""Ingest's reader of JSON lines (one object per line, plain or decompressed): a block of lines
at a time, the plain ones parsed by Arrow and the others row by row (`meli.data.merge`).
"""

from __future__ import annotations

import json
import re
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

from meli.data import merge
from meli.data.blocks import LineBlock, read_blocks
from meli.data.sink import TableSink

# Columns of a JSON record that ingest reads; other fields are ignored.
_JSON_SCHEMA = pa.schema([(name, pa.string()) for name in
                          ("title", "category", "language", "label_quality", "split")])
# Retries of a block whose JSON Arrow refused (each sets the line it names aside) before the
# rest of the block goes through the row-by-row reader.
_MAX_JSON_RETRIES = 16
_ROW_IN_ERROR = re.compile(r"in row (\d+)")


def read_json_lines(stream: IO[bytes], name: str, sink: TableSink,
                    split: str | None = None, language: str | None = None) -> None:
    """Every line of `stream` (named `name` in rejections) into `sink`; `split` and `language`
    are the defaults a record may lack (a course tarball member's)."""
    for block in read_blocks(stream):
        _json_block(block, name, sink, split, language)


def _json_line(raw: bytes, number: int, name: str, sink: TableSink, split: str | None,
               language: str | None) -> tuple | None:
    """The row-by-row reader of one JSON line: its canonical row, or None (rejected or blank)."""
    where = f"{name}:{number}"
    line = merge.decode_line(raw, number, where, sink)
    if line is None or not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        sink.rows_read += 1
        sink.reject(where, "malformed_json",
                    # Some of json's messages end in "at" themselves ("Invalid control
                    # character at").
                    f"malformed JSON: {error.msg.removesuffix(' at')} at column "
                    f"{error.colno}", line)
        return None
    return sink.judge(record, where, split=split, language=language, raw=line)


def _json_block(block: LineBlock, name: str, sink: TableSink, split: str | None,
                language: str | None) -> None:
    count = len(block)
    ends = block.content_ends()
    nonempty = ends > block.starts
    plain = nonempty.copy()
    plain[nonempty] = ((block.bytes[block.starts[nonempty]] == ord("{"))
                       & (block.bytes[ends[nonempty] - 1] == ord("}")))
    plain[block.invalid_utf8()] = False
    plain &= merge.VECTORIZED
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

    merge.merge_block(sink, count, plain, parsed, slow, flagged, split, language)
