"""The state of a training between two epochs: the one type that a checkpoint saves and a resumed
run restores, so that each part of it is named once and none is saved but not restored."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from meli.training import checkpoint, distributed
from meli.training.distributed import Group


@dataclass
class EpochResult:
    train_loss: float
    validation_loss: float
    validation_balanced_accuracy: float
    validation_accuracy: float
    learning_rate: float
    seconds: float


@dataclass
class TrainingState:
    """Everything that the epochs change, and all that a resumed run needs to go on as if it had
    never stopped (on CPU with one process, bit for bit)."""

    # The hash of the params, code and data that the state comes from (checkpoint.fingerprint):
    # a checkpoint is resumed only under the same one.
    fingerprint: str
    # What is trained, saved as its state_dict; the generator (batch order and word dropout),
    # as its state.
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    # PyTorch's global generator (dropout masks) of every rank, each rank drawing its own:
    # gathered when saving.
    torch_rng: list[torch.Tensor] = field(default_factory=list)
    epoch: int = 0  # the last finished epoch
    stopped: bool = False  # no improvement for `patience` epochs: nothing left to run
    best: EpochResult | None = None
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None  # its weights, on CPU (rank 0 only)
    waited: int = 0  # epochs since the best one
    train_seconds: float = 0.0  # spent in training passes, for the titles/s figure
    # The dvclive log (rank 0): DVC deletes it before it reruns the stage, so a resumed run
    # puts it back from here.
    live_step: int = 0
    live_files: dict[str, str] = field(default_factory=dict)

    def saved(self) -> dict[str, Any]:
        """The state as a checkpoint holds it: tensors, numbers, strings, lists and dicts only,
        so that it loads with weights_only=True."""
        return {part.name: _plain(getattr(self, part.name)) for part in fields(self)}

    def restore(self, saved: dict[str, Any], rank: int) -> None:
        for part in fields(self):
            current, value = getattr(self, part.name), saved[part.name]
            if isinstance(current, torch.Generator):
                current.set_state(value)
            elif hasattr(current, "load_state_dict"):
                current.load_state_dict(value)
            elif part.name == "best" and value is not None:
                self.best = EpochResult(**value)
            else:
                setattr(self, part.name, value)
        torch.set_rng_state(self.torch_rng[rank])

    def resume(self, directory: Path | None, group: Group) -> bool:
        """Restore the state from a checkpoint in `directory` made under the same fingerprint,
        if there is one: rank 0 reads it, every rank restores it."""
        saved = None
        if directory is not None and group.main:
            saved = checkpoint.load(directory, self.fingerprint)
        if group.world > 1:
            shared = [saved]
            torch.distributed.broadcast_object_list(shared, src=0)
            saved = shared[0]
        if saved is None:
            return False
        self.restore(saved, group.rank)
        return True

    def save(self, directory: Path, group: Group) -> None:
        """Checkpoint the state after an epoch: every rank gives its generator, rank 0 writes."""
        rng_states = distributed.gather(torch.get_rng_state().numpy(), group)
        if group.main:
            self.torch_rng = [torch.from_numpy(part) for part in rng_states]
            checkpoint.save(directory, self.saved())


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Generator):
        return value.get_state()
    if hasattr(value, "state_dict"):
        return value.state_dict()
    if isinstance(value, EpochResult):
        return asdict(value)
    return value
