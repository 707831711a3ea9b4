"""evaluate and meli.bundles.metrics: test-split figures that match a recomputation from the
bundle, the per-class recall and confusion plot files, and the metrics against scikit-learn's."""

from __future__ import annotations

import csv
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    recall_score,
)

from meli.bundles import metrics
from meli.bundles.calibration import Calibration
from meli.bundles.load import load_classifier
from meli.errors import MeliError
from meli.files import read_json, write_json
from meli.params import EvaluateParams
from meli.stages.evaluate import (
    CONFUSION_FILE,
    RECALL_FILE,
    RELIABILITY_FILE,
    RISK_COVERAGE_FILE,
    WORST_RECALL_FILE,
    evaluate,
    most_confused_pairs,
)

CONFUSED_PAIRS = 3
WORST_CATEGORIES = 5


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as lines:
        return list(csv.DictReader(lines))


@pytest.fixture(scope="module", params=["mlp", "fasttext"])
def evaluated(request, pipeline, tmp_path_factory):
    """(bundle, output directory, true test labels, the bundle's own test predictions)."""
    bundle_dir = request.getfixturevalue(f"{request.param}_bundle")
    out = tmp_path_factory.mktemp(f"evaluate-{request.param}")
    result = evaluate(EvaluateParams(confused_pairs=CONFUSED_PAIRS,
                                     worst_categories=WORST_CATEGORIES, batch_size=50), bundle_dir,
                      pipeline.prepared, out / "metrics.json", out / "plots")
    test = pq.read_table(pipeline.prepared / "test.parquet", columns=["title", "label"])
    true = test.column("label").to_numpy().astype(np.int64)
    predicted = load_classifier(bundle_dir).predict(test.column("title").to_pylist())
    return bundle_dir, out, true, predicted, result


def test_metrics_file_matches_a_recomputation_from_the_bundle(evaluated):
    bundle_dir, out, true, predicted, result = evaluated
    classes = len(read_json(bundle_dir / "labels.json"))
    expected = {
        "balanced_accuracy": metrics.balanced_accuracy(true, predicted, classes),
        "accuracy": metrics.accuracy(true, predicted),
        "macro_f1": metrics.macro_f1(true, predicted, classes),
    }
    written = read_json(out / "metrics.json")
    assert set(written) == {"test"}
    assert set(written["test"]) == {*expected, "rows", "by_language", "by_label_quality",
                                    "calibration", "risk_coverage", "sets"}
    assert written["test"]["rows"] == len(true) == result.rows
    for name, value in expected.items():
        assert written["test"][name] == pytest.approx(value, abs=1e-6), name
        assert getattr(result, name) == pytest.approx(value, abs=1e-12), name
    # The model has learned something, and makes mistakes for the confusion plot to show.
    assert 2 / classes < expected["balanced_accuracy"] < 1


def test_balanced_accuracy_per_language_and_label_quality(evaluated, pipeline):
    bundle_dir, out, true, predicted, result = evaluated
    classes = len(read_json(bundle_dir / "labels.json"))
    test = pq.read_table(pipeline.prepared / "test.parquet", columns=["language", "label_quality"])
    written = read_json(out / "metrics.json")["test"]
    for key, column in (("by_language", "language"), ("by_label_quality", "label_quality")):
        groups = np.array(test.column(column).to_pylist())
        # The small pipeline's sample holds both languages and both label qualities.
        assert sorted(written[key]) == sorted(set(groups)) and len(set(groups)) == 2, key
        for name, figures in written[key].items():
            chosen = groups == name
            assert figures["rows"] == int(chosen.sum())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = balanced_accuracy_score(true[chosen], predicted[chosen])
            assert figures["balanced_accuracy"] == pytest.approx(expected, abs=1e-6)
            assert 2 / classes < figures["balanced_accuracy"] <= 1
        assert sum(figures["rows"] for figures in written[key].values()) == len(true)
        assert getattr(result, key) == written[key]


def test_calibration_risk_coverage_and_sets_match_a_recomputation(evaluated, pipeline):
    bundle_dir, out, true, predicted, _ = evaluated
    written = read_json(out / "metrics.json")["test"]
    classifier = load_classifier(bundle_dir)
    titles = pq.read_table(pipeline.prepared / "test.parquet").column("title").to_pylist()
    probabilities = classifier.probabilities(titles)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == true
    bins = written["calibration"]["bins"]
    assert bins == EvaluateParams().calibration_bins
    # Expected calibration error by its definition, bin by bin.
    which = np.clip(np.ceil(confidence * bins) - 1, 0, bins - 1)
    error = sum(np.sum(which == b) * abs(correct[which == b].mean() - confidence[which == b]
                                         .mean()) for b in range(bins) if np.any(which == b))
    assert written["calibration"]["expected_calibration_error"] == pytest.approx(
        error / len(true), abs=1e-5)
    # Risk-coverage: the accuracy of the 90% most confident titles, and the area.
    order = np.argsort(-confidence, kind="stable")
    kept = round(0.9 * len(true))
    curve = written["risk_coverage"]
    assert curve["accuracy_at_coverage"]["at_90"] == pytest.approx(
        correct[order[:kept]].mean(), abs=1e-5)
    running = np.cumsum(correct[order]) / np.arange(1, len(true) + 1)
    assert curve["area_under_curve"] == pytest.approx(np.mean(1 - running), abs=1e-5)
    reaching = np.flatnonzero(running >= 0.97)
    assert curve["coverage_at_accuracy"]["at_97"] == pytest.approx(
        (reaching[-1] + 1) / len(true) if len(reaching) else 0.0, abs=1e-5)
    rows = read_csv(out / "plots" / RISK_COVERAGE_FILE)
    assert [int(row["coverage"]) for row in rows] == list(range(5, 101, 5))
    assert float(rows[-1]["accuracy"]) == pytest.approx(correct.mean(), abs=1e-5)
    reliability = read_csv(out / "plots" / RELIABILITY_FILE)
    assert sum(int(row["titles"]) for row in reliability) == len(true)
    # Sets from the bundle's own calibration: coverage and mean size of the test titles' sets.
    calibration = Calibration.load(bundle_dir, probabilities.shape[1])
    support = np.bincount(true, minlength=probabilities.shape[1])
    for coverage in EvaluateParams().set_coverages:
        for kind in ("marginal", "class_conditional"):
            thresholds = calibration.thresholds(coverage, kind == "class_conditional")
            covered = probabilities[np.arange(len(true)), true] >= thresholds[true]
            figures = written["sets"][f"at_{round(coverage * 100)}"][kind]
            assert figures["coverage"] == pytest.approx(covered.mean(), abs=1e-5)
            assert figures["mean_set_size"] == pytest.approx(
                (probabilities >= thresholds).sum(axis=1).mean(), abs=1e-5)
            hits = np.bincount(true[covered], minlength=len(support))
            assert figures["categories_reaching"] == int(np.sum(
                hits[support > 0] / support[support > 0] >= coverage))
            assert figures["categories"] == int(np.sum(support > 0))
            assert figures["categories_reaching"] <= figures["categories_consistent"]
    # The synthetic test titles are held out from the calibration: their coverage is within
    # 0.06 of the nominal (the small pipeline calibrates on about 200 titles and tests on about
    # 200: a spread of about 0.02 at 0.95 each).
    for coverage in EvaluateParams().set_coverages:
        marginal = written["sets"][f"at_{round(coverage * 100)}"]["marginal"]
        assert abs(marginal["coverage"] - coverage) < 0.06


def test_per_class_recall_is_sorted_worst_first_with_the_test_support(evaluated):
    bundle_dir, out, true, predicted, _ = evaluated
    labels = read_json(bundle_dir / "labels.json")
    rows = read_csv(out / "plots" / RECALL_FILE)
    assert list(rows[0]) == ["category", "recall", "support"]
    recalls = [float(row["recall"]) for row in rows]
    assert recalls == sorted(recalls)
    assert sum(int(row["support"]) for row in rows) == len(true)
    # One row per category present in the test split, with its own recall and support.
    support = Counter(labels[i] for i in true)
    assert {row["category"] for row in rows} == set(support)
    recall = metrics.recall_per_class(true, predicted, len(labels))
    for row in rows:
        index = labels.index(row["category"])
        assert int(row["support"]) == support[row["category"]]
        assert float(row["recall"]) == pytest.approx(recall[index], abs=5e-5)


def test_the_recall_plot_shows_only_the_worst_categories(evaluated):
    """Hundreds of bars are unreadable: the plot's file holds the `worst_categories` first rows
    of the full table, which keeps every category."""
    _, out, true, _, _ = evaluated
    every = read_csv(out / "plots" / RECALL_FILE)
    worst = read_csv(out / "plots" / WORST_RECALL_FILE)
    assert len(every) == len(set(true)) > WORST_CATEGORIES
    assert worst == every[:WORST_CATEGORIES]


def test_confusion_rows_are_those_among_the_most_confused_categories(evaluated):
    bundle_dir, out, true, predicted, _ = evaluated
    labels = read_json(bundle_dir / "labels.json")
    pairs = most_confused_pairs(true, predicted, CONFUSED_PAIRS)
    assert pairs, "the model makes no mistakes: nothing to check"
    involved = {labels[c] for (actual, guess), _ in pairs for c in (actual, guess)}
    rows = read_csv(out / "plots" / CONFUSION_FILE)
    assert list(rows[0]) == ["actual", "predicted"]
    assert {row["actual"] for row in rows} | {row["predicted"] for row in rows} <= involved
    expected = [(labels[a], labels[p]) for a, p in zip(true, predicted, strict=True)
                if labels[a] in involved and labels[p] in involved]
    assert Counter((row["actual"], row["predicted"]) for row in rows) == Counter(expected)
    # The most confused pair itself is in the plot, as many times as it happened.
    (actual, guess), count = pairs[0]
    assert Counter((row["actual"], row["predicted"]) for row in rows)[
        (labels[actual], labels[guess])] == count


def test_most_confused_pairs_counts_mistakes_only_and_breaks_ties_by_id():
    true = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([1, 1, 2, 0, 1, 2, 2, 0])
    # Mistakes: (0, 1) twice; (0, 2), (1, 0), (2, 0) once each; correct rows never count.
    assert most_confused_pairs(true, predicted, 3) == [((0, 1), 2), ((0, 2), 1), ((1, 0), 1)]
    assert most_confused_pairs(true, true, 3) == []


def test_a_bundle_trained_on_other_categories_is_refused(pipeline, mlp_bundle, tmp_path):
    bundle_dir = tmp_path / "mlp"
    shutil.copytree(mlp_bundle, bundle_dir)
    labels = read_json(bundle_dir / "labels.json")
    write_json(bundle_dir / "labels.json", [labels[1], labels[0], *labels[2:]])
    with pytest.raises(MeliError, match="categories differ") as error:
        evaluate(EvaluateParams(), bundle_dir, pipeline.prepared, tmp_path / "metrics.json",
                 tmp_path / "plots")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "metrics.json").exists()


def test_a_missing_bundle_is_a_meli_error(pipeline, tmp_path):
    with pytest.raises(MeliError, match="no model bundle"):
        evaluate(EvaluateParams(), tmp_path / "nothing", pipeline.prepared,
                 tmp_path / "metrics.json", tmp_path / "plots")


# ---- meli.bundles.metrics against scikit-learn ---------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    classes = 12
    # Classes 3 and 7 never occur in the truth; predictions may still name them.
    present = np.setdiff1d(np.arange(classes - 2), [3, 7])
    true = rng.choice(present, size=400)
    predicted = np.where(rng.random(400) < 0.6, true, rng.integers(0, classes, size=400))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns about classes missing from y_true
        sk_balanced = balanced_accuracy_score(true, predicted)
        sk_f1 = f1_score(true, predicted, average="macro",
                         labels=np.union1d(true, predicted))
        sk_recall = recall_score(true, predicted, average=None, labels=np.unique(true))
    assert metrics.balanced_accuracy(true, predicted, classes) == pytest.approx(sk_balanced,
                                                                                abs=1e-12)
    assert metrics.macro_f1(true, predicted, classes) == pytest.approx(sk_f1, abs=1e-12)
    assert metrics.accuracy(true, predicted) == pytest.approx(accuracy_score(true, predicted))
    recall = metrics.recall_per_class(true, predicted, classes)
    assert recall.shape == (classes,)
    assert recall[np.unique(true)] == pytest.approx(sk_recall, abs=1e-12)
    absent = np.setdiff1d(np.arange(classes), true)
    assert np.isnan(recall[absent]).all()
    assert not np.isnan(recall[np.unique(true)]).any()


def test_balanced_accuracy_weighs_every_present_class_equally():
    # 90 rows of class 0 all right, 10 rows of class 1 all wrong: accuracy 0.9, balanced 0.5.
    true = np.array([0] * 90 + [1] * 10)
    predicted = np.zeros(100, dtype=np.int64)
    assert metrics.accuracy(true, predicted) == pytest.approx(0.9)
    assert metrics.balanced_accuracy(true, predicted, 5) == pytest.approx(0.5)
    assert np.isnan(metrics.balanced_accuracy(np.array([], dtype=np.int64),
                                              np.array([], dtype=np.int64), 5))
