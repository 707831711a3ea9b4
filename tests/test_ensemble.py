"""The ensemble stage: weights fitted on validation only, a bundle that loads like any other,
and clear errors for members that are missing or were trained on other data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from meli.bundles import metrics
from meli.bundles.ensemble import tempered
from meli.bundles.load import load_classifier
from meli.errors import MeliError
from meli.files import read_json
from meli.params import EnsembleParams
from meli.stages.ensemble import build_ensemble, fit_temperature, select_weights


@pytest.fixture
def repository(pipeline, mlp_bundle, fasttext_bundle, monkeypatch):
    """The small pipeline's root as the working directory: models/mlp and models/fasttext."""
    monkeypatch.chdir(pipeline.root)
    return pipeline.root


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
