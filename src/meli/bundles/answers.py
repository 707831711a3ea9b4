"""What `meli predict` and `meli serve` answer for titles: the top categories, and with the
knobs, what the bundle's calibration says about them.

- `coverage` (0.95): the set of categories that holds the true one for 95% of titles (split
  conformal, meli.bundles.conformal); one category when the model is sure, a few when it
  hesitates, none when even its top category is less likely than the titles it must give up.
- `class_conditional`: that coverage category by category rather than over all titles.
- `min_confidence` (0.9): the model abstains on a title whose top probability is below it: the
  titles a person should look at.

Both front ends call `answer` (or, for a batch of requests that each ask their own, `top_k`
once with the widest `width` and `answers_of` on each request's rows), so that the same title
gets the same set wherever it is asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from meli.bundles.calibration import Calibration
from meli.bundles.classifier import Classifier
from meli.bundles.conformal import candidates, in_set


@dataclass(frozen=True)
class Knobs:
    coverage: float | None = None
    min_confidence: float | None = None
    class_conditional: bool = False


NO_KNOBS = Knobs()  # the top k alone, as before the knobs existed


def knob_problem(knobs: Knobs, calibration: Calibration | None,
                 model: str) -> tuple[str, str] | None:
    """The first knob that cannot be used with this model, and why: (its name, the reason)."""
    if knobs.coverage is not None:
        if calibration is None:
            return ("coverage", f"the model {model} carries no calibration (it was written "
                                f"before bundles had one); rebuild it with `dvc repro`")
        message = calibration.coverage_problem(knobs.coverage)
        if message:
            return "coverage", message
    confidence = knobs.min_confidence
    if confidence is not None and (not isinstance(confidence, int | float)
                                   or isinstance(confidence, bool) or not 0 <= confidence <= 1):
        return ("min_confidence", f"must be a probability from 0 to 1 (such as 0.9), got "
                                  f"{confidence!r}")
    if knobs.class_conditional and knobs.coverage is None:
        return "class_conditional", "needs a coverage: the per-category sets of which coverage?"
    return None


def thresholds_of(knobs: Knobs, calibration: Calibration | None) -> np.ndarray | None:
    if knobs.coverage is None:
        return None
    assert calibration is not None
    return calibration.thresholds(knobs.coverage, knobs.class_conditional)


def width(k: int, knobs: Knobs, calibration: Calibration | None, categories: int) -> int:
    """How many of each title's most probable categories answer both the top k and the set."""
    thresholds = thresholds_of(knobs, calibration)
    wanted = k if thresholds is None else max(k, candidates(thresholds))
    return max(1, min(wanted, categories))


@dataclass
class Answers:
    """Per title: its top k categories (ids, best first) and probabilities, how many of its
    words the model knows; with a coverage, its candidate categories and which are in its set;
    with a minimum confidence, whether the model abstains."""

    indices: np.ndarray  # int64 (titles, k)
    probabilities: np.ndarray  # float32 (titles, k)
    known_words: np.ndarray  # int64 (titles,)
    candidates: np.ndarray | None = None  # int64 (titles, width), most probable first
    in_set: np.ndarray | None = None  # bool (titles, width)
    abstain: np.ndarray | None = None  # bool (titles,)

    @property
    def set_sizes(self) -> np.ndarray | None:
        return None if self.in_set is None else self.in_set.sum(axis=1)

    def sets(self) -> list[list[int]] | None:
        """Each title's set, category ids, most probable first."""
        if self.in_set is None:
            return None
        assert self.candidates is not None
        return [row[mask].tolist() for row, mask in zip(self.candidates, self.in_set,
                                                        strict=True)]


def answers_of(indices: np.ndarray, probabilities: np.ndarray, known_words: np.ndarray, k: int,
               knobs: Knobs, calibration: Calibration | None) -> Answers:
    """The answers of titles whose `width` most probable categories are given."""
    k = min(k, indices.shape[1])
    answers = Answers(indices[:, :k], probabilities[:, :k], known_words)
    thresholds = thresholds_of(knobs, calibration)
    if thresholds is not None:
        answers.candidates = indices
        answers.in_set = in_set(indices, probabilities, thresholds)
    if knobs.min_confidence is not None:
        answers.abstain = probabilities[:, 0] < np.float32(knobs.min_confidence)
    return answers


def answer(classifier: Classifier, calibration: Calibration | None,
           titles: list[str] | pa.Array, k: int, knobs: Knobs = NO_KNOBS) -> Answers:
    """Top k, and what the knobs ask, for `titles` (checked with `knob_problem` first)."""
    indices, probabilities, known = classifier.top_k(
        titles, width(k, knobs, calibration, len(classifier.labels)))
    return answers_of(indices, probabilities, known, k, knobs, calibration)
