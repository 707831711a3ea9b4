"""An ensemble bundle: member bundles whose probabilities are averaged with weights.

`models/ensemble/` holds `config.json` (architecture "ensemble", and per member its name,
weight, temperature and the files it shares), the labels and normalization files every bundle
has, and each member's own bundle under `members/<name>/`, so that it is as self-contained as any
other bundle: `meli predict --model models/ensemble` needs nothing else. A member's
probabilities are first sharpened or softened by its temperature (p ** (1 / T), renormalized),
then weighted.

No file is stored twice: a member's labels.json, normalization.json and vocab.txt that are the
same bytes as the file of that name at the ensemble's root are left out of its directory (the
member's `shared` list names them; the ensemble stage writes the PyTorch members' common
vocabulary at the root), and a member of weight 0 is not stored at all.

Scoring a batch: the titles are normalized once for every member that normalizes as the
ensemble does (all of them, when the pipeline made them), and the members are scored side by
side on a pool of threads, one per core (PyTorch, NumPy and SciPy release the GIL while they
compute). Each member's figures are its own whatever runs beside it, and they are summed in the
members' order, so the result is the same, bit for bit, as scoring them one after the other.
A member of weight 0 is never loaded (the ensemble stage does not even store it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from meli.bundles.bundle import CONFIG_FILE, SHAREABLE_FILES
from meli.bundles.classifier import Classifier, as_array, top_k_of
from meli.errors import MeliError
from meli.params import TextParams

MEMBERS_DIR = "members"
# Titles the members score at a time, whatever size of block the caller hands over: every
# member's probabilities of a batch are held at once, and two members work side by side (each
# with its own working memory). Measured with `meli predict` on 105,000 real-sample titles
# (benchmarks/predict_speed.py): peak memory 1.02 GB with 4,096 titles a batch and each member's
# own batches of 2,048, 0.80 GB with 2,048 and 1,024, at the same speed.
ENSEMBLE_BATCH = 2048
# The batch size each member is given for its own work (a PyTorch model's forward pass, the linear
# model's pieces): PyTorch's inference batch, since the members already run side by side.
MEMBER_BATCH = 1024


def tempered(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): T > 1 softens, T < 1 sharpens; rows still sum to 1. In float32, in
    one array beside the input."""
    if temperature == 1.0:
        return probabilities
    logits = np.maximum(probabilities, np.float32(1e-12))
    np.log(logits, out=logits)
    logits /= np.float32(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def combine(parts: list[np.ndarray], weights: list[float],
            temperatures: list[float]) -> np.ndarray:
    total = np.zeros_like(parts[0], dtype=np.float32)
    for part, weight, temperature in zip(parts, weights, temperatures, strict=True):
        total += np.float32(weight) * tempered(part, temperature)
    return total


def shared_files(directory: Path, member: dict[str, Any]) -> dict[str, Path]:
    """The member's files stored at the ensemble's root, by name (none in a bundle written
    before members shared files)."""
    names = member.get("shared", [])
    if not isinstance(names, list) or any(name not in SHAREABLE_FILES for name in names):
        raise MeliError(f"{directory / CONFIG_FILE}: member {member['name']!r} shares "
                        f"{names!r}; only {', '.join(SHAREABLE_FILES)} can be shared")
    for name in names:
        if not (directory / name).is_file():
            raise MeliError(f"{directory}: incomplete bundle, {name} (shared by member "
                            f"{member['name']!r}) is missing")
    return {name: directory / name for name in names}


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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
            try:
                name, weight = member["name"], float(member["weight"])
                temperature = float(member["temperature"])
            except (KeyError, TypeError, ValueError) as error:
                raise MeliError(f"{directory / CONFIG_FILE}: a member without a valid name, "
                                f"weight and temperature ({error!r})") from None
            if not weight > 0:  # it adds nothing: neither loaded nor scored
                continue
            classifier = load(directory / MEMBERS_DIR / name, device, precision,
                              shared_files(directory, member))
            if classifier.labels != labels:
                raise MeliError(f"{directory / MEMBERS_DIR / name}: its categories "
                                f"differ from the ensemble's")
            self.members.append(classifier)
            self.weights.append(weight)
            self.temperatures.append(temperature)
        if not self.members:
            raise MeliError(f"{directory / CONFIG_FILE}: no member has a weight above 0")
        # The members that normalize as the ensemble does take the texts it normalized.
        self.shares_normalization = [member.normalization == normalization
                                     for member in self.members]
        self._scorers = [member.taking_normalized() if shared else member
                         for member, shared in zip(self.members, self.shares_normalization,
                                                   strict=True)]
        self.leader = int(np.argmax(self.weights))  # whose known words the ensemble reports
        self.threads = min(len(self.members), cores())
        self._pool: ThreadPoolExecutor | None = None
        # Each member's latest scoring time: the slowest start first, so that the threads
        # finish together.
        self._seconds = [0.0] * len(self.members)

    def probabilities(self, titles: list[str] | pa.Array,
                      batch_size: int = MEMBER_BATCH) -> np.ndarray:
        titles = as_array(titles)
        if len(titles) <= ENSEMBLE_BATCH:
            return self._scored(titles, self._normalized(titles), batch_size)[0]
        result = np.empty((len(titles), len(self.labels)), dtype=np.float32)
        for start in range(0, len(titles), ENSEMBLE_BATCH):
            part = titles.slice(start, ENSEMBLE_BATCH)
            result[start:start + len(part)] = self._scored(part, self._normalized(part),
                                                           batch_size)[0]
        return result

    def top_k(self, titles: list[str] | pa.Array, k: int = 3,
              batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return super().top_k(titles, k, batch_size or ENSEMBLE_BATCH)

    def known_words(self, titles: list[str] | pa.Array) -> np.ndarray:
        # The words of the member that weighs most: what the ensemble leans on.
        return self.members[self.leader].known_words(titles)

    def _top_k_batch(self, titles: pa.Array, k: int) -> tuple[np.ndarray, ...]:
        probabilities, known = self._scored(titles, self._normalized(titles), MEMBER_BATCH,
                                            with_known_words=True)
        indices, values = top_k_of(probabilities, k)
        return indices, values, known

    def _normalized(self, titles: pa.Array) -> pa.Array | None:
        return self.normalize(titles) if any(self.shares_normalization) else None

    def _scored(self, titles: pa.Array, texts: pa.Array | None, batch_size: int,
                with_known_words: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """The weighted sum of the members' tempered probabilities (and the leading member's
        known words), the members scored side by side when there are threads for it."""

        def weighted(index: int) -> np.ndarray:
            started = time.perf_counter()
            member = self._scorers[index]
            part = member.probabilities(texts if self.shares_normalization[index] else titles,
                                        batch_size)
            part = tempered(part, self.temperatures[index])
            part *= np.float32(self.weights[index])  # a fresh array: the member's or tempered's
            self._seconds[index] = time.perf_counter() - started
            return part

        def known_words() -> np.ndarray:
            shared = self.shares_normalization[self.leader]
            return self._scorers[self.leader].known_words(texts if shared else titles)

        tasks: list[Callable[[], np.ndarray]] = [
            (lambda index=index: weighted(index)) for index in range(len(self.members))]
        if with_known_words:
            tasks.append(known_words)
        if self.threads > 1 and len(titles) > 0:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="meli-ensemble")
            slowest_first = sorted(range(len(tasks)), key=lambda index: -self._seconds[index]
                                   if index < len(self.members) else 0.0)
            futures = {index: self._pool.submit(tasks[index]) for index in slowest_first}
            results = [futures[index].result() for index in range(len(tasks))]
        else:
            results = [task() for task in tasks]
        total = np.zeros_like(results[0])
        for part in results[:len(self.members)]:  # in the members' order, whatever finished first
            total += part
        return total, (results[-1] if with_known_words else None)
