"""The model registry: every PyTorch architecture, by the name used in params.yaml and dvc.yaml.

Each model is one file here holding its params class (its section of params.yaml) and its
`nn.Module`, which takes `(vectors, num_classes, **config)` and maps a batch of token-id rows
(0 = padding) to one score per category. Adding a model is that file plus one entry below, one
section in params.yaml and its name in the `train` and `evaluate` matrices of dvc.yaml; train,
bundles, search and the leaderboard read the list from here (a test checks dvc.yaml against it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from meli.models.cnn import CNNClassifier, CNNParams
from meli.models.mlp import MLPClassifier, MLPParams
from meli.models.rnn import RNNClassifier, RNNParams


@dataclass(frozen=True)
class Architecture:
    name: str
    params: type  # the dataclass of its params.yaml section; has a `word_dropout` field
    module: type[nn.Module]
    summary: str


ARCHITECTURES: dict[str, Architecture] = {
    architecture.name: architecture for architecture in (
        Architecture("mlp", MLPParams, MLPClassifier,
                     "mean of the word vectors, then hidden layers"),
        Architecture("cnn", CNNParams, CNNClassifier,
                     "1-D convolutions of several widths, max over time"),
        Architecture("rnn", RNNParams, RNNClassifier,
                     "bidirectional GRU or LSTM, max and mean over time"),
    )
}


def names() -> tuple[str, ...]:
    return tuple(ARCHITECTURES)


def params_classes() -> dict[str, type]:
    """{model name: params class}, what `meli.params.load_params(models=...)` takes."""
    return {name: architecture.params for name, architecture in ARCHITECTURES.items()}


def build_model(architecture: str, config: dict[str, Any], vectors: torch.Tensor,
                num_classes: int) -> nn.Module:
    """A model from its architecture name and the config stored in a bundle."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}")
    return ARCHITECTURES[architecture].module(vectors, num_classes, **config)
