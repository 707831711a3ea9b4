"""Fitting the linear model: one weight per (TF-IDF feature, category) and a bias per category,
then a temperature that makes softmax(scores / T) calibrated probabilities.

Two estimators (`linear.estimator`), both deterministic for a seed:
- `svm`: liblinear's one-vs-rest L2-regularized squared hinge (scikit-learn's LinearSVC), the
  most accurate on the real sample; it holds the whole feature matrix in memory and runs on one
  core, so `auto` uses it up to `svm_max_rows` training titles.
- `softmax`: multinomial logistic regression by mini-batch SGD over the sparse rows, featurized a
  block of batches at a time from the titles: memory is the weights plus one block, whatever the
  number of titles. The gradient of a batch touches only the rows of the features it holds
  (embedding_bag gathers them, index_add_ scatters their gradient back): no dense gradient, no
  optimizer state. The step size decays linearly to 0, as in fastText.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from meli.data.tfidf import TfidfFeatures, chunks, fit_features
from meli.params import LinearParams
from meli.training.optimization import class_weight_array

log = logging.getLogger(__name__)


@dataclass
class LinearFit:
    features: TfidfFeatures
    coef: np.ndarray       # (features, classes) float32
    intercept: np.ndarray  # (classes,) float32
    estimator: str
    seconds: float


def fit(texts: pa.Array, labels: np.ndarray, num_classes: int,
        params: LinearParams) -> LinearFit:
    """Fit the n-gram vocabularies, idf and weights on normalized training texts."""
    started = time.perf_counter()
    features = fit_features(texts, params)
    estimator = params.estimator
    if estimator == "auto":
        estimator = "svm" if len(texts) <= params.svm_max_rows else "softmax"
    labels = np.asarray(labels, dtype=np.int64)
    fitter = _fit_svm if estimator == "svm" else _fit_softmax
    coef, intercept = fitter(features, texts, labels, num_classes, params)
    return LinearFit(features, coef, intercept, estimator, time.perf_counter() - started)


def scores(features: TfidfFeatures, coef: np.ndarray, intercept: np.ndarray,
           texts: pa.Array) -> np.ndarray:
    """Decision scores (titles x classes, float32) of normalized texts."""
    return np.asarray(features.matrix(texts) @ coef) + intercept


def fit_temperature(values: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The temperature T minimizing the log loss of softmax(values / T), and that log loss.

    The log loss is convex in 1/T, so a bounded search over log T finds the optimum.
    """
    from scipy.optimize import minimize_scalar

    values = values.astype(np.float64) - values.max(axis=1, keepdims=True)
    labels = np.asarray(labels, dtype=np.int64)
    true_scores = values[np.arange(len(labels)), labels]

    def log_loss(log_temperature: float) -> float:
        temperature = math.exp(log_temperature)
        normalizer = np.log(np.exp(values / temperature).sum(axis=1))
        return float((normalizer - true_scores / temperature).mean())

    result = minimize_scalar(log_loss, bounds=(math.log(1e-3), math.log(1e3)), method="bounded",
                             options={"xatol": 1e-6})
    return float(math.exp(result.x)), float(result.fun)


def _fit_svm(features: TfidfFeatures, texts: pa.Array, labels: np.ndarray, num_classes: int,
             params: LinearParams) -> tuple[np.ndarray, np.ndarray]:
    """liblinear's one-vs-rest SVM. Unweighted, its binary problems are fitted `params.threads`
    side by side (each its own seeded problem: the same weights at any thread count); with class
    weights, liblinear's own one-vs-rest weighs each category's positives in its problem, which
    one shared binary estimator per category cannot, so it runs on one core."""
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import LinearSVC

    matrix = sp.vstack([features.matrix(chunk) for chunk in chunks(texts, 100_000)]).tocsr()
    seen = np.unique(labels)
    weights = class_weight_array(labels, num_classes, params.class_weight)
    svm = LinearSVC(C=params.C, random_state=params.seed,
                    class_weight=None if weights is None
                    else {int(category): float(weights[category]) for category in seen})
    # The categories it knows nothing of keep weight 0 and a low bias.
    coef = np.zeros((features.size, num_classes), np.float32)
    intercept = np.full(num_classes, -1.0, np.float32)
    if weights is None and len(seen) > 2:
        fitted = OneVsRestClassifier(svm, n_jobs=params.threads).fit(matrix, labels)
        for category, estimator in zip(fitted.classes_, fitted.estimators_, strict=True):
            coef[:, category] = estimator.coef_[0]
            intercept[category] = estimator.intercept_[0]
        return coef, intercept
    svm.fit(matrix, labels)
    seen_coef, seen_intercept = svm.coef_, svm.intercept_
    if len(seen) == 2:  # liblinear's binary case: one score s for seen[1], -s for seen[0]
        seen_coef = np.vstack([-seen_coef, seen_coef])
        seen_intercept = np.concatenate([-seen_intercept, seen_intercept])
    coef[:, svm.classes_] = seen_coef.T
    intercept[svm.classes_] = seen_intercept
    return coef, intercept


def _fit_softmax(features: TfidfFeatures, texts: pa.Array, labels: np.ndarray,
                 num_classes: int, params: LinearParams) -> tuple[np.ndarray, np.ndarray]:
    import torch
    import torch.nn.functional as functional

    threads = torch.get_num_threads()
    torch.set_num_threads(params.threads)
    try:
        table = torch.zeros(features.size, num_classes)
        bias = torch.zeros(num_classes)
        class_weights = class_weight_array(labels, num_classes, params.class_weight)
        if class_weights is not None:
            class_weights = torch.tensor(class_weights, dtype=torch.float32)
        shuffler = np.random.default_rng(params.seed)
        block = params.batch_size * 64  # featurizing pays off on large blocks
        total_steps = params.epochs * math.ceil(len(texts) / params.batch_size)
        step = 0
        for epoch in range(params.epochs):
            order = shuffler.permutation(len(texts))
            for start in range(0, len(order), block):
                rows = order[start:start + block]
                matrix = features.matrix(texts.take(pa.array(rows)))
                indices = torch.from_numpy(matrix.indices.astype(np.int64))
                values = torch.from_numpy(matrix.data)
                lengths = torch.from_numpy(np.diff(matrix.indptr))
                targets = torch.from_numpy(labels[rows])
                for first in range(0, len(rows), params.batch_size):
                    last = min(first + params.batch_size, len(rows))
                    low, high = int(matrix.indptr[first]), int(matrix.indptr[last])
                    ids, weights = indices[low:high], values[low:high]
                    offsets = torch.from_numpy(matrix.indptr[first:last] - low)
                    scores = functional.embedding_bag(ids, table, offsets, mode="sum",
                                                      per_sample_weights=weights) + bias
                    # d(summed cross entropy) / d scores = softmax - one-hot.
                    gradient = torch.softmax(scores, dim=1)
                    batch_targets = targets[first:last]
                    gradient[torch.arange(last - first), batch_targets] -= 1.0
                    if class_weights is not None:
                        gradient *= class_weights[batch_targets, None]
                    rate = params.learning_rate * max(0.0, 1.0 - step / total_steps)
                    bias.add_(gradient.sum(dim=0), alpha=-rate)
                    # Each feature's row gets the sum over its titles of value x gradient.
                    distinct, position = torch.unique(ids, return_inverse=True)
                    owner = torch.repeat_interleave(torch.arange(last - first),
                                                    lengths[first:last])
                    rows_gradient = torch.zeros(len(distinct), num_classes).index_add_(
                        0, position, weights[:, None] * gradient[owner])
                    table.index_add_(0, distinct, rows_gradient, alpha=-rate)
                    step += 1
            log.info("linear: softmax epoch %d of %d", epoch + 1, params.epochs)
        return table.numpy(), bias.numpy()
    finally:
        torch.set_num_threads(threads)
