"""train: fit one registered PyTorch model on the training split, keep the best epoch, bundle it.

A plain `train(...)`/`evaluate(...)` pair: seeds first, then one pass over shuffled batches per
epoch, a validation pass, a dvclive step, a checkpoint. The epoch with the best validation
balanced accuracy wins; training stops after `patience` epochs without improvement.

- Device: `train.device` (auto, cpu, cuda); bf16 autocast (`train.precision`, see meli.training.device);
  on CUDA, pinned host memory and non-blocking copies.
- Several processes (`train.processes`, `train.nodes`): PyTorch's elastic agent runs one worker
  per rank (meli.training.distributed); `train.batch_size` stays the global batch, each rank computing
  its disjoint share of every batch, so a params file means the same at any process count.
- Resume: after each epoch, a checkpoint (weights, optimizer, schedule, random generators, best
  epoch so far, the dvclive log) goes to `checkpoints/<model>/`, a `persist: true` output; a run
  killed at any moment continues, under `dvc repro`, from its last finished epoch, and on CPU
  with one process ends bit-identical to a run never interrupted.
- Batches are read from the memory-mapped token arrays; nothing copies a split into memory.

Run by dvc.yaml as `python -m meli.stages.train <model>` for each model of the registry
(meli.models); reads the `train` section and the model's own section of params.yaml.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import random
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from meli.bundles import format as bundle
from meli.bundles import metrics
from meli.data.vocabulary import Vocabulary
from meli.errors import MeliError, run, stage_parser
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
    checkpoint_dir,
    labels_path,
    tokens_path,
    train_results_dir,
)
from meli.models import build_model, names, params_classes
from meli.params import TrainParams, load_params, to_dict
from meli.training import checkpoint, distributed
from meli.training.device import (
    BF16_TOLERANCE,
    CPU,
    autocast,
    cpu_has_bf16,
    resolve_device,
    use_bf16,
    use_bf16_training,
)
from meli.training.distributed import ALONE, Group

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
    resumed_from_epoch: int = 0


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
    show = group.main and sys.stderr.isatty()
    for step, (tokens, labels) in enumerate(tqdm(loader, desc=description, unit="batch",
                                                 leave=False, mininterval=1.0,
                                                 disable=not show)):
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
             device: torch.device = CPU,
             bf16: bool = False) -> tuple[float, float, float]:
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
    for start in range(0, len(mine), batch_size):
        rows = mine[start:start + batch_size]
        tokens = torch.from_numpy(np.asarray(data.tokens[rows])).to(device, non_blocking=True)
        target = torch.from_numpy(labels[rows]).to(device, non_blocking=True)
        with autocast(device, bf16):
            logits = model(tokens).float()
        total_loss += float(summed(logits, target))
        predicted.append(logits.argmax(dim=1).cpu().numpy())
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


@contextmanager
def exclusive(directory: Path, what: str):
    """Hold a lock on `directory` so that two trainings never write the same outputs."""
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MeliError(f"{directory}: another training of {what} is running; two "
                            f"trainings must not write the same outputs (wait for it, or "
                            f"stop it)") from None
        yield
    finally:
        os.close(descriptor)


def _live_files(live_dir: Path) -> dict[str, str]:
    """The dvclive log as text, to be put back on resume (DVC deletes it before a rerun)."""
    if not live_dir.exists():
        return {}
    return {str(path.relative_to(live_dir)): path.read_text(encoding="utf-8")
            for path in sorted(live_dir.rglob("*")) if path.is_file()}


def _restore_live_files(live_dir: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = live_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _data_files(features_dir: Path, embeddings_dir: Path, prepared_dir: Path) -> list[Path]:
    return [*sorted(features_dir.iterdir()), embeddings_dir / MATRIX_FILE,
            prepared_dir / NORMALIZATION_FILE]


def train(architecture: str, params: TrainParams, model_params: Any,
          features_dir: str | Path, embeddings_dir: str | Path, prepared_dir: str | Path,
          output_dir: str | Path, live_dir: str | Path,
          checkpoints: str | Path | None = None, group: Group = ALONE) -> TrainResult:
    """Train one model and write its bundle to `output_dir` and its dvclive log to `live_dir`.

    With `checkpoints`, a checkpoint is written there after every epoch and a matching one is
    resumed from. Under several processes, every rank calls this; rank 0 writes the outputs.
    """
    from dvclive import Live

    features_dir, prepared_dir = Path(features_dir), Path(prepared_dir)
    embeddings_dir, live_dir = Path(embeddings_dir), Path(live_dir)
    device = resolve_device(params.device, group.local_rank)
    bf16 = use_bf16_training(params.precision, device)
    # Validation as inference runs there by default: float32 on a CPU, bf16 on CUDA.
    bf16_validation = use_bf16(params.precision, device)
    seed_everything(params.seed + group.rank, params.threads, device, params.cuda_deterministic)
    train_split = Split.load(features_dir, "train")
    validation = Split.load(features_dir, "validation")
    labels = read_json(features_dir / LABELS_FILE)
    if params.batch_size < group.world:
        raise MeliError(f"train.batch_size ({params.batch_size}) is the global batch: it must "
                        f"be at least the number of processes ({group.world})")
    matrix = torch.from_numpy(np.load(embeddings_dir / MATRIX_FILE))
    config = model_config(model_params, params.freeze_embeddings)
    model = build_model(architecture, config, matrix, len(labels)).to(device)
    weights = class_weights(np.asarray(train_split.labels), len(labels), params.class_weighting)
    loss_function = nn.CrossEntropyLoss(weight=weights, label_smoothing=params.label_smoothing)
    loss_function = loss_function.to(device)
    optimizer = make_optimizer(model, params)
    steps = params.epochs * math.ceil(len(train_split) / params.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, learning_rate_factor(params.schedule, params.warmup_fraction, steps))
    # One generator, seeded alike on every rank, draws the order and the word dropout.
    generator = torch.Generator().manual_seed(params.seed)
    loader = torch.utils.data.DataLoader(
        Batches(train_split), batch_sampler=ShuffledBatches(len(train_split), params.batch_size,
                                                            generator),
        collate_fn=_as_is, num_workers=params.loader_workers,
        # The loader draws a seed for its workers; from its own generator, so that the global
        # one (dropout) sees exactly the draws it would without a loader.
        generator=torch.Generator().manual_seed(params.seed),
        pin_memory=device.type == "cuda", persistent_workers=params.loader_workers > 0)
    if group.world == 1:
        trained = model
    elif device.type == "cuda":
        trained = nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    else:
        trained = nn.parallel.DistributedDataParallel(model)

    settings = {"model": architecture, "train": to_dict(params), architecture:
                to_dict(model_params), "world": group.world}
    # The loader's worker count changes no result: it stays out of the fingerprint.
    settings["train"].pop("loader_workers")
    fingerprint = checkpoint.fingerprint(
        settings, [*checkpoint.package_code(),
                   *_data_files(features_dir, embeddings_dir, prepared_dir)])
    state = _resume_state(checkpoints, fingerprint, group)

    best_state, best, best_epoch, waited, epoch, stopped = None, None, 0, 0, 0, False
    train_seconds, first_epoch = 0.0, 1
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"][group.rank])
        best_state, best = state["best_state"], EpochResult(**state["best"])
        best_epoch, waited, epoch = state["best_epoch"], state["waited"], state["epoch"]
        stopped, train_seconds = state["stopped"], state["train_seconds"]
        first_epoch = epoch + 1
        if group.main:
            _restore_live_files(live_dir, state["live_files"])
            log.info("%s: resuming after epoch %d of %d from %s", architecture, epoch,
                     params.epochs, checkpoints)

    live = (Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, resume=state is not None)
            if group.main else None)
    if live is not None:
        if state is not None:
            live.step = state["live_step"]
        live.log_params({"model": architecture, "train": to_dict(params),
                         architecture: to_dict(model_params)})
    for epoch in range(first_epoch, params.epochs + 1):
        if stopped:
            epoch -= 1
            break
        learning_rate = optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        train_loss = train_epoch(trained, loader, loss_function, optimizer, scheduler, generator,
                                 f"{architecture} epoch {epoch}/{params.epochs}",
                                 model_params.word_dropout, group, device, bf16)
        train_seconds += time.perf_counter() - started
        loss, balanced, accuracy = evaluate(model, validation, loss_function, len(labels),
                                            group=group, device=device, bf16=bf16_validation)
        result = EpochResult(train_loss, loss, balanced, accuracy, learning_rate,
                             time.perf_counter() - started)
        if best is None or balanced > best.validation_balanced_accuracy:
            best, best_epoch, waited = result, epoch, 0
            if group.main:
                best_state = {name: value.detach().cpu().clone()
                              for name, value in model.state_dict().items()}
        else:
            waited += 1
            stopped = waited >= params.patience
        if live is not None:
            _log_epoch(live, result)
            log.info("%s epoch %d: train loss %.4f, validation loss %.4f, balanced accuracy "
                     "%.4f, accuracy %.4f (%.1fs)", architecture, epoch, train_loss, loss,
                     balanced, accuracy, result.seconds)
            if stopped:
                log.info("%s: no better validation balanced accuracy for %d epochs, "
                         "stopping", architecture, waited)
        if checkpoints is not None:
            rng_states = distributed.gather(torch.get_rng_state().numpy(), group)
            if group.main:
                assert best is not None and live is not None
                checkpoint.save(Path(checkpoints), {
                    "fingerprint": fingerprint, "epoch": epoch, "stopped": stopped,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                    "torch_rng": [torch.from_numpy(part) for part in rng_states],
                    "best_state": best_state, "best": asdict(best), "best_epoch": best_epoch,
                    "waited": waited, "train_seconds": train_seconds,
                    "live_step": live.step, "live_files": _live_files(live_dir)})
    assert best is not None
    throughput = epoch * len(train_split) / max(train_seconds, 1e-9)
    result = TrainResult(best_epoch, epoch, best.validation_balanced_accuracy,
                         best.validation_accuracy, throughput, first_epoch - 1)
    if not group.main:
        return result
    assert live is not None and best_state is not None
    # Timings stay in the per-epoch plots but out of the metrics file that `dvc exp show`
    # compares: same params, same metrics.
    live.summary.pop("epoch_seconds", None)
    live.summary["best"] = {
        "epoch": best_epoch,
        "validation_balanced_accuracy": best.validation_balanced_accuracy,
        "validation_accuracy": best.validation_accuracy,
        "validation_loss": best.validation_loss,
    }
    live.end()
    bf16_check = _bf16_inference_check(architecture, config, matrix, len(labels), best_state,
                                       validation, loss_function.cpu(),
                                       best.validation_balanced_accuracy)
    bundle.write_torch_bundle(
        output_dir, architecture=architecture, model_config=config, state_dict=best_state,
        vocabulary=Vocabulary.load(features_dir / VOCAB_FILE),
        max_length=int(train_split.tokens.shape[1]), labels=labels,
        normalization=read_json(prepared_dir / NORMALIZATION_FILE),
        details={"best_epoch": best_epoch,
                 "validation_balanced_accuracy": best.validation_balanced_accuracy,
                 **bf16_check, "train": to_dict(params)})
    if checkpoints is not None:
        # The run is done: what is left is the small record that it finished.
        checkpoint.finish(Path(checkpoints), {"fingerprint": fingerprint, "epochs": epoch,
                                              "best_epoch": best_epoch})
    return result


def _resume_state(checkpoints: str | Path | None, fingerprint: str,
                  group: Group) -> dict[str, Any] | None:
    """Rank 0 reads a matching checkpoint, if any, and every rank gets it."""
    state = None
    if checkpoints is not None and group.main:
        state = checkpoint.load(Path(checkpoints), fingerprint)
    if group.world > 1:
        shared = [state]
        torch.distributed.broadcast_object_list(shared, src=0)
        state = shared[0]
    return state


def _bf16_inference_check(architecture: str, config: dict, matrix: torch.Tensor,
                          num_classes: int, state: dict, validation: Split,
                          loss_function: nn.CrossEntropyLoss, fp32_balanced: float) -> dict:
    """Validation balanced accuracy of the kept weights under CPU bf16 autocast, and whether
    it stays within BF16_TOLERANCE of float32: what `precision: auto` relies on at inference."""
    if not cpu_has_bf16() or not len(validation):
        return {"bf16_inference": False}
    model = build_model(architecture, config, matrix, num_classes)
    model.load_state_dict(state)
    _, balanced, _ = evaluate(model, validation, loss_function, num_classes, bf16=True)
    return {"bf16_validation_balanced_accuracy": balanced,
            "bf16_inference": bool(abs(balanced - fp32_balanced) <= BF16_TOLERANCE)}


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
    parser.add_argument("--node-rank", type=int, default=0,
                        help="this machine's place when train.nodes > 1: 0 on the machine that "
                             "runs dvc repro (it writes the outputs), 1, 2, ... on the others")
    args = parser.parse_args(argv)

    def stage() -> None:
        distributed.die_with_parent()
        params = load_params(args.params, models=params_classes())
        group = distributed.current()
        world = params.train.processes * params.train.nodes
        if group.world == 1 and world > 1:
            # This process only starts the ranks and waits for them.
            if not 0 <= args.node_rank < params.train.nodes:
                raise MeliError(f"--node-rank {args.node_rank} is not one of the "
                                f"{params.train.nodes} machines of train.nodes")
            with exclusive(checkpoint_dir(args.model), args.model):
                distributed.launch(
                    ["-m", "meli.stages.train", args.model, "--params", args.params],
                    processes=params.train.processes, nodes=params.train.nodes,
                    node_rank=args.node_rank, master_address=params.train.master_address,
                    master_port=params.train.master_port)
            log.info("train %s: %d processes finished", args.model, world)
            return
        device = resolve_device(params.train.device, group.local_rank)
        distributed.join(group, device)
        try:
            lock = exclusive(checkpoint_dir(args.model), args.model) if group.world == 1 \
                else _nothing()
            with lock:
                result = train(args.model, params.train, params.model(args.model),
                               FEATURES_DIR, EMBEDDINGS_DIR, PREPARED_DIR,
                               bundle_dir(args.model), train_results_dir(args.model),
                               checkpoint_dir(args.model), group)
            distributed.wait_for_all(group)
        except RuntimeError as error:
            if group.world == 1 or not distributed.lost_peer(error):
                raise
            # The agent names the rank that died; this one only says it stopped because of it.
            raise MeliError(f"rank {group.rank}: stopped, another rank is gone") from None
        finally:
            distributed.leave()
        if group.main:
            log.info("train %s: best epoch %d of %d, validation balanced accuracy %.4f, "
                     "accuracy %.4f; %.0f titles/s while training", args.model,
                     result.best_epoch, result.epochs_run, result.validation_balanced_accuracy,
                     result.validation_accuracy, result.train_titles_per_second)

    return run("train", stage)


@contextmanager
def _nothing():
    yield


if __name__ == "__main__":
    sys.exit(main())
