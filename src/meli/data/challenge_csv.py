"""Ingest's reader of the challenge's original CSV (`train.csv`, header
`title,label_quality,language,category`): a block of lines at a time, the plainly quoted lines
parsed by Arrow, the others (a quoted line break, a stray quote, too long a field) by Python's
csv module, and the rows merged back in line order (`meli.data.merge`).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from meli.data import merge
from meli.data.blocks import LineBlock, read_blocks
from meli.data.formats import CSV_COLUMNS
from meli.data.sink import TableSink
from meli.errors import MeliError

# Python's csv module refuses fields longer than this: such lines keep its error.
_CSV_FIELD_LIMIT = csv.field_size_limit()


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

    def decoded(self, name: str, sink: TableSink) -> Iterator[str]:
        """Lines as text for csv.reader; a line that is not UTF-8 is rejected instead."""
        while (raw := self.next_line()) is not None:
            text = merge.decode_line(raw, self.number, f"{name}:{self.number}", sink)
            if text is not None:
                yield text


def read_csv(stream: IO[bytes], name: str, sink: TableSink) -> None:
    """Every row of the CSV `stream` into `sink`; a missing header column or a CSV that Python's
    csv module cannot read stops the stage with one line naming the file (and line)."""
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


def _csv_block(block: LineBlock, start: int, name: str, sink: TableSink, lines: _LineCursor,
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
    plain &= merge.VECTORIZED
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

    merge.merge_block(sink, count, plain, parsed, slow, flagged, None, None, consumed, start)
    if lines.block is block:
        lines.index = count
