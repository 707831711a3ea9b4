"""The rows of a block of lines, read two ways and merged back in line order: what the JSON
lines and CSV readers share.

Each block's lines are first screened, all at once, for those whose meaning no parser can
disagree on: a JSON line that is valid UTF-8, opens with "{" and closes with "}"; a CSV line
that is valid UTF-8 and has exactly the header's number of fields, quoted only in the plain
way (such as "a, b" or "a ""b"" c"). Arrow parses those lines in one call; every other line,
and every parsed row that is not plainly valid (empty title, missing category, too long, a
label that needs Python's case rules), goes through the row-by-row reader, which decides and
names it exactly as before. Both kinds of rows are put back in line order before they are
written.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from meli.data.sink import SCHEMA, TableSink, label, rows_table
from meli.layout import SPLITS

# False sends every line through the row-by-row reader (the tests compare both ways); read at
# each block, as `merge.VECTORIZED`.
VECTORIZED = True


def decode_line(raw: bytes, number: int, where: str, sink: TableSink) -> str | None:
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


def merge_block(sink: TableSink, count: int, plain: np.ndarray, parsed: pa.Table,
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
    fast = canonical(parsed.filter(pa.array(good)), split, language)
    sink.rows_read += len(fast)
    if python_rows:
        keys = np.concatenate([lines[good], np.array(python_keys, dtype=np.int64)])
        both = pa.concat_tables([fast, rows_table(python_rows)])
        fast = both.take(pa.array(np.argsort(keys, kind="stable")))
    sink.add_rows(fast)


def canonical(parsed: pa.Table, split: str | None, language: str | None) -> pa.Table:
    """Rows Arrow parsed, as ingest's table: category trimmed, labels lower-cased or "unknown",
    split kept when it is one of train/validation/test (exactly what `TableSink.judge` does,
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
                              lambda value: value if (value := label(value)) in SPLITS else None)
    return pa.table([
        column("title"),
        map_distinct(column("category"), lambda value: value.strip()),
        map_distinct(column("language"), lambda value: label(value) or language or "unknown"),
        map_distinct(column("label_quality"), lambda value: label(value) or "unknown"),
        splits,
    ], schema=SCHEMA)


# Python's str.isspace() characters (str.strip() removes them), spelled out for RE2, whose \s
# is only ASCII: a text matching this holds something other than whitespace.
_NOT_SPACE = (r"[^ \t\n\r\f\v\x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}"
              r"\x{202f}\x{205f}\x{3000}]")


def blank(texts: pa.Array) -> np.ndarray:
    """Per text: null, or nothing left after Python's str.strip()."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    result = np.ones(len(texts), dtype=bool)
    if not len(texts):
        return result
    # Most texts open with a printable ASCII character: those are not blank, no regex needed.
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)[texts.offset:
                                                                  texts.offset + len(texts) + 1]
    data = texts.buffers()[2]
    first = np.zeros(len(texts), dtype=np.uint8)
    nonempty = offsets[1:] > offsets[:-1]
    if data is not None and nonempty.any():
        first[nonempty] = np.frombuffer(data, dtype=np.uint8)[offsets[:-1][nonempty]]
    printable = (first > 0x20) & (first < 0x7F)
    if texts.null_count:
        printable &= texts.is_valid().to_numpy(zero_copy_only=False)
    result[printable] = False
    doubtful = np.flatnonzero(~printable)
    if len(doubtful):
        chosen = texts.take(pa.array(doubtful))
        has_text = pc.fill_null(pc.match_substring_regex(chosen, _NOT_SPACE), False)
        result[doubtful] = ~has_text.to_numpy(zero_copy_only=False)
    return result


def map_distinct(values: pa.Array, function) -> pa.Array:
    """`function` applied in Python to each distinct value (None for null), as a string array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values, null_encoding="encode")
    mapped = pa.array([function(value) for value in encoded.dictionary.to_pylist()], pa.string())
    return pc.take(mapped, encoded.indices)
