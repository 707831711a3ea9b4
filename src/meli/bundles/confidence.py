"""How far a model's confidence can be believed: calibration (reliability bins and the expected
calibration error) and risk-coverage (the accuracy of the titles it is most sure of).

Both take, per title, the confidence (the top probability) and whether the top category is the
true one, so they are computed from a split scored in chunks without keeping its probabilities.

- Expected calibration error (Naeini et al. 2015; Guo et al. 2017): titles binned by confidence
  into equal-width bins over [0, 1]; the mean over titles of |accuracy - mean confidence| of
  their bin. How many bins changes the figure, so it is reported with it.
- Risk-coverage (Geifman & El-Yaniv 2017): titles sorted by confidence, most sure first; the
  accuracy of the first c% is what a service that decides those titles alone (and hands the
  rest to a person) gets. The area under the risk (1 - accuracy) against coverage, over every
  prefix, sums the curve in one number: lower is better.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The coverages of the risk-coverage curve: 5%, 10%, ..., 100% of the titles.
CURVE_PERCENTS = tuple(range(5, 101, 5))


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    titles: int
    confidence: float  # the mean top probability of the bin's titles
    accuracy: float


def reliability(confidence: np.ndarray, correct: np.ndarray,
                bins: int) -> tuple[float, list[ReliabilityBin]]:
    """The expected calibration error over `bins` equal-width bins, and the non-empty bins."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if not len(confidence):
        return float("nan"), []
    # Bin b holds (b/bins, (b+1)/bins]; a confidence of 0 goes to the first bin.
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    titles = np.bincount(which, minlength=bins)
    confidence_sum = np.bincount(which, weights=confidence, minlength=bins)
    correct_sum = np.bincount(which, weights=correct, minlength=bins)
    rows, error = [], 0.0
    for b in np.flatnonzero(titles):
        mean_confidence = confidence_sum[b] / titles[b]
        accuracy = correct_sum[b] / titles[b]
        error += titles[b] * abs(accuracy - mean_confidence)
        rows.append(ReliabilityBin(b / bins, (b + 1) / bins, int(titles[b]),
                                   float(mean_confidence), float(accuracy)))
    return float(error / len(confidence)), rows


@dataclass(frozen=True)
class RiskCoverage:
    """Accuracy against coverage, most confident titles first."""

    order: np.ndarray  # title indices, most confident first (ties: lower index first)
    accuracy: np.ndarray  # accuracy of the first 1, 2, ..., n titles
    confidence: np.ndarray  # the confidence of the n-th title: the bar that keeps n titles

    @classmethod
    def of(cls, confidence: np.ndarray, correct: np.ndarray) -> RiskCoverage:
        confidence = np.asarray(confidence, dtype=np.float32)
        order = np.lexsort((np.arange(len(confidence)), -confidence))
        hits = np.cumsum(np.asarray(correct, dtype=np.int64)[order])
        accuracy = hits / np.arange(1, len(order) + 1)
        return cls(order, accuracy, confidence[order])

    @property
    def titles(self) -> int:
        return len(self.order)

    def kept(self, coverage: float) -> int:
        """How many titles the c most confident (a share) are: at least one."""
        return max(1, min(self.titles, round(coverage * self.titles)))

    def accuracy_at(self, coverage: float) -> float:
        return float(self.accuracy[self.kept(coverage) - 1])

    def confidence_at(self, coverage: float) -> float:
        """The least confidence among the c most confident titles."""
        return float(self.confidence[self.kept(coverage) - 1])

    def coverage_at(self, accuracy: float) -> float:
        """The largest share of titles, most confident first, whose accuracy is at least
        `accuracy` (0 if not even the most confident title is right)."""
        reaching = np.flatnonzero(self.accuracy >= accuracy - 1e-12)
        return float((reaching[-1] + 1) / self.titles) if len(reaching) else 0.0

    def area(self) -> float:
        """Mean risk (1 - accuracy) over every prefix: the area under the risk-coverage curve."""
        return float(np.mean(1.0 - self.accuracy)) if self.titles else float("nan")

    def curve(self, percents: tuple[int, ...] = CURVE_PERCENTS) -> list[dict[str, float]]:
        """One row per coverage: its accuracy, and the confidence that keeps that share."""
        return [{"coverage": percent, "accuracy": round(self.accuracy_at(percent / 100), 6),
                 "min_confidence": round(self.confidence_at(percent / 100), 6)}
                for percent in percents]


def share_key(value: float) -> str:
    """A metrics key for a share: 0.9 -> "at_90", 0.975 -> "at_97_5" (no dots: `dvc metrics`
    joins nested keys with dots)."""
    percent = round(value * 100, 4)
    text = f"{percent:g}".replace(".", "_")
    return f"at_{text}"
