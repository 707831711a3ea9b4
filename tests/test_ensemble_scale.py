"""The ensemble stage at the course's size (50,000 validation titles x 1,600 categories x 5
members, 1.6 GB of probabilities): one member's probabilities in two versions at a time, never
every member's, and progress while it fits."""

from __future__ import annotations

import logging
import weakref

import numpy as np
import pytest

from meli import progress
from meli.params import EnsembleParams
from meli.stages import ensemble as ensemble_stage


@pytest.fixture
def repository(pipeline, mlp_bundle, fasttext_bundle, monkeypatch):
    monkeypatch.chdir(pipeline.root)
    return pipeline.root


def test_members_are_tempered_one_at_a_time(repository, tmp_path, monkeypatch, caplog):
    seen: list[weakref.ref] = []  # each member's untempered probabilities, in order
    alive_when_seen: list[list[int]] = []  # members before it whose untempered ones were alive
    tempered = ensemble_stage.tempered

    def watching(probabilities: np.ndarray, temperature: float) -> np.ndarray:
        if not any(ref() is probabilities for ref in seen):
            alive_when_seen.append([i for i, ref in enumerate(seen) if ref() is not None])
            seen.append(weakref.ref(probabilities))
        return tempered(probabilities, temperature)

    monkeypatch.setattr(ensemble_stage, "tempered", watching)
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    caplog.set_level(logging.INFO)
    members = ["mlp", "fasttext", "mlp-again"]
    (repository / "models/mlp-again").symlink_to(repository / "models/mlp")
    monkeypatch.setattr(ensemble_stage, "names", lambda: ("mlp", "cnn", "rnn", "mlp-again"))
    result = ensemble_stage.build_ensemble(
        EnsembleParams(members=members, rounds=4), repository / "data/prepared",
        tmp_path / "ensemble", tmp_path / "metrics.json")
    # When a member's temperature is fitted, the members before it hold their tempered
    # version only (at a temperature of 1, the same array).
    assert len(alive_when_seen) == len(members)
    for index, alive in enumerate(alive_when_seen):
        assert alive == [i for i in range(index) if result.temperatures[members[i]] == 1.0]
    assert set(result.temperatures) == set(members)
    messages = caplog.messages
    assert any(m.startswith("ensemble: ") and " validation titles x " in m
               and m.endswith(" members: 0.0 GB of probabilities") for m in messages)
    for name in members:
        assert f"ensemble: {name} temperature {result.temperatures[name]:.2f}" in messages
    assert any(m.startswith("ensemble: greedy selection: 3 of 3 rounds (100%)")
               for m in messages)
