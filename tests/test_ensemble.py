"""The ensemble stage: weights fitted on validation only, a bundle that loads like any other,
and clear errors for members that are missing or were trained on other data; scoring: titles
normalized once, members side by side with exactly the figures of one after the other, members
of weight 0 neither stored nor loaded; and every kind of bundle scoring a short batch as the
uncached normalization and word lookup did."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from meli.bundles import classifier as classifier_module
from meli.bundles import ensemble as ensemble_module
from meli.bundles import metrics
from meli.bundles.ensemble import EnsembleClassifier, combine, tempered
from meli.bundles.load import load_classifier
from meli.cli import main
from meli.data import vocabulary as vocabulary_module
from meli.data.text import _WHITESPACE
from meli.errors import MeliError
from meli.files import read_json, write_json
from meli.models.rnn import RNNParams
from meli.params import EnsembleParams, LinearParams
from meli.stages import ensemble as ensemble_stage
from meli.stages.ensemble import (
    MEMBER_CALIBRATION_FILES,
    build_ensemble,
    fit_temperature,
    select_weights,
)
from meli.stages.linear import train_linear


@pytest.fixture
def repository(pipeline, mlp_bundle, fasttext_bundle, monkeypatch):
    """The small pipeline's root as the working directory: models/mlp and models/fasttext."""
    monkeypatch.chdir(pipeline.root)
    return pipeline.root


KINDS = ("mlp", "rnn", "fasttext", "linear")


@pytest.fixture(scope="module")
def kinds_root(pipeline, mlp_bundle, fasttext_bundle, train_model, tmp_path_factory):
    """A directory whose models/ holds a bundle of every kind: the small pipeline's MLP and
    fastText, and an RNN and a linear model trained on it (apart from the pipeline's own
    models/, which other tests fill and empty)."""
    root = tmp_path_factory.mktemp("kinds")
    for name, bundle in (("mlp", mlp_bundle), ("fasttext", fasttext_bundle)):
        shutil.copytree(bundle, root / "models" / name)
    train_model("rnn", root, RNNParams(hidden_size=16), epochs=1)
    train_linear(LinearParams(), pipeline.prepared, root / "models" / "linear",
                 root / "results" / "train" / "linear")
    return root


@pytest.fixture
def every_kind(kinds_root, monkeypatch):
    monkeypatch.chdir(kinds_root)
    return kinds_root


def four_member_ensemble(pipeline, directory):
    """An ensemble of the four kinds (run in kinds_root), every one weighted, temperatures
    other than 1."""
    weights = {"mlp": 0.4, "rnn": 0.1, "fasttext": 0.2, "linear": 0.3}
    temperatures = {"mlp": 0.8, "rnn": 1.0, "fasttext": 2.0, "linear": 1.3}
    result = ensemble_stage.EnsembleResult(weights, temperatures, 0.9, 0.9, "mlp", 0.9)
    ensemble_stage._write_bundle(directory, pipeline.prepared, result)
    return load_classifier(directory)


def build(repository, tmp_path, **settings):
    params = EnsembleParams(**({"members": ["mlp", "fasttext"]} | settings))
    return build_ensemble(params, repository / "data/prepared", tmp_path / "ensemble",
                          tmp_path / "metrics.json")


def test_the_ensemble_is_fitted_on_validation_and_never_worse_there(repository, tmp_path):
    result = build(repository, tmp_path)
    assert sum(result.weights.values()) == pytest.approx(1.0)
    assert set(result.weights) == {"mlp", "fasttext"}
    assert result.validation_balanced_accuracy >= result.best_member_balanced_accuracy
    written = read_json(tmp_path / "metrics.json")
    assert written["best"]["validation_balanced_accuracy"] == result.validation_balanced_accuracy
    # The bundle answers like its members mixed with the fitted weights and temperatures.
    ensemble = load_classifier(tmp_path / "ensemble")
    validation = pq.read_table(repository / "data/prepared/validation.parquet")
    titles = validation.column("title")
    mixed = sum(weight * tempered(load_classifier(f"models/{name}").probabilities(titles),
                                  result.temperatures[name])
                for name, weight in result.weights.items())
    np.testing.assert_allclose(ensemble.probabilities(titles), mixed, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ensemble.probabilities(titles).sum(axis=1), 1.0, rtol=1e-5)
    truth = validation.column("label").to_numpy().astype(np.int64)
    assert metrics.balanced_accuracy(truth, ensemble.predict(titles), len(ensemble.labels)) \
        == pytest.approx(result.validation_balanced_accuracy, abs=1e-9)


def test_the_bundle_is_self_contained(repository, tmp_path):
    result = build(repository, tmp_path)
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "ensemble", moved)
    shutil.rmtree(tmp_path / "ensemble")
    config = read_json(moved / "config.json")
    assert config["architecture"] == "ensemble"
    assert {member["name"] for member in config["members"]} == {
        name for name, weight in result.weights.items() if weight > 0}
    assert load_classifier(moved).top(["zapatillas running"], 2)[0][0][0]


def test_greedy_selection_keeps_the_best_mixture():
    labels = np.array([0, 1, 2, 0, 1, 2])
    good = np.eye(3, dtype=np.float32)[labels] * 0.8 + 0.2 / 3
    wrong = np.eye(3, dtype=np.float32)[(labels + 1) % 3]
    counts = select_weights([wrong, good], labels, 3, rounds=10)
    assert counts[0] == 0 and counts[1] >= 1


def test_temperature_softens_an_overconfident_member():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=400)
    # Right 70% of the time, always claiming 99%.
    guess = np.where(rng.random(400) < 0.7, labels, (labels + 1) % 4)
    overconfident = np.full((400, 4), 0.01 / 3, dtype=np.float32)
    overconfident[np.arange(400), guess] = 0.99
    assert fit_temperature(overconfident, labels) > 1.5


def test_a_missing_member_is_one_clear_error(repository, tmp_path):
    with pytest.raises(MeliError, match=r"models/cnn: ensemble member 'cnn' has no bundle"):
        build(repository, tmp_path, members=["mlp", "cnn"])
    with pytest.raises(MeliError, match=r"ensemble.members: unknown model 'transformer'"):
        build(repository, tmp_path, members=["mlp", "transformer"])


def test_a_member_trained_on_other_data_is_refused(repository, tmp_path):
    other = repository / "models" / "rnn"
    shutil.copytree(repository / "models/mlp", other)
    try:
        labels = read_json(other / "labels.json")
        (other / "labels.json").write_text(json.dumps(labels[::-1]))
        with pytest.raises(MeliError, match="'rnn' was trained on other data"):
            build(repository, tmp_path, members=["mlp", "rnn"])
    finally:
        shutil.rmtree(other)


def titles_of(pipeline, count):
    table = pq.read_table(pipeline.prepared / "validation.parquet", columns=["title"])
    return table.column("title").combine_chunks().slice(0, count)


def test_parallel_scoring_gives_exactly_the_sequential_figures(pipeline, every_kind, tmp_path,
                                                              monkeypatch):
    ensemble = four_member_ensemble(pipeline, tmp_path / "ensemble")
    assert isinstance(ensemble, EnsembleClassifier) and len(ensemble.members) == 4
    titles = titles_of(pipeline, 300)
    ensemble.threads = 1
    one_by_one = ensemble.probabilities(titles)
    top_one_by_one = ensemble.top_k(titles, 3)
    ensemble.threads = 4  # more threads than cores, if need be: members truly overlap
    side_by_side = ensemble.probabilities(titles)
    np.testing.assert_array_equal(side_by_side, one_by_one)
    for ours, theirs in zip(ensemble.top_k(titles, 3), top_one_by_one, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    # ... and both are the members' own probabilities, tempered and weighted in order.
    parts = [member.probabilities(titles) for member in ensemble.members]
    np.testing.assert_array_equal(
        one_by_one, combine(parts, ensemble.weights, ensemble.temperatures))
    assert top_one_by_one[2].tolist() == ensemble.members[0].known_words(titles).tolist()
    # More titles than a batch: scored a batch at a time, the same figures (to the last bits a
    # PyTorch model's batch composition may move).
    monkeypatch.setattr(ensemble_module, "ENSEMBLE_BATCH", 64)
    in_batches = ensemble.probabilities(titles)
    np.testing.assert_allclose(in_batches, one_by_one, rtol=0, atol=1e-6)
    assert (in_batches.argmax(axis=1) == one_by_one.argmax(axis=1)).all()


def test_titles_are_normalized_once_per_batch(pipeline, every_kind, tmp_path, monkeypatch):
    ensemble = four_member_ensemble(pipeline, tmp_path / "ensemble")
    calls = []
    original = classifier_module.normalize

    def counted(titles, settings):
        calls.append(len(titles))
        return original(titles, settings)

    monkeypatch.setattr(classifier_module, "normalize", counted)
    ensemble.top_k(titles_of(pipeline, 50), 3)
    assert calls == [50]


def test_a_member_of_weight_zero_is_neither_stored_nor_loaded(repository, tmp_path,
                                                              monkeypatch):
    # The greedy selection gives fastText no share: it has no place in the bundle.
    monkeypatch.setattr(ensemble_stage, "select_weights",
                        lambda parts, *_: [1] + [0] * (len(parts) - 1))
    result = build(repository, tmp_path)
    assert result.weights == {"mlp": 1.0, "fasttext": 0.0}
    assert sorted(path.name for path in (tmp_path / "ensemble/members").iterdir()) == ["mlp"]
    config = read_json(tmp_path / "ensemble/config.json")
    assert [member["name"] for member in config["members"]] == ["mlp"]
    # A bundle whose config still lists one (written by hand, or by an older version): its
    # directory is not even looked at.
    config["members"].append({"name": "fasttext", "weight": 0.0, "temperature": 1.0})
    write_json(tmp_path / "ensemble/config.json", config)
    opened = []
    original = load_classifier

    def load(directory, *args):
        opened.append(directory.name)
        return original(directory, *args)

    monkeypatch.setattr("meli.bundles.load.load_classifier", load)
    ensemble = load(tmp_path / "ensemble")
    assert opened == ["ensemble", "mlp"] and len(ensemble.members) == 1
    config["members"][0]["weight"] = 0
    write_json(tmp_path / "ensemble/config.json", config)
    with pytest.raises(MeliError, match="no member has a weight above 0"):
        load_classifier(tmp_path / "ensemble")


def uncached_normalize(titles, settings):
    """Normalization as Arrow's regular expressions alone do it (compiled on every call)."""
    text = pc.fill_null(pa.array(list(titles), pa.string()) if isinstance(titles, list)
                        else titles, "")
    text = pc.utf8_lower(text) if settings.lowercase else text
    text = pc.replace_substring_regex(pc.utf8_normalize(text, "NFKD"), r"\p{Mn}+", "")
    text = pc.replace_substring_regex(text, r"\d", "0")
    text = pc.replace_substring_regex(text, r"([^\p{L}\p{N}\s])", " ")
    text = pc.replace_substring_regex(text, _WHITESPACE, " ")
    return pc.utf8_trim_whitespace(text)


def test_short_batches_score_as_without_the_caches(pipeline, every_kind, tmp_path,
                                                   monkeypatch):
    """The cached normalization and word lookups change no figure: a short batch (what the
    server scores) through every kind of bundle gives the probabilities it gives when every call
    compiles its patterns and builds Arrow's lookup table again. fastText's probabilities are
    computed from its matrices now (see bundles/fasttext.py): within 1e-5 of its own predict,
    with the same best category."""
    titles = pa.array(["Zapatillas Nike Air-Max Talle 42", "Funda Silicona iPhone 11 (azul)",
                       "CAMIÓN de juguete ñandú", "", "xyzzy"])
    bundles = {name: load_classifier(f"models/{name}") for name in KINDS}
    bundles["ensemble"] = four_member_ensemble(pipeline, tmp_path / "ensemble")
    assert bundles["mlp"].normalization.digits == "zero"  # what uncached_normalize does
    now = {name: bundle.probabilities(titles) for name, bundle in bundles.items()}
    known = {name: bundle.known_words(titles) for name, bundle in bundles.items()}
    monkeypatch.setattr(classifier_module, "normalize", uncached_normalize)
    monkeypatch.setattr(vocabulary_module.WordIndex, "__call__", lambda self, words: pc.fill_null(
        pc.index_in(words, value_set=pa.array(self.words)), -1).to_numpy().astype(np.int64))
    fasttext = bundles["fasttext"]
    fasttext._averaged = None  # fastText's own predict
    for name, bundle in bundles.items():
        before = bundle.probabilities(titles)
        assert bundle.known_words(titles).tolist() == known[name].tolist(), name
        if name in ("fasttext", "ensemble"):
            np.testing.assert_allclose(now[name], before, rtol=0, atol=1e-5, err_msg=name)
            assert (now[name].argmax(axis=1) == before.argmax(axis=1)).all(), name
        else:
            np.testing.assert_array_equal(now[name], before, err_msg=name)


def test_a_short_batch_pays_no_per_call_setup(pipeline, every_kind, tmp_path, monkeypatch):
    """What made a short batch cost about 5 ms a member is gone, checked by structure rather
    than by a clock: once a bundle has scored its first batch, scoring another short batch
    compiles no regular expression (Arrow compiles one on every call), builds no Arrow lookup
    table of a vocabulary (`index_in` does on every call), rebuilds no word dict, and starts no
    new thread pool, through every kind of member of the ensemble."""
    ensemble = four_member_ensemble(pipeline, tmp_path / "ensemble")
    first = pa.array(["Zapatillas Nike Air-Max Talle 42", "CAMIÓN de juguete ñandú"])
    ensemble.top_k(first, 3)  # the first call builds what is built once
    indexes = [index for index in _word_indexes(ensemble) if index._positions is not None]
    assert len(indexes) == 3  # the MLP's, the RNN's and fastText's word lists
    built = [index._positions for index in indexes]
    calls = []

    def counted(name):
        original = getattr(pc, name)

        def call(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)

        return call

    for name in ("replace_substring_regex", "match_substring_regex", "extract_regex",
                 "split_pattern_regex", "index_in"):
        monkeypatch.setattr(pc, name, counted(name))
    pools = []
    monkeypatch.setattr(ensemble_module, "ThreadPoolExecutor",
                        lambda *args, **kwargs: pools.append(args))
    another = pa.array(["Funda Silicona iPhone 11 (azul)", "Camión Volcador Grande",
                        "Notebook Lenovo 15.6 8gb Ram"])
    for _ in range(3):
        probabilities = ensemble.probabilities(another)
        indices, _, _ = ensemble.top_k(another, 3)
    assert calls == [] and pools == []
    assert all(now is then for now, then in zip(
        [index._positions for index in indexes], built, strict=True))
    # ... and still the figures: the best category is the one the probabilities say.
    np.testing.assert_array_equal(indices[:, 0], probabilities.argmax(axis=1))


def _word_indexes(ensemble):
    """The word lookups of an ensemble's members (PyTorch vocabularies, fastText's words)."""
    indexes = []
    for member in ensemble.members:
        vocabulary = getattr(member, "vocabulary", None)
        if vocabulary is not None:
            indexes.append(vocabulary._index)
        averaged = getattr(member, "_averaged", None)
        if averaged is not None:
            indexes.append(averaged.words)
    return indexes


def test_the_bundle_stores_no_file_twice_and_needs_nothing_else(pipeline, every_kind, tmp_path,
                                                                monkeypatch):
    """The compact bundle: the members' labels, normalization and common vocabulary are stored
    once, at the ensemble's root; moved away from models/, `meli predict` gives the same file,
    byte for byte, as an ensemble holding full copies of its members (the earlier layout)."""
    four_member_ensemble(pipeline, tmp_path / "compact")
    compact = tmp_path / "compact"
    stored = [path for path in compact.rglob("*") if path.is_file()]
    assert max(Counter(path.read_bytes() for path in stored).values()) == 1
    assert sorted(path.name for path in compact.iterdir() if path.is_file()) == [
        "config.json", "labels.json", "normalization.json", "vocab.txt"]
    config = read_json(compact / "config.json")
    shared = {member["name"]: member["shared"] for member in config["members"]}
    assert shared == {"mlp": ["labels.json", "normalization.json", "vocab.txt"],
                      "rnn": ["labels.json", "normalization.json", "vocab.txt"],
                      "fasttext": ["labels.json", "normalization.json"],
                      "linear": ["labels.json", "normalization.json"]}
    # The earlier layout: every member's bundle copied whole.
    full = tmp_path / "full"
    for member in config["members"]:
        shutil.copytree(every_kind / "models" / member["name"], full / "members" / member["name"])
        del member["shared"]
    for name in ("labels.json", "normalization.json"):
        shutil.copyfile(compact / name, full / name)
    write_json(full / "config.json", config)
    # Saved: the four members' labels and normalization, one of the two copies of the PyTorch
    # members' vocabulary, the members' own calibration (the ensemble has its own); less the
    # lists of shared files in config.json.
    saved = sum(path.stat().st_size for path in full.rglob("*") if path.is_file()) - sum(
        path.stat().st_size for path in stored)
    vocabulary = (compact / "vocab.txt").stat().st_size
    calibrations = [path for path in full.glob("members/*/*") if path.name in
                    MEMBER_CALIBRATION_FILES]
    assert len(calibrations) == 4 * len(MEMBER_CALIBRATION_FILES)
    assert not any((compact / "members").rglob("calibration*"))
    assert saved == sum((compact / name).stat().st_size for name in ("labels.json",
                        "normalization.json")) * 4 + vocabulary + sum(
        path.stat().st_size for path in calibrations) - (
        (compact / "config.json").stat().st_size - (full / "config.json").stat().st_size)
    # Needs nothing else: run from a directory without models/.
    elsewhere = tmp_path / "elsewhere"
    shutil.move(compact, elsewhere / "ensemble")
    monkeypatch.chdir(elsewhere)
    titles = elsewhere / "titles.txt"
    titles.write_text("\n".join(titles_of(pipeline, 200).to_pylist()) + "\n", encoding="utf-8")
    for bundle, output in ((elsewhere / "ensemble", "compact.csv"), (full, "full.csv")):
        assert main(["predict", "--model", str(bundle), "--input", str(titles),
                     "--output", output]) == 0
    assert (elsewhere / "compact.csv").read_bytes() == (elsewhere / "full.csv").read_bytes()
    assert len((elsewhere / "compact.csv").read_text().splitlines()) == 201
    # A shared file that went missing, or a share the config invents: one line naming it.
    (elsewhere / "ensemble" / "vocab.txt").unlink()
    with pytest.raises(MeliError, match=r"incomplete bundle, vocab.txt \(shared by member "
                                        r"'mlp'\) is missing"):
        load_classifier(elsewhere / "ensemble")
    config = read_json(elsewhere / "ensemble" / "config.json")
    config["members"][0]["shared"] = ["weights.pt"]
    write_json(elsewhere / "ensemble" / "config.json", config)
    with pytest.raises(MeliError, match=r"config.json: member 'mlp' shares \['weights.pt'\]"):
        load_classifier(elsewhere / "ensemble")
