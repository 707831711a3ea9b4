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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from meli.command import run, stage_parser
from meli.errors import MeliError
from meli.files import atomic_directory, write_json
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
from meli.vocabulary import Vocabulary

log = logging.getLogger(__name__)

BATCH_ROWS = 250_000


@dataclass
class FeaturizeResult:
    vocabulary_size: int
    rows: dict[str, int]


def build_vocabulary(train_path: Path, min_count: int, max_size: int) -> Vocabulary:
    """The `max_size` most frequent training tokens seen at least `min_count` times.

    Ties are broken alphabetically so that the vocabulary does not depend on row order.
    """
    counted = []
    for batch in pq.ParquetFile(train_path).iter_batches(BATCH_ROWS, columns=["text"]):
        flat = pc.list_flatten(pc.utf8_split_whitespace(batch.column("text")))
        counts = pc.value_counts(flat)
        counted.append(pa.table({"token": counts.field("values"), "count": counts.field("counts")}))
    if not counted:
        raise MeliError(f"{train_path}: the training split is empty")
    totals = pa.concat_tables(counted).group_by("token").aggregate([("count", "sum")])
    totals = totals.filter(pc.greater_equal(totals.column("count_sum"), min_count))
    totals = totals.sort_by([("count_sum", "descending"), ("token", "ascending")])
    return Vocabulary(totals.column("token").to_pylist()[:max_size])


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
    table = pq.ParquetFile(source)
    total = table.metadata.num_rows
    tokens = np.lib.format.open_memmap(tokens_path(directory, split), mode="w+",
                                       dtype=np.int32, shape=(total, max_length))
    labels = np.lib.format.open_memmap(labels_path(directory, split), mode="w+",
                                       dtype=np.int32, shape=(total,))
    words = unknown = truncated = start = 0
    for batch in table.iter_batches(BATCH_ROWS, columns=["text", "label"]):
        encoded, lengths = vocabulary.encode_with_lengths(batch.column("text"), max_length)
        end = start + len(encoded)
        tokens[start:end] = encoded
        labels[start:end] = batch.column("label").to_numpy()
        truncated += int(np.count_nonzero(lengths > max_length))
        words += int(np.count_nonzero(encoded))
        unknown += int(np.count_nonzero(encoded == UNKNOWN))
        start = end
    tokens.flush()
    labels.flush()
    del tokens, labels
    return {
        "rows": total,
        "unknown_token_rate": round(unknown / words, 6) if words else 0.0,
        "truncated_rate": round(truncated / total, 6) if total else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("featurize", __doc__)
    args = parser.parse_args(argv)

    def stage() -> None:
        params = load_params(args.params)
        result = featurize(params.featurize, PREPARED_DIR, FEATURES_DIR, FEATURES_METRICS_FILE)
        log.info("featurize: vocabulary of %d tokens; rows %s", result.vocabulary_size,
                 result.rows)

    return run("featurize", stage)


if __name__ == "__main__":
    sys.exit(main())
