"""train and baseline: bundles, dvclive logs, best-epoch selection, early stopping, determinism,
class weights, learning-rate schedules, divergence, and a training run killed midway."""

from __future__ import annotations

import csv
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from meli.bundles import bundle, metrics
from meli.bundles.fasttext import FastTextClassifier
from meli.bundles.load import load_classifier
from meli.data.vocabulary import Vocabulary
from meli.errors import MeliError
from meli.files import read_json
from meli.layout import labels_path, tokens_path
from meli.models import build_model
from meli.params import BaselineParams, TrainParams
from meli.stages.baseline import train_baseline
from meli.training.data import Split
from meli.training.loop import evaluate as evaluate_model
from meli.training.optimization import class_weights, learning_rate_factor

# Every bundle ends with its calibration on the validation titles (meli.bundles.calibration).
CALIBRATION_FILES = {"calibration.json", "calibration.true_probabilities.npy",
                     "calibration.counts.npy"}
BUNDLE_FILES = {"config.json", "weights.pt", "vocab.txt", "labels.json", "normalization.json",
                *CALIBRATION_FILES}
PLOTS = {  # dvclive plot file (under plots/metrics/) -> its value column
    "train/loss.tsv": "loss",
    "validation/loss.tsv": "loss",
    "validation/balanced_accuracy.tsv": "balanced_accuracy",
    "validation/accuracy.tsv": "accuracy",
    "learning_rate.tsv": "learning_rate",
}


def plot(live_dir: Path, name: str) -> list[float]:
    """The per-epoch values of one dvclive plot, checking its steps are 0, 1, 2, ..."""
    with (live_dir / "plots" / "metrics" / name).open(encoding="utf-8") as lines:
        rows = list(csv.DictReader(lines, delimiter="\t"))
    assert [int(row["step"]) for row in rows] == list(range(len(rows)))
    return [float(row[PLOTS[name]]) for row in rows]


def weights(bundle_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(bundle_dir / "weights.pt", map_location="cpu", weights_only=True)


def same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def train_rows(pipeline) -> int:
    return len(np.load(labels_path(pipeline.features, "train")))


@pytest.mark.parametrize("architecture", ["mlp", "cnn"])
def test_train_writes_a_bundle_and_a_dvclive_log(pipeline, train_model, tmp_path, architecture):
    result, bundle_dir, live_dir = train_model(architecture, tmp_path, epochs=3)

    assert {p.name for p in bundle_dir.iterdir()} == BUNDLE_FILES
    assert not [p.name for p in bundle_dir.parent.iterdir() if p.name.startswith(".")]
    config = read_json(bundle_dir / "config.json")
    vocabulary = Vocabulary.load(pipeline.features / "vocab.txt")
    labels = read_json(pipeline.features / "labels.json")
    assert config["format_version"] == bundle.FORMAT_VERSION
    assert config["architecture"] == architecture
    assert config["max_length"] == np.load(tokens_path(pipeline.features,
                                                                 "train")).shape[1]
    assert config["vocabulary_size"] == len(vocabulary)
    assert config["best_epoch"] == result.best_epoch
    assert (bundle_dir / "vocab.txt").read_bytes() == (pipeline.features / "vocab.txt").read_bytes()
    assert read_json(bundle_dir / "labels.json") == labels
    assert (read_json(bundle_dir / "normalization.json")
            == read_json(pipeline.prepared / "normalization.json"))

    # A plain state_dict that loads without unpickling code and fits the configured model.
    state = weights(bundle_dir)
    model = build_model(architecture, config["model"], torch.zeros(len(vocabulary), 16),
                        len(labels))
    model.load_state_dict(state)
    assert state["embedding.weight"].shape == (len(vocabulary), config["embedding_dim"])

    summary = read_json(live_dir / "metrics.json")
    assert summary["best"]["epoch"] == result.best_epoch
    assert summary["best"]["validation_balanced_accuracy"] == result.validation_balanced_accuracy
    assert summary["best"]["validation_accuracy"] == result.validation_accuracy
    assert "epoch_seconds" not in summary  # timings would make equal runs look different
    for name in PLOTS:
        assert len(plot(live_dir, name)) == result.epochs_run == 3, name
    balanced = plot(live_dir, "validation/balanced_accuracy.tsv")
    assert max(balanced) == result.validation_balanced_accuracy
    assert balanced.index(max(balanced)) + 1 == result.best_epoch
    # Wall-clock timings, which differ run to run, stay out of the log that DVC and git track:
    # beside it, in a file that git ignores.
    assert not (live_dir / "plots/metrics/epoch_seconds.tsv").exists()
    with (live_dir / "epoch_seconds.tsv").open(encoding="utf-8") as lines:
        timings = list(csv.DictReader(lines, delimiter="\t"))
    assert [int(row["step"]) for row in timings] == [0, 1, 2]
    assert all(float(row["epoch_seconds"]) > 0 for row in timings)
    logged = yaml.safe_load((live_dir / "params.yaml").read_text(encoding="utf-8"))
    assert logged["model"] == architecture
    assert logged["train"]["epochs"] == 3

    # The learning rate logged for each epoch is the schedule's at that epoch's first step.
    per_epoch = math.ceil(train_rows(pipeline) / 64)
    factor = learning_rate_factor("onecycle", 0.1, 3 * per_epoch)
    base = logged["train"]["learning_rate"]
    assert base == TrainParams().learning_rate  # the default, since FAST_TRAIN leaves it
    expected = [base * factor(epoch * per_epoch) for epoch in range(3)]
    assert plot(live_dir, "learning_rate.tsv") == pytest.approx(expected, rel=1e-9)


def test_the_best_epochs_weights_are_kept(pipeline, train_model, tmp_path):
    # A high constant rate and patience 1: training stops at the first epoch that is no better.
    result, bundle_dir, live_dir = train_model("mlp", tmp_path, epochs=40, patience=1,
                                               learning_rate=0.01, schedule="constant")
    assert result.epochs_run < 40
    assert result.best_epoch == result.epochs_run - 1

    best = read_json(live_dir / "metrics.json")["best"]
    assert (read_json(bundle_dir / "config.json")["validation_balanced_accuracy"]
            == best["validation_balanced_accuracy"])
    assert all(len(plot(live_dir, name)) == result.epochs_run for name in PLOTS)
    classifier = load_classifier(bundle_dir)
    validation = Split.load(pipeline.features, "validation")
    loss, balanced, accuracy = evaluate_model(
        classifier.model, validation, torch.nn.CrossEntropyLoss(label_smoothing=0.1),
        len(classifier.labels))
    assert balanced == pytest.approx(best["validation_balanced_accuracy"], abs=1e-12)
    assert accuracy == pytest.approx(best["validation_accuracy"], abs=1e-12)
    assert loss == pytest.approx(best["validation_loss"], rel=1e-5)
    # ... and not those of the last epoch, which was run and logged but was worse.
    last_loss = plot(live_dir, "validation/loss.tsv")[-1]
    assert last_loss != pytest.approx(best["validation_loss"], rel=1e-5)

    # The same figure recomputed from raw validation titles, as `meli predict` would see them.
    table = pq.read_table(pipeline.prepared / "validation.parquet", columns=["title", "label"])
    predicted = classifier.predict(table.column("title"))
    assert metrics.balanced_accuracy(table.column("label").to_numpy().astype(np.int64), predicted,
                                     len(classifier.labels)) == pytest.approx(balanced, abs=1e-12)


def test_training_that_cannot_improve_stops_after_patience_epochs(train_model, tmp_path):
    # A rate far below float32 resolution leaves the weights, hence the predictions, unchanged.
    result, _, live_dir = train_model("mlp", tmp_path, epochs=10, patience=2,
                                      learning_rate=1e-12, schedule="constant")
    assert (result.best_epoch, result.epochs_run) == (1, 3)
    balanced = plot(live_dir, "validation/balanced_accuracy.tsv")
    assert len(balanced) == 3
    assert len(set(balanced)) == 1
    assert read_json(live_dir / "metrics.json")["best"]["epoch"] == 1


@pytest.mark.parametrize("architecture", ["mlp", "cnn"])
def test_same_params_give_the_same_run_and_another_seed_another(train_model, tmp_path,
                                                                 architecture):
    first = train_model(architecture, tmp_path / "first", epochs=2)
    again = train_model(architecture, tmp_path / "again", epochs=2)
    other = train_model(architecture, tmp_path / "other", epochs=2, seed=43)

    assert read_json(first[2] / "metrics.json") == read_json(again[2] / "metrics.json")
    assert first[0].validation_balanced_accuracy == again[0].validation_balanced_accuracy
    assert same_weights(weights(first[1]), weights(again[1]))
    assert not same_weights(weights(first[1]), weights(other[1]))


def test_class_weights_by_scheme():
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2])  # class 3 has no rows
    counts = np.bincount(labels, minlength=4)
    assert class_weights(labels, 4, "none") is None
    for scheme, power in (("balanced", 1.0), ("sqrt", 0.5)):
        weight = class_weights(labels, 4, scheme).numpy().astype(np.float64)
        assert weight.shape == (4,)
        # Rarer classes weigh more, as 1/count^power, and the average row still weighs 1.
        scaled = weight[:3] * counts[:3] ** power
        assert scaled == pytest.approx(np.full(3, scaled[0]), rel=1e-6)
        assert weight[labels].mean() == pytest.approx(1.0, rel=1e-6)
        assert np.isfinite(weight).all()


def test_class_weighting_changes_what_is_learned(train_model, tmp_path):
    runs = {scheme: weights(train_model("mlp", tmp_path / scheme, epochs=1,
                                        class_weighting=scheme)[1])
            for scheme in ("none", "balanced", "sqrt")}
    assert not same_weights(runs["none"], runs["balanced"])
    assert not same_weights(runs["none"], runs["sqrt"])
    assert not same_weights(runs["balanced"], runs["sqrt"])


def test_learning_rate_schedules():
    total = 200
    onecycle = [learning_rate_factor("onecycle", 0.1, total)(step) for step in range(total)]
    cosine = [learning_rate_factor("cosine", 0.1, total)(step) for step in range(total)]
    constant = [learning_rate_factor("constant", 0.1, total)(step) for step in range(total)]

    warmup = int(0.1 * total)
    # onecycle: a linear warm-up to the full rate, then a decay to about zero.
    assert all(a < b for a, b in zip(onecycle[:warmup], onecycle[1:warmup], strict=False))
    assert 0 < onecycle[0] <= 1 / warmup + 1e-12
    assert max(onecycle) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(onecycle[warmup:], onecycle[warmup + 1:], strict=False))
    assert onecycle[-1] < 0.01
    # cosine: the full rate at once, then the same decay.
    assert cosine[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(cosine, cosine[1:], strict=False))
    assert cosine[total // 2] == pytest.approx(0.5, abs=0.02)
    assert cosine[-1] < 0.01
    assert constant == [1.0] * total


def test_diverging_training_is_one_clear_error(train_model, tmp_path):
    with pytest.raises(MeliError) as error:
        train_model("mlp", tmp_path, optimizer="sgd", learning_rate=1e6, schedule="constant")
    message = str(error.value)
    assert "\n" not in message
    assert "diverged" in message
    assert "train.learning_rate" in message
    assert not (tmp_path / "models" / "mlp").exists()


# ---- a training run killed midway -----------------------------------------------------------

LONG_TRAINING = """\
train:
  epochs: 1000
  patience: 1000
  schedule: constant
  threads: 1
mlp:
  hidden_sizes: [32]
"""
SHORT_TRAINING = LONG_TRAINING.replace("epochs: 1000", "epochs: 2")


def epochs_logged(path: Path) -> int:
    try:
        return max(0, len(path.read_text(encoding="utf-8").splitlines()) - 1)
    except FileNotFoundError:
        return 0


def test_killed_training_leaves_no_bundle_or_the_previous_one(pipeline, tmp_path):
    repo = tmp_path / "repo"
    for part in ("data/prepared", "data/features", "models/embeddings"):
        shutil.copytree(pipeline.root / part, repo / part)
    bundle_dir = repo / "models" / "mlp"
    loss_log = repo / "results/train/mlp/plots/metrics/train/loss.tsv"
    command = [sys.executable, "-m", "meli", "train", "mlp"]

    def kill_midway() -> None:
        shutil.rmtree(repo / "results", ignore_errors=True)
        (repo / "params.yaml").write_text(LONG_TRAINING, encoding="utf-8")
        with (tmp_path / "stderr.txt").open("w") as stderr:
            process = subprocess.Popen(command, cwd=repo, stdout=subprocess.DEVNULL,
                                       stderr=stderr)
        try:
            deadline = time.monotonic() + 120
            # Killed once a few epochs are logged: well into training, far from its end.
            while epochs_logged(loss_log) < 3:
                assert process.poll() is None, (tmp_path / "stderr.txt").read_text()
                assert time.monotonic() < deadline, "no epoch logged in 120 s"
                time.sleep(0.02)
        finally:
            process.kill()
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL  # it was still training

    kill_midway()
    assert sorted(p.name for p in (repo / "models").iterdir()) == ["embeddings"]
    with pytest.raises(MeliError, match="no model bundle"):
        load_classifier(bundle_dir)

    (repo / "params.yaml").write_text(SHORT_TRAINING, encoding="utf-8")
    finished = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    complete = {p.name: p.read_bytes() for p in bundle_dir.iterdir()}
    assert set(complete) == BUNDLE_FILES
    assert read_json(bundle_dir / "config.json")["train"]["epochs"] == 2

    kill_midway()
    assert {p.name: p.read_bytes() for p in bundle_dir.iterdir()} == complete
    assert sorted(p.name for p in (repo / "models").iterdir()) == ["embeddings", "mlp"]
    classifier = load_classifier(bundle_dir)
    assert classifier.probabilities(["zapatillas running"]).shape == (1, len(classifier.labels))


# ---- the fastText baseline ------------------------------------------------------------------

SMALL_BASELINE = dict(epochs=5, dim=16, word_ngrams=1, buckets=1_000)


def validation_titles(pipeline):
    return pq.read_table(pipeline.prepared / "validation.parquet", columns=["title", "label"])


def test_baseline_writes_a_bundle_that_loads_and_logs_its_score(pipeline, fasttext_bundle):
    assert {p.name for p in fasttext_bundle.iterdir()} == {
        "config.json", "model.bin", "labels.json", "normalization.json", *CALIBRATION_FILES}
    classifier = load_classifier(fasttext_bundle)
    assert isinstance(classifier, FastTextClassifier)
    assert classifier.labels == read_json(pipeline.prepared / "labels.json")

    table = validation_titles(pipeline)
    probabilities = classifier.probabilities(table.column("title"))
    assert probabilities.shape == (len(table), len(classifier.labels))
    # Rows sum to 1: fastText's own figures carry +1e-5 per category, which must not leak out.
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(len(table)), abs=1e-5)
    assert (probabilities >= 0).all()
    true = table.column("label").to_numpy().astype(np.int64)
    balanced = metrics.balanced_accuracy(true, probabilities.argmax(axis=1),
                                         len(classifier.labels))
    summary = read_json(pipeline.root / "results/train/fasttext/metrics.json")
    assert summary["best"]["validation_balanced_accuracy"] == pytest.approx(balanced, abs=1e-12)
    assert summary["validation"]["balanced_accuracy"] == pytest.approx(balanced, abs=1e-12)
    # Better than always answering the most frequent category.
    assert balanced > 2 / len(classifier.labels)


@pytest.mark.parametrize("loss", ["softmax", "hs"])
def test_fasttext_predicts_its_top_one_without_every_probability(pipeline, tmp_path, monkeypatch,
                                                                 loss):
    """The class of each title (evaluate, the baseline's validation) is fastText's top 1: full
    rows of probabilities cost 1,600 Python pairs a title at the course's 1,600 categories."""
    train_baseline(BaselineParams(**(SMALL_BASELINE | {"loss": loss})), pipeline.prepared,
                   tmp_path / loss, tmp_path / f"{loss}-live")
    classifier = load_classifier(tmp_path / loss)
    titles = [*validation_titles(pipeline).column("title").to_pylist(), "", "zzzz qqqq"]
    expected = classifier.probabilities(titles).argmax(axis=1)

    def every_probability(*args, **kwargs):
        raise AssertionError("predict scored every category")

    monkeypatch.setattr(classifier, "probabilities", every_probability)
    predicted = classifier.predict(titles)
    assert predicted.dtype == np.int64 and np.array_equal(predicted, expected)


def test_baseline_same_seed_same_predictions(pipeline, tmp_path):
    titles = validation_titles(pipeline).column("title")

    def probabilities(name: str, **settings) -> np.ndarray:
        train_baseline(BaselineParams(**(SMALL_BASELINE | settings)), pipeline.prepared,
                       tmp_path / name, tmp_path / f"{name}-live")
        assert not list(tmp_path.glob(".*corpus*"))  # the scratch corpus is removed
        return load_classifier(tmp_path / name).probabilities(titles)

    # "fresh": in a models/ directory that does not exist yet (a fresh clone).
    first, again, other = probabilities("fresh/first"), probabilities("again"), probabilities(
        "other", seed=5)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert (json.loads((tmp_path / "fresh/first-live" / "metrics.json").read_text())
            == json.loads((tmp_path / "again-live" / "metrics.json").read_text()))
