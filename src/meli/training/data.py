"""The featurized splits as training reads them: memory-mapped token arrays, read whole batches at
a time in a new shuffled order each epoch. Nothing copies a split into memory."""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from meli.errors import MeliError
from meli.layout import labels_path, tokens_path


@dataclass
class Split:
    tokens: np.ndarray  # rows x max_length int32 (memory-mapped)
    labels: np.ndarray  # rows int32

    @classmethod
    def load(cls, directory: Path, name: str) -> Split:
        path = tokens_path(directory, name)
        if not path.exists():
            raise MeliError(f"{path}: not found; run the featurize stage first")
        return cls(np.load(path, mmap_mode="r"),
                   np.load(labels_path(directory, name), mmap_mode="r"))

    def __len__(self) -> int:
        return len(self.labels)


class Batches(torch.utils.data.Dataset):
    """Whole batches read from a memory-mapped split: `batch[index_array]` -> (tokens, labels)."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(self.split.tokens[index]),
                torch.from_numpy(self.split.labels[index].astype(np.int64)))


class ShuffledBatches(torch.utils.data.Sampler):
    """Each epoch a new order drawn from `generator`, cut into batches of sorted row indices
    (sorted, so that the memory-mapped rows are read front to back)."""

    def __init__(self, rows: int, batch_size: int, generator: torch.Generator):
        self.rows, self.batch_size, self.generator = rows, batch_size, generator

    def __len__(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.rows, generator=self.generator).numpy()
        for start in range(0, self.rows, self.batch_size):
            yield np.sort(order[start:start + self.batch_size])


def _as_is(batch: Any) -> Any:
    return batch


def _default_sigterm(worker_id: int) -> None:
    """A loader process ends at SIGTERM without a word: the training process that it serves
    (meli.errors.run) is the one that says where the training stopped."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def shuffled_loader(split: Split, batch_size: int, generator: torch.Generator, seed: int,
                    workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """Batches of `split` in the order `generator` draws, read by `workers` processes (0: by
    this one)."""
    return torch.utils.data.DataLoader(
        Batches(split), batch_sampler=ShuffledBatches(len(split), batch_size, generator),
        collate_fn=_as_is, num_workers=workers, worker_init_fn=_default_sigterm,
        # The loader draws a seed for its workers; from its own generator, so that the global
        # one (dropout) sees exactly the draws it would without a loader.
        generator=torch.Generator().manual_seed(seed),
        pin_memory=pin_memory, persistent_workers=workers > 0)
