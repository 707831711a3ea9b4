"""Calibration and prediction sets (meli.bundles.conformal, confidence, calibration): coverage on
held-out synthetic data within a stated tolerance of the nominal, marginal and per category; the
threshold's rank; the sets found among the top categories equal to the sets over all of them;
the expected calibration error and the risk-coverage curve against direct recomputations; the
files a bundle carries, and a damaged one refused in one line."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from meli.bundles.calibration import (
    COUNTS_FILE,
    TRUE_PROBABILITIES_FILE,
    Calibration,
    calibrate,
    score_split,
)
from meli.bundles.classifier import Classifier, top_k_of
from meli.bundles.confidence import RiskCoverage, reliability, share_key
from meli.bundles.conformal import ConformalScores, candidates, in_set, rank_of, threshold
from meli.errors import MeliError
from meli.params import TextParams


def calibrated_titles(rng: np.random.Generator, titles: int, categories: int,
                      hardness: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a perfectly calibrated model and true categories drawn from them: the
    exchangeable data split conformal assumes. `hardness` (per category) flattens the
    probabilities of titles mostly of that category, so some categories are harder."""
    centre = rng.integers(0, categories, titles)
    logits = rng.normal(0.0, 1.0, (titles, categories))
    sharpness = 5.0 if hardness is None else 5.0 / hardness[centre]
    logits[np.arange(titles), centre] += sharpness
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    cumulative = probabilities.cumsum(axis=1)
    draws = rng.random(titles)[:, None]
    labels = np.minimum((cumulative < draws).sum(axis=1), categories - 1)
    return probabilities.astype(np.float32), labels


def set_coverage(probabilities: np.ndarray, labels: np.ndarray,
                 thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per title: whether its set holds its category, and the set's size."""
    rows = np.arange(len(labels))
    covered = probabilities[rows, labels] >= thresholds[labels]
    return covered, (probabilities >= thresholds).sum(axis=1)


# ---- split conformal ----------------------------------------------------------------------------

@pytest.mark.parametrize("coverage", [0.8, 0.9, 0.95])
def test_marginal_sets_cover_held_out_titles_at_the_nominal_rate(coverage):
    # 2,000 calibration titles: each run's coverage is Beta-distributed around 1 - a (+ under
    # 1/2,001) with a spread of sqrt(a(1 - a)/2,000) (0.009 at 0.80, 0.005 at 0.95), to which
    # 5,000 test titles add 0.006 and 0.003. Tolerances: every run within 0.04 of the nominal,
    # the mean of 40 runs within 0.006 (over 3.5 standard errors at 0.80).
    rng = np.random.default_rng(0)
    runs = []
    for _ in range(40):
        probabilities, labels = calibrated_titles(rng, 7_000, 20)
        scores = ConformalScores.of(probabilities[np.arange(2_000), labels[:2_000]],
                                    labels[:2_000], 20)
        covered, sizes = set_coverage(probabilities[2_000:], labels[2_000:],
                                      scores.marginal(coverage))
        runs.append(covered.mean())
        assert abs(covered.mean() - coverage) < 0.04
        assert sizes.mean() < 20
    assert abs(np.mean(runs) - coverage) < 0.006


def test_class_conditional_sets_cover_every_category_where_marginal_ones_miss_the_hard():
    # Five categories of twenty are much harder: marginal sets reach 0.90 over all titles by
    # covering the easy ones more and the hard ones less; per-category thresholds give each
    # category its 0.90 (each has about 1,000 calibration titles: within 0.04 on 4,000 test
    # titles per category, the worst of twenty).
    rng = np.random.default_rng(1)
    hardness = np.ones(20)
    hardness[:5] = 6.0
    probabilities, labels = calibrated_titles(rng, 100_000, 20, hardness)
    calibration, test = slice(0, 20_000), slice(20_000, None)
    scores = ConformalScores.of(probabilities[calibration][np.arange(20_000), labels[calibration]],
                                labels[calibration], 20)
    marginal, _ = set_coverage(probabilities[test], labels[test], scores.marginal(0.9))
    thresholds, own = scores.class_conditional(0.9)
    per_class, _ = set_coverage(probabilities[test], labels[test], thresholds)
    assert own.all()

    def by_category(covered):
        return np.bincount(labels[test], weights=covered, minlength=20) / np.bincount(
            labels[test], minlength=20)

    assert abs(marginal.mean() - 0.9) < 0.01
    assert by_category(marginal).min() < 0.8
    assert np.all(np.abs(by_category(per_class) - 0.9) < 0.04)


def test_the_threshold_is_the_conformal_rank_of_the_true_probabilities():
    probabilities = np.linspace(0.05, 1.0, 20).astype(np.float32)  # n = 19 below, one above
    assert rank_of(19, 0.9) == 2  # floor(20 x 0.1), not 1 by rounding 20 x 0.0999...
    assert threshold(probabilities[:19], 0.9) == probabilities[1]
    assert rank_of(99, 0.95) == 5
    # Too few titles to certify the coverage: every category enters the set.
    assert rank_of(18, 0.95) == 0
    assert threshold(probabilities[:18], 0.95) == 0.0


def test_small_categories_share_a_pooled_threshold():
    rng = np.random.default_rng(2)
    labels = np.concatenate([np.zeros(40, int), np.full(5, 1), np.full(6, 2)])
    true = rng.uniform(0.2, 1.0, len(labels)).astype(np.float32)
    scores = ConformalScores.of(true, labels, 4)
    thresholds, own = scores.class_conditional(0.9)
    assert own.tolist() == [True, False, False, False]
    assert thresholds[0] == threshold(np.sort(true[labels == 0]), 0.9)
    # Categories 1 and 2 (11 titles pooled) share one; 3, with none, gets it too.
    assert thresholds[1] == thresholds[2] == thresholds[3] == threshold(
        np.sort(true[labels > 0]), 0.9)


def test_sets_found_among_the_top_categories_are_the_sets_over_all_of_them():
    rng = np.random.default_rng(3)
    probabilities, labels = calibrated_titles(rng, 3_000, 50)
    scores = ConformalScores.of(probabilities[np.arange(1_000), labels[:1_000]], labels[:1_000],
                                50)
    for thresholds in (scores.marginal(0.95), scores.marginal(0.99),
                       scores.class_conditional(0.9)[0]):
        width = candidates(thresholds)
        assert width <= math.floor(1 / thresholds.min()) + 1
        indices, values = top_k_of(probabilities[1_000:], width)
        from_top = np.zeros_like(probabilities[1_000:], dtype=bool)
        np.put_along_axis(from_top, indices, in_set(indices, values, thresholds), axis=1)
        assert np.array_equal(from_top, probabilities[1_000:] >= thresholds)
    assert candidates(np.zeros(50, np.float32)) == 50


# ---- confidence figures -------------------------------------------------------------------------

def test_expected_calibration_error_against_a_direct_sum():
    rng = np.random.default_rng(4)
    confidence = rng.uniform(0, 1, 5_000)
    confidence[:10] = [0.0, 1.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]  # edges of bins
    correct = rng.random(5_000) < confidence ** 0.8
    error, rows = reliability(confidence, correct, 10)
    direct = 0.0
    for b in range(10):
        chosen = (confidence > b / 10) & (confidence <= (b + 1) / 10)
        if b == 0:
            chosen |= confidence == 0
        if chosen.any():
            direct += chosen.sum() * abs(correct[chosen].mean() - confidence[chosen].mean())
    assert error == pytest.approx(direct / 5_000)
    assert sum(row.titles for row in rows) == 5_000
    # A calibrated model (correct with probability = its confidence) has a small one.
    calibrated = rng.random(200_000) < (c := rng.uniform(0, 1, 200_000))
    assert reliability(c, calibrated, 15)[0] < 0.01


def test_risk_coverage_against_sorting_by_hand():
    confidence = np.array([0.9, 0.5, 0.99, 0.7, 0.6, 0.95, 0.8, 0.3, 0.85, 0.75],
                          dtype=np.float32)
    correct = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 1], dtype=bool)
    curve = RiskCoverage.of(confidence, correct)
    # Most confident first: 0.99 0.95 0.9 0.85 0.8 0.75 0.7 0.6 0.5 0.3 -> 1 1 1 1 0 1 1 0 0 0
    assert curve.accuracy_at(0.4) == 1.0
    assert curve.accuracy_at(0.5) == pytest.approx(0.8)
    assert curve.accuracy_at(1.0) == pytest.approx(0.6)
    assert curve.coverage_at(0.99) == 0.4
    assert curve.coverage_at(6 / 7 - 1e-9) == 0.7
    assert curve.confidence_at(0.5) == pytest.approx(0.8)
    hits = np.cumsum([1, 1, 1, 1, 0, 1, 1, 0, 0, 0])
    assert curve.area() == pytest.approx(np.mean(1 - hits / np.arange(1, 11)))
    assert [row["coverage"] for row in curve.curve()] == list(range(5, 101, 5))


def test_share_keys_have_no_dots():
    assert [share_key(v) for v in (0.9, 0.95, 0.975, 0.5)] == ["at_90", "at_95", "at_97_5",
                                                              "at_50"]


# ---- the bundle's files -------------------------------------------------------------------------

class FixedClassifier(Classifier):
    """Probabilities looked up by title: 't<i>' gets row i of a matrix."""

    def __init__(self, directory, matrix):
        super().__init__(directory, {}, [f"C{i}" for i in range(matrix.shape[1])],
                         TextParams())
        self.matrix = matrix

    def probabilities(self, titles, batch_size=2048):
        return self.matrix[[int(t[1:]) for t in pa.array(titles).to_pylist()]]

    def known_words(self, titles):
        return np.ones(len(titles), np.int64)


def test_a_bundle_carries_its_calibration_and_loads_it_back(tmp_path):
    rng = np.random.default_rng(5)
    probabilities, labels = calibrated_titles(rng, 3_000, 12)
    classifier = FixedClassifier(tmp_path, probabilities)
    titles = pa.array([f"t{i}" for i in range(3_000)])
    summary = calibrate(classifier, titles, labels)
    loaded = Calibration.load(tmp_path, 12)
    assert loaded is not None and loaded.titles == 3_000
    assert summary["titles"] == 3_000 and summary["bins"] == 15
    assert np.array_equal(loaded.thresholds(0.95),
                          ConformalScores.of(probabilities[np.arange(3_000), labels], labels,
                                             12).marginal(0.95))
    assert summary["thresholds"]["at_95"] == pytest.approx(float(loaded.thresholds(0.95)[0]),
                                                        abs=1e-6)
    scored = score_split(classifier, titles, labels)
    assert summary["accuracy"] == pytest.approx(np.mean(probabilities.argmax(1) == labels),
                                                abs=1e-6)
    assert np.array_equal(scored.predicted, probabilities.argmax(1))
    assert loaded.coverage_problem(0.95) is None
    assert "between 0 and 1" in loaded.coverage_problem(1.5)
    assert "can certify" in loaded.coverage_problem(0.9999)
    assert Calibration.load(tmp_path / "nothing", 12) is None


def test_a_split_is_scored_a_chunk_at_a_time_with_the_figures_of_the_whole(tmp_path,
                                                                          monkeypatch):
    # What keeps a split of 1.2 million titles x 1,600 categories out of memory: the model is
    # never asked for more than SCORING_CHUNK titles at once, and only a few numbers per title
    # are kept; the figures are those of the whole matrix.
    import meli.bundles.calibration as calibration_module

    rng = np.random.default_rng(8)
    probabilities, labels = calibrated_titles(rng, 2_500, 9)
    asked = []

    class Recording(FixedClassifier):
        def probabilities(self, titles, batch_size=2048):
            asked.append(len(titles))
            return super().probabilities(titles, batch_size)

    monkeypatch.setattr(calibration_module, "SCORING_CHUNK", 700)
    classifier = Recording(tmp_path, probabilities)
    titles = pa.array([f"t{i}" for i in range(2_500)])
    thresholds = [np.full(9, 0.2, np.float32), rng.random(9).astype(np.float32)]
    scored = score_split(classifier, titles, labels, thresholds)
    assert asked == [700, 700, 700, 400]
    rows = np.arange(2_500)
    assert np.array_equal(scored.predicted, probabilities.argmax(1))
    assert np.array_equal(scored.confidence, probabilities.max(1))
    assert np.array_equal(scored.true_probability, probabilities[rows, labels])
    for column, vector in enumerate(thresholds):
        assert np.array_equal(scored.set_sizes[:, column], (probabilities >= vector).sum(1))
    asked.clear()
    calibrate(classifier, titles, labels)
    assert max(asked) == 700 and sum(asked) == 2_500


@pytest.mark.parametrize("damage", ["truncated", "pickled", "wrong_counts"])
def test_a_damaged_calibration_is_one_line_error(tmp_path, damage):
    rng = np.random.default_rng(6)
    probabilities, labels = calibrated_titles(rng, 500, 5)
    calibrate(FixedClassifier(tmp_path, probabilities), pa.array([f"t{i}" for i in range(500)]),
              labels)
    if damage == "truncated":
        path = tmp_path / TRUE_PROBABILITIES_FILE
        path.write_bytes(path.read_bytes()[:60])
    elif damage == "pickled":
        np.save(tmp_path / COUNTS_FILE, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        np.save(tmp_path / COUNTS_FILE, np.array([1, 2, 3, 4, 5], dtype=np.int64))
    with pytest.raises(MeliError) as raised:
        Calibration.load(tmp_path, 5)
    assert "\n" not in str(raised.value) and str(tmp_path) in str(raised.value)
