"""The linear model's bundle (`models/linear/`): TF-IDF features and one or two linear heads,
stored compact, as plain arrays (`.npy`, read with allow_pickle=False) and JSON, so loading it
never runs code from a file.

    config.json          architecture "linear", the feature settings, and per head its
                         estimator, layout, precision, rank, temperature and share
    word_keys.npy, char_keys.npy, idf.npy    every n-gram of the vocabulary and its idf
                         (meli.data.tfidf): all of them, weighted or not, since each counts in
                         its title's L2 norm
    labels.json, normalization.json          as every bundle

A head scores titles x categories as TF-IDF(titles) @ W + intercept, W being its weights of
(feature, category). What carries the decision is kept and stored small (`compact`,
`linear.keep_weights`, `linear.keep_rows`, `linear.precision`), in one of two layouts:

- sparse (liblinear's SVM; the softmax at rank 0): W as compressed rows over the features, only
  the largest weights in magnitude kept (liblinear leaves most at exactly 0 already):
    <estimator>.indptr.npy      (features + 1,) int32 or int64: feature f's weights are entries
                                indptr[f]:indptr[f+1] of the next two files
    <estimator>.categories.npy  (entries,) uint16 (int32 above 65,535 categories): their
                                categories, increasing within a feature
    <estimator>.weights.npy     (entries,) int8, float16 or float32: their values
    <estimator>.scales.npy      (features,) float32, int8 only: weight = int8 value x its
                                feature's scale (the largest magnitude of the row / 127)
- factored (the softmax at rank > 0): W = E @ P through `rank` dimensions, as fastText's; only
  the feature rows of E with the largest norms kept (FastText.zip's pruning), the others 0:
    <estimator>.rows.npy        (kept,) int32 or int64: the features kept, increasing
    <estimator>.coef.npy        (kept, rank) int8, float16 or float32: their rows of E
    <estimator>.scales.npy      (kept,) float32, int8 only: a scale per row, as above
    <estimator>.projection.npy  (rank, categories) float32: P
and for both  <estimator>.intercept.npy  (categories,) float32.

Every dtype, shape, index and order is checked on load: a file that does not fit the others
fails in one line naming it.

The probabilities are sum over heads of share x softmax(scores / temperature).

Reading a weight (for explanations), for any head of `LinearClassifier.heads`, whatever its
layout and precision, with the values it scores with (int8 ones times their scale; 0 where
pruned): `head.weight(feature, category)` is W[feature, category], a float;
`head.row(feature)` is W[feature], (categories,) float32; `head.weights(features, category)`
is the weight of each of the given feature ids for one category, at a cost that grows with the
number of features asked for, not with the vocabulary;
`head.contributions(matrix, category)` is the TF-IDF matrix (`classifier.features.matrix(texts)`,
titles x features) with each value times that weight, so that a title's row sums, plus
`head.intercept[category]`, to `head.scores(matrix)[title, category]`. The TF-IDF feature id of
an n-gram is its place in the vocabulary (meli.data.tfidf).

Scoring is TF-IDF rows summing weight rows, which is what an embedding bag does: PyTorch's
(FBGEMM's row-wise int8 kernel for int8 weights, the plain one for float ones) runs it on the
rows of W held dense in memory: every row of a factored head, and the rows of a sparse head that
hold at least 1/64 of the categories (`DENSE_ROW_SHARE`); the other rows of a sparse head are a
SciPy sparse product.
"""

from __future__ import annotations

import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
import torch
import torch.nn.functional as functional

from meli.bundles.bundle import LINEAR_ARCHITECTURE, write_common
from meli.bundles.classifier import Classifier, as_array
from meli.data.tfidf import TfidfFeatures
from meli.errors import MeliError
from meli.files import atomic_directory
from meli.params import TextParams

ESTIMATORS = ("svm", "softmax")
PRECISIONS = ("int8", "float16", "float32")
SPARSE, FACTORED = "sparse", "factored"
# A sparse head's row is held dense in memory for scoring from this share of the categories on:
# its int8 row then costs at most 8 times the memory of its entries in a SciPy matrix (a float32
# value and an int32 index each). Measured on the real sample's bundle (2.1M SVM weights kept):
# 34,000 dense rows, 22 MB, score 4,096 titles in half the time that 1/16 of the categories
# (10,000 rows, 6 MB) takes, and within a fifth of every row dense (138 MB).
DENSE_ROW_SHARE = 64


def head_file(estimator: str, part: str) -> str:
    return f"{estimator}.{part}.npy"


class SparseHead:
    """W (features x categories) stored as compressed rows over the features."""

    layout = SPARSE

    def __init__(self, estimator: str, indptr: np.ndarray, categories: np.ndarray,
                 weights: np.ndarray, scales: np.ndarray | None, intercept: np.ndarray):
        self.estimator = estimator
        # The stored entries: feature f's are data[indptr[f]:indptr[f + 1]], of categories
        # categories[...] (and times scales[f] when int8).
        self.indptr, self.categories, self.data = indptr, categories, weights
        self.scales, self.intercept = scales, intercept
        self.precision = _precision_of(weights)
        self._prepare()

    @classmethod
    def from_matrix(cls, estimator: str, matrix: sp.spmatrix | np.ndarray,
                    intercept: np.ndarray) -> SparseHead:
        """A float32 head of every nonzero weight of a (features x categories) matrix."""
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        matrix.eliminate_zeros()
        matrix.sort_indices()
        return cls(estimator, matrix.indptr.astype(np.int64),
                   matrix.indices.astype(_category_dtype(matrix.shape[1])),
                   matrix.data.astype(np.float32), None, intercept.astype(np.float32))

    @property
    def size(self) -> int:
        """Features."""
        return len(self.indptr) - 1

    @property
    def num_categories(self) -> int:
        return len(self.intercept)

    @property
    def rank(self) -> int:
        return 0

    @property
    def stored(self) -> int:
        """Weights stored."""
        return len(self.data)

    def values(self) -> np.ndarray:
        """The stored weights as float32 (int8 ones times their row's scale)."""
        if self.scales is None:
            return self.data.astype(np.float32)
        return self.data.astype(np.float32) * np.repeat(self.scales, np.diff(self.indptr))

    def matrix(self) -> sp.csr_matrix:
        """W as a float32 SciPy matrix (features x categories)."""
        return sp.csr_matrix((self.values(), self.categories.astype(np.int32), self.indptr),
                             shape=(self.size, self.num_categories))

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {"indptr": _index_array(self.indptr), "categories": self.categories,
                  "weights": self.data, "intercept": self.intercept}
        if self.scales is not None:
            arrays["scales"] = self.scales
        return arrays

    def _prepare(self) -> None:
        """The scoring form: rows holding many categories dense in an embedding bag, the rest
        a SciPy matrix."""
        counts = np.diff(self.indptr)
        dense = counts >= max(1, -(-self.num_categories // DENSE_ROW_SHARE))
        dense_rows = np.flatnonzero(dense)
        self._slot = np.full(self.size, len(dense_rows), np.int64)  # the last row is all 0
        self._slot[dense_rows] = np.arange(len(dense_rows))
        entries = np.repeat(dense, counts)
        rows = np.repeat(np.arange(self.size), counts)[entries]
        table_rows = np.searchsorted(dense_rows, rows)
        categories = self.categories[entries].astype(np.int64)
        if self.precision == "int8":
            codes = np.full((len(dense_rows) + 1, self.num_categories), 128, np.uint8)
            codes[table_rows, categories] = (self.data[entries].astype(np.int16)
                                             + 128).astype(np.uint8)
            scales = np.zeros(len(dense_rows) + 1, np.float32)
            scales[:-1] = self.scales[dense_rows]
            self._table = torch.from_numpy(_pack_int8(codes, scales))
        else:
            table = np.zeros((len(dense_rows) + 1, self.num_categories), np.float32)
            table[table_rows, categories] = self.data[entries]
            self._table = torch.from_numpy(table)
        self._sparse_rows = ~dense if (~dense & (counts > 0)).any() else None
        if self._sparse_rows is not None:
            kept = ~entries
            indptr = np.zeros(self.size + 1, np.int64)
            np.cumsum(np.where(dense, 0, counts), out=indptr[1:])
            self._sparse = sp.csr_matrix(
                (self.values()[kept], self.categories[kept].astype(np.int32), indptr),
                shape=(self.size, self.num_categories))

    def scores(self, matrix: sp.csr_matrix) -> np.ndarray:
        """Decision scores (titles x categories, float32) of a TF-IDF matrix."""
        scores = _bag(self._table, self.precision == "int8", self._slot[matrix.indices],
                      matrix.indptr, matrix.data)
        if self._sparse_rows is not None and matrix.nnz:
            entries = self._sparse_rows[matrix.indices]
            if entries.any():
                product = _entries(matrix, entries) @ self._sparse
                rows = np.repeat(np.arange(matrix.shape[0]), np.diff(product.indptr))
                scores[rows, product.indices] += product.data
        scores += self.intercept
        return scores

    def weights(self, features: np.ndarray, category: int) -> np.ndarray:
        """The weight (float32) of each feature id for one category; 0 where none is kept."""
        features = np.asarray(features, dtype=np.int64)
        starts, ends = self.indptr[features], self.indptr[features + 1]
        lengths = ends - starts
        owner = np.repeat(np.arange(len(features)), lengths)
        entries = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) \
            + np.repeat(starts, lengths)
        found = self.categories[entries] == category
        weights = np.zeros(len(features), np.float32)
        values = self.data[entries[found]].astype(np.float32)
        if self.scales is not None:
            values *= self.scales[features[owner[found]]]
        weights[owner[found]] = values
        return weights

    def weight(self, feature: int, category: int) -> float:
        """W[feature, category] as the head scores with it; 0.0 where pruned."""
        feature = _feature_id(feature, self.size)
        return float(self.weights(np.array([feature]), _category_id(category, self))[0])

    def row(self, feature: int) -> np.ndarray:
        """W[feature] (categories,) float32 as the head scores with it; 0 where pruned."""
        feature = _feature_id(feature, self.size)
        start, end = self.indptr[feature], self.indptr[feature + 1]
        row = np.zeros(self.num_categories, np.float32)
        row[self.categories[start:end].astype(np.int64)] = self.data[start:end]
        if self.scales is not None:
            row *= self.scales[feature]
        return row

    def contributions(self, matrix: sp.csr_matrix, category: int) -> sp.csr_matrix:
        """The TF-IDF matrix with each value times its feature's weight for `category`."""
        return _contributions(self, matrix, category)


class FactoredHead:
    """W = E @ P, E (features x rank) stored as the rows of the features kept."""

    layout = FACTORED

    def __init__(self, estimator: str, size: int, rows: np.ndarray, coef: np.ndarray,
                 scales: np.ndarray | None, projection: np.ndarray, intercept: np.ndarray):
        self.estimator = estimator
        self.size = size  # features
        self.rows = rows
        self.projection, self.intercept = projection, intercept
        self.precision = _precision_of(coef)
        self._slot = np.full(size, len(rows), np.int64)  # the last row of the table is all 0
        self._slot[rows] = np.arange(len(rows))
        # The table is the only copy of E held: `coef` and `scales` are read back from it.
        if self.precision == "int8":
            codes = np.full((len(rows) + 1, coef.shape[1]), 128, np.uint8)
            codes[:-1] = (coef.astype(np.int16) + 128).astype(np.uint8)
            self._table = torch.from_numpy(_pack_int8(codes, np.append(scales, np.float32(0))))
        else:
            table = np.zeros((len(rows) + 1, coef.shape[1]), np.float32)
            table[:-1] = coef
            self._table = torch.from_numpy(table)
            self._coef_dtype = coef.dtype

    @classmethod
    def from_dense(cls, estimator: str, coef: np.ndarray, projection: np.ndarray,
                   intercept: np.ndarray) -> FactoredHead:
        """A float32 head of every row of E."""
        return cls(estimator, len(coef), np.arange(len(coef), dtype=np.int64),
                   coef.astype(np.float32, copy=False), None, projection.astype(np.float32),
                   intercept.astype(np.float32))

    @property
    def num_categories(self) -> int:
        return len(self.intercept)

    @property
    def rank(self) -> int:
        return int(self.projection.shape[0])

    @property
    def stored(self) -> int:
        """Weights stored (of E and P)."""
        return len(self.rows) * self.rank + self.projection.size

    @property
    def coef(self) -> np.ndarray:
        """The stored rows of E, in their stored dtype."""
        table = self._table.numpy()[:-1]
        if self.precision != "int8":
            return table.astype(self._coef_dtype)
        return (table[:, :self.rank].astype(np.int16) - 128).astype(np.int8)

    @property
    def scales(self) -> np.ndarray | None:
        if self.precision != "int8":
            return None
        return np.ascontiguousarray(self._table.numpy()[:-1, self.rank:self.rank + 4]) \
            .view(np.float32)[:, 0].copy()

    def dense_rows(self) -> np.ndarray:
        """The kept rows of E as float32 (kept x rank), as scored."""
        table = self._table.numpy()[:-1]
        if self.precision != "int8":
            return table
        return (table[:, :self.rank].astype(np.float32) - 128) * self.scales[:, None]

    def embeddings(self, features: np.ndarray) -> np.ndarray:
        """The rows of E (float32, as scored) of some feature ids; 0 where not kept."""
        slots = self._slot[np.asarray(features, dtype=np.int64)]
        offsets = np.arange(len(slots) + 1, dtype=np.int64)
        return _bag(self._table, self.precision == "int8", slots, offsets,
                    np.ones(len(slots), np.float32))

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {"rows": _index_array(self.rows), "coef": self.coef,
                  "projection": self.projection, "intercept": self.intercept}
        if self.precision == "int8":
            arrays["scales"] = self.scales
        return arrays

    def scores(self, matrix: sp.csr_matrix) -> np.ndarray:
        """Decision scores (titles x categories, float32) of a TF-IDF matrix."""
        hidden = _bag(self._table, self.precision == "int8", self._slot[matrix.indices],
                      matrix.indptr, matrix.data)
        scores = hidden @ self.projection
        scores += self.intercept
        return scores

    def weights(self, features: np.ndarray, category: int) -> np.ndarray:
        """The weight (float32) of each feature id for one category; 0 where none is kept."""
        return self.embeddings(features) @ self.projection[:, category]

    def weight(self, feature: int, category: int) -> float:
        """W[feature, category] = E[feature] @ P[:, category] as the head scores with it; 0.0
        where the feature's row is pruned."""
        feature = _feature_id(feature, self.size)
        return float(self.weights(np.array([feature]), _category_id(category, self))[0])

    def row(self, feature: int) -> np.ndarray:
        """W[feature] = E[feature] @ P (categories,) float32; 0 where the row is pruned."""
        return self.embeddings(np.array([_feature_id(feature, self.size)]))[0] @ self.projection

    def contributions(self, matrix: sp.csr_matrix, category: int) -> sp.csr_matrix:
        """The TF-IDF matrix with each value times its feature's weight for `category`."""
        return _contributions(self, matrix, category)


Head = SparseHead | FactoredHead


def _feature_id(feature: int, features: int) -> int:
    feature = int(feature)
    if not 0 <= feature < features:
        raise IndexError(f"feature {feature} out of range: the vocabulary has {features}")
    return feature


def _category_id(category: int, head: Head) -> int:
    category = int(category)
    if not 0 <= category < head.num_categories:
        raise IndexError(f"category {category} out of range: the head has "
                         f"{head.num_categories}")
    return category


def _contributions(head: Head, matrix: sp.csr_matrix, category: int) -> sp.csr_matrix:
    matrix = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    matrix.data *= head.weights(matrix.indices, category)
    return matrix


def _precision_of(weights: np.ndarray) -> str:
    name = np.dtype(weights.dtype).name
    if name not in PRECISIONS:
        raise ValueError(f"weights of {name}, not one of {', '.join(PRECISIONS)}")
    return name


def _category_dtype(categories: int) -> type:
    return np.uint16 if categories <= np.iinfo(np.uint16).max + 1 else np.int32


def _index_array(values: np.ndarray) -> np.ndarray:
    """Indices as int32 where they fit (half the bytes), int64 otherwise."""
    return values.astype(np.int32 if len(values) == 0 or values.max() < 2**31 else np.int64)


def _pack_int8(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """FBGEMM's row-wise 8-bit layout: per row its uint8 codes, a float32 scale and a float32
    bias; value = code x scale + bias. Symmetric int8 q is code q + 128 with bias -128 x scale,
    exactly."""
    scales = scales.astype(np.float32)
    tail = np.stack([scales, np.float32(-128) * scales], axis=1)
    return np.ascontiguousarray(np.concatenate([codes, tail.view(np.uint8)], axis=1))


def _bag(table: torch.Tensor, quantized: bool, slots: np.ndarray, offsets: np.ndarray,
         values: np.ndarray) -> np.ndarray:
    """sum over each row's entries of value x table[slot] (titles x table width, float32)."""
    indices = torch.from_numpy(np.ascontiguousarray(slots, dtype=np.int64))
    offsets = torch.from_numpy(np.ascontiguousarray(offsets, dtype=np.int64))
    weights = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    if quantized:
        result = torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
            table, indices, offsets, False, 0, False, weights, None, True)
    else:
        result = functional.embedding_bag(indices, table, offsets, mode="sum",
                                          per_sample_weights=weights, include_last_offset=True)
    return result.numpy()


def _entries(matrix: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """The matrix with only the entries where `keep` (one flag per stored entry)."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    indptr = np.zeros(matrix.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=matrix.shape[0]), out=indptr[1:])
    return sp.csr_matrix((matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape)


# ---- compacting: what carries the decision, stored small ---------------------------------------

def compact(head: Head, share: float, precision: str) -> Head:
    """The head with only its largest weights, stored in `precision`: of a sparse head, the
    `share` of its features x categories weights largest in magnitude (all the nonzero ones
    when there are fewer); of a factored head, the rows of E of the `share` of the features
    with the largest norms (FastText.zip's pruning)."""
    if isinstance(head, SparseHead):
        values = head.values()
        budget = max(1, int(share * head.size * head.num_categories))
        keep = np.ones(len(values), bool)
        if budget < len(values):
            magnitude = np.abs(values)
            # Every weight as large as the budget-th largest: ties are all kept or all not.
            keep = magnitude >= np.partition(magnitude, len(values) - budget)[-budget]
        counts = np.bincount(np.repeat(np.arange(head.size), np.diff(head.indptr))[keep],
                             minlength=head.size)
        indptr = np.zeros(head.size + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        weights, scales = _quantize(values[keep], indptr, precision)
        return SparseHead(head.estimator, indptr, head.categories[keep], weights, scales,
                          head.intercept)
    table = head.dense_rows()
    count = min(len(head.rows), max(1, round(share * head.size)))
    norms = np.linalg.norm(table, axis=1)
    # The largest norms, ties to the lower feature id; kept in feature order.
    chosen = np.sort(np.lexsort((head.rows, -norms))[:count])
    rows, table = head.rows[chosen], table[chosen]
    coef, scales = _quantize(table.ravel(), np.arange(len(rows) + 1) * head.rank, precision)
    return FactoredHead(head.estimator, head.size, rows, coef.reshape(len(rows), head.rank),
                        scales, head.projection, head.intercept)


def _quantize(values: np.ndarray, indptr: np.ndarray,
              precision: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Values (rows given by indptr) in `precision`: int8 with a float32 scale per row (its
    largest magnitude / 127, rounding to nearest), float16, or float32."""
    if precision == "float32":
        return values.astype(np.float32), None
    if precision == "float16":
        half = values.astype(np.float16)
        if not np.isfinite(half).all():
            raise MeliError("linear.precision: float16 cannot hold the weights (one is beyond "
                            "65,504); use int8 or float32")
        return half, None
    counts = np.diff(indptr)
    largest = np.zeros(len(counts), np.float32)
    nonempty = counts > 0
    largest[nonempty] = np.maximum.reduceat(np.abs(values), indptr[:-1][nonempty])
    scales = (largest / 127).astype(np.float32)
    divisor = np.repeat(np.where(scales > 0, scales, 1), counts)
    codes = np.clip(np.rint(values / divisor), -127, 127).astype(np.int8)
    return codes, scales


# ---- the bundle --------------------------------------------------------------------------------

def write_linear_bundle(directory: str | Path, *, features: TfidfFeatures, heads: list[Head],
                        temperatures: list[float], shares: list[float], labels: list[str],
                        normalization: dict[str, Any], details: dict[str, Any]) -> None:
    """Write a linear bundle; it appears complete or not at all."""
    with atomic_directory(directory) as partial:
        features.save(partial)
        for head in heads:
            for part, array in head.arrays().items():
                np.save(partial / head_file(head.estimator, part), np.ascontiguousarray(array),
                        allow_pickle=False)
        write_common(partial, labels, normalization, {
            "architecture": LINEAR_ARCHITECTURE, "features": features.settings(),
            "heads": [{"estimator": head.estimator, "layout": head.layout,
                       "precision": head.precision, "rank": head.rank,
                       "temperature": temperature, "share": share}
                      for head, temperature, share in zip(heads, temperatures, shares,
                                                          strict=True)],
            **details})


def bundle_bytes(directory: str | Path) -> int:
    """The bytes of a bundle's files on disk."""
    return sum(path.stat().st_size for path in Path(directory).iterdir() if path.is_file())


def load_head(directory: Path, entry: dict[str, Any], features: int, categories: int) -> Head:
    """One head's arrays, each checked against the config, the features and the labels:
    MeliError naming the file that does not fit."""
    estimator, layout, precision = entry["estimator"], entry.get("layout"), entry["precision"]
    rank = int(entry["rank"])
    if estimator not in ESTIMATORS or precision not in PRECISIONS or rank < 0:
        raise TypeError(f"a head of estimator {estimator!r}, precision {precision!r}, "
                        f"rank {rank}")
    if layout not in (SPARSE, FACTORED) or (layout == FACTORED) != (rank > 0):
        raise TypeError(f"the {estimator} head's layout {layout!r} (rank {rank}): a bundle "
                        f"of an earlier version? retrain it with `dvc repro linear`")
    parts = ["intercept", *(("scales",) if precision == "int8" else ())]
    parts += ["indptr", "categories", "weights"] if layout == SPARSE \
        else ["rows", "coef", "projection"]
    arrays = {part: np.load(directory / head_file(estimator, part), allow_pickle=False)
              for part in parts}
    check = _Checker(directory, estimator, arrays)
    check.array("intercept", (np.float32,), (categories,), finite=True)
    if layout == SPARSE:
        indptr = check.array("indptr", (np.int32, np.int64), (features + 1,))
        entries = check.array("categories", (np.uint16, np.int32), None)
        values = check.array("weights", (np.dtype(precision).type,), None, finite=True)
        # Of the three lengths, the one that differs from the other two names the file.
        if len(entries) != len(values):
            part = "categories" if indptr[-1] == len(values) else "weights"
            check.fail(part, f"{len(arrays[part])} entries, where "
                             f"{head_file(estimator, 'indptr')} has {indptr[-1]}")
        if indptr[0] != 0 or (np.diff(indptr) < 0).any() or indptr[-1] != len(entries):
            check.fail("indptr", f"does not run from 0 up to the {len(entries)} entries of "
                                 f"{head_file(estimator, 'categories')}")
        if len(entries) and (entries.min() < 0 or entries.max() >= categories):
            check.fail("categories", f"a category index out of 0..{categories - 1}")
        # Increasing within each feature's run: a step down (or a repeat) is only allowed
        # where a new feature begins.
        steps = np.diff(entries.astype(np.int64)) <= 0
        steps[indptr[1:-1][(indptr[1:-1] > 0) & (indptr[1:-1] < len(entries))] - 1] = False
        if steps.any():
            check.fail("categories", "not increasing within a feature's entries")
        if precision == "int8":
            check.array("scales", (np.float32,), (features,), finite=True, nonnegative=True)
        return SparseHead(estimator, indptr.astype(np.int64), entries, arrays["weights"],
                          arrays.get("scales"), arrays["intercept"])
    rows = check.array("rows", (np.int32, np.int64), None)
    if len(rows) and (rows[0] < 0 or rows[-1] >= features or (np.diff(rows) <= 0).any()):
        check.fail("rows", f"not increasing feature ids in 0..{features - 1}")
    check.array("coef", (np.dtype(precision).type,), (len(rows), rank), finite=True)
    check.array("projection", (np.float32,), (rank, categories), finite=True)
    if precision == "int8":
        check.array("scales", (np.float32,), (len(rows),), finite=True, nonnegative=True)
    return FactoredHead(estimator, features, rows.astype(np.int64), arrays["coef"],
                        arrays.get("scales"), arrays["projection"], arrays["intercept"])


class _Checker:
    def __init__(self, directory: Path, estimator: str, arrays: dict[str, np.ndarray]):
        self.directory, self.estimator, self.arrays = directory, estimator, arrays

    def fail(self, part: str, problem: str) -> None:
        raise MeliError(f"{self.directory / head_file(self.estimator, part)}: {problem}")

    def array(self, part: str, dtypes: tuple[type, ...], shape: tuple[int, ...] | None, *,
              finite: bool = False, nonnegative: bool = False) -> np.ndarray:
        array = self.arrays[part]
        names = " or ".join(np.dtype(dtype).name for dtype in dtypes)
        if array.dtype not in [np.dtype(dtype) for dtype in dtypes]:
            self.fail(part, f"{array.dtype}{array.shape}, where {names} is expected")
        if shape is None and array.ndim != 1 or shape is not None and array.shape != shape:
            self.fail(part, f"{array.dtype}{array.shape}, where the features, rank and labels "
                            f"need {names}{shape if shape is not None else '(n,)'}")
        if finite and array.dtype.kind == "f" and not np.isfinite(array).all():
            self.fail(part, "holds a value that is not finite")
        if nonnegative and (array < 0).any():
            self.fail(part, "holds a negative scale")
        return array


def softmax(values: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, in place where it can."""
    values = values - values.max(axis=1, keepdims=True)
    np.exp(values, out=values)
    values /= values.sum(axis=1, keepdims=True)
    return values.astype(np.float32, copy=False)


class LinearClassifier(Classifier):
    """sum of share x softmax((TF-IDF(title) @ W + intercept) / temperature) over the heads, on
    the CPU."""

    def __init__(self, directory: Path, config: dict[str, Any], labels: list[str],
                 normalization: TextParams):
        super().__init__(directory, config, labels, normalization)
        self.heads: list[Head] = []
        self.temperatures: list[np.float32] = []
        self.shares: list[np.float32] = []
        try:
            self.features = TfidfFeatures.load(directory, config["features"])
            heads = config["heads"]
            if not isinstance(heads, list) or not 1 <= len(heads) <= len(ESTIMATORS):
                raise TypeError("'heads' must list one or two heads")
            for entry in heads:
                self.heads.append(load_head(directory, entry, self.features.size, len(labels)))
                self.temperatures.append(np.float32(entry["temperature"]))
                self.shares.append(np.float32(entry["share"]))
        except FileNotFoundError as error:
            raise MeliError(f"{directory}: incomplete bundle, {Path(error.filename).name} "
                            f"is missing") from None
        except (KeyError, TypeError) as error:
            raise MeliError(f"{directory / 'config.json'}: no valid linear settings "
                            f"({error})") from None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            # allow_pickle=False refuses an object array; a damaged header is a ValueError.
            raise MeliError(f"{directory}: damaged linear bundle: "
                            f"{str(error).splitlines()[0] if str(error) else error!r}") from None

    def scores(self, texts: pa.Array) -> list[np.ndarray]:
        """Each head's decision scores of normalized texts, before its temperature."""
        matrix = self.features.matrix(texts)
        return [head.scores(matrix) for head in self.heads]

    def probabilities(self, titles: list[str] | pa.Array, batch_size: int = 4096) -> np.ndarray:
        """Sub-batches of `batch_size` titles are scored side by side on every core: numpy's
        sorts and searches and PyTorch's embedding bags release the GIL, and each row's figures
        are its own, so the result is the same at any thread count."""
        titles = as_array(titles)
        pieces = [titles.slice(start, batch_size) for start in range(0, len(titles), batch_size)]
        if not pieces:
            return np.zeros((0, len(self.labels)), np.float32)
        if len(pieces) == 1:
            return self._probabilities(pieces[0])
        with ThreadPoolExecutor(min(len(pieces), _cores())) as pool:
            return np.concatenate(list(pool.map(self._probabilities, pieces)))

    def _probabilities(self, titles: pa.Array) -> np.ndarray:
        parts = self.scores(self.normalize(titles))
        total = softmax(parts[0] / self.temperatures[0])
        if len(parts) == 1:
            return total
        total *= self.shares[0]
        for part, temperature, share in zip(parts[1:], self.temperatures[1:], self.shares[1:],
                                            strict=True):
            total += share * softmax(part / temperature)
        return total

    def known_words(self, titles: list[str] | pa.Array) -> np.ndarray:
        return self.features.known_words(self.normalize(titles))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
