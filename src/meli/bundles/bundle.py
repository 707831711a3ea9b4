"""Self-contained model bundles (`models/<name>/`): their files, and the classifier interface.

A bundle holds everything prediction needs, so `meli predict --model models/cnn` works on a
machine that only pulled that directory:

    config.json          format version, architecture and its settings, max_length, metrics
    weights.pt           the PyTorch state_dict (loaded with weights_only=True: no code runs)
    model.bin            the fastText model instead, for the fastText baseline
    vocab.txt            token ids (PyTorch models)
    labels.json          category names, position = class id
    normalization.json   the text settings titles were normalized with at training time

Inside an ensemble bundle a member's labels.json, normalization.json and vocab.txt may be stored
once for all members, at the ensemble's root (`SHAREABLE_FILES`; see meli.bundles.ensemble):
its loader names them, and `BundleFiles.path` finds each file where it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from meli import __version__
from meli.data.vocabulary import Vocabulary
from meli.errors import MeliError
from meli.files import atomic_directory, read_json, write_json
from meli.layout import LABELS_FILE, NORMALIZATION_FILE, VOCAB_FILE
from meli.params import TextParams

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
FASTTEXT_FILE = "model.bin"
# The architectures that are no PyTorch model of the registry (meli.models).
FASTTEXT_ARCHITECTURE = "fasttext"
LINEAR_ARCHITECTURE = "linear"
ENSEMBLE_ARCHITECTURE = "ensemble"
FASTTEXT_PROBABILITY_OFFSET = 1e-5  # what fastText adds to each probability before its log
# The files an ensemble may store once for members that hold them alike: the loaders read them
# through `BundleFiles.path`.
SHAREABLE_FILES = (LABELS_FILE, NORMALIZATION_FILE, VOCAB_FILE)


def write_torch_bundle(directory: str | Path, *, architecture: str, model_config: dict[str, Any],
                       state_dict: dict[str, torch.Tensor], vocabulary: Vocabulary,
                       max_length: int, labels: list[str], normalization: dict[str, Any],
                       details: dict[str, Any]) -> None:
    """Write a PyTorch model bundle; it appears complete or not at all."""
    embedding = state_dict["embedding.weight"]
    with atomic_directory(directory) as partial:
        torch.save(state_dict, partial / WEIGHTS_FILE)
        vocabulary.save(partial / VOCAB_FILE)
        write_common(partial, labels, normalization, {
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
        write_common(partial, labels, normalization,
                      {"architecture": FASTTEXT_ARCHITECTURE, "model_bytes": size, **details})


def write_common(directory: Path, labels: list[str], normalization: dict[str, Any],
                  config: dict[str, Any]) -> None:
    write_json(directory / LABELS_FILE, labels)
    write_json(directory / NORMALIZATION_FILE, normalization)
    write_json(directory / CONFIG_FILE,
               {"format_version": FORMAT_VERSION, "meli_version": __version__, **config})


@dataclass(frozen=True)
class BundleFiles:
    """What every bundle holds beside its weights, read and checked."""

    directory: Path
    config: dict[str, Any]
    labels: list[str]
    normalization: TextParams
    # Files of the bundle stored outside its directory (an ensemble's shared files), by name.
    elsewhere: Mapping[str, Path] = field(default_factory=dict)

    @property
    def architecture(self) -> Any:
        return self.config.get("architecture")

    def path(self, name: str) -> Path:
        """Where the bundle's file `name` is stored."""
        return stored_at(self.directory, self.elsewhere, name)


def stored_at(directory: Path, elsewhere: Mapping[str, Path], name: str) -> Path:
    return elsewhere.get(name, directory / name)


def read_bundle(directory: str | Path, elsewhere: Mapping[str, Path] | None = None) -> BundleFiles:
    """The config, labels and normalization of a bundle, checking it is complete and readable
    by this version; the weights are left to the classifier of its architecture. `elsewhere`
    names the bundle's files stored outside its directory (`SHAREABLE_FILES` only)."""
    directory = Path(directory)
    elsewhere = dict(elsewhere or {})
    if not directory.is_dir():
        raise MeliError(f"{directory}: no model bundle there (run `dvc repro` or `dvc pull`)")
    try:
        config = read_json(directory / CONFIG_FILE)
        labels = read_json(stored_at(directory, elsewhere, LABELS_FILE))
        normalization = read_json(stored_at(directory, elsewhere, NORMALIZATION_FILE))
    except FileNotFoundError as error:
        missing = Path(error.filename)
        raise MeliError(f"{directory}: incomplete bundle, "
                        f"{missing.name if missing.parent == directory else missing} "
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
        raise MeliError(f"{stored_at(directory, elsewhere, NORMALIZATION_FILE)}: unknown "
                        f"normalization settings") from None
    return BundleFiles(directory, config, labels, settings, elsewhere)


def first_line(error: BaseException) -> str:
    # An empty weights file raises an error with no message at all.
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
