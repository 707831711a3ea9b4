"""The RNN: word vectors -> a bidirectional GRU or LSTM -> max and mean over time -> scores.

Titles are packed by their real length before the recurrent layers, so padding never reaches
them: a title's output is the same whatever padding follows it. Both directions' states are
pooled over the real positions only, by their maximum and their mean (validated on the real
sample against either alone; see the README's results), then dropout and one linear layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from meli.layout import PAD
from meli.models.layers import pretrained_embedding
from meli.params import param

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


@dataclass(frozen=True)
class RNNParams:
    """The `rnn:` section of params.yaml."""

    cell: Literal["gru", "lstm"] = "gru"
    hidden_size: int = param(192, min=1, max=4096)
    layers: int = param(1, min=1, max=8)
    # How the states over time become one vector: max, mean, or both side by side.
    pooling: Literal["max", "mean", "max_mean"] = "max_mean"
    dropout: float = param(0.3, min=0.0, max=0.9)
    # Share of known words replaced by the unknown-word id in each training batch.
    word_dropout: float = param(0.1, min=0.0, max=0.5)


class RNNClassifier(nn.Module):
    def __init__(self, vectors: torch.Tensor, num_classes: int, cell: str, hidden_size: int,
                 layers: int = 1, pooling: str = "max_mean", dropout: float = 0.0,
                 freeze_embeddings: bool = False):
        super().__init__()
        self.embedding = pretrained_embedding(vectors, freeze_embeddings)
        self.pooling = pooling
        self.recurrent = CELLS[cell](vectors.shape[1], hidden_size, num_layers=layers,
                                     batch_first=True, bidirectional=True,
                                     dropout=dropout if layers > 1 else 0.0)
        width = 2 * hidden_size * (2 if pooling == "max_mean" else 1)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(width, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        lengths = (tokens != PAD).sum(dim=1).clamp(min=1)
        packed = pack_padded_sequence(self.embedding(tokens), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        states, _ = self.recurrent(packed)
        # Back to batch x time x features, zero past each title's end; cut to the longest.
        states, _ = pad_packed_sequence(states, batch_first=True)
        real = (torch.arange(states.shape[1], device=tokens.device).unsqueeze(0)
                < lengths.unsqueeze(1)).unsqueeze(-1)
        pooled = []
        if self.pooling in ("max", "max_mean"):
            pooled.append(states.masked_fill(~real, float("-inf")).max(dim=1).values)
        if self.pooling in ("mean", "max_mean"):
            pooled.append(states.sum(dim=1) / lengths.unsqueeze(1).to(states.dtype))
        return self.output(self.dropout(torch.cat(pooled, dim=1)))
