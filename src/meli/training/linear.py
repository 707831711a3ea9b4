"""Fitting the linear model: TF-IDF features, then one or two heads over them, each a weight
per (feature, category) and a bias per category, then a temperature per head that makes
softmax(scores / T) calibrated probabilities.

Two estimators, both deterministic for a seed:
- `svm`: liblinear's one-vs-rest L2-regularized squared hinge (scikit-learn's LinearSVC), the
  most accurate alone on the real sample; it holds the whole feature matrix in memory and fits
  groups of categories side by side, one core each, so `auto` uses it up to `svm_max_rows`
  training titles. Its weights are kept sparse: liblinear leaves most at exactly 0.
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

Then, on validation titles only (`compact_heads`): a temperature per head, the heads' shares,
and how much of each head the bundle keeps (meli.bundles.linear.compact), the smallest share
of its weights or rows that keeps the mixture within `linear.max_loss` of the heads as fitted.
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

from meli.bundles.linear import SPARSE, FactoredHead, Head, SparseHead, compact, softmax
from meli.bundles.metrics import balanced_accuracy
from meli.data.tfidf import TfidfFeatures, chunks, fit_features
from meli.errors import MeliError
from meli.params import LinearParams
from meli.progress import Progress
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
        heads.append(fitter(features, texts, labels, num_classes, params))
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


@dataclass
class Mixture:
    """Heads calibrated on validation titles: a temperature each and their shares."""

    heads: list[Head]
    temperatures: list[float]
    shares: list[float]
    log_loss: float  # of the mixture on the calibration titles
    balanced_accuracy: float  # on the calibration titles
    kept: list[float] | None = None  # the share of its weights or rows each head keeps

    def probabilities(self, matrix: sp.csr_matrix) -> np.ndarray:
        """sum over heads of share x softmax(scores / temperature) of a TF-IDF matrix."""
        total = None
        for head, temperature, share in zip(self.heads, self.temperatures, self.shares,
                                            strict=True):
            part = np.float32(share) * softmax(head.scores(matrix) / np.float32(temperature))
            total = part if total is None else total + part
        return total


@dataclass
class _Calibrated:
    head: Head
    temperature: float
    probabilities: np.ndarray  # softmax(scores / temperature) of the calibration titles


def _calibrated(head: Head, matrix: sp.csr_matrix, truth: np.ndarray,
                num_classes: int) -> _Calibrated:
    values = head.scores(matrix)
    temperature, log_loss = fit_temperature(values, truth)
    log.info("linear: %s head (%s, %s, %d weights), temperature %.3f, validation log loss "
             "%.4f, balanced accuracy %.4f", head.estimator, head.layout, head.precision,
             head.stored, temperature, log_loss,
             balanced_accuracy(truth, values.argmax(axis=1), num_classes))
    return _Calibrated(head, temperature, softmax(values / np.float32(temperature)))


def _mixture(parts: list[_Calibrated], truth: np.ndarray, num_classes: int) -> Mixture:
    shares = mixing_weights([part.probabilities for part in parts], truth, num_classes)
    mixed = sum(share * part.probabilities for share, part in zip(shares, parts, strict=True))
    chosen = mixed[np.arange(len(truth)), truth]
    return Mixture([part.head for part in parts], [part.temperature for part in parts], shares,
                   float(-np.log(np.maximum(chosen, 1e-12)).mean()),
                   balanced_accuracy(truth, mixed.argmax(axis=1), num_classes))


def calibrate(heads: list[Head], matrix: sp.csr_matrix, truth: np.ndarray,
              num_classes: int) -> Mixture:
    """A temperature per head (least log loss), then the heads' shares (best balanced
    accuracy), on validation titles only."""
    return _mixture([_calibrated(head, matrix, truth, num_classes) for head in heads], truth,
                    num_classes)


def compact_heads(heads: list[Head], matrix: sp.csr_matrix, truth: np.ndarray,
                  num_classes: int, params: LinearParams) -> tuple[Mixture, Mixture]:
    """The heads as the bundle keeps them, calibrated, and the heads as fitted, calibrated the
    same way, on validation titles only. Head by head, the shares `params.keep_weights` (sparse)
    or `params.keep_rows` (factored) are tried from the smallest up, the heads before it
    already compacted and those after it as fitted; the first whose mixture stays within its
    part of `params.max_loss` (the first of two heads half of it, the second the rest) of the
    balanced accuracy of the heads as fitted is kept (the largest if none is)."""
    if len(heads) == 1:
        # One head's choice needs no temperature (it moves no argmax): on the course's file,
        # 50,000 titles x 1,600 categories, a temperature's fit is the dearer part of a trial.
        head = heads[0]
        reference = balanced_accuracy(truth, head.scores(matrix).argmax(axis=1), num_classes)
        trial, share = _smallest(
            head, params, reference, reference - params.max_loss,
            lambda trial: balanced_accuracy(truth, trial.scores(matrix).argmax(axis=1),
                                            num_classes))
        compacted = calibrate([trial], matrix, truth, num_classes)
        compacted.kept = [share]
        return compacted, calibrate(heads, matrix, truth, num_classes)
    chosen = [_calibrated(head, matrix, truth, num_classes) for head in heads]
    reference = _mixture(chosen, truth, num_classes)
    kept, tried = [], {}
    for position, head in enumerate(heads):

        def accuracy(trial: Head, position: int = position) -> float:
            tried["last"] = _calibrated(trial, matrix, truth, num_classes)
            mixed = chosen[:position] + [tried["last"]] + chosen[position + 1:]
            return _mixture(mixed, truth, num_classes).balanced_accuracy

        # Each head may spend its part of the loss: a first head taking all of it would leave
        # the second none.
        threshold = reference.balanced_accuracy \
            - params.max_loss * (position + 1) / len(heads)
        trial, share = _smallest(head, params, reference.balanced_accuracy, threshold,
                                 accuracy)
        chosen[position] = tried["last"]
        kept.append(share)
    compacted = _mixture(chosen, truth, num_classes)
    compacted.kept = kept
    return compacted, reference


def _smallest(head: Head, params: LinearParams, reference: float, threshold: float,
              accuracy) -> tuple[Head, float]:
    """The head compacted to the smallest of its shares whose `accuracy(trial)` reaches
    `threshold`, or to the largest share if none does."""
    shares = sorted(params.keep_weights if head.layout == SPARSE else params.keep_rows)
    for share in shares:
        trial = compact(head, share, params.precision)
        value = accuracy(trial)
        if value >= threshold or share == shares[-1]:
            log.info("linear: the %s head keeps %s of its %s (%d weights): validation balanced "
                     "accuracy %.4f, as fitted %.4f", head.estimator, share,
                     "weights" if head.layout == SPARSE else "feature rows", trial.stored,
                     value, reference)
            return trial, share
    raise AssertionError("unreachable: the largest share is always taken")


def _fit_svm(features: TfidfFeatures, texts: pa.Array, labels: np.ndarray, num_classes: int,
             params: LinearParams) -> SparseHead:
    """liblinear's one-vs-rest SVM, its weights kept sparse (liblinear leaves most at exactly 0).

    scikit-learn's LinearSVC copies the whole feature matrix into liblinear's own format on
    every fit (measured on the real sample: about a third of a one-category fit), so fitting the
    categories one by one pays that copy 632 times. liblinear's own one-vs-rest fits every
    category of one call on one copy, on one core: the categories are fitted in groups of
    `SVM_GROUP` instead, the groups `params.threads` side by side in processes, each group one
    call on one copy whose titles of other groups share one extra label (its own problem, whose
    weights are dropped, costs little with a tiny weight). A category's problem is the same
    either way: its titles against all the others, at the same C (liblinear weighs a
    category's own titles only, so class weights mean what they mean in one call). The groups
    are fixed by the categories alone, each seeded the same: the same weights at any thread
    count."""
    from joblib import Parallel, delayed

    matrix = sp.vstack([features.matrix(chunk) for chunk in chunks(texts, 100_000)]).tocsr()
    matrix = matrix.astype(np.float64)  # what liblinear reads; converted once, not per group
    # The features renumbered most frequent first: liblinear reads and writes its weights at
    # each title's features, and the frequent ones then share cache lines (measured on the real
    # sample: a category's problem about a tenth faster, its weights the same to 1e-14).
    order = np.argsort(-np.bincount(matrix.indices, minlength=features.size), kind="stable")
    renumbered = np.empty_like(order)
    renumbered[order] = np.arange(len(order))
    matrix.indices = renumbered[matrix.indices].astype(matrix.indices.dtype)
    matrix.has_sorted_indices = False
    matrix.sort_indices()
    seen = np.unique(labels)
    if len(seen) < 2:
        raise MeliError("linear: the training split holds a single category; the SVM needs "
                        "two or more")
    weights = class_weight_array(labels, num_classes, params.class_weight)
    class_weight = {} if weights is None else {int(category): float(weights[category])
                                               for category in seen}
    # Groups of SVM_GROUP / 2 to SVM_GROUP categories, never one alone beside the others: two
    # labels are liblinear's binary case, where the others' weight would weigh the negatives.
    groups = np.array_split(seen, -(-len(seen) // SVM_GROUP))
    tasks = [delayed(_fit_svm_group)(matrix, labels, group, len(groups) > 1, class_weight,
                                     params.C, params.seed) for group in groups]
    fitted = []
    with Progress("linear: svm", len(seen), "categories", logger=log) as progress:
        # In order, each group as soon as it and those before it are done.
        for result in Parallel(n_jobs=min(params.threads, len(tasks)),
                               return_as="generator")(tasks):
            fitted.append(result)
            progress.update(sum(len(group) for group in groups[:len(fitted)]))
    # The categories it knows nothing of keep no weight and a low bias.
    intercept = np.full(num_classes, -1.0, np.float32)
    rows, columns, values = [], [], []
    for feature_ids, categories, group_values, group, group_intercept in fitted:
        rows.append(order[feature_ids])
        columns.append(categories)
        values.append(group_values)
        intercept[group] = group_intercept
    coef = sp.csr_matrix((np.concatenate(values),
                          (np.concatenate(rows), np.concatenate(columns))),
                         shape=(features.size, num_classes), dtype=np.float32)
    return SparseHead.from_matrix("svm", coef, intercept)


SVM_GROUP = 32  # categories per liblinear call
_OTHERS = -1  # the label of a group's call for the titles of every other group
# The others' weight scales C in their own problem only (liblinear's one-vs-rest weighs each
# category's positives by its weight, the negatives by C alone): small, it ends in a few passes.
_OTHERS_WEIGHT = 1e-3


def _fit_svm_group(matrix: sp.csr_matrix, labels: np.ndarray, group: np.ndarray, others: bool,
                   class_weight: dict[int, float], C: float, seed: int):
    """One liblinear call for a group of categories: (feature ids, categories, weights) of its
    nonzero weights, the group and its biases."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    weights = {category: class_weight.get(int(category), 1.0) for category in group}
    if others:
        labels = np.where(np.isin(labels, group), labels, _OTHERS)
        weights[_OTHERS] = _OTHERS_WEIGHT
    svm = LinearSVC(C=C, random_state=seed, class_weight=weights)
    with warnings.catch_warnings():
        # The others' own problem may stop at the iteration limit: its weights are dropped.
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(matrix, labels)
    coef, intercept = svm.coef_, svm.intercept_
    if len(svm.classes_) == 2:  # liblinear's binary case: one score s for classes_[1], -s else
        coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
    mine = np.isin(svm.classes_, group)
    coef, intercept, classes = coef[mine], intercept[mine], svm.classes_[mine]
    positions, feature_ids = np.nonzero(coef)
    return (feature_ids.astype(np.int32), classes[positions].astype(np.int32),
            coef[positions, feature_ids].astype(np.float32), classes,
            intercept.astype(np.float32))


def _fit_softmax(features: TfidfFeatures, texts: pa.Array, labels: np.ndarray,
                 num_classes: int, params: LinearParams) -> Head:
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

        def featurized(rows: np.ndarray) -> tuple[sp.csr_matrix, list]:
            """A block's TF-IDF rows and, per batch, what its step scatters the gradient
            with: the batch's distinct features and the transposed rows (distinct features x
            titles), each feature's values divided by the titles holding it. Each feature's
            row moves by the mean over the batch's titles that hold it of value x gradient: a
            sum would move a frequent n-gram (in most of the 256 titles) hundreds of times
            further than a rare one, which diverged on the 4.9M-title file at the default step
            (the mean trains on). Built here, on the core that is otherwise idle."""
            matrix = features.matrix(texts.take(pa.array(rows)))
            scatters = []
            for first in range(0, len(rows), params.batch_size):
                columns = matrix[first:first + params.batch_size].tocsc()
                counts = np.diff(columns.indptr)
                distinct = np.flatnonzero(counts)
                transposed = sp.csr_matrix(
                    (columns.data / np.repeat(counts[distinct], counts[distinct])
                     .astype(np.float32),
                     columns.indices, np.append(columns.indptr[distinct], columns.nnz)),
                    shape=(len(distinct), columns.shape[0]))
                scatters.append((torch.from_numpy(distinct), transposed))
            return matrix, scatters

        done_in_epoch = 0  # titles, for the running loss of a progress line

        def note() -> str:  # called by progress.update, inside the loop: `epoch` is bound
            return (f"epoch {epoch + 1} of {params.epochs}, training loss so far "
                    f"{loss / max(done_in_epoch, 1):.4f}")

        with ThreadPoolExecutor(1) as pool, Progress("linear: softmax", total_steps, "steps",
                                                     note=note, logger=log) as progress:
            upcoming = pool.submit(featurized, blocks[0][1])
            for number, (epoch, rows) in enumerate(blocks):
                matrix, scatters = upcoming.result()
                if number + 1 < len(blocks):
                    upcoming = pool.submit(featurized, blocks[number + 1][1])
                indices = torch.from_numpy(matrix.indices.astype(np.int64))
                values = torch.from_numpy(matrix.data)
                targets = torch.from_numpy(labels[rows])
                for batch, first in enumerate(range(0, len(rows), params.batch_size)):
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
                    distinct, transposed = scatters[batch]
                    table.index_add_(0, distinct, torch.from_numpy(transposed @ gradient.numpy()),
                                     alpha=-rate)
                    step += 1
                done_in_epoch += len(rows)
                progress.update(step)
                if number + 1 == len(blocks) or blocks[number + 1][0] != epoch:
                    loss /= len(texts)
                    if not math.isfinite(loss) or not bool(torch.isfinite(bias).all()):
                        raise MeliError(f"linear: the softmax diverged in epoch {epoch + 1} "
                                        f"(training loss {loss}); lower linear.learning_rate "
                                        f"(now {params.learning_rate})")
                    log.info("linear: softmax epoch %d of %d, training loss %.4f", epoch + 1,
                             params.epochs, loss)
                    loss, done_in_epoch = 0.0, 0
        if projection is None:
            return SparseHead.from_matrix("softmax", table.numpy(), bias.numpy())
        return FactoredHead.from_dense("softmax", table.numpy(), projection.numpy(),
                                       bias.numpy())
    finally:
        torch.set_num_threads(threads)
        if flushing:
            torch.set_flush_denormal(False)
