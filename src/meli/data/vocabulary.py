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
