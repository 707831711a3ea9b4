"""featurize: a vocabulary from the training split only, fixed-length ids for every split."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meli.data.vocabulary import Vocabulary, WordIndex
from meli.errors import MeliError
from meli.layout import PAD, UNKNOWN, labels_path, split_path, tokens_path
from meli.params import FeaturizeParams, PrepareParams
from meli.stages.featurize import build_vocabulary, featurize
from meli.stages.prepare import prepare

SPLITS = ("train", "validation", "test")

# Training titles with known word counts: alfa 5, beta 4, omega 3, then delta, gamma, zeta once.
TRAIN = [
    ("alfa beta gamma", "X"), ("alfa beta delta", "X"), ("alfa beta", "X"), ("alfa zeta", "X"),
    ("omega beta", "Y"), ("omega alfa", "Y"), ("omega", "Y"),
]
VALIDATION = [("alfa solamente", "X"), ("omega omega", "Y")]
TEST = [("exclusivo alfa", "X"), ("omega beta alfa omega beta alfa", "Y")]


@pytest.fixture
def prepared(tmp_path, ingest_rows):
    """A prepared dataset with exactly the splits above (the source's own split is kept)."""
    records = [{"title": title, "category": category, "language": "spanish",
                "label_quality": "reliable", "split": split}
               for split, pairs in zip(SPLITS, (TRAIN, VALIDATION, TEST), strict=True)
               for title, category in pairs]
    raw = ingest_rows(records)
    result = prepare(PrepareParams(min_examples=2), raw, tmp_path / "prepared",
                     tmp_path / "data.json")
    assert result.split == "source"
    return tmp_path / "prepared"


def run(prepared, tmp_path, **params):
    features = tmp_path / "features"
    result = featurize(FeaturizeParams(**params), prepared, features, tmp_path / "features.json")
    return result, features, Vocabulary.load(features / "vocab.txt")


def test_vocabulary_comes_from_the_training_split_only(prepared, tmp_path):
    result, features, vocabulary = run(prepared, tmp_path)
    train_words = Counter(word for title, _ in TRAIN for word in title.split())
    # Most frequent first; ties in alphabetical order.
    expected = sorted(train_words, key=lambda word: (-train_words[word], word))
    assert expected[:3] == ["alfa", "beta", "omega"]
    assert vocabulary.words == expected
    assert vocabulary.tokens[:2] == ["<pad>", "<unk>"]
    assert result.vocabulary_size == len(vocabulary) == len(expected) + 2
    # Words seen only in validation or test are unknown.
    assert "exclusivo" not in vocabulary.tokens
    assert "solamente" not in vocabulary.tokens
    test_ids = np.load(tokens_path(features, "test"))
    texts = [row["text"] for row in pq.read_table(split_path(prepared, "test")).to_pylist()]
    row = test_ids[texts.index("exclusivo alfa")]
    assert row[:2].tolist() == [UNKNOWN, vocabulary.tokens.index("alfa")]


def test_min_count_and_max_size(prepared, tmp_path):
    _, _, vocabulary = run(prepared, tmp_path, min_count=3)
    assert vocabulary.words == ["alfa", "beta", "omega"]
    _, _, vocabulary = run(prepared, tmp_path, min_count=4)
    assert vocabulary.words == ["alfa", "beta"]
    # max_size keeps the most frequent; among the words seen once, alphabetical order decides.
    _, features, vocabulary = run(prepared, tmp_path, max_size=4)
    assert vocabulary.words == ["alfa", "beta", "omega", "delta"]
    assert np.load(tokens_path(features, "train")).max() == len(vocabulary) - 1


def test_vocabulary_does_not_depend_on_row_order(tmp_path):
    texts = ["b a", "c b a", "d", "c a", "e e e"]
    first, second = tmp_path / "first.parquet", tmp_path / "second.parquet"
    pq.write_table(pa.table({"text": texts}), first)
    pq.write_table(pa.table({"text": texts[::-1]}), second)
    assert build_vocabulary(first, 1, 100).words == ["a", "e", "b", "c", "d"]
    assert build_vocabulary(second, 1, 100).words == ["a", "e", "b", "c", "d"]
    assert build_vocabulary(first, 2, 3).words == ["a", "e", "b"]


def test_ids_pad_and_unknown(prepared, tmp_path):
    _, features, vocabulary = run(prepared, tmp_path, max_length=4)
    for split in SPLITS:
        ids = np.load(tokens_path(features, split))
        texts = [row["text"] for row in pq.read_table(split_path(prepared, split)).to_pylist()]
        assert ids.shape == (len(texts), 4)
        assert ids.dtype == np.int32
        for text, row in zip(texts, ids, strict=True):
            words = text.split()[:4]
            expected = [vocabulary.tokens.index(word) if word in vocabulary.tokens else UNKNOWN
                        for word in words]
            # Truncated to max_length, then padded with PAD (0).
            assert row.tolist() == expected + [PAD] * (4 - len(words))
    assert vocabulary.tokens[PAD] == "<pad>"
    assert vocabulary.tokens[UNKNOWN] == "<unk>"


def test_long_title_is_truncated_to_its_first_words(prepared, tmp_path):
    _, features, vocabulary = run(prepared, tmp_path, max_length=3)
    texts = [row["text"] for row in pq.read_table(split_path(prepared, "test")).to_pylist()]
    row = np.load(tokens_path(features, "test"))[texts.index("omega beta alfa omega beta alfa")]
    assert [vocabulary.tokens[i] for i in row] == ["omega", "beta", "alfa"]
    metrics = json.loads((tmp_path / "features.json").read_text())
    assert metrics["test"]["truncated_rate"] == 0.5
    assert metrics["train"]["truncated_rate"] == 0.0


def test_unknown_words_and_empty_text():
    vocabulary = Vocabulary(["alfa", "beta"])
    encoded = vocabulary.encode(pa.array(["nada conocido aqui", "", None, "beta alfa zzz"]), 5)
    assert encoded.tolist() == [
        [UNKNOWN, UNKNOWN, UNKNOWN, PAD, PAD],
        # An empty text still has one position to pool over.
        [UNKNOWN, PAD, PAD, PAD, PAD],
        [UNKNOWN, PAD, PAD, PAD, PAD],
        [3, 2, UNKNOWN, PAD, PAD],
    ]


def test_short_and_long_batches_find_the_same_ids():
    """A batch with fewer words than the vocabulary is looked up in a dict built once, a longer
    one by Arrow's index_in: the same ids either way, a word listed twice keeping its first."""
    index = WordIndex(["funda", "celular", "nike", "funda", "zapatilla"])
    words = ["nike", "funda", "x", "", "zapatilla", "celular", "Nike", "funda"]
    short = [index(pa.array(words[start:start + 2])) for start in range(0, len(words), 2)]
    assert np.concatenate(short).tolist() == index(pa.array(words)).tolist() == \
        [2, 0, -1, -1, 4, 1, -1, 0]
    vocabulary = Vocabulary([f"w{i}" for i in range(50)])
    texts = pa.array([" ".join(f"w{(i * 7 + j) % 60}" for j in range(i % 9)) for i in range(40)])
    whole = vocabulary.encode(texts, 6)
    assert (np.concatenate([vocabulary.encode(texts.slice(i, 1), 6) for i in range(40)])
            == whole).all()
    # w56 ... w59 unknown, then w0 and w1 (ids from 2), cut at 6 words
    assert whole[8].tolist() == [UNKNOWN] * 4 + [2, 3]


def test_vocabulary_file_round_trips(tmp_path):
    vocabulary = Vocabulary(["alfa", "beta", "ñandu"])
    vocabulary.save(tmp_path / "vocab.txt")
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines() == [
        "<pad>", "<unk>", "alfa", "beta", "ñandu"]
    assert Vocabulary.load(tmp_path / "vocab.txt").tokens == vocabulary.tokens
    (tmp_path / "bad.txt").write_text("alfa\nbeta\n")
    with pytest.raises(MeliError, match="not a vocabulary file"):
        Vocabulary.load(tmp_path / "bad.txt")


def test_arrays_memory_map_and_labels_match_the_parquet(prepared, tmp_path):
    result, features, _ = run(prepared, tmp_path)
    assert json.loads((features / "labels.json").read_text()) == json.loads(
        (prepared / "labels.json").read_text())
    for split in SPLITS:
        table = pq.read_table(split_path(prepared, split))
        tokens = np.load(tokens_path(features, split), mmap_mode="r")
        labels = np.load(labels_path(features, split), mmap_mode="r")
        assert isinstance(tokens, np.memmap)
        assert isinstance(labels, np.memmap)
        assert labels.dtype == np.int32
        assert labels.tolist() == table.column("label").to_pylist()
        assert len(tokens) == len(table) == result.rows[split]


def test_missing_prepared_data(tmp_path):
    with pytest.raises(MeliError, match="run the prepare stage first"):
        featurize(FeaturizeParams(), tmp_path / "prepared", tmp_path / "features",
                  tmp_path / "features.json")
