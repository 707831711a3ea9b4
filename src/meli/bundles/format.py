"""Self-contained model bundles (`models/<name>/`): their files, and the classifier interface.

A bundle holds everything prediction needs, so `meli predict --model models/cnn` works on a
machine that only pulled that directory:

    config.json          format version, architecture and its settings, max_length, metrics
    weights.pt           the PyTorch state_dict (loaded with weights_only=True: no code runs)
    model.bin            the fastText model instead, for the fastText baseline
    vocab.txt            token ids (PyTorch models)
    labels.json          category names, position = class id
    normalization.json   the text settings titles were normalized with at training time
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from meli import __version__
from meli.data.text import normalize
from meli.data.vocabulary import Vocabulary
from meli.errors import MeliError
from meli.files import atomic_directory, read_json, write_json
from meli.layout import LABELS_FILE, NORMALIZATION_FILE, VOCAB_FILE
from meli.params import TextParams

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
FASTTEXT_FILE = "model.bin"
FASTTEXT_ARCHITECTURE = "fasttext"
FASTTEXT_PROBABILITY_OFFSET = 1e-5  # what fastText adds to each probability before its log


def write_torch_bundle(directory: str | Path, *, architecture: str, model_config: dict[str, Any],
                       state_dict: dict[str, torch.Tensor], vocabulary: Vocabulary,
                       max_length: int, labels: list[str], normalization: dict[str, Any],
                       details: dict[str, Any]) -> None:
    """Write a PyTorch model bundle; it appears complete or not at all."""
    embedding = state_dict["embedding.weight"]
    with atomic_directory(directory) as partial:
        torch.save(state_dict, partial / WEIGHTS_FILE)
        vocabulary.save(partial / VOCAB_FILE)
        _write_common(partial, labels, normalization, {
            "architecture": architecture,
            "model": model_config,
            "vocabulary_size": int(embedding.shape[0]),
            "embedding_dim": int(embedding.shape[1]),
            "max_length": max_length,
            **details,
        })


def write_fasttext_bundle(directory: str | Path, *, model: Any, labels: list[str],
                          normalization: dict[str, Any], details: dict[str, Any]) -> None:
    with atomic_directory(directory) as partial:
        model.save_model(str(partial / FASTTEXT_FILE))
        # fastText loads a truncated model.bin without complaint: the size lets loading check.
        size = (partial / FASTTEXT_FILE).stat().st_size
        _write_common(partial, labels, normalization,
                      {"architecture": FASTTEXT_ARCHITECTURE, "model_bytes": size, **details})


def _write_common(directory: Path, labels: list[str], normalization: dict[str, Any],
                  config: dict[str, Any]) -> None:
    write_json(directory / LABELS_FILE, labels)
    write_json(directory / NORMALIZATION_FILE, normalization)
    write_json(directory / CONFIG_FILE,
               {"format_version": FORMAT_VERSION, "meli_version": __version__, **config})


class Classifier:
    """A loaded bundle: normalizes raw titles itself and returns class probabilities."""

    def __init__(self, directory: Path, config: dict[str, Any], labels: list[str],
                 normalization: TextParams):
        self.directory = directory
        self.config = config
        self.labels = labels
        self.normalization = normalization

    @property
    def name(self) -> str:
        return self.directory.name

    def normalize(self, titles: list[str] | pa.Array) -> pa.Array:
        return normalize(titles, self.normalization)

    def probabilities(self, titles: list[str] | pa.Array, batch_size: int = 2048) -> np.ndarray:
        """Rows of class probabilities (float32) for raw, unnormalized titles."""
        raise NotImplementedError

    def predict(self, titles: list[str] | pa.Array, batch_size: int = 2048) -> np.ndarray:
        """The most probable class id of each title."""
        return self.probabilities(titles, batch_size).argmax(axis=1)

    def known_words(self, titles: list[str] | pa.Array) -> np.ndarray:
        """How many words of each title the model has a vector (or an entry) for."""
        raise NotImplementedError

    def top_k(self, titles: list[str] | pa.Array, k: int = 3,
              batch_size: int = 16_384) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each title: its k most probable class ids (best first), their probabilities,
        and how many of its words the model knows. Works batch by batch: the full matrix of
        probabilities never exists for more than `batch_size` titles."""
        if not isinstance(titles, pa.Array | pa.ChunkedArray):
            titles = pa.array(list(titles), pa.string())
        k = max(1, min(k, len(self.labels)))
        parts = [self._top_k_batch(titles.slice(start, batch_size), k)
                 for start in range(0, len(titles), batch_size)]
        if not parts:
            return (np.zeros((0, k), np.int64), np.zeros((0, k), np.float32),
                    np.zeros(0, np.int64))
        return tuple(np.concatenate(column) for column in zip(*parts, strict=True))

    def _top_k_batch(self, titles: pa.Array, k: int) -> tuple[np.ndarray, ...]:
        indices, values = top_k_of(self.probabilities(titles), k)
        return indices, values, self.known_words(titles)

    def top(self, titles: list[str], k: int = 3) -> list[list[tuple[str, float]]]:
        """The k most probable categories of each title, with their probabilities."""
        indices, values, _ = self.top_k(titles, k)
        return [[(self.labels[i], float(p)) for i, p in zip(row, row_values, strict=True)]
                for row, row_values in zip(indices, values, strict=True)]


def top_k_of(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest of each row, best first, a tie going to the lower class id."""
    if k >= probabilities.shape[1]:
        order = np.argsort(-probabilities, axis=1, kind="stable")
    else:
        candidates = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(probabilities, candidates, axis=1)
        # Sorted by probability, then by class id: a stable order among the k.
        within = np.lexsort((candidates, -values), axis=1)
        order = np.take_along_axis(candidates, within, axis=1)
    return order, np.take_along_axis(probabilities, order, axis=1)


class FastTextClassifier(Classifier):
    def __init__(self, directory: Path, config: dict[str, Any], labels: list[str],
                 normalization: TextParams):
        super().__init__(directory, config, labels, normalization)
        import fasttext

        path = directory / FASTTEXT_FILE
        expected = config.get("model_bytes")
        if expected is not None and path.is_file() and path.stat().st_size != expected:
            raise MeliError(f"{path}: {path.stat().st_size} bytes where config.json says "
                            f"{expected}: the file is damaged or incomplete")
        try:
            self.model = fasttext.load_model(str(path))
        except (ValueError, RuntimeError, MemoryError) as error:
            # A damaged file can also make fastText's reader allocate garbage sizes (bad_alloc).
            raise MeliError(f"{path}: cannot load: {first_line(error)}") from None
        # The baseline trains on "__label__<class id>": category names may contain spaces.
        self.index = {f"__label__{i}": i for i in range(len(labels))}

    def known_words(self, titles: list[str] | pa.Array) -> np.ndarray:
        known = self.model.get_word_id
        return np.array([sum(known(word) >= 0 for word in text.split())
                         for text in self.normalize(titles).to_pylist()], dtype=np.int64)

    def probabilities(self, titles: list[str] | pa.Array, batch_size: int = 2048) -> np.ndarray:
        texts = self.normalize(titles).to_pylist()
        result = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            # Always a list: fastText 0.9.3's single-string predict breaks under NumPy 2.
            names, values = self.model.predict(texts[start:start + batch_size], k=-1)
            for row, (row_names, row_values) in enumerate(zip(names, values, strict=True)):
                columns = [self.index[name] for name in row_names]
                # fastText reports exp(log(p + 1e-5)): without the offset rows sum to 1.
                result[start + row, columns] = np.maximum(
                    np.asarray(row_values) - FASTTEXT_PROBABILITY_OFFSET, 0.0)
        return result


@dataclass(frozen=True)
class BundleFiles:
    """What every bundle holds beside its weights, read and checked."""

    directory: Path
    config: dict[str, Any]
    labels: list[str]
    normalization: TextParams

    @property
    def architecture(self) -> Any:
        return self.config.get("architecture")


def read_bundle(directory: str | Path) -> BundleFiles:
    """The config, labels and normalization of a bundle, checking it is complete and readable
    by this version; the weights are left to the classifier of its architecture."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MeliError(f"{directory}: no model bundle there (run `dvc repro` or `dvc pull`)")
    try:
        config = read_json(directory / CONFIG_FILE)
        labels = read_json(directory / LABELS_FILE)
        normalization = read_json(directory / NORMALIZATION_FILE)
    except FileNotFoundError as error:
        raise MeliError(f"{directory}: incomplete bundle, {Path(error.filename).name} "
                        f"is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MeliError(f"{directory}: damaged bundle file: {error}") from None
    version = config.get("format_version") if isinstance(config, dict) else None
    if version != FORMAT_VERSION:
        raise MeliError(f"{directory}: bundle format {version!r} is not the one this meli "
                        f"{__version__} reads ({FORMAT_VERSION}); retrain it with `dvc repro`")
    try:
        settings = TextParams(**normalization)
    except TypeError:
        raise MeliError(f"{directory / NORMALIZATION_FILE}: unknown normalization "
                        f"settings") from None
    return BundleFiles(directory, config, labels, settings)


def first_line(error: BaseException) -> str:
    # An empty weights file raises an error with no message at all.
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
