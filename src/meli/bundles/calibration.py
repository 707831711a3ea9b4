"""A bundle's calibration: how far its probabilities can be believed and what its prediction
sets need, measured on validation titles and carried inside the bundle, so that `meli predict`,
`meli serve` and its page answer sets and abstentions the same way.

    calibration.json                     how it was made (split, titles, seed, score) and the
                                         figures on those titles: accuracy, mean confidence,
                                         expected calibration error and its bins, risk-coverage,
                                         the set thresholds of a few coverages
    calibration.true_probabilities.npy   float32: each calibration title's probability of its
                                         true category, sorted within category (ConformalScores)
    calibration.counts.npy               int64: calibration titles per category

Every stage that writes a bundle (train, baseline, linear, ensemble) ends with
`calibrate_bundle`: the bundle just written, loaded as `meli predict` loads it, scores a seeded
sample of at most `CALIBRATION_ROWS` validation titles, a chunk at a time (a split of the
course's size never becomes one probability matrix). The ensemble is calibrated as itself, on
its own probabilities, not through its members'.

Why all the validation titles, the ones that also chose the best epoch, the temperatures and
the ensemble's weights: measured on the real sample (README, "Know when to trust a prediction";
`python benchmarks/conformal.py`), refitting the linear model's and the ensemble's choices on
half of validation and calibrating on the other half moved test coverage by less than 0.002
against calibrating on the same half (within the noise of 20 halvings), and half the titles
only make the threshold noisier.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from meli.bundles.classifier import SCORING_CHUNK, Classifier, as_array
from meli.bundles.confidence import RiskCoverage, reliability, share_key
from meli.bundles.conformal import ConformalScores, highest_coverage, threshold
from meli.errors import MeliError
from meli.files import atomic_file, read_json, write_json
from meli.layout import split_path
from meli.progress import Progress

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
TRUE_PROBABILITIES_FILE = "calibration.true_probabilities.npy"
COUNTS_FILE = "calibration.counts.npy"
# Validation titles scored for the calibration: 100,000 give every category of the course's
# 632 about 160 titles for its own set threshold, in under a minute for the slowest bundle.
CALIBRATION_ROWS = 100_000
CALIBRATION_SEED = 0
BINS = 15  # of the expected calibration error (Guo et al.'s choice)
# The figures a bundle records about itself; evaluate measures the same on the test split:
# the accuracy of these shares of most confident titles, the share kept at these accuracies,
# and (the bundle only) the set thresholds of these coverages.
REPORTED_COVERAGES = (0.5, 0.8, 0.9, 0.95, 0.99)
TARGET_ACCURACIES = (0.97, 0.98, 0.99)
THRESHOLD_COVERAGES = (0.8, 0.9, 0.95, 0.99)
SCORE = "least ambiguous: a category enters the set when its probability reaches the threshold"


@dataclass
class Scored:
    """Per title of a split: the top category, its probability, the true category's."""

    predicted: np.ndarray  # int64
    confidence: np.ndarray  # float32
    true_probability: np.ndarray  # float32
    correct: np.ndarray  # bool: the top category is the true one
    set_sizes: np.ndarray  # int32 (titles, thresholds): categories at or above each threshold


def score_split(classifier: Classifier, titles: pa.Array | pa.ChunkedArray, labels: np.ndarray,
                thresholds: list[np.ndarray] = (), batch_size: int = 2048,
                progress: Callable[[int], None] | None = None) -> Scored:
    """Score titles `SCORING_CHUNK` at a time (the chunks `Classifier.predict` uses, so the top
    categories are predict's), keeping per title only a few numbers, and the size of its set
    under each vector of per-category `thresholds`. `progress`, if given, is called with the
    titles scored so far after each chunk."""
    titles = as_array(titles)
    parts = []
    for start in range(0, len(titles), SCORING_CHUNK):
        chunk = titles.slice(start, SCORING_CHUNK)
        parts.append(_score_chunk(classifier.probabilities(chunk, batch_size),
                                  labels[start:start + SCORING_CHUNK], thresholds))
        if progress is not None:
            progress(start + len(chunk))
    if not parts:
        empty = np.zeros(0, np.float32)
        return Scored(np.zeros(0, np.int64), empty, empty, np.zeros(0, bool),
                      np.zeros((0, len(thresholds)), np.int32))
    return Scored(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def _score_chunk(probabilities: np.ndarray, labels: np.ndarray,
                 thresholds: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    predicted = probabilities.argmax(axis=1)
    rows = np.arange(len(probabilities))
    sizes = np.zeros((len(probabilities), len(thresholds)), dtype=np.int32)
    for column, vector in enumerate(thresholds):
        sizes[:, column] = (probabilities >= vector).sum(axis=1)
    return (predicted, probabilities[rows, predicted], probabilities[rows, labels],
            predicted == labels, sizes)


def confidence_figures(scored: Scored, bins: int,
                       accuracies: tuple[float, ...] = TARGET_ACCURACIES
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(calibration, risk-coverage) of scored titles: accuracy, mean confidence, expected
    calibration error over `bins` bins; the accuracy of the most confident titles and the
    confidence that keeps them, the share kept at each of `accuracies`, the area under the
    curve."""
    error, _ = reliability(scored.confidence, scored.correct, bins)
    curve = RiskCoverage.of(scored.confidence, scored.correct)
    calibration = {"expected_calibration_error": round(error, 6), "bins": bins,
                   "mean_confidence": round(float(np.mean(scored.confidence)), 6),
                   "accuracy": round(float(np.mean(scored.correct)), 6)}
    risk_coverage = {
        "area_under_curve": round(curve.area(), 6),
        "accuracy_at_coverage": {share_key(c): round(curve.accuracy_at(c), 6)
                                 for c in REPORTED_COVERAGES},
        "min_confidence_at_coverage": {share_key(c): round(curve.confidence_at(c), 6)
                                       for c in REPORTED_COVERAGES},
        "coverage_at_accuracy": {share_key(a): round(curve.coverage_at(a), 6)
                                 for a in accuracies},
    }
    return calibration, risk_coverage


def set_figures(covered: np.ndarray, sizes: np.ndarray, true: np.ndarray, categories: int,
                coverage: float) -> dict[str, Any]:
    """How prediction sets did on labelled titles: the share whose set held the true category,
    the sets' mean size, the shares of empty and single-category sets, and per category: how
    many reached `coverage`, how many are consistent with it (a one-sided binomial test at 5%:
    a category of 7 titles covered 6 times is not below 0.90), how many would reach it on
    average were each covered at exactly that rate (what the count can be held to with few
    titles per category), and the spread of the categories' coverage."""
    from scipy.stats import binom

    support = np.bincount(true, minlength=categories)
    present = support > 0
    hits = np.bincount(true[covered], minlength=categories)[present]
    titles = support[present]
    share = hits / titles
    return {
        "coverage": round(float(covered.mean()), 6),
        "mean_set_size": round(float(sizes.mean()), 6),
        "empty_sets": round(float(np.mean(sizes == 0)), 6),
        "single_category": round(float(np.mean(sizes == 1)), 6),
        "categories": int(present.sum()),
        "categories_reaching": int(np.sum(share >= coverage - 1e-9)),
        "categories_consistent": int(np.sum(binom.cdf(hits, titles, coverage) > 0.05)),
        "categories_reaching_if_exact": round(float(np.sum(binom.sf(
            np.ceil(coverage * titles - 1e-9) - 1, titles, coverage))), 1),
        "category_coverage_quartiles": [round(float(q), 4)
                                        for q in np.quantile(share, [0.25, 0.5, 0.75])],
        "category_coverage_min": round(float(share.min()), 4),
    }


# ---- writing: the end of every bundle-writing stage ----------------------------------------

def calibration_titles(prepared_dir: str | Path) -> tuple[pa.Array, np.ndarray]:
    """The validation titles a bundle is calibrated on, with their true category ids: all of
    them up to CALIBRATION_ROWS, a seeded sample above."""
    path = split_path(prepared_dir, "validation")
    if not path.exists():
        raise MeliError(f"{path}: not found; run the prepare stage first")
    table = pq.read_table(path, columns=["title", "label"])
    if len(table) == 0:
        raise MeliError(f"{path}: the validation split is empty; a bundle is calibrated on it")
    if len(table) > CALIBRATION_ROWS:
        rows = np.random.default_rng(CALIBRATION_SEED).choice(len(table), CALIBRATION_ROWS,
                                                              replace=False)
        table = table.take(np.sort(rows))
    return (table.column("title").combine_chunks(),
            table.column("label").to_numpy().astype(np.int64))


def calibrate_bundle(classifier: Classifier, prepared_dir: str | Path) -> dict[str, Any]:
    """Calibrate the bundle `classifier` was loaded from on the validation titles, and write
    the files into its directory; the figures written."""
    titles, labels = calibration_titles(prepared_dir)
    return calibrate(classifier, titles, labels)


def calibrate(classifier: Classifier, titles: pa.Array, labels: np.ndarray) -> dict[str, Any]:
    bundle = classifier.directory.name
    log.info("%s: calibrating on %s validation titles", bundle, f"{len(labels):,}")
    with Progress(f"{bundle}: calibration", len(labels), "titles", logger=log) as progress:
        scored = score_split(classifier, titles, labels, progress=progress.update)
    scores = ConformalScores.of(scored.true_probability, labels, len(classifier.labels))
    ordered = np.sort(scores.true_probabilities)
    confidence, risk_coverage = confidence_figures(scored, BINS)
    summary = {
        "split": "validation", "titles": int(len(labels)), "seed": CALIBRATION_SEED,
        "score": SCORE,
        **confidence,
        "risk_coverage": risk_coverage,
        "thresholds": {share_key(c): round(threshold(ordered, c), 6)
                       for c in THRESHOLD_COVERAGES if c <= highest_coverage(len(labels))},
    }
    directory = classifier.directory
    for name, array in ((TRUE_PROBABILITIES_FILE, scores.true_probabilities),
                        (COUNTS_FILE, scores.counts)):
        with atomic_file(directory / name) as out:
            np.save(out, array, allow_pickle=False)
    # The JSON last: a bundle with calibration.json has the arrays it describes.
    write_json(directory / CALIBRATION_FILE, summary)
    return summary


# ---- reading: what predict, serve and the page use -----------------------------------------

class Calibration:
    """A bundle's calibration, loaded: its figures, and set thresholds for any coverage."""

    def __init__(self, directory: Path, summary: dict[str, Any], scores: ConformalScores):
        self.directory = directory
        self.summary = summary
        self.scores = scores
        self._thresholds: dict[tuple[float, bool], np.ndarray] = {}

    @classmethod
    def load(cls, directory: str | Path, categories: int) -> Calibration | None:
        """The calibration of the bundle in `directory`, or None if it carries none."""
        directory = Path(directory)
        if not (directory / CALIBRATION_FILE).exists():
            return None
        try:
            summary = read_json(directory / CALIBRATION_FILE)
            probabilities = np.load(directory / TRUE_PROBABILITIES_FILE, allow_pickle=False)
            counts = np.load(directory / COUNTS_FILE, allow_pickle=False)
        except FileNotFoundError as error:
            raise MeliError(f"{directory}: incomplete bundle, {Path(error.filename).name} "
                            f"is missing") from None
        except (ValueError, OSError, EOFError) as error:
            # A damaged .npy header, an object array (allow_pickle=False), bad JSON.
            raise MeliError(f"{directory}: damaged calibration: "
                            f"{str(error).splitlines()[0] if str(error) else error!r}") from None
        if (probabilities.dtype != np.float32 or probabilities.ndim != 1
                or counts.dtype != np.int64 or counts.shape != (categories,)
                or int(counts.sum()) != len(probabilities) or not len(probabilities)):
            raise MeliError(f"{directory / COUNTS_FILE}: calibration arrays of "
                            f"{probabilities.dtype}{probabilities.shape} and "
                            f"{counts.dtype}{counts.shape} do not fit {categories} categories")
        return cls(directory, summary, ConformalScores(probabilities, counts))

    @property
    def titles(self) -> int:
        return self.scores.titles

    def coverage_problem(self, coverage: Any) -> str | None:
        """What is wrong with `coverage` as a coverage these calibration titles certify."""
        highest = highest_coverage(self.titles)
        if (not isinstance(coverage, int | float) or isinstance(coverage, bool)
                or not 0 < coverage < 1):
            return f"must be a number between 0 and 1 (such as 0.95), got {coverage!r}"
        if coverage > highest + 1e-12:
            return (f"{coverage:g} is more than the {self.titles:,} calibration titles of "
                    f"this model can certify (at most {highest:.4f})")
        return None

    def thresholds(self, coverage: float, class_conditional: bool = False) -> np.ndarray:
        """The probability each category needs to enter a title's set (float32, one per
        category), for sets that hold the true category with probability `coverage`."""
        key = (float(coverage), bool(class_conditional))
        if key not in self._thresholds:
            self._thresholds[key] = (self.scores.class_conditional(coverage)[0]
                                     if class_conditional else self.scores.marginal(coverage))
        return self._thresholds[key]

    def describe(self) -> dict[str, Any]:
        """The figures of GET /model (and the page)."""
        return dict(self.summary)


def load_calibration(classifier: Classifier) -> Calibration | None:
    return Calibration.load(classifier.directory, len(classifier.labels))
