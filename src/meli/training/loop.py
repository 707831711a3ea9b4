"""The training loop: a plain `train_epoch(...)`/`evaluate(...)` pair, and `run_epochs`, which
alternates them, keeps the best epoch, stops after `patience` epochs without improvement, logs
each epoch and checkpoints it."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from meli.bundles import metrics
from meli.errors import MeliError, Stopped
from meli.layout import UNKNOWN
from meli.models import build_model
from meli.progress import Progress
from meli.training import distributed
from meli.training.data import Split
from meli.training.device import BF16_TOLERANCE, CPU, autocast, cpu_has_bf16
from meli.training.distributed import ALONE, Group
from meli.training.live import TrainingLog
from meli.training.state import EpochResult, TrainingState

log = logging.getLogger(__name__)


def seed_everything(seed: int, threads: int, device: torch.device,
                    cuda_deterministic: bool = False) -> None:
    """Same seed, same params -> the same weights on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    if device.type == "cpu" or cuda_deterministic:
        if device.type == "cuda":
            # cuBLAS is deterministic only with a fixed workspace (set before its first use).
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    # Adam's moment estimates for embedding rows that get no gradient decay geometrically into
    # denormal floats after a few hundred steps, and denormal arithmetic made later epochs
    # twice as slow on CPU; flushing them to zero changes no result that matters.
    torch.set_flush_denormal(True)


def drop_words(tokens: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Replace a random `rate` of the real tokens by the unknown-word id.

    About one test word in twenty is missing from the training vocabulary; hiding some known
    words during training teaches the models to lean on the rest of the title.
    """
    if rate <= 0:
        return tokens
    hidden = (torch.rand(tokens.shape, generator=generator) < rate) & (tokens > UNKNOWN)
    return tokens.masked_fill(hidden, UNKNOWN)


def train_epoch(model: nn.Module, loader: torch.utils.data.DataLoader,
                loss_function: nn.CrossEntropyLoss, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator,
                description: str, word_dropout: float = 0.0, group: Group = ALONE,
                device: torch.device = CPU, bf16: bool = False) -> float:
    """One pass over the training split; the mean training loss.

    Every rank reads the whole batch and draws its word dropout (so all ranks stay in step
    with one generator), then computes only its share of the rows. Its loss is scaled so that
    DDP's average of the ranks' gradients is the gradient of the whole batch's loss.
    """
    model.train()
    # Batch weights are summed on the CPU, where the labels are: no GPU round trip per step.
    weight = None if loss_function.weight is None else loss_function.weight.cpu()
    total = torch.zeros((), dtype=torch.float64, device=device)
    rows = 0
    # Read only when a progress line is written: on a GPU, reading the loss waits for it.
    progress = Progress(description, len(loader), "batches", enabled=group.main,
                        note=lambda: f"train loss so far {float(total) / max(rows, 1):.4f}")
    for step, (tokens, labels) in enumerate(loader):
        tokens = tokens[:, : max(1, int((tokens != 0).sum(dim=1).max()))]
        tokens = drop_words(tokens, word_dropout, generator)
        batch_weight = len(labels) if weight is None else float(weight[labels].sum())
        mine = slice(group.rank, None, group.world)
        share_tokens, share_labels = tokens[mine], labels[mine]
        if len(share_labels) == 0:
            # A last batch smaller than the world: a rank with no row still takes part in the
            # gradient exchange, with a zero share.
            share_tokens, share_labels = tokens[:1], labels[:1]
        share_weight = (0.0 if len(labels[mine]) == 0 else len(share_labels) if weight is None
                        else float(weight[share_labels].sum()))
        share_tokens = share_tokens.to(device, non_blocking=True)
        share_labels = share_labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, bf16):
            logits = model(share_tokens)
        loss = loss_function(logits.float(), share_labels)
        # With one process the factor is exactly 1: the same loss as a plain mean over the batch.
        loss = loss * (share_weight / batch_weight * group.world)
        # A GPU checks now and then: each check waits for the GPU to catch up.
        if (device.type == "cpu" or step % 100 == 0) and not torch.isfinite(loss):
            raise MeliError(f"{description}: training diverged (loss is {loss.item()}); "
                            f"lower train.learning_rate")
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.detach().double() * (len(labels) / group.world)
        rows += len(labels)
        progress.update(step + 1)
    progress.close()
    if group.world > 1:
        torch.distributed.all_reduce(total)
    mean = float(total) / max(rows, 1)
    if not math.isfinite(mean):
        raise MeliError(f"{description}: training diverged (mean loss is {mean}); lower "
                        f"train.learning_rate")
    return mean


@torch.inference_mode()
def evaluate(model: nn.Module, data: Split, loss_function: nn.CrossEntropyLoss,
             num_classes: int, batch_size: int = 2048, group: Group = ALONE,
             device: torch.device = CPU, bf16: bool = False,
             description: str = "validation") -> tuple[float, float, float]:
    """Loss, balanced accuracy and accuracy of `model` on `data` (every rank gets them).

    The loss is training's own cross-entropy (same smoothing and class weights) on the logits,
    summed over batches and divided by the total weight, as one batch of every row would be.
    Each rank scores its share of the rows; the predictions are gathered.
    """
    model.eval()
    labels = np.asarray(data.labels, dtype=np.int64)
    if not len(labels):
        return 0.0, float("nan"), float("nan")
    summed = nn.CrossEntropyLoss(weight=loss_function.weight, reduction="sum",
                                 label_smoothing=loss_function.label_smoothing)
    mine = group.shard(np.arange(len(labels)))
    total_loss, predicted = 0.0, []
    progress = Progress(description, len(mine), "titles", enabled=group.main)
    for start in range(0, len(mine), batch_size):
        rows = mine[start:start + batch_size]
        tokens = torch.from_numpy(np.asarray(data.tokens[rows])).to(device, non_blocking=True)
        target = torch.from_numpy(labels[rows]).to(device, non_blocking=True)
        with autocast(device, bf16):
            logits = model(tokens).float()
        total_loss += float(summed(logits, target))
        predicted.append(logits.argmax(dim=1).cpu().numpy())
        progress.update(start + len(rows))
    progress.close()
    local = np.concatenate(predicted) if predicted else np.zeros(0, np.int64)
    predictions = np.empty(len(labels), dtype=np.int64)
    losses = []
    for rank, (part, part_loss) in enumerate(distributed.gather((local, total_loss), group)):
        predictions[rank::group.world] = part
        losses.append(part_loss)
    weight = loss_function.weight
    total_weight = (float(weight.cpu()[labels].sum()) if weight is not None
                    else float(len(labels)))
    return (float(sum(losses)) / total_weight,
            metrics.balanced_accuracy(labels, predictions, num_classes),
            metrics.accuracy(labels, predictions))


@dataclass
class Setup:
    """What the epochs work with, built once from the params (what they change is the
    TrainingState)."""

    name: str  # the model's, in messages
    trained: nn.Module  # the state's model, wrapped in DistributedDataParallel under several ranks
    loader: torch.utils.data.DataLoader
    validation: Split
    loss_function: nn.CrossEntropyLoss
    num_classes: int
    epochs: int
    patience: int
    word_dropout: float
    group: Group = ALONE
    device: torch.device = CPU
    bf16: bool = False  # training under bf16 autocast
    bf16_validation: bool = False


def run_epochs(setup: Setup, state: TrainingState, training_log: TrainingLog | None,
               checkpoints: Path | None) -> None:
    """Train from the epoch after `state.epoch` until the last or until patience runs out;
    `training_log`: rank 0's; `checkpoints`: where each epoch's state is saved, if anywhere.

    Stopped from outside (Ctrl-C, SIGTERM), it raises Stopped saying after which epoch, and
    whether the next run resumes from there.
    """
    group = setup.group
    checkpointed = state.epoch  # the epoch that the checkpoint on disk holds (0: none)
    try:
        while state.epoch < setup.epochs and not state.stopped:
            _run_epoch(setup, state, training_log)
            if checkpoints is not None:
                if training_log is not None:
                    state.live_step, state.live_files = training_log.step, training_log.files()
                state.save(checkpoints, group)
                checkpointed = state.epoch
    except (KeyboardInterrupt, Stopped) as stop:
        interrupted = isinstance(stop, KeyboardInterrupt)
        how = "interrupted" if interrupted else "stopped by SIGTERM"
        if checkpoints is None:
            message = f"{how} after epoch {state.epoch} of {setup.epochs}"
        elif checkpointed:
            message = (f"{how} after epoch {checkpointed} of {setup.epochs}; the next run "
                       f"(`dvc repro`) resumes from there ({checkpoints})")
        else:
            message = (f"{how} in epoch 1 of {setup.epochs}, before its first checkpoint; the "
                       f"next run (`dvc repro`) starts from the beginning")
        # One line in all: the other ranks stop without a word.
        stopped = Stopped(message if group.main else None)
        if interrupted:
            stopped.status = 130  # a Ctrl-C's, as anywhere else
        raise stopped from None


def _run_epoch(setup: Setup, state: TrainingState, training_log: TrainingLog | None) -> None:
    """One epoch: a training pass, a validation pass, the best epoch and patience updated."""
    group = setup.group
    epoch = state.epoch + 1
    learning_rate = state.optimizer.param_groups[0]["lr"]
    started = time.perf_counter()
    train_loss = train_epoch(setup.trained, setup.loader, setup.loss_function,
                             state.optimizer, state.scheduler, state.generator,
                             f"{setup.name} epoch {epoch}/{setup.epochs}",
                             setup.word_dropout, group, setup.device, setup.bf16)
    state.train_seconds += time.perf_counter() - started
    loss, balanced, accuracy = evaluate(state.model, setup.validation, setup.loss_function,
                                        setup.num_classes, group=group, device=setup.device,
                                        bf16=setup.bf16_validation,
                                        description=f"{setup.name} epoch {epoch} validation")
    result = EpochResult(train_loss, loss, balanced, accuracy, learning_rate,
                         time.perf_counter() - started)
    state.epoch = epoch
    if state.best is None or balanced > state.best.validation_balanced_accuracy:
        state.best, state.best_epoch, state.waited = result, epoch, 0
        if group.main:
            state.best_state = {name: value.detach().cpu().clone()
                                for name, value in state.model.state_dict().items()}
    else:
        state.waited += 1
        state.stopped = state.waited >= setup.patience
    if training_log is not None:
        training_log.epoch(result)
        log.info("%s epoch %d: train loss %.4f, validation loss %.4f, balanced accuracy "
                 "%.4f, accuracy %.4f (%.1fs)", setup.name, epoch, train_loss, loss,
                 balanced, accuracy, result.seconds)
        if state.stopped:
            log.info("%s: no better validation balanced accuracy for %d epochs, "
                     "stopping", setup.name, state.waited)


# Validation titles the bf16 check scores at most (a seeded sample of a larger split, scored in
# both precisions): on the course's 485,000 it was one more CPU pass over all of them after a
# training that may have run on a GPU.
BF16_CHECK_ROWS = 50_000


def bf16_inference_check(architecture: str, config: dict, matrix: torch.Tensor,
                         num_classes: int, weights: dict, validation: Split,
                         loss_function: nn.CrossEntropyLoss, fp32_balanced: float) -> dict:
    """Validation balanced accuracy of `weights` under CPU bf16 autocast, and whether it stays
    within BF16_TOLERANCE of float32: what `precision: auto` relies on at inference.

    Above BF16_CHECK_ROWS validation titles, both figures are those of a seeded sample of that
    many (`fp32_balanced`, the whole split's, is then not the one compared)."""
    if not cpu_has_bf16() or not len(validation):
        return {"bf16_inference": False}
    log.info("%s: checking bf16 inference on %s validation titles", architecture,
             f"{min(len(validation), BF16_CHECK_ROWS):,}")
    model = build_model(architecture, config, matrix, num_classes)
    model.load_state_dict(weights)
    checked = validation
    if len(validation) > BF16_CHECK_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(len(validation), BF16_CHECK_ROWS,
                                                       replace=False))
        checked = Split(np.asarray(validation.tokens[rows]), np.asarray(validation.labels[rows]))
        _, fp32_balanced, _ = evaluate(model, checked, loss_function, num_classes,
                                       description=f"{architecture}: validation sample, fp32")
    _, balanced, _ = evaluate(model, checked, loss_function, num_classes, bf16=True,
                              description=f"{architecture}: validation under bf16")
    return {"bf16_validation_balanced_accuracy": balanced, "bf16_check_rows": len(checked),
            "bf16_inference": bool(abs(balanced - fp32_balanced) <= BF16_TOLERANCE)}
