"""embeddings: fastText vectors (or a pretrained .vec) aligned row by row to the vocabulary."""

from __future__ import annotations

import ctypes
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from meli.data.vocabulary import Vocabulary
from meli.errors import MeliError
from meli.layout import MATRIX_FILE, PAD, UNKNOWN
from meli.params import DataParams, EmbeddingsParams, FeaturizeParams, PrepareParams
from meli.stages.embeddings import build_embeddings, train_fasttext
from meli.stages.featurize import featurize
from meli.stages.ingest import ingest
from meli.stages.prepare import prepare

# Small and quick: a few hundred synthetic titles, 16 dimensions, few epochs and buckets.
SMALL = dict(dim=16, epochs=3, buckets=2_000, threads=1)


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory) -> tuple[Path, Path]:
    """(prepared, features) directories for 400 synthetic titles."""
    root = tmp_path_factory.mktemp("sample")
    ingest(DataParams(source="sample", sample_rows=400, sample_seed=11), root / "raw")
    prepare(PrepareParams(min_examples=2), root / "raw", root / "prepared", root / "data.json")
    featurize(FeaturizeParams(), root / "prepared", root / "features", root / "features.json")
    return root / "prepared", root / "features"


def train(sample_data, output: Path, **params) -> np.ndarray:
    prepared, features = sample_data
    build_embeddings(EmbeddingsParams(**(SMALL | params)), prepared, features, output)
    return np.load(output / MATRIX_FILE)


def test_trained_matrix_has_one_row_per_vocabulary_id(sample_data, tmp_path):
    _, features = sample_data
    vocabulary = Vocabulary.load(features / "vocab.txt")
    matrix = train(sample_data, tmp_path / "embeddings", seed=3)
    assert matrix.shape == (len(vocabulary), 16)
    assert matrix.dtype == np.float32
    assert np.isfinite(matrix).all()
    assert not matrix[[PAD, UNKNOWN]].any()
    # Every vocabulary word gets a real vector (fastText keeps all with min_count=1).
    assert (np.abs(matrix[2:]).sum(axis=1) > 0).all()
    summary = json.loads((tmp_path / "embeddings" / "summary.json").read_text())
    assert summary["dim"] == 16
    assert summary["vocabulary_size"] == len(vocabulary)
    assert summary["words_with_own_vector"] == len(vocabulary.words)
    assert (tmp_path / "embeddings" / "fasttext.bin").exists()
    assert not (tmp_path / "embeddings" / "corpus.txt").exists()


def test_same_seed_same_vectors_other_seed_other_vectors(sample_data, tmp_path):
    first = train(sample_data, tmp_path / "a", seed=0)
    again = train(sample_data, tmp_path / "b", seed=0)
    # 0 and 1: fastText's own generators take seed 0 for 1, which meli must shift away.
    other = train(sample_data, tmp_path / "c", seed=1)
    assert np.array_equal(first, again)
    assert not np.allclose(first[2:], other[2:])


def test_rows_are_the_saved_models_vectors_in_vocabulary_order(sample_data, tmp_path):
    import fasttext

    _, features = sample_data
    vocabulary = Vocabulary.load(features / "vocab.txt")
    matrix = train(sample_data, tmp_path / "embeddings")
    model = fasttext.load_model(str(tmp_path / "embeddings" / "fasttext.bin"))
    expected = np.array([model.get_word_vector(word) for word in vocabulary.words])
    np.testing.assert_array_equal(matrix[2:], expected)
    # Distinct words, distinct vectors: no row was left at a shared default.
    assert len({row.tobytes() for row in matrix[2:]}) == len(vocabulary.words)


def test_divergence_is_one_clear_error(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b c d e f g h\n" * 200, encoding="utf-8")
    # learning_rate=5.0 is outside the params range (<= 1.0): built directly to reach fastText.
    params = EmbeddingsParams(model="skipgram", dim=16, epochs=50, learning_rate=5.0,
                              buckets=1_000)
    with pytest.raises(MeliError) as caught:
        train_fasttext(corpus, params)
    message = str(caught.value)
    assert "\n" not in message
    assert "diverged" in message
    assert "embeddings.learning_rate" in message
    assert "8 distinct words" in message


# --- pretrained vectors ---------------------------------------------------------------------------

@pytest.fixture
def small_data(tmp_path, ingest_rows) -> tuple[Path, Path, Vocabulary]:
    """(prepared, features, vocabulary) of a few hand-made titles with accents."""
    titles = {"T_SHIRTS": ["Remera de Algodón", "Remera Algodón Niño", "Remera Lisa"],
              "SHEETS": ["Sábanas de Algodón", "Sábanas Queen", "Sábanas Lisas"]}
    records = [{"title": title, "category": category, "language": "spanish",
                "label_quality": "reliable", "split": "train"}
               for category, names in titles.items() for title in names]
    raw = ingest_rows(records)
    prepare(PrepareParams(min_examples=2), raw, tmp_path / "prepared", tmp_path / "data.json")
    featurize(FeaturizeParams(), tmp_path / "prepared", tmp_path / "features",
              tmp_path / "features.json")
    vocabulary = Vocabulary.load(tmp_path / "features" / "vocab.txt")
    return tmp_path / "prepared", tmp_path / "features", vocabulary


def write_vec(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def vectors(word_values: dict[str, list[float]], dim: int = 4) -> list[str]:
    return [f"{len(word_values)} {dim}"] + [
        f"{word} " + " ".join(str(value) for value in values) + " "
        for word, values in word_values.items()]


@pytest.mark.parametrize("name", ["vectors.vec", "vectors.vec.gz"])
def test_pretrained_vectors_are_matched_after_normalization(small_data, tmp_path, name):
    prepared, features, vocabulary = small_data
    assert "algodon" in vocabulary.words and "sabanas" in vocabulary.words
    path = write_vec(tmp_path / name, vectors({
        "Algodón": [1.0, 2.0, 3.0, 4.0],
        # A later spelling of the same normalized word does not replace the first one.
        "algodon": [9.0, 9.0, 9.0, 9.0],
        "Sábanas": [-1.0, 0.5, 0.25, 2.0],
        "ausente": [7.0, 7.0, 7.0, 7.0],
    }))
    result = build_embeddings(EmbeddingsParams(pretrained=str(path), seed=4), prepared, features,
                              tmp_path / "embeddings")
    matrix = np.load(tmp_path / "embeddings" / MATRIX_FILE)
    assert matrix.shape == (len(vocabulary), 4)
    assert result.covered == 2
    assert matrix[vocabulary.tokens.index("algodon")].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert matrix[vocabulary.tokens.index("sabanas")].tolist() == [-1.0, 0.5, 0.25, 2.0]
    assert not matrix[[PAD, UNKNOWN]].any()
    missing = [index for index, word in enumerate(vocabulary.tokens)
               if index >= 2 and word not in ("algodon", "sabanas")]
    assert missing
    # Words the file lacks get random rows: non-zero, finite and all different.
    assert np.isfinite(matrix[missing]).all()
    assert (np.abs(matrix[missing]).sum(axis=1) > 0).all()
    assert len({tuple(row) for row in matrix[missing].tolist()}) == len(missing)
    summary = json.loads((tmp_path / "embeddings" / "summary.json").read_text())
    assert summary["origin"] == str(path)
    assert summary["words_with_own_vector"] == 2
    assert not (tmp_path / "embeddings" / "fasttext.bin").exists()


def test_pretrained_bad_header(small_data, tmp_path):
    prepared, features, _ = small_data
    path = write_vec(tmp_path / "vectors.vec", ["algodon 1 2 3 4"])
    with pytest.raises(MeliError) as caught:
        build_embeddings(EmbeddingsParams(pretrained=str(path)), prepared, features,
                         tmp_path / "embeddings")
    message = str(caught.value)
    assert message.startswith(f"{path}: line 1: ")
    assert "'<words> <dim>' header" in message
    assert not (tmp_path / "embeddings").exists()


def test_pretrained_vector_of_the_wrong_length(small_data, tmp_path):
    prepared, features, _ = small_data
    lines = vectors({"remera": [1, 2, 3, 4], "algodon": [1, 2, 3, 4]})
    lines[2] = "algodon 1 2 3"
    path = write_vec(tmp_path / "vectors.vec.gz", lines)
    with pytest.raises(MeliError) as caught:
        build_embeddings(EmbeddingsParams(pretrained=str(path)), prepared, features,
                         tmp_path / "embeddings")
    assert str(caught.value) == f"{path}: line 3: expected 4 numbers, found 3"


def test_pretrained_vector_that_is_not_numbers(small_data, tmp_path):
    prepared, features, _ = small_data
    path = write_vec(tmp_path / "vectors.vec", ["1 2", "remera 1.0 uno"])
    with pytest.raises(MeliError, match=r"line 2: vector holds something not a number"):
        build_embeddings(EmbeddingsParams(pretrained=str(path)), prepared, features,
                         tmp_path / "embeddings")


def test_pretrained_file_missing(small_data, tmp_path):
    prepared, features, _ = small_data
    with pytest.raises(MeliError, match="no such vectors file"):
        build_embeddings(EmbeddingsParams(pretrained=str(tmp_path / "none.vec")), prepared,
                         features, tmp_path / "embeddings")


def test_training_ignores_what_the_heap_held_before(sample_data, tmp_path):
    # fastText 0.9.3 leaves most of its input matrix uninitialized with threads < 10: leftover
    # 0xff bytes (NaN as float32) where it allocates next must not change the vectors.
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallopt"):
        pytest.skip("needs glibc malloc")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    small = dict(dim=8, buckets=1_000)
    clean = train(sample_data, tmp_path / "clean", **small)
    for attempt in range(3):
        # Below glibc's mmap threshold, so that the matrix comes from the same heap memory.
        size = 64 * 1024
        block = libc.malloc(size)
        ctypes.memset(block, 0xFF, size)
        libc.free(block)
        dirty = train(sample_data, tmp_path / f"dirty-{attempt}", **small)
        np.testing.assert_array_equal(dirty, clean)


def test_threads_auto_means_every_core(sample_data, tmp_path):
    from meli.params import parse_params
    from meli.training.fasttext import thread_count

    params = parse_params({"embeddings": {"threads": "auto"}, "baseline": {"threads": "auto"}})
    assert params.embeddings.threads == params.baseline.threads == "auto"
    assert parse_params({}).embeddings.threads == parse_params({}).baseline.threads == 1
    assert thread_count("auto") == len(os.sched_getaffinity(0))
    assert thread_count(3) == 3
    matrix = train(sample_data, tmp_path / "auto", threads="auto", epochs=1)
    assert matrix.shape[1] == SMALL["dim"] and np.isfinite(matrix).all()


@pytest.mark.parametrize(("value", "expected"), [
    ("many", "embeddings.threads must be 'auto' or an integer, got str 'many'"),
    (0, "embeddings.threads must be >= 1, got int 0"),
    (2.5, "embeddings.threads must be an integer, got float 2.5"),
])
def test_threads_that_are_neither_a_count_nor_auto(value, expected):
    from meli.params import parse_params

    with pytest.raises(MeliError) as caught:
        parse_params({"embeddings": {"threads": value}})
    assert str(caught.value) == f"params.yaml: {expected}"


def test_corpus_file_is_one_normalized_title_per_line(sample_data, tmp_path):
    import pyarrow.parquet as pq

    from meli.training.fasttext import write_corpus

    prepared, _ = sample_data
    train_split = pq.read_table(prepared / "train.parquet")
    for labelled in (False, True):
        corpus = tmp_path / f"corpus-{labelled}.txt"
        write_corpus(prepared / "train.parquet", corpus, labelled)
        expected = [f"__label__{label} {text}" if labelled else text for text, label in zip(
            train_split.column("text").to_pylist(), train_split.column("label").to_pylist(),
            strict=True)]
        assert corpus.read_text(encoding="utf-8").split("\n") == [*expected, ""]
