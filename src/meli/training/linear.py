"""Fitting the linear model: TF-IDF features, then one or two heads over them, each a weight
per (feature, category) and a bias per category, then a temperature per head that makes
softmax(scores / T) calibrated probabilities.

Two estimators, both deterministic for a seed:
- `svm`: liblinear's one-vs-rest L2-regularized squared hinge (scikit-learn's LinearSVC), the
  most accurate alone on the real sample; it holds the whole feature matrix in memory and runs
  on one core per category, so `auto` uses it up to `svm_max_rows` training titles.
- `softmax`: multinomial logistic regression by mini-batch SGD over the sparse rows, featurized a
  block of batches at a time from the titles: memory is the weights plus one block, whatever the
  number of titles. The gradient of a batch touches only the rows of the features it holds
  (embedding_bag gathers them, index_add_ scatters their gradient back): no dense gradient, no
  optimizer state. The step size decays linearly to 0, as in fastText. With `rank` above 0 the
  weights are factored, (features x rank) @ (rank x categories), fastText's own shape: still a
  linear function of the TF-IDF features, but a million features and 1,600 categories take
  0.5 GB instead of 6.4 GB, and a step gathers `rank` floats per feature instead of one per
  category. One thread featurizes the next block of titles while the others step.
`linear.estimator: both` fits the two: the hinge and the logistic loss err on different titles,
and the stage mixes their calibrated probabilities with a weight chosen on validation.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from meli.bundles.linear import Head
from meli.bundles.metrics import balanced_accuracy
from meli.data.tfidf import TfidfFeatures, chunks, fit_features
from meli.errors import MeliError
from meli.params import LinearParams
from meli.training.optimization import class_weight_array

log = logging.getLogger(__name__)


@dataclass
class LinearFit:
    features: TfidfFeatures
    heads: list[Head]
    seconds: float

    @property
    def estimator(self) -> str:
        return "+".join(head.estimator for head in self.heads)


def estimators(params: LinearParams, rows: int) -> list[str]:
    """The heads `linear.estimator` fits on this many training titles."""
    if params.estimator == "auto":
        return ["svm", "softmax"] if rows <= params.svm_max_rows else ["softmax"]
    return ["svm", "softmax"] if params.estimator == "both" else [params.estimator]


def fit(texts: pa.Array, labels: np.ndarray, num_classes: int,
        params: LinearParams) -> LinearFit:
    """Fit the n-gram vocabularies, idf and each head's weights on normalized training texts."""
    started = time.perf_counter()
    features = fit_features(texts, params)
    labels = np.asarray(labels, dtype=np.int64)
    heads = []
    for estimator in estimators(params, len(texts)):
        fitter = _fit_svm if estimator == "svm" else _fit_softmax
        heads.append(Head(estimator, *fitter(features, texts, labels, num_classes, params)))
        log.info("linear: %s head fitted (%.1fs so far)", estimator,
                 time.perf_counter() - started)
    return LinearFit(features, heads, time.perf_counter() - started)


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


def mixing_weights(probabilities: list[np.ndarray], labels: np.ndarray, num_classes: int,
                   steps: int = 20) -> list[float]:
    """The heads' shares (multiples of 1/steps, summing to 1) whose mixture of calibrated
    probabilities has the best validation balanced accuracy, lower log loss breaking ties (the
    ensemble's rule): one head keeps 1; of two, the first's share is searched on the grid."""
    if len(probabilities) == 1:
        return [1.0]
    if len(probabilities) != 2:
        raise ValueError("mixing_weights: one or two heads")
    first, second = probabilities
    rows = np.arange(len(labels))
    best, best_share = None, 0.0
    for share in np.arange(steps + 1) / steps:
        mixture = share * first + (1 - share) * second
        loss = float(-np.log(np.maximum(mixture[rows, labels], 1e-12)).mean())
        value = (balanced_accuracy(labels, mixture.argmax(axis=1), num_classes), -loss)
        if best is None or value > best:
            best, best_share = value, float(share)
    return [best_share, 1.0 - best_share]


def _fit_svm(features: TfidfFeatures, texts: pa.Array, labels: np.ndarray, num_classes: int,
             params: LinearParams) -> tuple[np.ndarray, np.ndarray, None]:
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
        return coef, intercept, None
    svm.fit(matrix, labels)
    seen_coef, seen_intercept = svm.coef_, svm.intercept_
    if len(seen) == 2:  # liblinear's binary case: one score s for seen[1], -s for seen[0]
        seen_coef = np.vstack([-seen_coef, seen_coef])
        seen_intercept = np.concatenate([-seen_intercept, seen_intercept])
    coef[:, svm.classes_] = seen_coef.T
    intercept[svm.classes_] = seen_intercept
    return coef, intercept, None


def _fit_softmax(features: TfidfFeatures, texts: pa.Array, labels: np.ndarray,
                 num_classes: int, params: LinearParams) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray | None]:
    import torch
    import torch.nn.functional as functional

    threads = torch.get_num_threads()
    # One core featurizes the next block while the others step through this one.
    torch.set_num_threads(max(1, params.threads - 1))
    # A confident softmax over 1,600 categories is full of subnormal floats, on which x86
    # arithmetic is about 100x slower (measured: a step's products 120 ms against 0.7 ms).
    flushing = torch.set_flush_denormal(True)
    generator = torch.Generator().manual_seed(params.seed)
    try:
        if params.rank:
            # fastText's start: small random feature vectors, a zero projection.
            table = (torch.rand(features.size, params.rank, generator=generator) * 2 - 1) \
                / params.rank
            projection = torch.zeros(params.rank, num_classes)
        else:
            table, projection = torch.zeros(features.size, num_classes), None
        bias = torch.zeros(num_classes)
        class_weights = class_weight_array(labels, num_classes, params.class_weight)
        if class_weights is not None:
            class_weights = torch.tensor(class_weights, dtype=torch.float32)
        shuffler = np.random.default_rng(params.seed)
        block = params.batch_size * 64  # featurizing pays off on large blocks
        total_steps = params.epochs * math.ceil(len(texts) / params.batch_size)
        step, loss = 0, 0.0
        orders = [shuffler.permutation(len(texts)) for _ in range(params.epochs)]
        blocks = [(epoch, order[start:start + block])
                  for epoch, order in enumerate(orders) for start in range(0, len(order), block)]

        def featurized(rows: np.ndarray) -> sp.csr_matrix:
            return features.matrix(texts.take(pa.array(rows)))

        with ThreadPoolExecutor(1) as pool:
            upcoming = pool.submit(featurized, blocks[0][1])
            for number, (epoch, rows) in enumerate(blocks):
                matrix = upcoming.result()
                if number + 1 < len(blocks):
                    upcoming = pool.submit(featurized, blocks[number + 1][1])
                indices = torch.from_numpy(matrix.indices.astype(np.int64))
                values = torch.from_numpy(matrix.data)
                lengths = torch.from_numpy(np.diff(matrix.indptr))
                targets = torch.from_numpy(labels[rows])
                for first in range(0, len(rows), params.batch_size):
                    last = min(first + params.batch_size, len(rows))
                    low, high = int(matrix.indptr[first]), int(matrix.indptr[last])
                    ids, weights = indices[low:high], values[low:high]
                    offsets = torch.from_numpy(matrix.indptr[first:last] - low)
                    hidden = functional.embedding_bag(ids, table, offsets, mode="sum",
                                                      per_sample_weights=weights)
                    scores = (hidden if projection is None else hidden @ projection) + bias
                    # d(summed cross entropy) / d scores = softmax - one-hot.
                    gradient = torch.softmax(scores, dim=1)
                    batch_targets = targets[first:last]
                    batch_rows = torch.arange(last - first)
                    chosen = gradient[batch_rows, batch_targets]
                    loss += float(-torch.log(chosen.clamp_min(1e-30)).sum())
                    gradient[batch_rows, batch_targets] -= 1.0
                    if class_weights is not None:
                        gradient *= class_weights[batch_targets, None]
                    rate = params.learning_rate * max(0.0, 1.0 - step / total_steps)
                    bias.add_(gradient.sum(dim=0), alpha=-rate)
                    if projection is not None:
                        hidden_gradient = gradient @ projection.T
                        projection.add_(hidden.T @ gradient, alpha=-rate)
                        gradient = hidden_gradient
                    # Each feature's row moves by the mean over the batch's titles that hold it
                    # of value x gradient: a sum would move a frequent n-gram (in most of the
                    # 256 titles) hundreds of times further than a rare one, which diverged on
                    # the 4.9M-title file at the default step (the mean trains on).
                    distinct, position = torch.unique(ids, return_inverse=True)
                    owner = torch.repeat_interleave(batch_rows, lengths[first:last])
                    rows_gradient = torch.zeros(len(distinct), table.shape[1]).index_add_(
                        0, position, weights[:, None] * gradient[owner])
                    rows_gradient /= torch.bincount(position, minlength=len(distinct))[:, None]
                    table.index_add_(0, distinct, rows_gradient, alpha=-rate)
                    step += 1
                if number + 1 == len(blocks) or blocks[number + 1][0] != epoch:
                    loss /= len(texts)
                    if not math.isfinite(loss) or not bool(torch.isfinite(bias).all()):
                        raise MeliError(f"linear: the softmax diverged in epoch {epoch + 1} "
                                        f"(training loss {loss}); lower linear.learning_rate "
                                        f"(now {params.learning_rate})")
                    log.info("linear: softmax epoch %d of %d, training loss %.4f", epoch + 1,
                             params.epochs, loss)
                    loss = 0.0
        return (table.numpy(), bias.numpy(),
                None if projection is None else projection.numpy())
    finally:
        torch.set_num_threads(threads)
        if flushing:
            torch.set_flush_denormal(False)
