"""Load any model bundle (PyTorch, fastText, an ensemble) as a `Classifier`: what predict and
evaluate use."""

from __future__ import annotations

from pathlib import Path

from meli.bundles import ensemble
from meli.bundles.bundle import CONFIG_FILE, FASTTEXT_ARCHITECTURE, read_bundle
from meli.bundles.classifier import Classifier
from meli.bundles.fasttext import FastTextClassifier
from meli.bundles.pytorch import TorchClassifier
from meli.errors import MeliError
from meli.models import ARCHITECTURES


def load_classifier(directory: str | Path, device: str = "auto",
                    precision: str = "auto") -> Classifier:
    """Load a bundle written by train or baseline, checking that it is complete and compatible.

    `device` and `precision` apply to PyTorch bundles (fastText runs on the CPU, in float32).
    """
    files = read_bundle(directory)
    if files.architecture == FASTTEXT_ARCHITECTURE:
        return FastTextClassifier(files.directory, files.config, files.labels,
                                  files.normalization)
    if files.architecture == ensemble.ARCHITECTURE:
        return ensemble.EnsembleClassifier(files.directory, files.config, files.labels,
                                           files.normalization, load_classifier, device,
                                           precision)
    if isinstance(files.architecture, str) and files.architecture in ARCHITECTURES:
        return TorchClassifier(files.directory, files.config, files.labels, files.normalization,
                               device, precision)
    raise MeliError(f"{files.directory / CONFIG_FILE}: unknown architecture "
                    f"{files.architecture!r}")
