"""The fastText baseline's bundle (`model.bin`) loaded as a `Classifier`.

fastText's own `predict` hands every title's probabilities back as Python lists of label names:
for 632 categories that costs about 200 us a title, against a few for the arithmetic itself. A
supervised model without word n-grams or character n-grams (the baseline's defaults) is an
average of word vectors and a softmax layer, so it is scored here, a batch at a time, from
its own matrices: the words' rows summed in fastText's order and scaled as fastText scales
them, then one matrix product and a float32 softmax. The probabilities agree with fastText's
within 1e-5 (its products and its softmax's sum run through float32 one term at a time; on
the real sample the largest difference is 4e-6, the best category the same for every title:
`tests/test_ensemble.py` checks both). Other models (hierarchical softmax, one-vs-all, n-grams)
go through fastText's `predict`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from meli.bundles.bundle import FASTTEXT_FILE, FASTTEXT_PROBABILITY_OFFSET, first_line
from meli.bundles.classifier import SCORING_CHUNK, Classifier, as_array
from meli.data.vocabulary import WordIndex
from meli.errors import MeliError
from meli.params import TextParams

END_OF_LINE = "</s>"  # the word fastText appends to every line it reads


@dataclass
class _AveragedSoftmax:
    """A fastText supervised model with a softmax over the mean of its words' vectors."""

    words: WordIndex
    inputs: np.ndarray       # (words, dim) float32: a row per word of the dictionary
    outputs: np.ndarray      # (classes, dim) float32: fastText's label rows in class id order
    # -inf for a class fastText never saw in training (no row: probability 0), else None
    unseen: np.ndarray | None
    end_of_line: int         # the row of "</s>", or -1 when the dictionary has none


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
        self._averaged = self._averaged_softmax()

    def _averaged_softmax(self) -> _AveragedSoftmax | None:
        """The model's matrices, where scoring from them is what fastText's predict does: a
        softmax loss, no word n-grams nor character n-grams (whose hashed rows are not kept
        here), and texts whose words are separated by single spaces alone (every punctuation
        setting but keep, which lets NUL, a separator to fastText, and "__label__" through)."""
        from fasttext.FastText import loss_name

        args = self.model.f.getArgs()
        if (args.loss != loss_name.softmax or args.wordNgrams > 1 or args.maxn > 0
                or self.normalization.punctuation == "keep"):
            return None
        words = self.model.get_words()
        inputs = np.array(self.model.get_input_matrix(), dtype=np.float32)
        if inputs.shape[0] != len(words):
            return None
        try:
            classes = np.array([self.index[name] for name in self.model.labels], np.int64)
        except KeyError as error:
            raise MeliError(f"{self.directory / FASTTEXT_FILE}: label {error} is not one of "
                            f"labels.json's") from None
        outputs = np.zeros((len(self.labels), inputs.shape[1]), dtype=np.float32)
        outputs[classes] = self.model.get_output_matrix()
        unseen = None
        if len(classes) < len(self.labels):
            unseen = np.full(len(self.labels), -np.inf, dtype=np.float32)
            unseen[classes] = 0.0
        return _AveragedSoftmax(WordIndex(words), inputs, outputs, unseen,
                                self.model.get_word_id(END_OF_LINE))

    def _word_positions(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(title of each word, its row in the input matrix or -1) of normalized texts."""
        assert self._averaged is not None
        lists = pc.split_pattern(texts, " ")
        lengths = pc.list_value_length(lists).to_numpy()
        # An empty text splits into one empty word, which no dictionary holds.
        return (np.repeat(np.arange(len(texts)), lengths),
                self._averaged.words(pc.list_flatten(lists)))

    def known_words(self, titles: list[str] | pa.Array) -> np.ndarray:
        texts = self.normalize(titles)
        if self._averaged is not None:
            rows, positions = self._word_positions(texts)
            return np.bincount(rows[positions >= 0], minlength=len(texts)).astype(np.int64)
        known = self.model.get_word_id
        return np.array([sum(known(word) >= 0 for word in text.split())
                         for text in texts.to_pylist()], dtype=np.int64)

    def probabilities(self, titles: list[str] | pa.Array, batch_size: int = 2048) -> np.ndarray:
        texts = self.normalize(titles)
        if self._averaged is not None:
            return self._averaged_probabilities(texts)
        return self._predicted_probabilities(texts.to_pylist(), batch_size)

    def _averaged_probabilities(self, texts: pa.Array) -> np.ndarray:
        model = self._averaged
        assert model is not None
        rows, positions = self._word_positions(texts)
        known = positions >= 0
        rows, positions = rows[known], positions[known]
        if model.end_of_line >= 0:  # fastText reads it at the end of every line
            rows = np.concatenate([rows, np.arange(len(texts))])
            positions = np.concatenate([positions, np.full(len(texts), model.end_of_line)])
            order = np.argsort(rows, kind="stable")  # each title's words in order, then </s>
            rows, positions = rows[order], positions[order]
        counts = np.bincount(rows, minlength=len(texts))
        indptr = np.concatenate([[0], np.cumsum(counts)])
        words = sp.csr_matrix((np.ones(len(positions), np.float32), positions, indptr),
                              shape=(len(texts), len(model.inputs)))
        # fastText sums the rows in the line's order, then multiplies by 1 / count in float32.
        hidden = np.asarray(words @ model.inputs)
        hidden *= (1.0 / np.maximum(counts, 1)).astype(np.float32)[:, None]
        logits = hidden @ model.outputs.T
        if model.unseen is not None:
            logits += model.unseen
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        # fastText predicts nothing for a line with no word it knows (and no </s>).
        logits[counts == 0] = 0.0
        return logits

    def _predicted_probabilities(self, texts: list[str], batch_size: int) -> np.ndarray:
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
