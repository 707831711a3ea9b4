"""embeddings: word vectors for the vocabulary, the starting point of the PyTorch models.

By default fastText (skipgram or cbow) is trained on the normalized training titles; thanks to
its character n-grams even words seen once get a sensible vector. `embeddings.pretrained` may name
a word2vec-style `.vec(.gz)` file instead (e.g. the Spanish Billion Words vectors): it is streamed
line by line and only the vocabulary's rows are kept, so a multi-GB file never sits in memory.

Outputs in `models/embeddings/`: `matrix.npy` (float32, one row per vocabulary id; padding and
unknown rows are zero), `fasttext.bin` (the trained model, when one was trained) and
`summary.json` (dimension, coverage).

Run by dvc.yaml as `python -m meli.stages.embeddings`; reads the `embeddings` section of
params.yaml.
"""

from __future__ import annotations

import gzip
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meli.data.text import normalize
from meli.data.vocabulary import Vocabulary
from meli.errors import MeliError, run, stage_parser
from meli.files import atomic_directory, read_json, write_json, writing
from meli.layout import (
    EMBEDDINGS_DIR,
    FEATURES_DIR,
    MATRIX_FILE,
    NORMALIZATION_FILE,
    PREPARED_DIR,
    VOCAB_FILE,
    split_path,
)
from meli.params import EmbeddingsParams, TextParams, load_params
from meli.training import fasttext as fasttext_training

log = logging.getLogger(__name__)

MODEL_FILE = "fasttext.bin"
SUMMARY_FILE = "summary.json"


@dataclass
class EmbeddingsResult:
    dim: int
    vocabulary_size: int
    covered: int


def build_embeddings(params: EmbeddingsParams, prepared_dir: str | Path,
                     features_dir: str | Path, output_dir: str | Path) -> EmbeddingsResult:
    for needed, stage in ((Path(features_dir) / VOCAB_FILE, "featurize"),
                          (split_path(prepared_dir, "train"), "prepare")):
        if not needed.exists():
            raise MeliError(f"{needed}: not found; run the {stage} stage first")
    vocabulary = Vocabulary.load(Path(features_dir) / VOCAB_FILE)
    with atomic_directory(output_dir) as partial:
        if params.pretrained:
            normalization = read_json(Path(prepared_dir) / NORMALIZATION_FILE)
            text_settings = TextParams(**normalization)
            matrix, covered = read_vectors(params.pretrained, vocabulary, text_settings,
                                           params.seed)
            origin = params.pretrained
        else:
            log.info("embeddings: fastText %s vectors of %d dimensions, %d epochs on %s "
                     "thread(s), for %s words", params.model, params.dim, params.epochs,
                     fasttext_training.thread_count(params.threads), f"{len(vocabulary):,}")
            corpus = partial / "corpus.txt"
            fasttext_training.write_corpus(split_path(prepared_dir, "train"), corpus,
                                           labelled=False)
            model = train_fasttext(corpus, params)
            corpus.unlink()
            model.save_model(str(partial / MODEL_FILE))
            matrix = np.zeros((len(vocabulary), params.dim), dtype=np.float32)
            for index, word in enumerate(vocabulary.words, start=2):
                matrix[index] = model.get_word_vector(word)
            # Words fastText kept whole; the others get vectors built from their n-grams only.
            covered = len(set(model.words) & set(vocabulary.words))
            origin = f"fastText {params.model} trained on the training titles"
        np.save(partial / MATRIX_FILE, matrix)
        write_json(partial / SUMMARY_FILE, {
            "origin": origin,
            "dim": int(matrix.shape[1]),
            "vocabulary_size": len(vocabulary),
            "words_with_own_vector": covered,
        })
    return EmbeddingsResult(int(matrix.shape[1]), len(vocabulary), covered)


def train_fasttext(corpus: Path, params: EmbeddingsParams):
    """Unsupervised fastText vectors from a file of one normalized title per line."""
    settings = dict(
        model=params.model, dim=params.dim, epoch=params.epochs, lr=params.learning_rate,
        ws=params.window, minCount=params.min_count, minn=params.min_ngram,
        maxn=params.max_ngram, bucket=params.buckets, thread=params.threads, seed=params.seed)
    return fasttext_training.train("unsupervised", corpus, settings,
                                   "the training titles", "embeddings.learning_rate")


def read_vectors(path: str, vocabulary: Vocabulary, text_settings: TextParams,
                 seed: int) -> tuple[np.ndarray, int]:
    """Rows of a `.vec(.gz)` file for the vocabulary's words, streamed line by line.

    File words are normalized like titles, and the first (most frequent) vector of each
    normalized form wins. Words the file lacks get small random vectors of the same scale.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise MeliError(f"{path}: no such vectors file (embeddings.pretrained)")
    with file.open("rb") as head:
        opener = gzip.open if head.read(2) == b"\x1f\x8b" else open
    index = {word: i for i, word in enumerate(vocabulary.tokens) if i >= 2}
    matrix: np.ndarray | None = None
    found = np.zeros(len(vocabulary), dtype=bool)
    try:
        with opener(file, "rt", encoding="utf-8", errors="replace") as lines:
            header = next(lines, "").split()
            if len(header) != 2 or not all(part.isdigit() for part in header):
                raise MeliError(f"{path}: line 1: expected a '<words> <dim>' header")
            dim = int(header[1])
            matrix = np.zeros((len(vocabulary), dim), dtype=np.float32)
            pending: list[tuple[str, str, int]] = []
            for number, line in enumerate(lines, start=2):
                word, _, values = line.rstrip("\n").partition(" ")
                pending.append((word, values, number))
                if len(pending) == 10_000:
                    _fill(pending, index, matrix, found, text_settings, path, dim)
                    pending = []
            _fill(pending, index, matrix, found, text_settings, path, dim)
    except (OSError, EOFError) as error:
        raise MeliError(f"{path}: unreadable vectors file: {error}") from None
    assert matrix is not None
    missing = ~found
    missing[:2] = False
    if found.any():
        scale = float(matrix[found].std())
        rng = np.random.default_rng(seed)
        matrix[missing] = rng.normal(0.0, scale, size=(int(missing.sum()), matrix.shape[1]))
    return matrix, int(found.sum())


def _fill(pending: list[tuple[str, str, int]], index: dict[str, int], matrix: np.ndarray,
          found: np.ndarray, text_settings: TextParams, path: str, dim: int) -> None:
    """Copy the vectors of one block of .vec lines whose normalized word is in the vocabulary."""
    if not pending:
        return
    normalized = normalize([word for word, _, _ in pending], text_settings).to_pylist()
    for (_, values, number), word in zip(pending, normalized, strict=True):
        row = index.get(word)
        if row is None or found[row]:
            continue
        try:
            vector = np.array(values.split(), dtype=np.float32)
        except ValueError:
            raise MeliError(f"{path}: line {number}: vector holds something not a number") from None
        if vector.shape != (dim,):
            raise MeliError(f"{path}: line {number}: expected {dim} numbers, found "
                            f"{vector.shape[0]}")
        matrix[row] = vector
        found[row] = True


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("embeddings", __doc__)
    args = parser.parse_args(argv)

    def stage() -> None:
        params = load_params(args.params)
        with writing(EMBEDDINGS_DIR):
            result = build_embeddings(params.embeddings, PREPARED_DIR, FEATURES_DIR,
                                      EMBEDDINGS_DIR)
        log.info("embeddings: %d x %d matrix, %d words with their own vector",
                 result.vocabulary_size, result.dim, result.covered)

    return run("embeddings", stage)


if __name__ == "__main__":
    sys.exit(main())
