"""`meli explain`: the linear model's exact decomposition against a plain-Python reference, the
occlusion of every other bundle (its batches counted), the sanity of what it finds on synthetic
titles whose telling words are known, and the command line (text, JSON, input files, errors)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sample_words import explanation_sanity, names_the_product, telling_words

from meli.bundles import explain as explain_module
from meli.bundles.confusions import confused_pairs, confusions_markdown, most_confused
from meli.bundles.explain import (
    DECOMPOSITION,
    MAX_WORDS,
    OCCLUSION,
    explain,
    head_factors,
    occlusion_titles,
)
from meli.bundles.load import load_classifier
from meli.cli import main
from meli.data.sample import CATALOGUE, _generate_columns
from meli.data.tfidf import _Batch, word_ngrams
from meli.layout import split_path
from meli.params import EnsembleParams, LinearParams

EPSILON32 = float(np.finfo(np.float32).eps)
# Titles that exercise the rules: a repeated word (one feature, two occurrences), punctuation
# that normalization drops (a word of no token, a word of two), digits folded, unknown words,
# a one-word title.
TRICKY = [
    "Funda Funda Celular Samsung Galaxy A10",
    "Funda Silicona iPhone-11 - roja",
    "Celular Samsung Galaxy A10 32gb",
    "qqqq zzzz",
    "zapatillas",
    "Zapatillas Nike Air Max Talle 42 Nike",
]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what fixtures printed
    code = main(["explain", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sample_titles(pipeline, count: int = 60) -> list[str]:
    table = pq.read_table(split_path(pipeline.prepared, "test"), columns=["title"])
    return table.column("title").to_pylist()[:count] + TRICKY


@pytest.fixture(scope="module", params=["svm+softmax", "svm", "softmax-factored"])
def linear_bundle(request, pipeline, tmp_path_factory):
    """The small pipeline's linear model with each kind of head: two heads mixed, the SVM
    alone, the factored softmax alone."""
    from meli.stages.linear import train_linear

    settings = {"svm+softmax": {}, "svm": {"estimator": "svm"},
                "softmax-factored": {"estimator": "softmax", "rank": 8}}[request.param]
    root = tmp_path_factory.mktemp(f"linear-{request.param}")
    train_linear(LinearParams(**settings), pipeline.prepared, root / "linear", root / "live")
    return root / "linear"


def dense_weights(head) -> np.ndarray:
    """W, features x categories, float64, of a head of either format: a compact head's rows as
    it reads them (`row`, pruned ones 0), a dense head's coef (times its projection)."""
    if callable(getattr(head, "row", None)):
        return np.stack([head.row(feature) for feature in range(head.size)]).astype(np.float64)
    return (head.coef if head.projection is None else head.coef @ head.projection).astype(
        np.float64)


# ---- the linear decomposition --------------------------------------------------------------

def test_contributions_and_intercept_equal_the_score_the_bundle_computes(pipeline,
                                                                         linear_bundle):
    classifier = load_classifier(linear_bundle)
    titles = sample_titles(pipeline)
    explanations = explain(classifier, titles)
    assert {e.method for e in explanations} == {DECOMPOSITION}
    # The score, recomputed apart: x . W + b per head, from the dense weights, in float64.
    matrix = classifier.features.matrix(classifier.normalize(titles)).toarray().astype(np.float64)
    factors = head_factors(classifier)
    raw = [matrix @ dense_weights(head) + head.intercept for head in classifier.heads]
    for row, explanation in enumerate(explanations):
        assert explanation.words == titles[row].split()
        c = explanation.category_id
        # float32 precision: a few units of float32's epsilon of the terms' magnitude.
        tolerance = 8 * EPSILON32 * (np.abs(explanation.contributions).sum()
                                     + abs(explanation.intercept))
        total = explanation.contributions.sum() + explanation.intercept
        assert abs(total - explanation.score) <= tolerance, explanation.title
        expected = sum(factor * part[row, c] for factor, part in zip(factors, raw, strict=True))
        assert abs(explanation.score - expected) <= tolerance, explanation.title
    # The heads' scores are the bundle's: its probabilities are their softmaxes mixed.
    mixed = sum((share if len(raw) > 1 else 1.0) * softmax(part / temperature)
                for part, share, temperature in zip(raw, classifier.shares,
                                                    classifier.temperatures, strict=True))
    probabilities = classifier.probabilities(titles)
    np.testing.assert_allclose(probabilities, mixed, atol=1e-5)
    # The category explained is the bundle's choice, with the bundle's probability.
    assert [e.category_id for e in explanations] == probabilities.argmax(axis=1).tolist()
    assert [e.probability for e in explanations] == pytest.approx(
        probabilities.max(axis=1).tolist(), abs=1e-6)
    if len(classifier.heads) == 1:  # one head: the score is the calibrated logit itself
        for row, explanation in enumerate(explanations):
            logit = raw[0][row, explanation.category_id] / classifier.temperatures[0]
            assert abs(explanation.score - logit) <= 8 * EPSILON32 * (
                np.abs(explanation.contributions).sum() + abs(explanation.intercept))


def softmax(values: np.ndarray) -> np.ndarray:
    values = np.exp(values - values.max(axis=1, keepdims=True))
    return values / values.sum(axis=1, keepdims=True)


def reference_word_contributions(classifier, title: str, category: int) -> np.ndarray:
    """The stated rule, written plainly: every occurrence of every kept n-gram of the title,
    its feature's x_f x sum_h a_h W_h[f, c] split evenly among the feature's occurrences, and a
    word n-gram's part evenly among its words; words are the title's whitespace-separated
    words, each owning the tokens it normalizes to."""
    features = classifier.features
    words = title.split()
    word_tokens = [classifier.normalize([word])[0].as_py().split() for word in words]
    tokens, owner = [], []
    for index, pieces in enumerate(word_tokens):
        tokens += pieces
        owner += [index] * len(pieces)
    occurrences = []  # (feature id, tokens spanned)
    low, high = features.word_ngrams
    for n in range(max(low, 1), high + 1):
        for start in range(len(tokens) - n + 1):
            gram = " ".join(tokens[start:start + n])
            key, _ = word_ngrams(_Batch.of(pa.array([gram])), n, n)
            position = np.searchsorted(features.word_keys, key[0])
            if position < len(features.word_keys) and features.word_keys[position] == key[0]:
                occurrences.append((int(position), list(range(start, start + n))))
    low, high = features.char_ngrams
    for index, token in enumerate(tokens):
        padded = f" {token} ".encode()
        for n in range(low, high + 1):
            for start in range(len(padded) - n + 1):
                gram = padded[start:start + n]
                if b" " in gram[1:-1] or not gram.strip():
                    continue
                key = np.uint64((n << 56) | int.from_bytes(gram, "big"))
                position = np.searchsorted(features.char_keys, key)
                if position < len(features.char_keys) and features.char_keys[position] == key:
                    occurrences.append((len(features.word_keys) + int(position), [index]))
    row = classifier.features.matrix(classifier.normalize([title]))
    x = dict(zip(row.indices.tolist(), row.data.astype(np.float64).tolist(), strict=True))
    weights = sum(factor * dense_weights(head)[:, category]
                  for factor, head in zip(head_factors(classifier), classifier.heads,
                                          strict=True))
    count = {feature: sum(1 for f, _ in occurrences if f == feature) for feature, _ in occurrences}
    assert set(count) == set(x)  # every feature of the row is found, and only those
    result = np.zeros(len(words))
    for feature, spanned in occurrences:
        part = x[feature] * weights[feature] / count[feature]
        for token in spanned:
            result[owner[token]] += part / len(spanned)
    return result


def test_words_get_their_ngrams_parts_as_the_rule_says(pipeline, linear_bundle):
    classifier = load_classifier(linear_bundle)
    titles = sample_titles(pipeline, count=20)
    for explanation in explain(classifier, titles, ngrams=True):
        expected = reference_word_contributions(classifier, explanation.title,
                                                explanation.category_id)
        np.testing.assert_allclose(explanation.contributions, expected, rtol=1e-6, atol=1e-7,
                                   err_msg=explanation.title)
        for index, grams in enumerate(explanation.ngrams):
            assert sum(gram.contribution for gram in grams) == pytest.approx(
                explanation.contributions[index], abs=1e-9)
    # "funda" twice: one feature; each occurrence gets half of it, so the two words are equal.
    first = explain(classifier, ["Funda Funda Celular"], ngrams=True)[0]
    assert first.contributions[0] == pytest.approx(first.contributions[1])
    # A word normalization drops ("-") has no n-gram and no contribution.
    dash = explain(classifier, ["Funda Silicona - roja"])[0]
    assert dash.normalized[2] == "" and dash.contributions[2] == 0.0


def test_a_named_category_is_explained_for_every_title(pipeline, linear_bundle):
    classifier = load_classifier(linear_bundle)
    name = classifier.labels[3]
    for explanation in explain(classifier, TRICKY, category=name):
        assert explanation.category == name and explanation.category_id == 3
        total = explanation.contributions.sum() + explanation.intercept
        assert total == pytest.approx(explanation.score, abs=1e-4)


# ---- occlusion ---------------------------------------------------------------------------------

class Counting:
    """Records the number of titles of every `probabilities` call of a classifier."""

    def __init__(self, classifier, monkeypatch):
        self.calls: list[int] = []
        original = classifier.probabilities

        def probabilities(titles, *args, **kwargs):
            self.calls.append(len(titles))
            return original(titles, *args, **kwargs)

        monkeypatch.setattr(classifier, "probabilities", probabilities)


@pytest.fixture(scope="module")
def ensemble_bundle(pipeline, mlp_bundle, fasttext_bundle, tmp_path_factory):
    """The MLP and fastText of the small pipeline, mixed."""
    import os

    from meli.stages.ensemble import build_ensemble

    root = tmp_path_factory.mktemp("ensemble")
    here = os.getcwd()
    os.chdir(pipeline.root)  # members are found under models/
    try:
        build_ensemble(EnsembleParams(members=["mlp", "fasttext"]), pipeline.prepared,
                       root / "ensemble", root / "metrics.json")
    finally:
        os.chdir(here)
    return root / "ensemble"


@pytest.mark.parametrize("bundle", ["mlp_bundle", "fasttext_bundle", "ensemble_bundle"])
def test_occlusion_scores_n_plus_one_titles_per_title_in_one_batch(request, monkeypatch,
                                                                   bundle):
    classifier = load_classifier(request.getfixturevalue(bundle))
    titles = ["Funda Silicona iPhone 11", "zapatillas", "Celular Samsung Galaxy A10 32gb 4g"]
    counting = Counting(classifier, monkeypatch)
    explanations = explain(classifier, titles)
    assert counting.calls == [(4 + 1) + (1 + 1) + (6 + 1)]
    for title, explanation in zip(titles, explanations, strict=True):
        assert explanation.method == OCCLUSION and explanation.words == title.split()
        # Each figure is the fall of the log-odds without the word, scored title by title.
        alone = np.array([classifier.probabilities([variant])[0, explanation.category_id]
                          for variant in occlusion_titles(title, title.split())], dtype=np.float64)
        # Log-odds of float32 probabilities, which stop 6e-8 short of 1: capped at 1e-7.
        capped = np.clip(alone, 1e-7, 1 - 1e-7)
        odds = np.log(capped) - np.log1p(-capped)
        np.testing.assert_allclose(explanation.contributions, odds[0] - odds[1:], atol=1e-4)
        np.testing.assert_allclose(explanation.probabilities_without, alone[1:], atol=1e-6)
        assert explanation.probability == pytest.approx(alone[0], abs=1e-6)
    # The most probable category is the one explained.
    assert [e.category_id for e in explanations] == \
        classifier.probabilities(titles).argmax(axis=1).tolist()


def test_occlusion_batches_whole_titles_when_many(monkeypatch, mlp_bundle):
    classifier = load_classifier(mlp_bundle)
    monkeypatch.setattr(explain_module, "OCCLUSION_ROWS", 10)
    titles = ["a b c d", "e f g", "h i j k l", "m"]  # 5, 4, 6 and 2 titles to score
    counting = Counting(classifier, monkeypatch)
    explain(classifier, titles)
    assert counting.calls == [5 + 4, 6 + 2]


@pytest.mark.parametrize("bundle", ["mlp_bundle", "ensemble_bundle"])
def test_occlusion_finds_the_words_that_name_the_category(request, bundle):
    classifier = load_classifier(request.getfixturevalue(bundle))
    sanity = explanation_sanity(classifier)
    assert sanity.titles >= 300  # of the 400, most are classified right
    assert sanity.own_words >= 0.9, sanity
    assert sanity.product >= 0.5, sanity


def test_occlusion_mostly_agrees_with_the_exact_decomposition(linear_bundle):
    """Where the truth is known (the linear model), occlusion finds the same strongest word for
    most titles: they measure different things (a drop in log-odds of the mixed probabilities,
    a share of the score), so not for all."""
    classifier = load_classifier(linear_bundle)
    titles = _generate_columns(300, 11)["title"]
    exact = explain(classifier, titles, method=DECOMPOSITION)
    occluded = explain(classifier, titles, method=OCCLUSION)
    assert [e.category for e in exact] == [e.category for e in occluded]
    agree = np.mean([a.strongest(1) == b.strongest(1) for a, b in zip(exact, occluded,
                                                                     strict=True)])
    assert agree >= 0.75, agree


def test_the_sanity_check_recognizes_product_words():
    cases = next(c for c in CATALOGUE if c.name == "CELLPHONE_CASES")
    patterns = telling_words(cases)
    assert all(names_the_product(word, patterns)
               for word in ("Funda", "(Samsung", "Galaxy", "A30", "capinha", "Fudna", "Spigen"))
    assert not any(names_the_product(word, patterns)
                   for word in ("Silicona", "roja", "para", "celular", "Original", "32gb", "9"))
    own = telling_words(cases, attributes=True)
    assert all(names_the_product(word, own) for word in ("Silicona", "Tpu", "transparente"))
    assert not any(names_the_product(word, own) for word in ("roja", "Original", "celular"))


# ---- the command line -------------------------------------------------------------------------

def test_the_text_view_lists_the_words_in_order_with_the_strongest_marked(capsys,
                                                                          linear_bundle):
    title = "Funda Silicona iPhone-11 - roja"
    code, out, err = run_cli(capsys, "--model", str(linear_bundle), title)
    assert code == 0 and err == ""
    classifier = load_classifier(linear_bundle)
    explanation = explain(classifier, [title])[0]
    lines = out.splitlines()
    assert lines[0] == title
    assert lines[1].startswith(f"  {explanation.category}  ") and "exact" in lines[1]
    rows = lines[3:]
    assert len(rows) == len(title.split())
    for line, word, value in zip(rows, title.split(), explanation.contributions, strict=True):
        assert line.startswith(f"  {value:+8.3f}  {word}")
    marked = [index for index, line in enumerate(rows) if "<- strongest for" in line]
    assert marked == [int(np.argmax(explanation.contributions))]
    assert "(iphone 00)" in rows[2] and "(dropped)" in rows[3]


def test_json_lines_for_programs(capsys, mlp_bundle, linear_bundle):
    titles = ["Funda Silicona iPhone 11", "Zapatillas Nike Air Max Talle 42"]
    code, out, _ = run_cli(capsys, "--model", str(mlp_bundle), "--json", *titles)
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [record["title"] for record in records] == titles
    classifier = load_classifier(mlp_bundle)
    expected = explain(classifier, titles)
    for record, explanation in zip(records, expected, strict=True):
        assert record["method"] == "occlusion" and "log-odds" in record["measure"]
        assert [w["word"] for w in record["words"]] == record["title"].split()
        assert record["category"] == explanation.category
        assert [w["contribution"] for w in record["words"]] == pytest.approx(
            explanation.contributions.tolist())
        assert all(0 <= w["probability_without"] <= 1 for w in record["words"])
        assert record["strongest_for"] == record["words"][
            int(np.argmax([w["contribution"] for w in record["words"]]))]["word"]
    code, out, _ = run_cli(capsys, "--model", str(linear_bundle), "--json", "--ngrams",
                           "--category", records[0]["category"], titles[1])
    record = json.loads(out)
    assert record["method"] == "decomposition" and record["category"] == records[0]["category"]
    assert sum(w["contribution"] for w in record["words"]) + record["intercept"] == \
        pytest.approx(record["score"], abs=1e-5)
    assert all(sum(g["contribution"] for g in w["ngrams"]) == pytest.approx(w["contribution"])
               for w in record["words"])
    assert {head["estimator"] for head in record["heads"]} <= {"svm", "softmax"}


@pytest.mark.parametrize("form", ["lines", "csv"])
def test_input_files_give_the_same_answers(capsys, tmp_path, mlp_bundle, form):
    titles = ["Funda Silicona iPhone 11", "Zapatillas Nike Air Max Talle 42", "celular"]
    path = tmp_path / ("titles.csv" if form == "csv" else "titles.txt")
    long = " ".join(["palabra"] * (MAX_WORDS + 1))
    if form == "csv":
        path.write_text("price,title\n" + "".join(f'1,"{t}"\n' for t in titles) + f"2,{long}\n"
                        + "3,\n")
    else:
        path.write_text("\n".join([titles[0], "", *titles[1:], long]) + "\n")
    code, out, err = run_cli(capsys, "--model", str(mlp_bundle), "--input", str(path), "--json")
    assert code == 0
    assert [json.loads(line)["title"] for line in out.splitlines()] == titles
    assert f"skipped 1 row(s) with more than {MAX_WORDS} words" in err
    assert "skipped 1 row(s) with an empty title" in err
    _, shown, _ = run_cli(capsys, "--model", str(mlp_bundle), *titles)
    _, from_file, _ = run_cli(capsys, "--model", str(mlp_bundle), "--input", str(path))
    assert from_file == shown


@pytest.mark.parametrize(("arguments", "message"), [
    ([], "give titles to explain, or --input FILE"),
    (["a title", "--input", "x.txt"], "not both"),
    (["  "], "a title given on the command line is empty"),
    (["--category", "CELLPHONE_CASE", "funda"], "unknown category 'CELLPHONE_CASE'"),
    (["--method", "decomposition", "funda"], "exact for the linear model only"),
    ([" ".join(["palabra"] * (MAX_WORDS + 1))], f"at most {MAX_WORDS} are explained"),
    (["--input", "missing.txt"], "missing.txt: no such file"),
])
def test_a_mistake_is_one_line(capsys, monkeypatch, tmp_path, mlp_bundle, arguments, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "--model", str(mlp_bundle), *arguments)
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
    if "CELLPHONE_CASE'" in message:
        assert "did you mean CELLPHONE_CASES" in err


def test_help_says_which_method_runs_for_which_bundle(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "linear model is decomposed exactly" in text
    assert "Every other bundle (PyTorch, fastText, the ensemble) is explained by occlusion" in text


# ---- error analysis: the most confused pairs and what drove them ------------------------------

def test_the_most_confused_pairs_are_counted_from_the_mistakes_alone():
    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2, 1599, 1599])
    predicted = np.array([1, 1, 0, 0, 2, 1, 1, 0, 3, 3])
    assert most_confused(truth, predicted, 3) == [(0, 1, 2), (2, 1, 2), (1599, 3, 2)]
    assert most_confused(truth, predicted, 10)[3:] == [(1, 0, 1), (1, 2, 1), (2, 0, 1)]
    assert most_confused(truth, truth, 5) == []


def test_each_pair_lists_the_words_that_drove_its_titles_to_the_wrong_category(
        monkeypatch, pipeline, mlp_bundle):
    classifier = load_classifier(mlp_bundle)
    table = pq.read_table(split_path(pipeline.prepared, "test"), columns=["title", "label"])
    titles = table.column("title").to_pylist()
    truth = table.column("label").to_numpy().astype(np.int64)
    predicted = classifier.predict(titles)
    counting = Counting(classifier, monkeypatch)
    pairs = confused_pairs(classifier, titles, truth, predicted, pairs=4, titles_per_pair=3)
    assert [(classifier.labels.index(p.true), classifier.labels.index(p.predicted), p.titles)
            for p in pairs] == most_confused(truth, predicted, 4)
    # One batch: at most 3 titles of each pair, n + 1 scored titles each.
    assert len(counting.calls) == 1
    assert sum(p.explained for p in pairs) <= 12 and all(p.explained >= 1 for p in pairs)
    for pair in pairs:
        rows = np.flatnonzero((truth == classifier.labels.index(pair.true))
                              & (predicted == classifier.labels.index(pair.predicted)))
        pair_titles = [titles[row] for row in rows[:pair.explained]]
        assert pair.example == pair_titles[0]
        explanations = explain(classifier, pair_titles, category=pair.predicted)
        strongest = Counter(e.normalized[e.strongest(1)] for e in explanations
                            if e.strongest(1) is not None)
        assert sum(driver.strongest for driver in pair.drivers) == \
            sum(strongest[d.word] for d in pair.drivers)
        for driver in pair.drivers:
            assert driver.strongest == strongest[driver.word] <= driver.pushed <= pair.explained
            assert driver.mean_contribution > 0
        assert [d.strongest for d in pair.drivers] == sorted(
            (d.strongest for d in pair.drivers), reverse=True)
    text = confusions_markdown(pairs, "mlp", "occlusion", "test", int((truth != predicted).sum()),
                               len(truth))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(pairs)
    assert all(row.count(" | ") == 5 for row in rows)  # six cells, none broken by a title
    assert f"| {pairs[0].true} | {pairs[0].predicted} | {pairs[0].titles} |" in text


def test_evaluate_writes_the_confused_pairs_and_their_words(pipeline, mlp_bundle, tmp_path):
    from meli.bundles.confusions import CONFUSIONS_FILE, TITLES_PER_PAIR
    from meli.params import EvaluateParams
    from meli.stages.evaluate import evaluate

    evaluate(EvaluateParams(confused_pairs=5), mlp_bundle, pipeline.prepared,
             tmp_path / "metrics.json", tmp_path / "plots")
    classifier = load_classifier(mlp_bundle)
    table = pq.read_table(split_path(pipeline.prepared, "test"), columns=["title", "label"])
    titles = table.column("title").to_pylist()
    truth = table.column("label").to_numpy().astype(np.int64)
    predicted = classifier.predict(titles)
    expected = confusions_markdown(
        confused_pairs(classifier, titles, truth, predicted, 5, TITLES_PER_PAIR), mlp_bundle.name,
        OCCLUSION, "test", int((truth != predicted).sum()), len(truth))
    written = (tmp_path / "plots" / CONFUSIONS_FILE).read_text(encoding="utf-8")
    assert written == expected
    assert written.count("\n| ") == 1 + 1 + min(5, len(most_confused(truth, predicted, 5)))
