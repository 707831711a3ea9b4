"""The CNN: word vectors -> parallel 1-D convolutions -> max over time -> dropout -> scores."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from meli.layout import PAD
from meli.models.layers import pretrained_embedding
from meli.params import param


@dataclass(frozen=True)
class CNNParams:
    """The `cnn:` section of params.yaml."""

    filters: int = param(256, min=1, max=4096)
    kernel_sizes: list[int] = param([1, 2, 3], min_items=1)
    dropout: float = param(0.3, min=0.0, max=0.9)
    # Share of known words replaced by the unknown-word id in each training batch.
    word_dropout: float = param(0.1, min=0.0, max=0.5)

    def problem(self) -> str | None:
        if any(size < 1 for size in self.kernel_sizes):
            return "kernel_sizes must all be >= 1"
        return None


class CNNClassifier(nn.Module):
    def __init__(self, vectors: torch.Tensor, num_classes: int, filters: int,
                 kernel_sizes: list[int], dropout: float = 0.0,
                 freeze_embeddings: bool = False):
        super().__init__()
        self.embedding = pretrained_embedding(vectors, freeze_embeddings)
        self.kernel_sizes = list(kernel_sizes)
        self.convolutions = nn.ModuleList(
            nn.Conv1d(vectors.shape[1], filters, size) for size in self.kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(filters * len(self.kernel_sizes), num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        lengths = (tokens != PAD).sum(dim=1, keepdim=True)
        widest = max(self.kernel_sizes)
        if tokens.shape[1] < widest:
            # Rows narrower than the widest kernel are padded so every convolution has output.
            tokens = nn.functional.pad(tokens, (0, widest - tokens.shape[1]), value=PAD)
        vectors = self.embedding(tokens).transpose(1, 2)  # batch x dim x length
        pooled = []
        for size, convolution in zip(self.kernel_sizes, self.convolutions, strict=True):
            features = torch.relu(convolution(vectors))  # batch x filters x positions
            # A window counts when it lies inside the title, or is the first window of a title
            # shorter than the kernel; windows over padding alone never win the max.
            positions = torch.arange(features.shape[2], device=tokens.device)
            valid = positions.unsqueeze(0) < (lengths - size + 1).clamp(min=1)
            features = features.masked_fill(~valid.unsqueeze(1), float("-inf"))
            pooled.append(features.max(dim=2).values)
        return self.output(self.dropout(torch.cat(pooled, dim=1)))
