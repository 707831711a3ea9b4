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
from meli.training.linear import fit, fit_temperature


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
    assert result.estimator == "svm"  # a small training split: liblinear's SVM
    assert 0.8 < result.validation_balanced_accuracy <= 1.0
    assert {path.name for path in bundle.iterdir()} == {
        "config.json", "labels.json", "normalization.json", "word_keys.npy", "char_keys.npy",
        "idf.npy", "coef.npy", "intercept.npy"}
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
    for name in ("coef.npy", "intercept.npy", "idf.npy", "word_keys.npy", "config.json"):
        assert hashlib.sha256((again / name).read_bytes()).digest() == \
            hashlib.sha256((bundle / name).read_bytes()).digest(), name


def test_a_tampered_array_fails_in_one_line_and_runs_nothing(linear_bundle, tmp_path):
    import shutil

    bundle, _ = linear_bundle
    copy = tmp_path / "linear"
    shutil.copytree(bundle, copy)
    # An object array can only be read by unpickling: allow_pickle=False refuses it.
    np.save(copy / "coef.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MeliError, match="damaged linear bundle") as caught:
        load_classifier(copy)
    assert "\n" not in str(caught.value)
    (copy / "coef.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(MeliError, match="damaged linear bundle"):
        load_classifier(copy)
    np.save(copy / "coef.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(MeliError, match="coef.npy: weights of float32"):
        load_classifier(copy)


def test_the_softmax_estimator_learns_the_same_task_deterministically():
    texts = pa.array(["funda celular samsung", "funda iphone", "zapatilla nike running",
                      "zapatilla adidas", "celular samsung galaxy", "nike running short"] * 10)
    labels = np.array([0, 0, 1, 1, 0, 1] * 10)
    params = LinearParams(estimator="softmax", char_min_df=1, epochs=5, batch_size=8,
                          learning_rate=0.5)
    first, second = (fit(texts, labels, 2, params) for _ in range(2))
    assert first.estimator == "softmax"
    assert np.array_equal(first.coef, second.coef)
    predicted = np.asarray(first.features.matrix(texts) @ first.coef + first.intercept)
    assert (predicted.argmax(axis=1) == labels).all()


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
    assert np.array_equal(one.coef, two.coef) and np.array_equal(one.intercept, two.intercept)
    assert (one.coef[:, 3] == 0).all() and one.intercept[3] == -1.0  # never seen: never chosen
    scores = np.asarray(one.features.matrix(texts) @ one.coef + one.intercept)
    assert (scores.argmax(axis=1) == labels).all()


def test_balanced_class_weights_favour_the_rare_category_in_either_estimator():
    texts = pa.array(["funda celular"] * 30 + ["funda iphone"] * 3 + ["zapatilla nike"] * 10)
    labels = np.array([0] * 30 + [1] * 3 + [2] * 10)
    for estimator in ("svm", "softmax"):
        plain, balanced = (fit(texts, labels, 3, LinearParams(
            estimator=estimator, char_min_df=1, class_weight=kind, epochs=3, batch_size=4))
            for kind in ("none", "balanced"))
        rare = plain.features.matrix(pa.array(["funda iphone"]))
        # The rare category's score relative to the common one grows with balancing.
        margin = [float(np.asarray(rare @ model.coef + model.intercept)[0, 1]
                        - np.asarray(rare @ model.coef + model.intercept)[0, 0])
                  for model in (plain, balanced)]
        assert margin[1] > margin[0], estimator
