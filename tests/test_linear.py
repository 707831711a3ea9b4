"""The linear model: TF-IDF n-grams against a plain-Python reference, both estimators, the bundle
round trip (train -> bundle -> `meli predict`), a tampered bundle, and its params' errors."""

from __future__ import annotations

import collections
import hashlib
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meli.bundles import metrics
from meli.bundles.load import load_classifier
from meli.data.tfidf import _Batch, char_ngrams, fit_features, word_ngrams
from meli.errors import MeliError
from meli.layout import split_path
from meli.params import LinearParams, load_params
from meli.stages.linear import train_linear
from meli.training.linear import fit, fit_temperature, mixing_weights


def reference_char_ngrams(text: str, low: int, high: int) -> collections.Counter:
    """scikit-learn's char_wb, written plainly: each word padded with spaces, its windows."""
    grams = collections.Counter()
    for word in text.split():
        padded = f" {word} ".encode()
        for n in range(low, high + 1):
            for start in range(len(padded) - n + 1):
                gram = padded[start:start + n]
                if b" " in gram[1:-1] or not gram.strip():
                    continue
                grams[(n << 56) | int.from_bytes(gram, "big")] += 1
    return grams


def test_character_ngrams_are_those_of_each_word_padded_with_spaces():
    texts = ["funda celular", "", "a", "xx yy zz", "0000 00gb", "cafe con leche"]
    keys, rows = char_ngrams(_Batch.of(pa.array(texts)), 1, 5)
    for row, text in enumerate(texts):
        found = collections.Counter(int(key) for key in keys[rows == row])
        assert found == reference_char_ngrams(text, 1, 5), text


def test_word_ngram_keys_depend_on_the_words_not_on_the_batch():
    texts = ["funda celular samsung", "", "funda", "celular samsung funda celular"]
    keys, rows = word_ngrams(_Batch.of(pa.array(texts)), 1, 2)
    assert [int((rows == row).sum()) for row in range(len(texts))] == [5, 0, 1, 7]
    by_row = [sorted(keys[rows == row].tolist()) for row in range(len(texts))]
    assert set(by_row[2]) <= set(by_row[0])  # "funda" is one key wherever it stands
    assert len(set(by_row[3])) == 6  # "funda celular" twice
    alone, _ = word_ngrams(_Batch.of(pa.array(texts).slice(3, 1)), 1, 2)
    assert sorted(alone.tolist()) == by_row[3]


def test_features_are_l2_normalized_tfidf_rows_and_unknown_ngrams_drop():
    texts = pa.array(["funda celular", "funda iphone", "zapatilla nike"] * 3)
    features = fit_features(texts, LinearParams(char_min_df=1))
    matrix = features.matrix(pa.array(["funda celular", "qqqq", ""]))
    block = len(features.word_keys)
    words, chars = matrix[:, :block].toarray(), matrix[:, block:].toarray()
    assert np.allclose(np.linalg.norm(words[0]), 1.0) and np.allclose(np.linalg.norm(chars[0]), 1)
    assert matrix[2].nnz == 0 and words[1].sum() == 0  # nothing of "qqqq" as a word was seen
    assert features.known_words(pa.array(["funda celular", "funda xyz", "xyz"])).tolist() == \
        [2, 1, 0]


@pytest.fixture(scope="module")
def linear_bundle(pipeline):
    """The linear model of the small pipeline (models/linear), with the default params."""
    bundle = pipeline.root / "models" / "linear"
    result = train_linear(LinearParams(), pipeline.prepared, bundle,
                          pipeline.root / "results" / "train" / "linear")
    return bundle, result


def test_the_linear_bundle_predicts_as_meli_predict_does_and_calibrates_on_validation(
        pipeline, linear_bundle):
    bundle, result = linear_bundle
    # A small training split: liblinear's SVM and the softmax, mixed by their validation shares.
    assert result.estimator == "svm+softmax"
    assert sum(result.shares) == pytest.approx(1.0) and len(result.temperatures) == 2
    assert 0.8 < result.validation_balanced_accuracy <= 1.0
    assert {path.name for path in bundle.iterdir()} == {
        "config.json", "labels.json", "normalization.json", "word_keys.npy", "char_keys.npy",
        "idf.npy", "svm.coef.npy", "svm.intercept.npy", "softmax.coef.npy",
        "softmax.projection.npy", "softmax.intercept.npy", "calibration.json",
        "calibration.true_probabilities.npy", "calibration.counts.npy"}
    classifier = load_classifier(bundle)
    test = pq.read_table(split_path(pipeline.prepared, "test"), columns=["title", "label"])
    probabilities = classifier.probabilities(test.column("title"))
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    truth = test.column("label").to_numpy()
    assert metrics.balanced_accuracy(truth, probabilities.argmax(axis=1),
                                     len(classifier.labels)) > 0.8
    titles = test.column("title").to_pylist()[:3]
    shown = subprocess.run([sys.executable, "-m", "meli", "predict", "--model", str(bundle),
                            "-k", "2", *titles], capture_output=True, text=True, check=True)
    for title, row in zip(titles, classifier.top(titles, k=2), strict=True):
        assert title in shown.stdout
        assert f"{100 * row[0][1]:5.1f}%  {row[0][0]}" in shown.stdout


def test_two_fits_give_the_same_bits(pipeline, linear_bundle, tmp_path):
    again = tmp_path / "linear"
    train_linear(LinearParams(), pipeline.prepared, again, tmp_path / "live")
    bundle, _ = linear_bundle
    for name in ("svm.coef.npy", "svm.intercept.npy", "softmax.coef.npy",
                 "softmax.projection.npy", "idf.npy", "word_keys.npy", "config.json"):
        assert hashlib.sha256((again / name).read_bytes()).digest() == \
            hashlib.sha256((bundle / name).read_bytes()).digest(), name


def test_a_tampered_array_fails_in_one_line_and_runs_nothing(linear_bundle, tmp_path):
    import shutil

    bundle, _ = linear_bundle
    copy = tmp_path / "linear"
    shutil.copytree(bundle, copy)
    # An object array can only be read by unpickling: allow_pickle=False refuses it.
    np.save(copy / "svm.coef.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MeliError, match="damaged linear bundle") as caught:
        load_classifier(copy)
    assert "\n" not in str(caught.value)
    (copy / "svm.coef.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(MeliError, match="damaged linear bundle"):
        load_classifier(copy)
    np.save(copy / "svm.coef.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(MeliError, match="svm.coef.npy: coef of float32"):
        load_classifier(copy)


@pytest.mark.parametrize("rank", [0, 4])
def test_the_softmax_estimator_learns_the_same_task_deterministically(rank):
    texts = pa.array(["funda celular samsung", "funda iphone", "zapatilla nike running",
                      "zapatilla adidas", "celular samsung galaxy", "nike running short"] * 10)
    labels = np.array([0, 0, 1, 1, 0, 1] * 10)
    params = LinearParams(estimator="softmax", char_min_df=1, epochs=5, batch_size=8,
                          learning_rate=0.5, rank=rank)
    first, second = (fit(texts, labels, 2, params) for _ in range(2))
    assert first.estimator == "softmax"
    head = first.heads[0]
    assert head.coef.shape == (first.features.size, rank or 2) and head.rank == rank
    assert (head.projection is None) == (rank == 0)
    assert np.array_equal(head.coef, second.heads[0].coef)
    predicted = head.scores(first.features.matrix(texts))
    assert (predicted.argmax(axis=1) == labels).all()


def test_a_diverging_softmax_fails_in_one_line_naming_the_learning_rate():
    texts = pa.array(["funda celular samsung", "zapatilla nike running", "libro"] * 20)
    labels = np.array([0, 1, 2] * 20)
    with pytest.raises(MeliError, match="diverged.*linear.learning_rate") as caught:
        fit(texts, labels, 3, LinearParams(estimator="softmax", char_min_df=1, epochs=2,
                                           batch_size=4, learning_rate=1e20, rank=8))
    assert "\n" not in str(caught.value)


def test_a_factored_bundle_round_trips_through_meli_predict(pipeline, tmp_path):
    params = LinearParams(estimator="softmax", rank=32, epochs=5, batch_size=16)
    bundle = tmp_path / "linear"
    result = train_linear(params, pipeline.prepared, bundle, tmp_path / "live")
    assert result.estimator == "softmax" and result.validation_balanced_accuracy > 0.8
    assert (bundle / "softmax.projection.npy").exists()
    assert not (bundle / "svm.coef.npy").exists()
    classifier = load_classifier(bundle)
    assert classifier.heads[0].projection.shape == (32, len(classifier.labels))
    titles = pq.read_table(split_path(pipeline.prepared, "test"), columns=["title"])
    titles = titles.column("title").to_pylist()[:3]
    shown = subprocess.run([sys.executable, "-m", "meli", "predict", "--model", str(bundle),
                            "-k", "1", *titles], capture_output=True, text=True, check=True)
    for title, row in zip(titles, classifier.top(titles, k=1), strict=True):
        assert f"{100 * row[0][1]:5.1f}%  {row[0][0]}" in shown.stdout, title
    np.save(bundle / "softmax.projection.npy",
            np.zeros((31, len(classifier.labels)), np.float32))
    with pytest.raises(MeliError, match="softmax.projection.npy: projection of float32"):
        load_classifier(bundle)


def test_the_temperature_minimizes_validation_log_loss():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 500)
    scores = rng.normal(size=(500, 4))
    scores[np.arange(500), labels] += 2.0
    # Scores made 10x too confident: the fitted temperature undoes about that much.
    temperature, loss = fit_temperature(scores * 10, labels)
    assert 5 < temperature < 20
    _, loss_at_one = fit_temperature(scores, labels)
    assert loss == pytest.approx(loss_at_one, rel=1e-3)


def test_a_misspelled_linear_key_fails_in_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("linear:\n  char_ngram: [2, 5]\n")
    with pytest.raises(MeliError) as caught:
        load_params(params)
    assert str(caught.value).startswith(f"{params}: unknown key 'linear.char_ngram'")
    assert "(did you mean 'linear.char_ngrams'?)" in str(caught.value)
    params.write_text("linear:\n  char_ngrams: [2, 9]\n")
    with pytest.raises(MeliError, match="params.yaml: linear.char_ngrams: at most 7 bytes"):
        load_params(params)


def test_the_svm_gives_the_same_weights_at_any_thread_count():
    texts = pa.array(["funda celular samsung", "funda iphone", "zapatilla nike running",
                      "zapatilla adidas", "celular samsung galaxy", "nike running short",
                      "mochila escolar", "mochila notebook"] * 5)
    labels = np.array([0, 0, 1, 1, 0, 1, 2, 2] * 5)
    one, two = (fit(texts, labels, 4, LinearParams(estimator="svm", char_min_df=1, threads=t))
                for t in (1, 2))
    features = one.features
    one, two = one.heads[0], two.heads[0]
    assert np.array_equal(one.coef, two.coef) and np.array_equal(one.intercept, two.intercept)
    assert (one.coef[:, 3] == 0).all() and one.intercept[3] == -1.0  # never seen: never chosen
    assert (one.scores(features.matrix(texts)).argmax(axis=1) == labels).all()


def test_balanced_class_weights_favour_the_rare_category_in_either_estimator():
    texts = pa.array(["funda celular"] * 30 + ["funda iphone"] * 3 + ["zapatilla nike"] * 10)
    labels = np.array([0] * 30 + [1] * 3 + [2] * 10)
    for estimator in ("svm", "softmax"):
        plain, balanced = (fit(texts, labels, 3, LinearParams(
            estimator=estimator, char_min_df=1, class_weight=kind, epochs=3, batch_size=4))
            for kind in ("none", "balanced"))
        rare = pa.array(["funda iphone"])
        # The rare category's score relative to the common one grows with balancing.
        margin = [float(np.diff(model.heads[0].scores(model.features.matrix(rare))[0, [0, 1]])[0])
                  for model in (plain, balanced)]
        assert margin[1] > margin[0], estimator


def test_the_heads_shares_favour_the_better_head_and_mix_complementary_ones():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 400)
    sharp = np.full((400, 5), 0.05, np.float32)
    sharp[np.arange(400), labels] = 0.8
    flat = rng.dirichlet(np.ones(5), 400).astype(np.float32)
    assert mixing_weights([sharp], labels, 5) == [1.0]
    first, second = mixing_weights([sharp, flat], labels, 5)
    assert first > 0.5 and first + second == pytest.approx(1.0)
    assert mixing_weights([flat, sharp], labels, 5)[1] > 0.5
    # Two heads, each right with confidence on half the titles and barely wrong on the
    # other half: only a mixture gets every title right.
    one = np.full((400, 5), 0.1, np.float32)
    two = np.full((400, 5), 0.1, np.float32)
    wrong = (labels + 1) % 5
    for probabilities, right in ((one, np.arange(400) < 200), (two, np.arange(400) >= 200)):
        probabilities[np.arange(400), np.where(right, labels, wrong)] = 0.6
        probabilities[np.flatnonzero(~right), labels[~right]] = 0.3
    share = mixing_weights([one, two], labels, 5)[0]
    mixture = share * one + (1 - share) * two
    assert 0 < share < 1 and (mixture.argmax(axis=1) == labels).all()


def test_temperatures_come_from_a_seeded_validation_sample_and_accuracy_from_all(
        pipeline, tmp_path, monkeypatch):
    import meli.stages.linear as stage

    monkeypatch.setattr(stage, "CALIBRATION_ROWS", 40)
    bundle = tmp_path / "linear"
    result = train_linear(LinearParams(), pipeline.prepared, bundle, tmp_path / "live")
    validation = pq.read_table(split_path(pipeline.prepared, "validation"),
                               columns=["title", "label"])
    assert len(validation) > 40
    classifier = load_classifier(bundle)
    predicted = classifier.predict(validation.column("title"))
    # The reported figure is over every validation title, not the 40 calibrated on.
    assert result.validation_balanced_accuracy == metrics.balanced_accuracy(
        validation.column("label").to_numpy(), predicted, len(classifier.labels))
    again = tmp_path / "again"
    train_linear(LinearParams(), pipeline.prepared, again, tmp_path / "live2")
    assert (again / "config.json").read_text() == (bundle / "config.json").read_text()
