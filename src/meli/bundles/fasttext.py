"""The fastText baseline's bundle (`model.bin`) loaded as a `Classifier`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from meli.bundles.bundle import FASTTEXT_FILE, FASTTEXT_PROBABILITY_OFFSET, first_line
from meli.bundles.classifier import SCORING_CHUNK, Classifier, as_array
from meli.errors import MeliError
from meli.params import TextParams


class FastTextClassifier(Classifier):
    def __init__(self, directory: Path, config: dict[str, Any], labels: list[str],
                 normalization: TextParams):
        super().__init__(directory, config, labels, normalization)
        import fasttext

        path = directory / FASTTEXT_FILE
        expected = config.get("model_bytes")
        if expected is not None and path.is_file() and path.stat().st_size != expected:
            raise MeliError(f"{path}: {path.stat().st_size} bytes where config.json says "
                            f"{expected}: the file is damaged or incomplete")
        try:
            self.model = fasttext.load_model(str(path))
        except (ValueError, RuntimeError, MemoryError) as error:
            # A damaged file can also make fastText's reader allocate garbage sizes (bad_alloc).
            raise MeliError(f"{path}: cannot load: {first_line(error)}") from None
        # The baseline trains on "__label__<class id>": category names may contain spaces.
        self.index = {f"__label__{i}": i for i in range(len(labels))}

    def known_words(self, titles: list[str] | pa.Array) -> np.ndarray:
        known = self.model.get_word_id
        return np.array([sum(known(word) >= 0 for word in text.split())
                         for text in self.normalize(titles).to_pylist()], dtype=np.int64)

    def probabilities(self, titles: list[str] | pa.Array, batch_size: int = 2048) -> np.ndarray:
        texts = self.normalize(titles).to_pylist()
        result = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            # Always a list: fastText 0.9.3's single-string predict breaks under NumPy 2.
            names, values = self.model.predict(texts[start:start + batch_size], k=-1)
            for row, (row_names, row_values) in enumerate(zip(names, values, strict=True)):
                columns = [self.index[name] for name in row_names]
                # fastText reports exp(log(p + 1e-5)): without the offset rows sum to 1.
                result[start + row, columns] = np.maximum(
                    np.asarray(row_values) - FASTTEXT_PROBABILITY_OFFSET, 0.0)
        return result

    def predict(self, titles: list[str] | pa.Array | pa.ChunkedArray,
                batch_size: int = 2048) -> np.ndarray:
        """The most probable class of each title, as fastText's own top 1: the full rows of
        `probabilities` are for mixing and top-k, and at 1,600 categories they cost 1,600 Python
        pairs a title (with `loss: hs`, a walk of the whole tree too) where the top 1 costs
        one."""
        titles = as_array(titles)
        predicted = np.zeros(len(titles), dtype=np.int64)
        for start in range(0, len(titles), SCORING_CHUNK):
            texts = self.normalize(titles.slice(start, SCORING_CHUNK)).to_pylist()
            names, _ = self.model.predict(texts, k=1)
            # A title fastText has no word for gets no label: class 0, as argmax of its row of
            # zeros in `probabilities`.
            predicted[start:start + len(texts)] = [self.index[row[0]] if len(row) else 0
                                                   for row in names]
        return predicted
