"""train: fit one registered PyTorch model on the training split, keep the best epoch, bundle it.

A plain `train(...)`/`evaluate(...)` pair: seeds first, then one pass over shuffled batches per
epoch, a validation pass, a dvclive step. The epoch with the best validation balanced accuracy
wins; training stops after `patience` epochs without improvement.

Run by dvc.yaml as `python -m meli.stages.train <model>` for each model of the registry
(meli.models); reads the `train` section and the model's own section of params.yaml.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from meli import bundle, metrics
from meli.command import run, stage_parser
from meli.errors import MeliError
from meli.files import read_json
from meli.layout import (
    EMBEDDINGS_DIR,
    FEATURES_DIR,
    LABELS_FILE,
    MATRIX_FILE,
    NORMALIZATION_FILE,
    PREPARED_DIR,
    UNKNOWN,
    VOCAB_FILE,
    bundle_dir,
    labels_path,
    tokens_path,
    train_results_dir,
)
from meli.models import build_model, names, params_classes
from meli.params import TrainParams, load_params, to_dict
from meli.vocabulary import Vocabulary

log = logging.getLogger(__name__)


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


@dataclass
class EpochResult:
    train_loss: float
    validation_loss: float
    validation_balanced_accuracy: float
    validation_accuracy: float
    learning_rate: float
    seconds: float


@dataclass
class TrainResult:
    best_epoch: int
    epochs_run: int
    validation_balanced_accuracy: float
    validation_accuracy: float
    train_titles_per_second: float


def seed_everything(seed: int, threads: int) -> None:
    """Same seed, same params -> the same weights on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    # Adam's moment estimates for embedding rows that get no gradient decay geometrically into
    # denormal floats after a few hundred steps, and denormal arithmetic made later epochs
    # twice as slow on CPU; flushing them to zero changes no result that matters.
    torch.set_flush_denormal(True)


def model_config(model_params: Any, freeze_embeddings: bool) -> dict:
    """The model's constructor arguments (word dropout is part of training, not the model)."""
    config = to_dict(model_params)
    del config["word_dropout"]
    config["freeze_embeddings"] = freeze_embeddings
    return config


def class_weights(labels: np.ndarray, num_classes: int, scheme: str) -> torch.Tensor | None:
    if scheme == "none":
        return None
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    counts = np.maximum(counts, 1.0)
    weights = 1.0 / counts if scheme == "balanced" else 1.0 / np.sqrt(counts)
    # Scaled so that the average row weighs 1 and the learning rate keeps its meaning.
    weights *= len(labels) / float((weights[labels]).sum())
    return torch.tensor(weights, dtype=torch.float32)


def learning_rate_factor(schedule: str, warmup_fraction: float, total_steps: int):
    """Multiplier of the base learning rate at each optimizer step."""
    warmup = int(total_steps * warmup_fraction) if schedule == "onecycle" else 0

    def factor(step: int) -> float:
        if schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if params.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=params.learning_rate, momentum=0.9,
                               weight_decay=params.weight_decay)
    kind = torch.optim.AdamW if params.optimizer == "adamw" else torch.optim.Adam
    # The fused kernel updates all weights in one pass: about 10x faster on CPU than the default.
    return kind(trainable, lr=params.learning_rate, weight_decay=params.weight_decay, fused=True)


def drop_words(tokens: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Replace a random `rate` of the real tokens by the unknown-word id.

    About one test word in twenty is missing from the training vocabulary; hiding some known
    words during training teaches the models to lean on the rest of the title.
    """
    if rate <= 0:
        return tokens
    hidden = (torch.rand(tokens.shape, generator=generator) < rate) & (tokens > UNKNOWN)
    return tokens.masked_fill(hidden, UNKNOWN)


def train_epoch(model: nn.Module, data: Split, loss_function: nn.Module,
                optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                batch_size: int, generator: torch.Generator, description: str,
                word_dropout: float = 0.0) -> float:
    model.train()
    order = torch.randperm(len(data), generator=generator).numpy()
    total_loss, rows = 0.0, 0
    batches = range(0, len(order), batch_size)
    for start in tqdm(batches, desc=description, unit="batch", leave=False, mininterval=1.0):
        index = np.sort(order[start:start + batch_size])
        tokens = torch.from_numpy(data.tokens[index])
        labels = torch.from_numpy(data.labels[index].astype(np.int64))
        tokens = tokens[:, : max(1, int((tokens != 0).sum(dim=1).max()))]
        tokens = drop_words(tokens, word_dropout, generator)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(model(tokens), labels)
        if not torch.isfinite(loss):
            raise MeliError(f"{description}: training diverged (loss is {loss.item()}); lower "
                            f"train.learning_rate")
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(index)
        rows += len(index)
    return total_loss / max(rows, 1)


@torch.inference_mode()
def evaluate(model: nn.Module, data: Split, loss_function: nn.CrossEntropyLoss,
             num_classes: int, batch_size: int = 2048) -> tuple[float, float, float]:
    """Loss, balanced accuracy and accuracy of `model` on `data`.

    The loss is training's own cross-entropy (same smoothing and class weights) on the logits,
    summed over batches and divided by the total weight, as one batch of every row would be.
    """
    model.eval()
    labels = np.asarray(data.labels, dtype=np.int64)
    if not len(labels):
        return 0.0, float("nan"), float("nan")
    summed = nn.CrossEntropyLoss(weight=loss_function.weight, reduction="sum",
                                 label_smoothing=loss_function.label_smoothing)
    total_loss, predicted = 0.0, []
    for start in range(0, len(labels), batch_size):
        tokens = torch.from_numpy(np.array(data.tokens[start:start + batch_size]))
        target = torch.from_numpy(labels[start:start + batch_size])
        logits = model(tokens)
        total_loss += float(summed(logits, target))
        predicted.append(logits.argmax(dim=1).numpy())
    weight = loss_function.weight
    total_weight = float(weight[labels].sum()) if weight is not None else float(len(labels))
    predictions = np.concatenate(predicted)
    return (total_loss / total_weight, metrics.balanced_accuracy(labels, predictions, num_classes),
            metrics.accuracy(labels, predictions))


def train(architecture: str, params: TrainParams, model_params: Any,
          features_dir: str | Path, embeddings_dir: str | Path, prepared_dir: str | Path,
          output_dir: str | Path, live_dir: str | Path) -> TrainResult:
    """Train one model and write its bundle to `output_dir` and its dvclive log to `live_dir`."""
    from dvclive import Live

    features_dir, prepared_dir = Path(features_dir), Path(prepared_dir)
    seed_everything(params.seed, params.threads)
    train_split = Split.load(features_dir, "train")
    validation = Split.load(features_dir, "validation")
    labels = read_json(features_dir / LABELS_FILE)
    matrix = torch.from_numpy(np.load(Path(embeddings_dir) / MATRIX_FILE))
    config = model_config(model_params, params.freeze_embeddings)
    model = build_model(architecture, config, matrix, len(labels))
    weights = class_weights(np.asarray(train_split.labels), len(labels), params.class_weighting)
    loss_function = nn.CrossEntropyLoss(weight=weights, label_smoothing=params.label_smoothing)
    optimizer = make_optimizer(model, params)
    steps = params.epochs * math.ceil(len(train_split) / params.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, learning_rate_factor(params.schedule, params.warmup_fraction, steps))
    generator = torch.Generator().manual_seed(params.seed)

    best_state, best, best_epoch, waited, epoch = None, None, 0, 0, 0
    train_seconds = 0.0
    with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False) as live:
        live.log_params({"model": architecture, "train": to_dict(params),
                         architecture: to_dict(model_params)})
        for epoch in range(1, params.epochs + 1):
            learning_rate = optimizer.param_groups[0]["lr"]
            started = time.perf_counter()
            train_loss = train_epoch(model, train_split, loss_function, optimizer, scheduler,
                                     params.batch_size, generator,
                                     f"{architecture} epoch {epoch}/{params.epochs}",
                                     model_params.word_dropout)
            train_seconds += time.perf_counter() - started
            loss, balanced, accuracy = evaluate(model, validation, loss_function, len(labels))
            result = EpochResult(train_loss, loss, balanced, accuracy, learning_rate,
                                 time.perf_counter() - started)
            _log_epoch(live, result)
            log.info("%s epoch %d: train loss %.4f, validation loss %.4f, balanced accuracy "
                     "%.4f, accuracy %.4f (%.1fs)", architecture, epoch, train_loss, loss,
                     balanced, accuracy, result.seconds)
            if best is None or balanced > best.validation_balanced_accuracy:
                best, best_epoch, waited = result, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
                if waited >= params.patience:
                    log.info("%s: no better validation balanced accuracy for %d epochs, "
                             "stopping", architecture, waited)
                    break
        assert best is not None and best_state is not None
        # Timings stay in the per-epoch plots but out of the metrics file that `dvc exp show`
        # compares: same params, same metrics.
        live.summary.pop("epoch_seconds", None)
        live.summary["best"] = {
            "epoch": best_epoch,
            "validation_balanced_accuracy": best.validation_balanced_accuracy,
            "validation_accuracy": best.validation_accuracy,
            "validation_loss": best.validation_loss,
        }
    throughput = epoch * len(train_split) / max(train_seconds, 1e-9)
    bundle.write_torch_bundle(
        output_dir, architecture=architecture, model_config=config, state_dict=best_state,
        vocabulary=Vocabulary.load(features_dir / VOCAB_FILE),
        max_length=int(train_split.tokens.shape[1]), labels=labels,
        normalization=read_json(prepared_dir / NORMALIZATION_FILE),
        details={"best_epoch": best_epoch,
                 "validation_balanced_accuracy": best.validation_balanced_accuracy,
                 "train": to_dict(params)})
    return TrainResult(best_epoch, epoch, best.validation_balanced_accuracy,
                       best.validation_accuracy, throughput)


def _log_epoch(live, result: EpochResult) -> None:
    live.log_metric("train/loss", result.train_loss)
    live.log_metric("validation/loss", result.validation_loss)
    live.log_metric("validation/balanced_accuracy", result.validation_balanced_accuracy)
    live.log_metric("validation/accuracy", result.validation_accuracy)
    live.log_metric("learning_rate", result.learning_rate)
    live.log_metric("epoch_seconds", result.seconds)
    live.next_step()


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("train", __doc__)
    parser.add_argument("model", choices=names(), help="the registered model to train")
    args = parser.parse_args(argv)

    def stage() -> None:
        params = load_params(args.params, models=params_classes())
        result = train(args.model, params.train, params.model(args.model), FEATURES_DIR,
                       EMBEDDINGS_DIR, PREPARED_DIR, bundle_dir(args.model),
                       train_results_dir(args.model))
        log.info("train %s: best epoch %d of %d, validation balanced accuracy %.4f, accuracy "
                 "%.4f; %.0f titles/s while training", args.model, result.best_epoch,
                 result.epochs_run, result.validation_balanced_accuracy,
                 result.validation_accuracy, result.train_titles_per_second)

    return run("train", stage)


if __name__ == "__main__":
    sys.exit(main())
