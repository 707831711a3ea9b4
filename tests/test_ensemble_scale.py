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


def _reference_fit_temperature(probabilities, labels):
    """The straightforward fit: the tempered matrix built for every temperature of the grid."""
    losses = [ensemble_stage.log_loss(ensemble_stage.tempered(probabilities, float(t)), labels)
              for t in ensemble_stage.TEMPERATURES]
    return float(ensemble_stage.TEMPERATURES[int(np.argmin(losses))])


def _reference_select_weights(parts, labels, num_classes, rounds):
    """The straightforward greedy selection: every candidate mixture normalized in full (a row
    of zeros giving the true class nothing, where 0 / 0 made the log loss NaN)."""
    from meli.bundles import metrics

    def score(mixture):
        with np.errstate(invalid="ignore"):
            normalized = np.nan_to_num(mixture / mixture.sum(axis=1, keepdims=True))
        return (metrics.balanced_accuracy(labels, mixture.argmax(axis=1), num_classes),
                -ensemble_stage.log_loss(normalized, labels))

    singles = [score(part) for part in parts]
    counts = [0] * len(parts)
    counts[max(range(len(parts)), key=lambda i: singles[i])] = 1
    total = parts[counts.index(1)].copy()
    best, best_counts = max(singles), list(counts)
    for _ in range(rounds - 1):
        value, negative_index = max((score(total + part), -i) for i, part in enumerate(parts))
        counts[-negative_index] += 1
        total += parts[-negative_index]
        if value > best:
            best, best_counts = value, list(counts)
    return best_counts


def _members(seed: int, rows: int = 3_000, classes: int = 200, count: int = 4):
    """Probabilities of members of different sharpness and skill, some rows all zeros (a
    fastText title with no known word)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    parts = []
    for member in range(count):
        logits = rng.normal(0, 1 + member, (rows, classes)).astype(np.float32)
        logits[np.arange(rows), labels] += rng.uniform(0.5, 4) * (rng.random(rows) < 0.7)
        part = np.exp(logits - logits.max(axis=1, keepdims=True))
        part /= part.sum(axis=1, keepdims=True)
        part[rng.random(rows) < 0.01] = 0.0
        parts.append(part.astype(np.float32))
    return parts, labels, classes


@pytest.mark.parametrize("seed", range(4))
def test_the_fitting_chooses_what_the_straightforward_fitting_chose(seed):
    """Temperatures from log p with one exp pass each, mixtures' log loss from the members'
    true-class shares and row sums: the same choices as building every matrix in full."""
    parts, labels, classes = _members(seed)
    temperatures = [ensemble_stage.fit_temperature(part, labels) for part in parts]
    assert temperatures == [_reference_fit_temperature(part, labels) for part in parts]
    assert len(set(temperatures)) > 1
    tempered = [ensemble_stage.tempered(part, t) for part, t in zip(parts, temperatures,
                                                                      strict=True)]
    chosen = ensemble_stage.select_weights(tempered, labels, classes, 12)
    assert chosen == _reference_select_weights(tempered, labels, classes, 12)
    assert sum(count > 0 for count in chosen) > 1


def test_a_member_with_rows_of_zeros_has_a_finite_log_loss():
    """fastText gives no probability to a title none of whose words it knows: alone, its log
    loss was NaN (0 / 0), and a NaN is neither lower nor higher in the tie-break."""
    parts, labels, classes = _members(1, count=1)
    labels[:100] = 0
    with_zeros, without = parts[0].copy(), parts[0].copy()
    with_zeros[:100] = 0.0  # argmax 0, like...
    without[:100] = 0.0
    without[:100, 0] = 1.0  # ...this one's: the same balanced accuracy, a lower log loss
    assert ensemble_stage.select_weights([with_zeros, without], labels, classes, 1) == [0, 1]
