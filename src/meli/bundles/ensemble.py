"""An ensemble bundle: member bundles whose probabilities are averaged with weights.

`models/ensemble/` holds `config.json` (architecture "ensemble", and per member its name,
weight and temperature), the labels and normalization files every bundle has, and a copy of
each member's own bundle under `members/<name>/`, so that it is as self-contained as any other
bundle: `meli predict --model models/ensemble` needs nothing else. A member's probabilities are
first sharpened or softened by its temperature (p ** (1 / T), renormalized), then weighted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from meli.bundles.bundle import CONFIG_FILE
from meli.bundles.classifier import Classifier
from meli.errors import MeliError
from meli.params import TextParams

MEMBERS_DIR = "members"


def tempered(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): T > 1 softens, T < 1 sharpens; rows still sum to 1."""
    if temperature == 1.0:
        return probabilities
    logits = np.log(np.maximum(probabilities, 1e-12)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exponentials = np.exp(logits)
    return (exponentials / exponentials.sum(axis=1, keepdims=True)).astype(np.float32)


def combine(parts: list[np.ndarray], weights: list[float],
            temperatures: list[float]) -> np.ndarray:
    total = np.zeros_like(parts[0], dtype=np.float32)
    for part, weight, temperature in zip(parts, weights, temperatures, strict=True):
        total += np.float32(weight) * tempered(part, temperature)
    return total


class EnsembleClassifier(Classifier):
    def __init__(self, directory: Path, config: dict[str, Any], labels: list[str],
                 normalization: TextParams, load: Callable[..., Classifier],
                 device: str = "auto", precision: str = "auto"):
        super().__init__(directory, config, labels, normalization)
        members = config.get("members")
        if not isinstance(members, list) or not members:
            raise MeliError(f"{directory / CONFIG_FILE}: an ensemble without members")
        self.members: list[Classifier] = []
        self.weights: list[float] = []
        self.temperatures: list[float] = []
        for member in members:
            classifier = load(directory / MEMBERS_DIR / member["name"], device, precision)
            if classifier.labels != labels:
                raise MeliError(f"{directory / MEMBERS_DIR / member['name']}: its categories "
                                f"differ from the ensemble's")
            self.members.append(classifier)
            self.weights.append(float(member["weight"]))
            self.temperatures.append(float(member["temperature"]))

    def probabilities(self, titles: list[str] | pa.Array, batch_size: int = 2048) -> np.ndarray:
        parts = [member.probabilities(titles, batch_size) for member in self.members]
        return combine(parts, self.weights, self.temperatures)

    def known_words(self, titles: list[str] | pa.Array) -> np.ndarray:
        # The words of the member that weighs most: what the ensemble leans on.
        return self.members[int(np.argmax(self.weights))].known_words(titles)
