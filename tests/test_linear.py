"""The linear model: TF-IDF n-grams against a plain-Python reference, both estimators, the compact
bundle (pruning, int8 and float16 weights, scoring, reading a weight) and its round trip (train ->
bundle -> `meli predict`), tampered arrays, and its params' errors."""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from meli.bundles import metrics
from meli.bundles.linear import FactoredHead, SparseHead, compact
from meli.bundles.load import load_classifier
from meli.cli import main
from meli.data.tfidf import _Batch, char_ngrams, fit_features, word_ngrams
from meli.errors import MeliError
from meli.layout import split_path
from meli.params import LinearParams, load_params
from meli.stages.linear import train_linear
from meli.training.linear import SVM_GROUP, fit, fit_temperature, mixing_weights


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
        "idf.npy", "svm.indptr.npy", "svm.categories.npy", "svm.weights.npy", "svm.scales.npy",
        "svm.intercept.npy", "softmax.rows.npy", "softmax.coef.npy", "softmax.scales.npy",
        "softmax.projection.npy", "softmax.intercept.npy", "calibration.json",
        "calibration.true_probabilities.npy", "calibration.counts.npy"}
    # Compacted, and what that cost measured in the same run.
    assert result.bundle_bytes < result.uncompacted_bytes / 3
    assert result.validation_balanced_accuracy >= result.uncompacted_balanced_accuracy - 0.001
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


def test_a_bundles_feature_rows_add_up_to_its_scores(pipeline, linear_bundle):
    # What explanations read: each head's W[feature] and W[feature, category], as loaded from
    # the compact bundle, give the head's scores exactly (up to float32 sums).
    bundle, _ = linear_bundle
    classifier = load_classifier(bundle)
    titles = pq.read_table(split_path(pipeline.prepared, "test"), columns=["title"])
    matrix = classifier.features.matrix(classifier.normalize(titles.column("title").slice(0, 40)))
    used = np.unique(matrix.indices)
    for head in classifier.heads:
        rows = np.stack([head.row(feature) for feature in used])
        assert np.allclose(matrix[:, used] @ rows + head.intercept, head.scores(matrix),
                           atol=1e-4), head.estimator
        category = int(head.scores(matrix)[0].argmax())
        assert [head.weight(feature, category) for feature in used[:25]] == \
            pytest.approx(rows[:25, category].tolist(), abs=1e-6)


def test_two_fits_give_the_same_bits(pipeline, linear_bundle, tmp_path):
    again = tmp_path / "linear"
    train_linear(LinearParams(), pipeline.prepared, again, tmp_path / "live")
    bundle, _ = linear_bundle
    for name in ("svm.weights.npy", "svm.categories.npy", "svm.scales.npy", "svm.intercept.npy",
                 "softmax.coef.npy", "softmax.rows.npy", "softmax.projection.npy", "idf.npy",
                 "word_keys.npy", "config.json"):
        assert hashlib.sha256((again / name).read_bytes()).digest() == \
            hashlib.sha256((bundle / name).read_bytes()).digest(), name


def test_a_tampered_array_fails_in_one_line_and_runs_nothing(linear_bundle, tmp_path):
    bundle, _ = linear_bundle
    copy = tmp_path / "linear"
    shutil.copytree(bundle, copy)
    # An object array can only be read by unpickling: allow_pickle=False refuses it.
    np.save(copy / "svm.weights.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MeliError, match="damaged linear bundle") as caught:
        load_classifier(copy)
    assert "\n" not in str(caught.value)
    (copy / "svm.weights.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(MeliError, match="damaged linear bundle"):
        load_classifier(copy)


def _tampered(name: str, change):
    """(file, change): `change` takes the loaded array (and the bundle's directory) and returns
    what to save in its place."""
    return pytest.param(name, change, id=f"{name}-{change.__name__}")


def out_of_range(array, _):
    array = array.copy()
    array[len(array) // 2] = np.iinfo(array.dtype).max if array.dtype.kind in "iu" else 9
    return array


def wrong_dtype(array, _):
    return array.astype(np.float64 if array.dtype.kind == "f" else np.float32)


def unsorted(array, _):
    array = array.copy()
    array[[1, 2]] = array[[2, 1]]  # the first two entries of a run (or two rows), swapped
    return array


def one_short(array, _):
    return array[:-1]


def not_finite(array, _):
    array = array.astype(np.float32)
    array[0] = np.nan
    return array


def negative(array, _):
    array = array.copy()
    array[np.argmax(array)] *= -1
    return array


def not_increasing(array, _):
    array = array.copy()
    middle = len(array) // 2
    array[middle] = array[middle + 2]
    return array


def svm_categories_unsorted(array, directory):
    """Two categories of one feature's run swapped."""
    indptr = np.load(directory / "svm.indptr.npy")
    feature = int(np.flatnonzero(np.diff(indptr) >= 2)[0])
    array = array.copy()
    first = indptr[feature]
    array[[first, first + 1]] = array[[first + 1, first]]
    return array


@pytest.mark.parametrize("name, change", [
    _tampered("svm.categories.npy", out_of_range),
    _tampered("svm.categories.npy", wrong_dtype),
    _tampered("svm.categories.npy", svm_categories_unsorted),
    _tampered("svm.categories.npy", one_short),
    _tampered("svm.indptr.npy", one_short),
    _tampered("svm.indptr.npy", not_increasing),
    _tampered("svm.weights.npy", wrong_dtype),
    _tampered("svm.weights.npy", one_short),
    _tampered("svm.scales.npy", negative),
    _tampered("svm.scales.npy", not_finite),
    _tampered("svm.intercept.npy", one_short),
    _tampered("softmax.rows.npy", out_of_range),
    _tampered("softmax.rows.npy", unsorted),
    _tampered("softmax.rows.npy", wrong_dtype),
    _tampered("softmax.coef.npy", wrong_dtype),
    _tampered("softmax.coef.npy", one_short),
    _tampered("softmax.scales.npy", one_short),
    _tampered("softmax.projection.npy", not_finite),
    _tampered("softmax.projection.npy", one_short),
])
def test_a_tampered_compact_array_fails_in_one_line_naming_the_file(
        linear_bundle, tmp_path, capsys, name, change):
    bundle, _ = linear_bundle
    copy = tmp_path / "linear"
    shutil.copytree(bundle, copy)
    np.save(copy / name, change(np.load(copy / name), copy), allow_pickle=False)
    capsys.readouterr()
    assert main(["predict", "--model", str(copy), "funda celular"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert len(captured.err.splitlines()) == 1, captured.err
    assert captured.err.startswith(f"meli predict: error: {copy / name}: ")


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
    assert head.rank == rank and head.precision == "float32"
    if rank:
        assert isinstance(head, FactoredHead) and head.coef.shape == (first.features.size, rank)
        assert np.array_equal(head.coef, second.heads[0].coef)
    else:
        assert isinstance(head, SparseHead) and head.matrix().shape == (first.features.size, 2)
        assert (head.matrix() != second.heads[0].matrix()).nnz == 0
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
    assert not (bundle / "svm.weights.npy").exists()
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
    with pytest.raises(MeliError, match=r"softmax.projection.npy: float32\(31, "):
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
    assert (one.matrix() != two.matrix()).nnz == 0
    assert np.array_equal(one.intercept, two.intercept)
    assert one.matrix()[:, 3].nnz == 0 and one.intercept[3] == -1.0  # never seen: never chosen
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


def _predicted_top1(bundle, titles: list[str], tmp_path) -> list[str]:
    """`meli predict --input` of the titles with a bundle: the first category of each."""
    source = tmp_path / f"titles-{bundle.name}.csv"
    with source.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["title"])
        writer.writerows([title] for title in titles)
    output = tmp_path / f"predicted-{bundle.name}.csv"
    subprocess.run([sys.executable, "-m", "meli", "predict", "--model", str(bundle), "--input",
                    str(source), "--output", str(output), "-k", "1"], check=True,
                   capture_output=True)
    rows = list(csv.DictReader(io.StringIO(output.read_text())))
    assert [row["title"] for row in rows] == titles
    return [row["category"] for row in rows]


def test_the_compact_bundle_predicts_as_the_uncompacted_one_through_meli_predict(
        pipeline, linear_bundle, tmp_path):
    bundle, compacted = linear_bundle
    # The same fit kept whole: every nonzero weight, in float32.
    uncompacted = tmp_path / "uncompacted"
    whole = train_linear(LinearParams(keep_weights=[1.0], keep_rows=[1.0], precision="float32"),
                         pipeline.prepared, uncompacted, tmp_path / "live")
    assert whole.validation_balanced_accuracy == pytest.approx(
        compacted.uncompacted_balanced_accuracy, abs=1e-9)
    config = load_classifier(bundle).config
    assert config["kept"][0] < 1 and config["heads"][0]["precision"] == "int8"
    assert sum(path.stat().st_size for path in bundle.iterdir()) < \
        sum(path.stat().st_size for path in uncompacted.iterdir()) / 2
    titles = pq.read_table(split_path(pipeline.prepared, "test"), columns=["title"])
    titles = titles.column("title").to_pylist()
    same = np.mean(np.array(_predicted_top1(bundle, titles, tmp_path))
                   == np.array(_predicted_top1(uncompacted, titles, tmp_path)))
    assert same >= 0.995, f"{same:.4f} of the test titles get the same first category"


def _random_sparse_head(rng, features=300, categories=70, density=0.2) -> SparseHead:
    weights = sp.random(features, categories, density=density, random_state=rng,
                        dtype=np.float32, data_rvs=lambda n: rng.normal(size=n))
    weights = weights.tolil()
    weights[5, :] = rng.normal(size=categories)  # rows held dense in memory for scoring, too
    weights[7, :60] = rng.normal(size=60)
    return SparseHead.from_matrix("svm", weights.tocsr(), rng.normal(size=categories))


def _random_titles(rng, titles=50, features=300) -> sp.csr_matrix:
    matrix = sp.random(titles, features, density=0.05, random_state=rng, dtype=np.float32,
                       format="lil")
    matrix[3] = 0  # a title with no known n-gram
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    return matrix


@pytest.mark.parametrize("precision", ["float32", "float16", "int8"])
def test_a_compact_sparse_head_scores_as_its_weights_say(precision):
    rng = np.random.default_rng(0)
    head = _random_sparse_head(rng)
    titles = _random_titles(rng)
    whole = head.matrix().toarray()
    assert np.allclose(head.scores(titles), titles @ whole + head.intercept, atol=1e-5)
    small = compact(head, 0.05, precision)
    kept = small.matrix().toarray()
    # The 5% of features x categories weights largest in magnitude, and no other.
    assert small.stored == int(0.05 * whole.size)
    assert np.abs(whole[kept == 0]).max() <= np.abs(whole[kept != 0]).min() + 1e-6
    tolerance = {"float32": 0, "float16": 1e-3, "int8": 0.5 / 127}[precision]
    largest = np.abs(whole).max(axis=1, keepdims=True)
    assert (np.abs(kept - whole)[kept != 0] <= (tolerance * largest + 1e-7).repeat(
        whole.shape[1], axis=1)[kept != 0]).all()
    assert np.allclose(small.scores(titles), titles @ kept + head.intercept, atol=1e-4)
    # A weight read back, and each n-gram's part of a title's score.
    features = np.array([5, 7, 0, 299, 5])
    assert np.allclose(small.weights(features, 42), kept[features, 42])
    for feature in (5, 7, 0, 299):
        assert np.allclose(small.row(feature), kept[feature])
        assert small.weight(feature, 42) == pytest.approx(kept[feature, 42], abs=1e-6)
    with pytest.raises(IndexError, match="feature 300 out of range"):
        small.row(300)
    with pytest.raises(IndexError, match="category 70 out of range"):
        small.weight(0, 70)
    contributions = small.contributions(titles, 42)
    assert np.allclose(np.asarray(contributions.sum(axis=1)).ravel() + small.intercept[42],
                       small.scores(titles)[:, 42], atol=1e-4)


@pytest.mark.parametrize("precision", ["float32", "float16", "int8"])
def test_a_compact_factored_head_keeps_the_rows_of_largest_norm(precision):
    rng = np.random.default_rng(1)
    coef = (rng.normal(size=(300, 8)) * rng.uniform(0.01, 1, (300, 1))).astype(np.float32)
    projection = rng.normal(size=(8, 70)).astype(np.float32)
    head = FactoredHead.from_dense("softmax", coef, projection, rng.normal(size=70))
    titles = _random_titles(rng)
    assert np.allclose(head.scores(titles), titles @ coef @ projection + head.intercept,
                       atol=1e-4)
    small = compact(head, 0.5, precision)
    norms = np.linalg.norm(coef, axis=1)
    assert len(small.rows) == 150 and norms[small.rows].min() >= np.delete(norms,
                                                                        small.rows).max()
    kept = np.zeros_like(coef)
    kept[small.rows] = small.dense_rows()
    tolerance = {"float32": 0, "float16": 1e-3, "int8": 0.5 / 127}[precision]
    assert (np.abs(kept - coef)[small.rows] <= tolerance * np.abs(coef[small.rows]).max(
        axis=1, keepdims=True) + 1e-7).all()
    assert np.allclose(small.scores(titles), titles @ kept @ projection + head.intercept,
                       atol=1e-4)
    features = np.concatenate([small.rows[:3], np.setdiff1d(np.arange(300), small.rows)[:2]])
    assert np.allclose(small.weights(features, 9), (kept @ projection)[features, 9], atol=1e-5)
    assert (small.weights(features, 9)[3:] == 0).all()  # pruned rows weigh nothing
    for feature in features:
        assert np.allclose(small.row(feature), (kept @ projection)[feature], atol=1e-5)
        assert small.weight(feature, 9) == pytest.approx((kept @ projection)[feature, 9],
                                                         abs=1e-5)
    with pytest.raises(IndexError, match="feature -1 out of range"):
        small.weight(-1, 9)
    contributions = small.contributions(titles, 9)
    assert np.allclose(np.asarray(contributions.sum(axis=1)).ravel() + small.intercept[9],
                       small.scores(titles)[:, 9], atol=1e-4)


def test_the_svm_fits_groups_of_categories_as_one_vs_rest_does():
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(3)
    categories = SVM_GROUP + 8  # two liblinear calls
    words = [f"w{index}" for index in range(400)]
    texts, labels = [], []
    for category in range(categories):
        own = words[category * 8:(category + 1) * 8]
        for _ in range(6):
            texts.append(" ".join(rng.choice(own, 3)) + " " + " ".join(rng.choice(words, 2)))
            labels.append(category)
    texts, labels = pa.array(texts), np.array(labels)
    params = LinearParams(estimator="svm", char_ngrams=[0, 0], threads=1)
    one = fit(texts, labels, categories, params)
    two = fit(texts, labels, categories, LinearParams(estimator="svm", char_ngrams=[0, 0],
                                                      threads=2))
    assert (one.heads[0].matrix() != two.heads[0].matrix()).nnz == 0
    # Each category's problem is its titles against all the others: the weights of a
    # one-category liblinear fit, up to the solver's tolerance.
    matrix = one.features.matrix(texts).astype(np.float64)
    weights = one.heads[0].matrix().toarray()
    for category in (0, SVM_GROUP - 1, SVM_GROUP, categories - 1):
        alone = LinearSVC(C=params.C, random_state=0).fit(matrix, labels == category)
        assert np.abs(weights[:, category] - alone.coef_[0]).max() < 0.02
        assert one.heads[0].intercept[category] == pytest.approx(alone.intercept_[0], abs=0.02)
    assert (one.heads[0].scores(one.features.matrix(texts)).argmax(axis=1) == labels).mean() \
        > 0.95


@pytest.mark.parametrize("text, message", [
    ("linear:\n  keep_weights: [0.02, 1.5]\n",
     "linear.keep_weights: shares in (0, 1]"),
    ("linear:\n  keep_rows: [0]\n", "linear.keep_rows: shares in (0, 1]"),
    ("linear:\n  keep_rows: []\n", "linear.keep_rows must be a list of at least 1 item(s)"),
    ("linear:\n  max_loss: -0.1\n", "linear.max_loss must be >= 0.0"),
    ("linear:\n  precision: int4\n", "linear.precision must be one of 'int8', 'float16'"),
])
def test_an_out_of_range_compaction_param_fails_in_one_line_naming_the_key(tmp_path, text,
                                                                             message):
    params = tmp_path / "params.yaml"
    params.write_text(text)
    with pytest.raises(MeliError) as caught:
        load_params(params)
    assert str(caught.value).startswith(f"{params}: {message}"), str(caught.value)
    assert "\n" not in str(caught.value)
