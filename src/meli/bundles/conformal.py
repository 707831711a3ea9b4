"""Prediction sets with a coverage guarantee: split conformal prediction (Vovk, Gammerman &
Shafer 2005; Angelopoulos & Bates, "A Gentle Introduction to Conformal Prediction", 2021) with
the least ambiguous score of Sadinle, Lei & Wasserman (2019), marginal or per category
(Mondrian, class-conditional).

The method. Each calibration title (one the model was not fitted on) gives one number: the
probability the model gave its true category, p_i. For a coverage 1 - a, with the n of them
sorted ascending, the threshold is t = p_(j), j = floor((n + 1) a); a new title's set is every
category whose probability is at least t. If the calibration titles and the new one are
exchangeable, the new title's true probability falls below t only when it would rank among the
j lowest of the n + 1, so the set holds the true category with probability at least 1 - a (and
at most 1 - a + 1 / (n + 1): the guarantee is tight, so the sets are no larger than needed).
Among all sets with that coverage, thresholding the probability gives the smallest on average
(Sadinle et al.); the adaptive score (APS, Romano et al. 2020) adds to each category the
probability of those ranked above it and gives larger sets. A set may be empty: when the
coverage asked is below the model's accuracy, the guarantee is met by giving no category to
the titles the model is least sure of.

Per category (`class_conditional`): the same over the calibration titles of each category
alone, a threshold t_y per category, so that a title of category y has y in its set with
probability at least 1 - a, category by category (balanced accuracy's point of view: rare and
hard categories get their coverage too, with larger sets). A threshold needs at least
(1 - a) / a titles of the category (9 at 0.90, 19 at 0.95); the categories with fewer share
one threshold computed over their titles pooled (a Mondrian group of their own), which still
holds on average over them.

Written here rather than taken from MAPIE or crepes: both fit on, and predict from, whole
(titles x categories) probability matrices held in memory (MAPIE copies them once per level
asked), and keep their fitted state as Python objects that a bundle could only store by pickling.
Here the state is one sorted float array (`calibration.npy` in the bundle, read with
allow_pickle=False), a threshold serves any coverage asked at prediction time, and since the
probabilities of a title sum to 1 at most 1/t categories reach t: the set is found among the
model's top 1/t categories, which every bundle computes without writing out all probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Compare (n + 1) a with a margin: 100 x (1 - 0.9) is 9.999999999999998 in floating point.
_ROUNDING = 1e-9


def rank_of(titles: int, coverage: float) -> int:
    """j = floor((n + 1)(1 - coverage)): the threshold is the j-th lowest true probability of
    the calibration titles; 0 when there are too few to certify the coverage."""
    return max(0, math.floor((titles + 1) * (1.0 - coverage) + _ROUNDING))


def highest_coverage(titles: int) -> float:
    """The highest coverage n calibration titles certify with a threshold above 0."""
    return 1.0 - 1.0 / (titles + 1)


def threshold(sorted_probabilities: np.ndarray, coverage: float) -> float:
    """The probability a category needs to enter the set (0: every category)."""
    j = rank_of(len(sorted_probabilities), coverage)
    return float(sorted_probabilities[j - 1]) if j else 0.0


@dataclass(frozen=True)
class ConformalScores:
    """What a bundle carries for its sets: each calibration title's probability of its true
    category, sorted ascending within each category, categories in id order, and how many
    titles each category has."""

    true_probabilities: np.ndarray  # float32 (titles,)
    counts: np.ndarray  # int64 (categories,)

    @classmethod
    def of(cls, true_probabilities: np.ndarray, labels: np.ndarray,
           categories: int) -> ConformalScores:
        labels = np.asarray(labels, dtype=np.int64)
        order = np.lexsort((true_probabilities, labels))
        return cls(np.asarray(true_probabilities, dtype=np.float32)[order],
                   np.bincount(labels, minlength=categories).astype(np.int64))

    @property
    def titles(self) -> int:
        return len(self.true_probabilities)

    def marginal(self, coverage: float) -> np.ndarray:
        """One threshold for every category."""
        value = threshold(np.sort(self.true_probabilities), coverage)
        return np.full(len(self.counts), value, dtype=np.float32)

    def class_conditional(self, coverage: float) -> tuple[np.ndarray, np.ndarray]:
        """A threshold per category, and whether it is the category's own (True) or the one
        its group of too small categories shares (False)."""
        ends = np.cumsum(self.counts)
        starts = ends - self.counts
        own = np.array([rank_of(int(n), coverage) > 0 for n in self.counts], dtype=bool)
        thresholds = np.empty(len(self.counts), dtype=np.float32)
        for category in np.flatnonzero(own):
            thresholds[category] = threshold(
                self.true_probabilities[starts[category]:ends[category]], coverage)
        if not own.all():
            pooled = np.concatenate([self.true_probabilities[starts[c]:ends[c]]
                                     for c in np.flatnonzero(~own)])
            thresholds[~own] = threshold(np.sort(pooled), coverage)
        return thresholds, own


def candidates(thresholds: np.ndarray) -> int:
    """How many of a title's most probable categories can reach `thresholds`: probabilities sum
    to 1, so at most 1/t categories reach t (one more for rounding)."""
    lowest = float(thresholds.min()) if len(thresholds) else 0.0
    if lowest <= 0.0:
        return len(thresholds)
    return min(len(thresholds), math.floor(1.0 / lowest) + 1)


def in_set(indices: np.ndarray, probabilities: np.ndarray,
           thresholds: np.ndarray) -> np.ndarray:
    """Which of each title's candidate categories (`indices`, most probable first, with their
    `probabilities`) are in its set: a boolean array of the same shape."""
    return probabilities >= thresholds[indices]
