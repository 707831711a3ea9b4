"""The classifier interface every loaded bundle offers, and scoring titles with it in chunks.

A `Classifier` normalizes raw titles itself (with the settings its bundle was trained with) and
returns class probabilities; `predict` and `top_k` build on that, a bounded number of titles at a
time, so that evaluate, the baseline, `meli predict` and the server all score the same way.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from meli.data.text import normalize
from meli.params import TextParams

# Titles scored per call of `probabilities` by `predict`: it builds a titles x categories matrix,
# 0.4 GB for 64k titles of the 1,588 challenge categories.
SCORING_CHUNK = 65_536


class Classifier:
    """A loaded bundle: normalizes raw titles itself and returns class probabilities."""

    # True for the view `taking_normalized` returns: its input is already normalized.
    _takes_normalized = False

    def __init__(self, directory: Path, config: dict[str, Any], labels: list[str],
                 normalization: TextParams):
        self.directory = directory
        self.config = config
        self.labels = labels
        self.normalization = normalization

    @property
    def name(self) -> str:
        return self.directory.name

    def normalize(self, titles: list[str] | pa.Array) -> pa.Array:
        """Titles normalized with the bundle's settings (every kind of bundle normalizes its
        input through this method)."""
        if self._takes_normalized:
            return as_array(titles)
        return normalize(titles, self.normalization)

    def taking_normalized(self) -> Classifier:
        """This classifier, sharing its weights, for texts already normalized with its settings:
        the ensemble normalizes a batch once for every member that normalizes alike."""
        view = copy.copy(self)
        view._takes_normalized = True
        return view

    def probabilities(self, titles: list[str] | pa.Array, batch_size: int = 2048) -> np.ndarray:
        """Rows of class probabilities (float32) for raw, unnormalized titles."""
        raise NotImplementedError

    def predict(self, titles: list[str] | pa.Array | pa.ChunkedArray,
                batch_size: int = 2048) -> np.ndarray:
        """The most probable class id of each title, `SCORING_CHUNK` titles at a time, so that
        any number of titles can be scored in bounded memory."""
        titles = as_array(titles)
        parts = [self.probabilities(titles.slice(start, SCORING_CHUNK), batch_size).argmax(axis=1)
                 for start in range(0, len(titles), SCORING_CHUNK)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def known_words(self, titles: list[str] | pa.Array) -> np.ndarray:
        """How many words of each title the model has a vector (or an entry) for."""
        raise NotImplementedError

    def top_k(self, titles: list[str] | pa.Array, k: int = 3,
              batch_size: int = 16_384) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each title: its k most probable class ids (best first), their probabilities,
        and how many of its words the model knows. Works batch by batch: the full matrix of
        probabilities never exists for more than `batch_size` titles."""
        titles = as_array(titles)
        k = max(1, min(k, len(self.labels)))
        parts = [self._top_k_batch(titles.slice(start, batch_size), k)
                 for start in range(0, len(titles), batch_size)]
        if not parts:
            return (np.zeros((0, k), np.int64), np.zeros((0, k), np.float32),
                    np.zeros(0, np.int64))
        return tuple(np.concatenate(column) for column in zip(*parts, strict=True))

    def _top_k_batch(self, titles: pa.Array, k: int) -> tuple[np.ndarray, ...]:
        indices, values = top_k_of(self.probabilities(titles), k)
        return indices, values, self.known_words(titles)

    def top(self, titles: list[str], k: int = 3) -> list[list[tuple[str, float]]]:
        """The k most probable categories of each title, with their probabilities."""
        indices, values, _ = self.top_k(titles, k)
        return [[(self.labels[i], float(p)) for i, p in zip(row, row_values, strict=True)]
                for row, row_values in zip(indices, values, strict=True)]


def as_array(titles: list[str] | pa.Array | pa.ChunkedArray) -> pa.Array:
    """Titles as one Arrow string array, whatever they came as."""
    if isinstance(titles, pa.ChunkedArray):
        return titles.combine_chunks()
    if isinstance(titles, pa.Array):
        return titles
    return pa.array(list(titles), pa.string())


def top_k_of(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest of each row, best first, a tie going to the lower class id."""
    if k >= probabilities.shape[1]:
        order = np.argsort(-probabilities, axis=1, kind="stable")
    else:
        candidates = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(probabilities, candidates, axis=1)
        # Sorted by probability, then by class id: a stable order among the k.
        within = np.lexsort((candidates, -values), axis=1)
        order = np.take_along_axis(candidates, within, axis=1)
    return order, np.take_along_axis(probabilities, order, axis=1)
