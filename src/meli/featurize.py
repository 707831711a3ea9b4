"""featurize: a vocabulary from the training split, and fixed-length token ids for every split.

Outputs in `data/features/`:
- `vocab.txt`: one token per line, the line number (from 0) being its id; ids 0 and 1 are the
  padding and unknown-word tokens;
- `labels.json`: the category names, position = label id (copied from prepare);
- `<split>.tokens.npy` (int32, rows x max_length, zero-padded) and `<split>.labels.npy` (int32),
  plain .npy files that training opens with `numpy.load(..., mmap_mode="r")`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from meli import prepare
from meli.errors import MeliError
from meli.files import atomic_directory, write_json
from meli.params import FeaturizeParams

PAD, UNKNOWN = 0, 1
PAD_TOKEN, UNKNOWN_TOKEN = "<pad>", "<unk>"
VOCAB_FILE = "vocab.txt"
LABELS_FILE = "labels.json"
BATCH_ROWS = 250_000


def tokens_path(directory: str | Path, split: str) -> Path:
    return Path(directory) / f"{split}.tokens.npy"


def labels_path(directory: str | Path, split: str) -> Path:
    return Path(directory) / f"{split}.labels.npy"


class Vocabulary:
    """Token <-> id mapping; encodes normalized texts into fixed-length id rows."""

    def __init__(self, words: list[str]):
        self.words = words
        self.tokens = [PAD_TOKEN, UNKNOWN_TOKEN, *words]
        self._lookup = pa.array(words, pa.string())

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: pa.Array | pa.ChunkedArray, max_length: int) -> np.ndarray:
        """Token ids of space-separated texts, truncated or padded to `max_length` columns.

        Unknown words get UNKNOWN; a text with no words at all gets one UNKNOWN, so that every
        row has at least one real position for the models to pool over.
        """
        return self.encode_with_lengths(texts, max_length)[0]

    def encode_with_lengths(self, texts: pa.Array | pa.ChunkedArray,
                            max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """`encode`, plus each text's number of words before truncation."""
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks()
        lists = pc.utf8_split_whitespace(pc.fill_null(texts, ""))
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)
        flat = pc.list_flatten(lists)
        ids = pc.fill_null(pc.add(pc.index_in(flat, value_set=self._lookup), 2), UNKNOWN)
        ids = ids.to_numpy().astype(np.int32)
        rows = np.repeat(np.arange(len(texts)), lengths)
        starts = np.cumsum(lengths) - lengths
        position = np.arange(len(flat)) - np.repeat(starts, lengths)
        inside = position < max_length
        encoded = np.zeros((len(texts), max_length), dtype=np.int32)
        encoded[rows[inside], position[inside]] = ids[inside]
        encoded[lengths == 0, 0] = UNKNOWN
        return encoded, lengths

    def save(self, path: str | Path) -> None:
        Path(path).write_text("\n".join(self.tokens) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        tokens = Path(path).read_text(encoding="utf-8").split("\n")[:-1]
        if tokens[:2] != [PAD_TOKEN, UNKNOWN_TOKEN]:
            raise MeliError(f"{path}: not a vocabulary file (must start with {PAD_TOKEN}, "
                            f"{UNKNOWN_TOKEN})")
        return cls(tokens[2:])


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
    train_path = prepare.split_path(prepared_dir, "train")
    if not train_path.exists():
        raise MeliError(f"{train_path}: not found; run the prepare stage first")
    vocabulary = build_vocabulary(train_path, params.min_count, params.max_size)
    summary: dict = {"vocabulary_size": len(vocabulary), "max_length": params.max_length}
    rows = {}
    with atomic_directory(output_dir) as partial:
        vocabulary.save(partial / VOCAB_FILE)
        shutil.copyfile(prepared_dir / prepare.LABELS_FILE, partial / LABELS_FILE)
        for split in prepare.SPLITS:
            stats = _encode_split(vocabulary, params.max_length,
                                  prepare.split_path(prepared_dir, split), partial, split)
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
