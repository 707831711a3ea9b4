"""featurize: a vocabulary from the training split, and fixed-length token ids for every split.

Outputs in `data/features/`:
- `vocab.txt`: one token per line, the line number (from 0) being its id; ids 0 and 1 are the
  padding and unknown-word tokens;
- `labels.json`: the category names, position = label id (copied from prepare);
- `<split>.tokens.npy` (int32, rows x max_length, zero-padded) and `<split>.labels.npy` (int32),
  plain .npy files that training opens with `numpy.load(..., mmap_mode="r")`.

Run by dvc.yaml as `python -m meli.stages.featurize`; reads the `featurize` section of params.yaml.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from meli.data.vocabulary import Vocabulary
from meli.errors import MeliError, run, stage_parser
from meli.files import atomic_directory, write_json, writing
from meli.layout import (
    FEATURES_DIR,
    FEATURES_METRICS_FILE,
    LABELS_FILE,
    PREPARED_DIR,
    SPLITS,
    UNKNOWN,
    VOCAB_FILE,
    labels_path,
    split_path,
    tokens_path,
)
from meli.params import FeaturizeParams, load_params
from meli.progress import Progress

log = logging.getLogger(__name__)

BATCH_ROWS = 250_000
# Batches encoded at once (each in its own thread).
_THREADS = 2


@dataclass
class FeaturizeResult:
    vocabulary_size: int
    rows: dict[str, int]


def build_vocabulary(train_path: Path, min_count: int, max_size: int) -> Vocabulary:
    """The `max_size` most frequent training tokens seen at least `min_count` times.

    Ties are broken alphabetically so that the vocabulary does not depend on row order. Batches
    are counted in threads (Arrow's kernels release the GIL); the totals do not depend on which
    thread counted what.
    """
    # pre_buffer=False: a pre-buffering reader keeps what it read until it is closed.
    train = pq.ParquetFile(train_path, pre_buffer=False)
    batches = train.iter_batches(BATCH_ROWS, columns=["text"])
    counted = list(_in_threads(_count_tokens, batches))
    if not counted:
        raise MeliError(f"{train_path}: the training split is empty")
    totals = pa.concat_tables(counted).group_by("token").aggregate([("count", "sum")])
    totals = totals.filter(pc.greater_equal(totals.column("count_sum"), min_count))
    totals = totals.sort_by([("count_sum", "descending"), ("token", "ascending")])
    return Vocabulary(totals.column("token").to_pylist()[:max_size])


def _count_tokens(batch: pa.RecordBatch) -> pa.Table:
    counts = pc.value_counts(pc.list_flatten(pc.utf8_split_whitespace(batch.column("text"))))
    return pa.table({"token": counts.field("values"), "count": counts.field("counts")})


def _in_threads(function: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
    """`map(function, items)`, _THREADS items at a time in threads, results in order."""
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        pending: deque[Future] = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) > _THREADS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def featurize(params: FeaturizeParams, prepared_dir: str | Path, output_dir: str | Path,
              metrics_path: str | Path) -> FeaturizeResult:
    prepared_dir = Path(prepared_dir)
    train_path = split_path(prepared_dir, "train")
    if not train_path.exists():
        raise MeliError(f"{train_path}: not found; run the prepare stage first")
    vocabulary = build_vocabulary(train_path, params.min_count, params.max_size)
    summary: dict = {"vocabulary_size": len(vocabulary), "max_length": params.max_length}
    rows = {}
    with atomic_directory(output_dir) as partial:
        vocabulary.save(partial / VOCAB_FILE)
        shutil.copyfile(prepared_dir / LABELS_FILE, partial / LABELS_FILE)
        for split in SPLITS:
            stats = _encode_split(vocabulary, params.max_length,
                                  split_path(prepared_dir, split), partial, split)
            rows[split] = stats["rows"]
            summary[split] = stats
    write_json(metrics_path, summary)
    return FeaturizeResult(len(vocabulary), rows)


def _encode_split(vocabulary: Vocabulary, max_length: int, source: Path, directory: Path,
                  split: str) -> dict:
    """Token ids and labels of one split, written to .npy files a batch at a time.

    Plain sequential writes rather than a memory map: the pages written then belong to the
    page cache, not to this process, so its memory stays flat however many rows there are.
    """
    table = pq.ParquetFile(source, pre_buffer=False)
    total = table.metadata.num_rows
    words = unknown = truncated = rows = 0

    def encode(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        encoded, lengths = vocabulary.encode_with_lengths(batch.column("text"), max_length)
        return encoded, lengths, batch.column("label").to_numpy().astype(np.int32)

    with (_npy_writer(tokens_path(directory, split), (total, max_length)) as tokens,
          _npy_writer(labels_path(directory, split), (total,)) as labels):
        batches = table.iter_batches(BATCH_ROWS, columns=["text", "label"])
        progress = Progress(f"featurize: encoding the {split} split", total, "rows")
        for encoded, lengths, label in _in_threads(encode, batches):
            tokens.write(np.ascontiguousarray(encoded, dtype="<i4").tobytes())
            labels.write(np.ascontiguousarray(label, dtype="<i4").tobytes())
            truncated += int(np.count_nonzero(lengths > max_length))
            words += int(np.count_nonzero(encoded))
            unknown += int(np.count_nonzero(encoded == UNKNOWN))
            rows += len(encoded)
            progress.update(rows)
    if rows != total:
        raise MeliError(f"{source}: read {rows} rows, its metadata says {total}")
    return {
        "rows": total,
        "unknown_token_rate": round(unknown / words, 6) if words else 0.0,
        "truncated_rate": round(truncated / total, 6) if total else 0.0,
    }


@contextmanager
def _npy_writer(path: Path, shape: tuple[int, ...]) -> Iterator[IO[bytes]]:
    """An int32 .npy file of `shape` (the header numpy.save writes), its data to be appended
    in C order."""
    with path.open("wb") as out:
        np.lib.format.write_array_header_1_0(
            out, {"descr": "<i4", "fortran_order": False, "shape": shape})
        yield out


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("featurize", __doc__)
    args = parser.parse_args(argv)

    def stage() -> None:
        params = load_params(args.params)
        with writing(FEATURES_DIR, FEATURES_METRICS_FILE):
            result = featurize(params.featurize, PREPARED_DIR, FEATURES_DIR,
                               FEATURES_METRICS_FILE)
        log.info("featurize: vocabulary of %d tokens; rows %s", result.vocabulary_size,
                 result.rows)

    return run("featurize", stage)


if __name__ == "__main__":
    sys.exit(main())
