"""Where ingest's rows go: the canonical table (`titles.parquet`, written in row groups of
BATCH_ROWS by a background thread) and `rejected.jsonl` (each skipped row with where it was
and why); also the judgement of one record, which decides between the two.
"""

from __future__ import annotations

import json
import queue
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from meli.layout import RAW_TABLE_FILE, REJECTED_FILE, SPLITS

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
BATCH_ROWS = 100_000


class TableSink:
    """Writes good rows to Parquet in batches of BATCH_ROWS and bad ones to rejected.jsonl.

    Rows arrive one at a time (`add`) or as whole Arrow tables already judged (`add_rows`), in
    file order; both end up in the same row groups as if every row had come alone.
    """

    def __init__(self, directory: Path, max_title_chars: int):
        self.max_title_chars = max_title_chars
        self.writer = BackgroundWriter(pq.ParquetWriter(directory / RAW_TABLE_FILE, SCHEMA))
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
            self.add_rows(rows_table([row]))

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
        row_split = split or label(record.get("split"))
        return (title, category.strip(),
                label(record.get("language")) or language or "unknown",
                label(record.get("label_quality")) or "unknown",
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


class BackgroundWriter:
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


def rows_table(rows: list[tuple]) -> pa.Table:
    """Canonical rows (tuples in SCHEMA's order) as a table."""
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in SCHEMA.names]
    return pa.table([pa.array(list(column), pa.string()) for column in columns], schema=SCHEMA)


def label(value: Any) -> str | None:
    """A lower-case label such as "spanish", or None when absent or blank."""
    if not isinstance(value, str):
        return None
    return value.strip().lower() or None
