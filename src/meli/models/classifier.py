"""A PyTorch bundle loaded for prediction, and batched inference over token-id rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from meli.bundle import VOCAB_FILE, WEIGHTS_FILE, Classifier, first_line
from meli.errors import MeliError
from meli.models import build_model
from meli.params import TextParams
from meli.vocabulary import Vocabulary


class TorchClassifier(Classifier):
    def __init__(self, directory: Path, config: dict[str, Any], labels: list[str],
                 normalization: TextParams):
        super().__init__(directory, config, labels, normalization)
        self.vocabulary = Vocabulary.load(directory / VOCAB_FILE)
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
            raise MeliError(f"{directory / VOCAB_FILE}: {len(self.vocabulary)} tokens, "
                            f"config.json says {config['vocabulary_size']}")
        self.model.eval()

    @torch.inference_mode()
    def probabilities(self, titles: list[str] | pa.Array, batch_size: int = 2048) -> np.ndarray:
        tokens = self.vocabulary.encode(self.normalize(titles), self.config["max_length"])
        return probabilities_of(self.model, tokens, batch_size)


@torch.inference_mode()
def probabilities_of(model: torch.nn.Module, tokens: np.ndarray, batch_size: int) -> np.ndarray:
    """Softmax outputs of a PyTorch model over token-id rows, in batches."""
    model.eval()
    outputs = []
    for start in range(0, len(tokens), batch_size):
        batch = torch.from_numpy(np.array(tokens[start:start + batch_size]))
        outputs.append(torch.softmax(model(batch), dim=1).numpy())
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs)
