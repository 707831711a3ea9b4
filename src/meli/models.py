"""The two PyTorch classifiers of the original study: a mean-pooling MLP and a 1-D CNN.

Both read a batch of token-id rows (0 = padding) and return one score per category. Both start
from the embeddings stage's word vectors, fine-tuned unless `freeze_embeddings` is set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

PAD = 0
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def _embedding(vectors: torch.Tensor, freeze: bool) -> nn.Embedding:
    # padding_idx keeps the padding vector at zero and out of the gradient. A copy, since
    # from_pretrained would otherwise fine-tune the caller's matrix in place.
    return nn.Embedding.from_pretrained(vectors.clone(), freeze=freeze, padding_idx=PAD)


class MLPClassifier(nn.Module):
    """Word vectors -> mean over the real tokens -> hidden layers -> category scores."""

    def __init__(self, vectors: torch.Tensor, num_classes: int, hidden_sizes: list[int],
                 activation: str = "relu", dropout: float = 0.0, freeze_embeddings: bool = False):
        super().__init__()
        self.embedding = _embedding(vectors, freeze_embeddings)
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        width = vectors.shape[1]
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = size
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(width, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        real = (tokens != PAD).unsqueeze(-1).to(self.embedding.weight.dtype)
        summed = (self.embedding(tokens) * real).sum(dim=1)
        # Mean over real tokens only, so that padding does not dilute short titles.
        mean = summed / real.sum(dim=1).clamp(min=1.0)
        return self.output(self.hidden(mean))


class CNNClassifier(nn.Module):
    """Word vectors -> parallel 1-D convolutions -> max over time -> dropout -> scores."""

    def __init__(self, vectors: torch.Tensor, num_classes: int, filters: int,
                 kernel_sizes: list[int], dropout: float = 0.0,
                 freeze_embeddings: bool = False):
        super().__init__()
        self.embedding = _embedding(vectors, freeze_embeddings)
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


def build_model(architecture: str, config: dict[str, Any], vectors: torch.Tensor,
                num_classes: int) -> nn.Module:
    """A model from its architecture name and the config stored in a bundle."""
    if architecture == "mlp":
        return MLPClassifier(vectors, num_classes, **config)
    if architecture == "cnn":
        return CNNClassifier(vectors, num_classes, **config)
    raise ValueError(f"unknown architecture {architecture!r}")
