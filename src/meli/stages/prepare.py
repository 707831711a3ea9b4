"""prepare: normalize, filter, deduplicate and split the raw table into train/validation/test.

Two streaming passes keep memory flat for tens of millions of rows:
1. normalize and filter each batch (two batches at once, in threads), write the survivors to a
   scratch file and remember, per row, only a 64-bit hash of (title, category), a category code
   and the source's split: 13 bytes a row;
2. once duplicates, rare categories and the split are decided from those arrays (sorting them
   takes some 50 bytes a row for a moment), stream the scratch file again into
   `train.parquet`, `validation.parquet` and `test.parquet`.
Parquet files are read with pre-buffering off: a pre-buffering reader keeps all it read.

Every dropped row is counted by reason in `metrics/data.json`; rows dropped because they are
broken, duplicated or of a too-rare category are also written, with the reason, to
`rejected.jsonl` (rows left out by the `languages`/`label_quality` selection are only counted).

Run by dvc.yaml as `python -m meli.stages.prepare`; reads the `prepare` section of params.yaml.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from meli.data.text import normalize
from meli.errors import MeliError, run, stage_parser
from meli.files import atomic_directory, read_json, write_json, writing
from meli.layout import (
    DATA_METRICS_FILE,
    LABELS_FILE,
    NORMALIZATION_FILE,
    PREPARED_DIR,
    RAW_DIR,
    RAW_TABLE_FILE,
    REJECTED_FILE,
    SOURCE_FILE,
    SPLITS,
    split_path,
)
from meli.params import PrepareParams, load_params, to_dict
from meli.progress import Progress

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("title", pa.string()),
        ("text", pa.string()),
        ("category", pa.string()),
        ("label", pa.int32()),
        ("language", pa.string()),
        ("label_quality", pa.string()),
    ]
)
BATCH_ROWS = 250_000
# Batches normalized at once in pass 1 (each in its own thread).
_THREADS = 2
_SCRATCH_FILE = "normalized.parquet"


@dataclass
class PrepareResult:
    rows: dict[str, int]
    classes: int
    dropped: dict[str, int]
    split: str


def prepare(params: PrepareParams, raw_dir: str | Path, output_dir: str | Path,
            metrics_path: str | Path) -> PrepareResult:
    raw_dir = Path(raw_dir)
    table_path = raw_dir / RAW_TABLE_FILE
    if not table_path.exists():
        raise MeliError(f"{table_path}: not found; run the ingest stage first")
    with atomic_directory(output_dir) as partial:
        dropped: Counter[str] = Counter()
        with (partial / REJECTED_FILE).open("w", encoding="utf-8") as rejected:
            dropped.update(_copy_ingest_rejections(raw_dir / REJECTED_FILE, rejected))
            rows = _filter_and_normalize(params, table_path, partial / _SCRATCH_FILE, rejected,
                                         dropped)
            decision = _decide_rows(rows, params, table_path, dropped)
            split, how = _assign_splits(rows, decision, params)
            counts = _write_splits(partial, decision, split, rejected)
        (partial / _SCRATCH_FILE).unlink()
        write_json(partial / LABELS_FILE, decision.categories)
        write_json(partial / NORMALIZATION_FILE, to_dict(params.text))
    source = read_json(raw_dir / SOURCE_FILE)
    rows_kept = sum(counts.values())
    metrics = {
        "rows_read": source["rows_read"],
        "rows_kept": rows_kept,
        "dropped": {reason: dropped[reason] for reason in sorted(dropped)},
        "classes": len(decision.categories),
        "rows": counts,
        "split": how,
    }
    write_json(metrics_path, metrics)
    if rows_kept + sum(dropped.values()) != source["rows_read"]:
        raise MeliError(f"{table_path}: row accounting is off ({rows_kept} kept + "
                        f"{sum(dropped.values())} dropped != {source['rows_read']} read)")
    return PrepareResult(counts, metrics["classes"], metrics["dropped"], how)


def _copy_ingest_rejections(path: Path, rejected: Any) -> Counter[str]:
    counts: Counter[str] = Counter()
    if path.exists():
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                counts[json.loads(line)["kind"]] += 1
                rejected.write(line)
    return counts


class _Rows:
    """What pass 1 keeps per candidate row: hash of (title, category), category code, split."""

    def __init__(self) -> None:
        self.hashes: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []
        self.splits: list[np.ndarray] = []
        self.category_code: dict[str, int] = {}

    def add(self, batch: pa.Table) -> None:
        self.add_described(*self.describe(batch))

    @staticmethod
    def describe(batch: pa.Table) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
        """What `add` keeps of a batch, worked out without touching `self` (so in a thread):
        key hashes, the batch's category names and each row's index among them, split codes."""
        categories = batch.column("category")
        # Joined by the unit separator, a control character that real titles and categories do
        # not hold, so that distinct (title, category) pairs give distinct keys.
        keys = pc.binary_join_element_wise(batch.column("title"), categories, "\x1f")
        # categorize=False: factorizing first would only pay off with many repeated keys.
        hashes = pd.util.hash_array(keys.to_numpy(zero_copy_only=False), categorize=False)
        encoded = pc.dictionary_encode(categories).combine_chunks()
        split = pc.index_in(batch.column("split"), value_set=pa.array(SPLITS))
        return (hashes, encoded.dictionary.to_pylist(), encoded.indices.to_numpy(),
                pc.fill_null(split, -1).to_numpy().astype(np.int8))

    def add_described(self, hashes: np.ndarray, names: list[str], indices: np.ndarray,
                      splits: np.ndarray) -> None:
        """Keep a described batch; category codes follow first appearance in file order."""
        self.hashes.append(hashes)
        local = np.array([self.category_code.setdefault(name, len(self.category_code))
                          for name in names], dtype=np.int32)
        self.codes.append(local[indices] if len(local) else np.zeros(0, np.int32))
        self.splits.append(splits)

    def finish(self) -> None:
        # Each list is let go as soon as it is joined: the rows are never held twice.
        self.hash = np.concatenate(self.hashes) if self.hashes else np.zeros(0, np.uint64)
        self.hashes = []
        self.code = np.concatenate(self.codes) if self.codes else np.zeros(0, np.int32)
        self.codes = []
        self.split = np.concatenate(self.splits) if self.splits else np.zeros(0, np.int8)
        self.splits = []
        self.names = np.array(list(self.category_code), dtype=object)

    def __len__(self) -> int:
        return len(self.hash)


def _filter_and_normalize(params: PrepareParams, table_path: Path, scratch: Path,
                          rejected: Any, dropped: Counter[str]) -> _Rows:
    """Pass 1: select languages and label qualities, normalize, set aside empty texts.

    Batches are selected and normalized two at a time in threads (Arrow's kernels release the
    GIL), and their results taken in file order, so the outcome is the same as one at a time.
    """
    rows = _Rows()
    scratch_schema = SCHEMA.remove(SCHEMA.get_field_index("label")).append(
        pa.field("split", pa.string()))
    # The scratch file is read once, right away: not worth compressing.
    with (pq.ParquetWriter(scratch, scratch_schema, compression="none") as writer,
          ThreadPoolExecutor(max_workers=_THREADS) as pool,
          ThreadPoolExecutor(max_workers=1) as write_pool):
        pending: deque[Future] = deque()
        writing: deque[Future] = deque()

        def take_one() -> None:
            batch, counts, empty, described = pending.popleft().result()
            dropped.update(counts)
            for row in empty.to_pylist():
                _write_rejected(rejected, row, "empty_after_normalization",
                                "no words left after text normalization")
                dropped["empty_after_normalization"] += 1
            if len(batch):
                rows.add_described(*described)
                writing.append(write_pool.submit(writer.write_table,
                                           batch.select(scratch_schema.names)))
                # One write at a time, in order: wait for the previous one.
                if len(writing) > 1:
                    writing.popleft().result()

        # pre_buffer=False: a pre-buffering reader keeps what it read until it is closed.
        raw = pq.ParquetFile(table_path, pre_buffer=False)
        progress = Progress("prepare: normalizing (pass 1 of 2)", raw.metadata.num_rows, "rows")
        for record_batch in raw.iter_batches(BATCH_ROWS):
            pending.append(pool.submit(_select_and_normalize, record_batch, params))
            if len(pending) > _THREADS:
                take_one()
            progress.update(progress.done + record_batch.num_rows)
        progress.close()
        while pending:
            take_one()
        while writing:
            writing.popleft().result()
    rows.finish()
    return rows


def _select_and_normalize(record_batch: pa.RecordBatch, params: PrepareParams
                          ) -> tuple[pa.Table, Counter[str], pa.Table, tuple]:
    """One batch's selected rows with their normalized `text`, the rows left out by the
    selection (counted by reason), the rows whose text came out empty, and what `_Rows`
    keeps of the selected rows."""
    counts: Counter[str] = Counter()
    batch = pa.Table.from_batches([record_batch])
    language_ok = pc.is_in(batch.column("language"),
                           value_set=pa.array(params.languages, pa.string()))
    counts["language"] += len(batch) - (pc.sum(language_ok).as_py() or 0)
    batch = batch.filter(language_ok)
    quality_ok = pc.is_in(batch.column("label_quality"),
                          value_set=pa.array(params.label_quality, pa.string()))
    counts["label_quality"] += len(batch) - (pc.sum(quality_ok).as_py() or 0)
    batch = batch.filter(quality_ok)
    text = normalize(batch.column("title"), params.text)
    has_words = pc.not_equal(text, "")
    empty = batch.filter(pc.invert(has_words))
    batch = batch.append_column("text", text).filter(has_words)
    return batch, counts, empty, _Rows.describe(batch)


@dataclass
class _Decision:
    """Per candidate row: kept or why not, and its label id (-1 for a rare category)."""

    keep: np.ndarray
    duplicate: np.ndarray
    rare: np.ndarray
    labels: np.ndarray
    categories: list[str]


def _decide_rows(rows: _Rows, params: PrepareParams, table_path: Path,
                 dropped: Counter[str]) -> _Decision:
    """Mark duplicates (all but the first occurrence) and rows of too-rare categories."""
    duplicate = np.ones(len(rows), dtype=bool)
    duplicate[np.unique(rows.hash, return_index=True)[1]] = False
    counts = np.bincount(rows.code[~duplicate], minlength=len(rows.names))
    frequent = counts >= params.min_examples
    rare = ~duplicate & ~frequent[rows.code]
    keep = ~duplicate & ~rare
    dropped["duplicate"] += int(duplicate.sum())
    dropped["rare_category"] += int(rare.sum())
    names = sorted(rows.names[frequent].tolist())
    if len(names) < 2:
        found = f"only {names[0]!r}" if names else "none"
        # Name what the selection removed (a source without languages says "unknown").
        selection = "".join(f"; prepare.{key} {values} left out {dropped[reason]} rows"
                            for reason, key, values in (
                                ("language", "languages", params.languages),
                                ("label_quality", "label_quality", params.label_quality))
                            if dropped[reason])
        raise MeliError(
            f"{table_path}: a classifier needs at least 2 categories with "
            f"prepare.min_examples={params.min_examples} or more rows after filtering; "
            f"found {found} (of {len(rows.names)} categories in {len(rows)} rows){selection}")
    label_of_code = np.full(len(rows.names), -1, dtype=np.int32)
    label_of_code[frequent] = np.searchsorted(names, rows.names[frequent].astype(str))
    return _Decision(keep, duplicate, rare, label_of_code[rows.code], names)


def _assign_splits(rows: _Rows, decision: _Decision,
                   params: PrepareParams) -> tuple[np.ndarray, str]:
    """Split codes (0 train, 1 validation, 2 test) for every row, and how they were chosen.

    A source's own split is kept when it is a real one: every kept row has a split and training
    rows exist beside validation or test ones. A file whose rows all say "test" is not a split.
    """
    keep, labels = decision.keep, decision.labels
    split = rows.split.copy()
    present = set(np.unique(split[keep]).tolist())
    if params.keep_source_split and -1 not in present and 0 in present and len(present) > 1:
        for code, fraction in ((1, params.validation_fraction), (2, params.test_fraction)):
            if code not in present:
                train = keep & (split == 0)
                carved = stratified_split(labels[train], 0.0, fraction, params.seed + code)
                split[np.flatnonzero(train)[carved == 2]] = code
        return split, "source"
    split[keep] = stratified_split(labels[keep], params.validation_fraction,
                                   params.test_fraction, params.seed)
    return split, "stratified"


def stratified_split(labels: np.ndarray, validation_fraction: float, test_fraction: float,
                     seed: int) -> np.ndarray:
    """Split codes per row so that each label is divided in the given fractions.

    Each label keeps at least one training row; a label too small for its share of validation
    or test rows simply gets none there.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    counts = np.bincount(labels)
    starts = np.cumsum(counts) - counts
    # Ranks within a label fit 32 bits (fewer than 2**31 rows): half the memory of int64.
    rank = np.empty(len(labels), dtype=np.int32)
    rank[order] = np.arange(len(labels), dtype=np.int32) - np.repeat(
        starts.astype(np.int32), counts)
    del order
    n_test = np.floor(counts * test_fraction + 0.5).astype(np.int32)
    n_validation = np.floor(counts * validation_fraction + 0.5).astype(np.int32)
    n_test = np.minimum(n_test, np.maximum(counts - 1, 0)).astype(np.int32)
    n_validation = np.minimum(n_validation, np.maximum(counts - 1 - n_test, 0)).astype(np.int32)
    row_test = n_test[labels]
    split = np.zeros(len(labels), dtype=np.int8)
    split[rank < row_test] = 2
    row_test += n_validation[labels]  # now the end of the validation rows
    split[(split == 0) & (rank < row_test)] = 1
    return split


def _write_splits(directory: Path, decision: _Decision, split: np.ndarray,
                  rejected: Any) -> dict[str, int]:
    """Pass 2: stream the scratch file into one Parquet file per split.

    Each batch's three parts are encoded and written in a thread (Arrow releases the GIL), in
    order, while the next batch is read.
    """
    keep, labels = decision.keep, decision.labels
    writers = {name: pq.ParquetWriter(split_path(directory, name), SCHEMA) for name in SPLITS}
    counts = dict.fromkeys(SPLITS, 0)
    start = 0

    def write(parts: list[tuple[str, pa.Table]]) -> None:
        for name, part in parts:
            writers[name].write_table(part)

    scratch = pq.ParquetFile(directory / _SCRATCH_FILE, pre_buffer=False)
    progress = Progress("prepare: writing the splits (pass 2 of 2)", scratch.metadata.num_rows,
                        "rows")
    with ThreadPoolExecutor(max_workers=1) as write_pool, progress:
        writing: deque[Future] = deque()
        for record_batch in scratch.iter_batches(BATCH_ROWS):
            batch = pa.Table.from_batches([record_batch])
            window = slice(start, start + len(batch))
            start += len(batch)
            progress.update(start)
            for reason, mask, message in (
                ("duplicate", decision.duplicate[window],
                 "exact duplicate of an earlier (title, category)"),
                ("rare_category", decision.rare[window],
                 "category has fewer than prepare.min_examples rows"),
            ):
                if mask.any():
                    for row in batch.filter(pa.array(mask)).to_pylist():
                        _write_rejected(rejected, row, reason, message)
            batch = batch.append_column("label", pa.array(labels[window], pa.int32()))
            parts = []
            for code, name in enumerate(SPLITS):
                chosen = keep[window] & (split[window] == code)
                if chosen.any():
                    part = batch.filter(pa.array(chosen)).select(SCHEMA.names).cast(SCHEMA)
                    parts.append((name, part))
                    counts[name] += len(part)
            writing.append(write_pool.submit(write, parts))
            if len(writing) > 1:
                writing.popleft().result()
        while writing:
            writing.popleft().result()
    for writer in writers.values():
        writer.close()
    return counts


def _write_rejected(rejected: Any, row: dict[str, Any], kind: str, reason: str) -> None:
    entry = {"where": "data/raw", "kind": kind, "reason": reason,
             "row": {key: row.get(key) for key in ("title", "category", "language",
                                                   "label_quality")}}
    rejected.write(json.dumps(entry, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("prepare", __doc__)
    args = parser.parse_args(argv)

    def stage() -> None:
        params = load_params(args.params)
        with writing(PREPARED_DIR, DATA_METRICS_FILE):
            result = prepare(params.prepare, RAW_DIR, PREPARED_DIR, DATA_METRICS_FILE)
        rows = ", ".join(f"{split} {count}" for split, count in result.rows.items())
        log.info("prepare: %d classes; %s (%s split); dropped %s", result.classes, rows,
                 result.split, result.dropped or "nothing")

    return run("prepare", stage)


if __name__ == "__main__":
    sys.exit(main())
