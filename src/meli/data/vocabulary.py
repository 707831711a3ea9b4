"""The vocabulary: token <-> id, and the encoding of normalized texts into fixed-length id rows.

featurize builds it from the training split; embeddings, train and every PyTorch bundle load it,
so a title is encoded the same way wherever it is classified.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from meli.errors import MeliError
from meli.layout import PAD_TOKEN, UNKNOWN, UNKNOWN_TOKEN


class WordIndex:
    """The position of words in a fixed list of distinct words, -1 for a word not in it.

    Arrow's `index_in` builds a hash table of the whole list on every call: a few ms for tens
    of thousands of words, the largest part of scoring one short title. A dict, built once on
    first use, answers a short batch in microseconds; `index_in` is faster per word once a batch
    holds more words than the list (its table then costs less than a dict lookup per word).
    Both give the same positions.
    """

    def __init__(self, words: list[str]):
        self.words = words
        self._values = pa.array(words, pa.string())
        self._positions: dict[str, int] | None = None

    def __call__(self, words: pa.Array) -> np.ndarray:
        """int64 positions of `words` (an Arrow string array without nulls)."""
        if len(words) >= len(self.words):
            positions = pc.fill_null(pc.index_in(words, value_set=self._values), -1)
            return positions.to_numpy().astype(np.int64)
        if self._positions is None:
            # Reversed, so that a word listed twice keeps its first position, as in index_in.
            self._positions = {word: position for position, word
                               in reversed(list(enumerate(self.words)))}
        positions = self._positions
        return np.fromiter((positions.get(word, -1) for word in words.to_pylist()),
                           dtype=np.int64, count=len(words))


class Vocabulary:
    """Token <-> id mapping; encodes normalized texts into fixed-length id rows."""

    def __init__(self, words: list[str]):
        self.words = words
        self.tokens = [PAD_TOKEN, UNKNOWN_TOKEN, *words]
        self._index = WordIndex(words)

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
        lists = pc.utf8_split_whitespace(pc.fill_null(texts, "") if texts.null_count else texts)
        lengths = pc.list_value_length(lists).to_numpy().astype(np.int64)
        flat = pc.list_flatten(lists)
        positions = self._index(flat)
        ids = np.where(positions < 0, UNKNOWN, positions + 2).astype(np.int32)
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
