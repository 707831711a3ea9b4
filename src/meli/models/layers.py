"""Pieces that several models share."""

from __future__ import annotations

import torch
from torch import nn

from meli.layout import PAD


def pretrained_embedding(vectors: torch.Tensor, freeze: bool) -> nn.Embedding:
    """An embedding layer that starts from the embeddings stage's word vectors.

    padding_idx keeps the padding vector at zero and out of the gradient. A copy, since
    from_pretrained would otherwise fine-tune the caller's matrix in place.
    """
    return nn.Embedding.from_pretrained(vectors.clone(), freeze=freeze, padding_idx=PAD)
