"""A PyTorch bundle loaded for prediction, and batched inference over token-id rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from meli.bundles.bundle import VOCAB_FILE, WEIGHTS_FILE, first_line
from meli.bundles.classifier import Classifier
from meli.data.vocabulary import Vocabulary
from meli.errors import MeliError
from meli.layout import PAD, UNKNOWN
from meli.models import build_model
from meli.params import TextParams
from meli.training.device import CPU, autocast, resolve_device, use_bf16

# Titles per forward pass. Classifier.top_k hands over larger blocks, which are sorted by length
# and cut into batches of this size, each only as wide as its longest title.
INFERENCE_BATCH = 1024


class TorchClassifier(Classifier):
    """A PyTorch bundle on `device` (auto, cpu, cuda) in `precision` (auto, fp32, bf16; see
    meli.training.device for what auto picks)."""

    def __init__(self, directory: Path, config: dict[str, Any], labels: list[str],
                 normalization: TextParams, device: str = "auto", precision: str = "auto",
                 vocabulary_file: Path | None = None):
        super().__init__(directory, config, labels, normalization)
        vocabulary_file = vocabulary_file or directory / VOCAB_FILE
        self.device = resolve_device(device)
        self.bf16 = use_bf16(precision, self.device,
                             validated_on_cpu=bool(config.get("bf16_inference")))
        self.vocabulary = Vocabulary.load(vocabulary_file)
        try:
            state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        except Exception as error:  # an unpickling or zip error: the file is damaged or foreign
            raise MeliError(f"{directory / WEIGHTS_FILE}: cannot load weights: "
                            f"{first_line(error)}") from None
        vectors = torch.zeros(config["vocabulary_size"], config["embedding_dim"])
        self.model = build_model(config["architecture"], config["model"], vectors, len(labels))
        try:
            self.model.load_state_dict(state)
        except RuntimeError as error:
            raise MeliError(f"{directory / WEIGHTS_FILE}: weights do not match config.json: "
                            f"{first_line(error)}") from None
        if len(self.vocabulary) != config["vocabulary_size"]:
            raise MeliError(f"{vocabulary_file}: {len(self.vocabulary)} tokens, "
                            f"config.json says {config['vocabulary_size']}")
        self.model.to(self.device).eval()

    def tokens(self, titles: list[str] | pa.Array) -> np.ndarray:
        return self.vocabulary.encode(self.normalize(titles), self.config["max_length"])

    @torch.inference_mode()
    def probabilities(self, titles: list[str] | pa.Array, batch_size: int = 2048) -> np.ndarray:
        return probabilities_of(self.model, self.tokens(titles), batch_size, self.device,
                                self.bf16)

    def known_words(self, titles: list[str] | pa.Array) -> np.ndarray:
        return (self.tokens(titles) > UNKNOWN).sum(axis=1)

    @torch.inference_mode()
    def _top_k_batch(self, titles: pa.Array, k: int) -> tuple[np.ndarray, ...]:
        tokens = self.tokens(titles)
        indices = np.empty((len(tokens), k), dtype=np.int64)
        values = np.empty((len(tokens), k), dtype=np.float32)
        for rows, logits in _logits_by_length(self.model, tokens, INFERENCE_BATCH, self.device,
                                              self.bf16):
            logits = logits.float()
            # The k best logits, and their softmax without writing out every probability.
            top_logits, top_indices = torch.topk(logits, k, dim=1)
            top_values = torch.exp(top_logits - torch.logsumexp(logits, dim=1, keepdim=True))
            indices[rows], values[rows] = top_indices.cpu().numpy(), top_values.cpu().numpy()
        # topk orders equal values by position only on some devices: sort the k by id too.
        within = np.lexsort((indices, -values), axis=1)
        return (np.take_along_axis(indices, within, axis=1),
                np.take_along_axis(values, within, axis=1), (tokens > UNKNOWN).sum(axis=1))


def _logits_by_length(model: torch.nn.Module, tokens: np.ndarray, batch_size: int,
                      device: torch.device, bf16: bool):
    """(row indices, logits) for batches of titles of similar length, each batch cut to its
    longest title: titles average a third of max_length, and padding is work for nothing.
    The models ignore trailing padding (training cuts batches the same way)."""
    if model.training:  # eval() walks every module: a short batch's share of the time
        model.eval()
    lengths = (np.asarray(tokens) != PAD).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        # Widths rounded up to a multiple of 4: fewer distinct shapes, so fewer kernels that
        # oneDNN compiles and keeps (memory grows with every new shape).
        width = min(tokens.shape[1], max(4, -(-int(lengths[rows[-1]]) // 4) * 4))
        batch = torch.from_numpy(np.ascontiguousarray(np.asarray(tokens)[rows, :width]))
        with autocast(device, bf16):
            logits = model(batch.to(device, non_blocking=True))
        yield rows, logits


@torch.inference_mode()
def probabilities_of(model: torch.nn.Module, tokens: np.ndarray, batch_size: int,
                     device: torch.device = CPU,
                     bf16: bool = False) -> np.ndarray:
    """Softmax outputs (float32) of a PyTorch model over token-id rows, in batches."""
    result = np.zeros((len(tokens), 0), dtype=np.float32)
    for rows, logits in _logits_by_length(model, tokens, batch_size, device, bf16):
        probabilities = torch.softmax(logits.float(), dim=1).cpu().numpy()
        if result.shape[1] == 0:
            result = np.empty((len(tokens), probabilities.shape[1]), dtype=np.float32)
        result[rows] = probabilities
    return result
