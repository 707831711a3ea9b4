"""Classification metrics: balanced accuracy, the challenge's measure, is mean per-class recall."""

from __future__ import annotations

import numpy as np


def recall_per_class(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Recall of each class; NaN for a class with no true rows (it does not count)."""
    support = np.bincount(true, minlength=num_classes).astype(np.float64)
    hits = np.bincount(true[true == predicted], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, hits / support, np.nan)


def balanced_accuracy(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in `true` (as scikit-learn's, without its warnings)."""
    if len(true) == 0:
        return float("nan")
    return float(np.nanmean(recall_per_class(true, predicted, num_classes)))


def accuracy(true: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(true == predicted)) if len(true) else float("nan")


def macro_f1(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """F1 averaged over the classes present in `true` or predicted."""
    support = np.bincount(true, minlength=num_classes)
    guessed = np.bincount(predicted, minlength=num_classes)
    hits = np.bincount(true[true == predicted], minlength=num_classes)
    present = (support + guessed) > 0
    f1 = 2 * hits[present] / (support[present] + guessed[present])
    return float(f1.mean()) if present.any() else float("nan")
