"""The MLP: word vectors -> mean over the real tokens -> hidden layers -> category scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from meli.layout import PAD
from meli.models.layers import pretrained_embedding
from meli.params import param

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class MLPParams:
    """The `mlp:` section of params.yaml."""

    hidden_sizes: list[int] = param([512], min_items=0)
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    dropout: float = param(0.3, min=0.0, max=0.9)
    # Share of known words replaced by the unknown-word id in each training batch.
    word_dropout: float = param(0.0, min=0.0, max=0.5)

    def problem(self) -> str | None:
        if any(size < 1 for size in self.hidden_sizes):
            return "hidden_sizes must all be >= 1"
        return None


class MLPClassifier(nn.Module):
    def __init__(self, vectors: torch.Tensor, num_classes: int, hidden_sizes: list[int],
                 activation: str = "relu", dropout: float = 0.0, freeze_embeddings: bool = False):
        super().__init__()
        self.embedding = pretrained_embedding(vectors, freeze_embeddings)
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        width = vectors.shape[1]
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = size
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(width, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # The mean over real tokens only, so that padding does not dilute short titles; one
        # fused lookup-and-average (the padding id is left out of it), many times faster than
        # looking up every position and averaging after.
        mean = nn.functional.embedding_bag(tokens.long(), self.embedding.weight, mode="mean",
                                           padding_idx=PAD)
        return self.output(self.hidden(mean))
