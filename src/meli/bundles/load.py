"""Load any model bundle (PyTorch, fastText, linear, an ensemble) as a `Classifier`: what
evaluate, `meli predict` and `meli serve` use. Each kind's code (PyTorch above all, seconds to
import) is imported only when a bundle of that kind is opened."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from meli.bundles.bundle import (
    CONFIG_FILE,
    ENSEMBLE_ARCHITECTURE,
    FASTTEXT_ARCHITECTURE,
    LINEAR_ARCHITECTURE,
    VOCAB_FILE,
    read_bundle,
)
from meli.bundles.classifier import Classifier
from meli.errors import MeliError


def load_classifier(directory: str | Path, device: str = "auto", precision: str = "auto",
                    elsewhere: Mapping[str, Path] | None = None) -> Classifier:
    """Load a bundle written by train, baseline, linear or ensemble, checking that it is
    complete and compatible.

    `device` and `precision` apply to PyTorch bundles (fastText and the linear model run on
    the CPU, in float32). `elsewhere`: the bundle's files stored outside its directory (an
    ensemble's member sharing them; see meli.bundles.bundle).
    """
    files = read_bundle(directory, elsewhere)
    architecture = files.architecture
    arguments = (files.directory, files.config, files.labels, files.normalization)
    if architecture == FASTTEXT_ARCHITECTURE:
        from meli.bundles.fasttext import FastTextClassifier

        return FastTextClassifier(*arguments)
    if architecture == LINEAR_ARCHITECTURE:
        from meli.bundles.linear import LinearClassifier

        return LinearClassifier(*arguments)
    if architecture == ENSEMBLE_ARCHITECTURE:
        from meli.bundles.ensemble import EnsembleClassifier

        return EnsembleClassifier(*arguments, load_classifier, device, precision)
    from meli.models import ARCHITECTURES

    if isinstance(architecture, str) and architecture in ARCHITECTURES:
        from meli.bundles.pytorch import TorchClassifier

        return TorchClassifier(*arguments, device, precision,
                               vocabulary_file=files.path(VOCAB_FILE))
    raise MeliError(f"{files.directory / CONFIG_FILE}: unknown architecture {architecture!r}")
