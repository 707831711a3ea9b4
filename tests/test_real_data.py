"""The real MeLi sample (../shared/data, outside the repository): ingest, prepare, featurize."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from meli.data.vocabulary import Vocabulary
from meli.layout import UNKNOWN, labels_path, tokens_path
from meli.params import DataParams, FeaturizeParams, PrepareParams
from meli.stages.featurize import featurize
from meli.stages.ingest import ingest
from meli.stages.prepare import prepare, split_path

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared/data/meli-es-sample.jsonl.gz"
SPLITS = ("train", "validation", "test")

pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(not SAMPLE.exists(), reason=f"real MeLi sample not found at {SAMPLE}"),
]


def test_real_sample_through_ingest_prepare_featurize(tmp_path):
    result = ingest(DataParams(source=str(SAMPLE)), tmp_path / "raw")
    # data/README.md: 42,667 Spanish reliable titles in 632 categories of 36 to 90 titles.
    assert (result.rows_read, result.rows_written, result.rows_rejected) == (42_667, 42_667, 0)
    assert result.format == "jsonl.gz"
    raw = pq.read_table(tmp_path / "raw" / "titles.parquet")
    # Every row says "test"; ingest records it, and prepare must not take it as the split.
    assert set(raw.column("split").to_pylist()) == {"test"}
    assert set(raw.column("language").to_pylist()) == {"spanish"}

    prepared = tmp_path / "prepared"
    prepared_result = prepare(PrepareParams(), tmp_path / "raw", prepared, tmp_path / "data.json")
    metrics = json.loads((tmp_path / "data.json").read_text())
    assert metrics["rows_read"] == 42_667
    assert prepared_result.classes == 632
    assert prepared_result.split == "stratified"
    assert metrics["rows_kept"] + sum(metrics["dropped"].values()) == 42_667
    assert prepared_result.dropped["rare_category"] == 0
    rows = prepared_result.rows
    total = sum(rows.values())
    assert min(rows.values()) > 0
    assert rows["train"] / total == pytest.approx(0.8, abs=0.02)
    assert rows["validation"] / total == pytest.approx(0.1, abs=0.01)
    assert rows["test"] / total == pytest.approx(0.1, abs=0.01)
    train_classes = Counter(pq.read_table(split_path(prepared, "train")).column("label")
                            .to_pylist())
    assert len(train_classes) == 632
    # The smallest class (36 titles) still keeps most of its rows for training.
    assert min(train_classes.values()) >= 28

    features = tmp_path / "features"
    featurized = featurize(FeaturizeParams(), prepared, features, tmp_path / "features.json")
    assert featurized.rows == rows
    vocabulary = Vocabulary.load(features / "vocab.txt")
    assert featurized.vocabulary_size == len(vocabulary)
    train_words = set()
    for text in pq.read_table(split_path(prepared, "train")).column("text").to_pylist():
        train_words.update(text.split())
    # The vocabulary is exactly the training words (min_count 1, far fewer than max_size).
    assert len(train_words) < FeaturizeParams().max_size
    assert set(vocabulary.words) == train_words
    for split in SPLITS:
        ids = np.load(tokens_path(features, split), mmap_mode="r")
        labels = np.load(labels_path(features, split), mmap_mode="r")
        assert ids.shape == (rows[split], FeaturizeParams().max_length)
        assert ids.max() < len(vocabulary)
        assert (ids[:, 0] != 0).all()
        assert labels.tolist() == pq.read_table(split_path(prepared, split)).column(
            "label").to_pylist()
    # Every training token is known; validation and test meet some words train never had.
    assert not (np.load(tokens_path(features, "train")) == UNKNOWN).any()
    assert (np.load(tokens_path(features, "test")) == UNKNOWN).any()


def test_real_sample_reads_the_same_vectorized_and_row_by_row(tmp_path, monkeypatch):
    from meli.data import merge

    outputs = []
    for vectorized in (True, False):
        monkeypatch.setattr(merge, "VECTORIZED", vectorized)
        raw = tmp_path / f"raw-{vectorized}"
        ingest(DataParams(source=str(SAMPLE)), raw)
        outputs.append([(raw / name).read_bytes() for name in
                        ("titles.parquet", "rejected.jsonl", "source.json")])
    assert outputs[0] == outputs[1]
