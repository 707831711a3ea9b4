"""Progress a person can follow: a stage under `dvc repro` (no terminal) logs a line at least
every LOG_INTERVAL seconds while it works, whatever loop it is in."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from meli import progress
from meli.progress import Progress, duration


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_interval_and_none_before(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO)
    bar = Progress("rnn epoch 1/2", 400, "batches", interval=30, clock=clock, terminal=False,
                   note=lambda: "train loss so far 2.5000")
    for done in range(1, 101):
        clock.now += 0.25  # 100 batches in 25 s: under the interval
        bar.update(done)
    assert caplog.messages == []
    clock.now += 5
    bar.update(101)
    assert caplog.messages == ["rnn epoch 1/2: 101 of 400 batches (25%), 30 s, about "
                               "1 min 29 s left; train loss so far 2.5000"]
    clock.now += 10
    bar.update(150)  # 10 s after the last line: nothing new
    assert len(caplog.messages) == 1


def test_disabled_progress_says_nothing(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO)
    bar = Progress("x", 10, "titles", enabled=False, interval=0, clock=clock, terminal=False)
    clock.now += 100
    bar.update(5)
    assert caplog.messages == []


def test_a_ticking_progress_writes_lines_while_one_step_lasts(caplog):
    """An ensemble's member or a chunk of titles may take longer than the interval: a thread
    writes the lines, from what `update` last said."""
    import time

    caplog.set_level(logging.INFO)
    with Progress("ensemble: temperatures", 5, "members", interval=0.02, terminal=False,
                  ticking=True) as bar:
        bar.update(2)
        time.sleep(0.3)  # one long step, no update
    lines = list(caplog.messages)
    assert len(lines) >= 3
    assert all(line.startswith("ensemble: temperatures: 2 of 5 members (40%), ")
               for line in lines)
    time.sleep(0.1)
    assert caplog.messages == lines  # closed: no more lines


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (59, "59 s"), (61, "1 min 01 s"),
                                               (3725, "1 h 02 min")])
def test_durations_read_at_a_glance(seconds, text):
    assert duration(seconds) == text


def test_training_logs_its_progress_without_a_terminal(train_model, tmp_path, monkeypatch,
                                                       caplog):
    from meli.training import loop

    # Under pytest, stderr is no terminal: what `dvc repro` gives a stage. Every update is
    # past an interval of 0 s. The bf16 check runs wherever the CPU has bf16: here, always.
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    monkeypatch.setattr(loop, "cpu_has_bf16", lambda: True)
    caplog.set_level(logging.INFO)
    _, bundle, _ = train_model("mlp", tmp_path, epochs=1)
    (start,) = [m for m in caplog.messages if m.startswith("mlp: ") and "training titles" in m]
    assert start.endswith(" an epoch on cpu") or start.endswith(" under bf16 autocast")
    batches = [m for m in caplog.messages if m.startswith("mlp epoch 1/1: ")]
    assert batches
    assert any("train loss so far" in m for m in batches)
    last = batches[-1]
    total = int(last.split(" of ")[1].split()[0].replace(",", ""))
    assert last.startswith(f"mlp epoch 1/1: {total:,} of {total:,} batches (100%)")
    assert any(m.startswith("mlp epoch 1 validation: ") and "titles" in m
               for m in caplog.messages)
    # After the last epoch: the bf16 check and the calibration, a minute at 4.9M titles and
    # 1,600 categories, say what they do and how far they are.
    checked = json.loads((bundle / "config.json").read_text())["bf16_check_rows"]
    calibrated = json.loads((bundle / "calibration.json").read_text())["titles"]
    assert f"mlp: checking bf16 inference on {checked:,} validation titles" in caplog.messages
    assert f"mlp: calibrating on {calibrated:,} validation titles" in caplog.messages
    assert any(m.startswith(f"mlp: calibration: {calibrated:,} of {calibrated:,} titles (100%)")
               for m in caplog.messages)


def test_the_linear_stage_logs_its_progress(pipeline, tmp_path, monkeypatch, caplog):
    """At 4.9M titles the vocabulary pass and each softmax epoch took minutes without a line
    (137 s at most between two): each now logs how far it is, and so do the SVM's categories
    and the calibration."""
    from meli.params import LinearParams
    from meli.stages.linear import train_linear

    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    caplog.set_level(logging.INFO)
    params = LinearParams(estimator="both", epochs=2)
    train_linear(params, pipeline.prepared, tmp_path / "linear", tmp_path / "live")
    messages = caplog.messages
    titles = {split: pq.read_metadata(pipeline.prepared / f"{split}.parquet").num_rows
              for split in ("train", "validation")}
    categories = len(json.loads((pipeline.prepared / "labels.json").read_text()))
    assert messages[0] == (f"linear: {titles['train']:,} training titles, "
                           f"{titles['validation']:,} validation, {categories} categories; "
                           f"the svm head and the softmax head")
    assert (f"linear: counting n-grams: {titles['train']:,} of {titles['train']:,} titles "
            f"(100%)") in " ".join(messages)
    svm = [m for m in messages if m.startswith("linear: svm: ")]
    assert svm and svm[-1].startswith("linear: svm: ") and " categories (100%)" in svm[-1]
    steps = [m for m in messages if m.startswith("linear: softmax: ")]
    total = -(-titles["train"] // params.batch_size) * params.epochs
    assert steps[-1].startswith(f"linear: softmax: {total:,} of {total:,} steps (100%)")
    assert "; epoch 1 of 2, training loss so far " in steps[0]
    assert "; epoch 2 of 2, training loss so far " in steps[-1]
    assert any(m.startswith("linear: calibration: ") and "titles (100%)" in m for m in messages)


def _corpus(path: Path, lines: int) -> Path:
    rng = np.random.default_rng(0)
    words = np.array([f"palabra{i}" for i in range(3_000)])
    with path.open("w") as out:
        for row in rng.integers(0, len(words), size=(lines, 8)):
            out.write(" ".join(words[row]) + "\n")
    return path


@pytest.mark.parametrize("threads", [1, 2])
def test_fasttext_training_logs_its_progress(tmp_path, monkeypatch, caplog, threads):
    """One thread: fastText says nothing until it ends, the share comes from how far it has read
    the training file; two: from fastText's own progress line."""
    from meli.training import fasttext

    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    caplog.set_level(logging.INFO)
    corpus = _corpus(tmp_path / "corpus.txt", 60_000)
    fasttext.train("unsupervised", corpus, {"dim": 8, "epoch": 2, "thread": threads,
                                            "minn": 0, "maxn": 0, "bucket": 1_000},
                   "the test titles", "embeddings.learning_rate")
    lines = [m for m in caplog.messages
             if m.startswith("fastText (unsupervised) on the test titles: ")]
    assert lines
    if threads == 1:
        shares = [float(m.split("%")[0].rsplit(" ", 1)[1]) for m in lines if "epoch" in m]
        assert shares and shares == sorted(shares) and 0 < shares[-1] <= 100
        assert any("epoch 1 of 2" in m for m in lines)
    else:
        assert any("words/s per thread, loss " in m for m in lines)


# A process that logs to stderr, as a stage does, trains with two threads (fastText writes its
# progress line on stderr), and says on stdout how many progress lines it logged.
_LOGGING_TRAINER = """
import logging, sys
from pathlib import Path
from meli import progress
from meli.training import fasttext
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
progress.LOG_INTERVAL = 0.0
logged = []
counting = logging.Handler()
counting.emit = lambda record: logged.append(record.getMessage())
logging.getLogger().addHandler(counting)
fasttext.train("unsupervised", Path(sys.argv[1]), {"dim": 8, "epoch": 2, "thread": 2, "minn": 0,
               "maxn": 0, "bucket": 1000}, "the test titles", "embeddings.learning_rate")
print(sum(m.startswith("fastText") for m in logged))
"""


def test_every_progress_line_reaches_stderr_whole_and_nothing_of_fasttexts_own(tmp_path):
    """fastText writes its line in many small pieces: a log line sent through the same pipe
    would land among them and be lost with them."""
    import subprocess
    import sys

    corpus = _corpus(tmp_path / "corpus.txt", 60_000)
    done = subprocess.run([sys.executable, "-c", _LOGGING_TRAINER, str(corpus)],
                          capture_output=True, text=True, timeout=300, check=True)
    logged = int(done.stdout.strip())
    err = done.stderr.splitlines()
    assert logged > 3
    assert len([line for line in err if line.startswith("fastText (unsupervised)")]) == logged
    assert not [line for line in err if "Progress:" in line or "Number of words" in line]


def test_the_data_stages_log_their_progress(tmp_path, write_jsonl, monkeypatch, caplog):
    """ingest (a thread reading how far into the file its reader is), prepare's two passes and
    featurize's encoding: at 20M rows or on a busy machine each takes minutes."""
    from conftest import make_rows

    from meli.params import DataParams, FeaturizeParams, PrepareParams
    from meli.stages.featurize import featurize
    from meli.stages.ingest import ingest
    from meli.stages.prepare import prepare

    caplog.set_level(logging.INFO)
    source = write_jsonl("titles.jsonl.gz", make_rows({f"CAT{i}": 300 for i in range(40)}))
    # A ticker's thread waits LOG_INTERVAL between lines: 0 would spin.
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.001)
    ingest(DataParams(source=str(source)), tmp_path / "raw")
    reading = [m for m in caplog.messages if m.startswith(f"ingest: {source}: ")]
    assert reading and "% of 0 MB read, " in reading[0] and " rows so far, " in reading[0]
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    prepare(PrepareParams(min_examples=2), tmp_path / "raw", tmp_path / "prepared",
            tmp_path / "data.json")
    featurize(FeaturizeParams(), tmp_path / "prepared", tmp_path / "features",
              tmp_path / "features.json")
    assert "prepare: normalizing (pass 1 of 2): 12,000 of 12,000 rows (100%)" in " ".join(
        caplog.messages)
    assert any(m.startswith("prepare: writing the splits (pass 2 of 2): 12,000 of 12,000 rows")
               for m in caplog.messages)
    assert any(m.startswith("featurize: encoding the train split: ") for m in caplog.messages)


def test_evaluate_logs_its_progress(pipeline, mlp_bundle, tmp_path, monkeypatch, caplog):
    from meli.params import EvaluateParams
    from meli.stages.evaluate import evaluate

    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    caplog.set_level(logging.INFO)
    result = evaluate(EvaluateParams(), mlp_bundle, pipeline.prepared, tmp_path / "m.json",
                      tmp_path / "plots")
    assert caplog.messages[0].startswith(f"evaluate mlp: {result.rows:,} test titles, ")
    assert (f"evaluate mlp: scoring the test split: {result.rows:,} of {result.rows:,} titles "
            f"(100%)") in " ".join(caplog.messages)


def test_a_failing_progress_reader_never_blocks_fasttext(tmp_path, monkeypatch, caplog):
    """fastText writes on stderr all along: were the thread reading it to stop, the pipe would
    fill up and training would hang."""
    from meli.training import fasttext

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    monkeypatch.setattr(fasttext.TrainingProgress, "_state", broken)
    caplog.set_level(logging.INFO)
    corpus = _corpus(tmp_path / "corpus.txt", 60_000)
    model = fasttext.train("unsupervised", corpus, {"dim": 8, "epoch": 2, "thread": 2, "minn": 0,
                                                    "maxn": 0, "bucket": 1_000},
                           "the test titles", "embeddings.learning_rate")
    assert model.get_dimension() == 8
    assert any(m.endswith("no more progress lines (RuntimeError: a bug)")
               for m in caplog.messages)
