"""train: fit one registered PyTorch model on the training split, keep the best epoch, bundle it.

The stage itself: params in, the model and its optimizer built, the epochs run, the bundle out.
The epochs are a plain `train_epoch(...)`/`evaluate(...)` pair (meli.training.loop): seeds first,
then one pass over shuffled batches per epoch, a validation pass, a dvclive step, a checkpoint.
The epoch with the best validation balanced accuracy wins; training stops after `patience`
epochs without improvement.

- Device: `train.device` (auto, cpu, cuda); bf16 autocast (`train.precision`, see
  meli.training.device); on CUDA, pinned host memory and non-blocking copies.
- Several processes (`train.processes`, `train.nodes`): PyTorch's elastic agent runs one worker
  per rank (meli.training.distributed); `train.batch_size` stays the global batch, each rank
  computing its disjoint share of every batch, so a params file means the same at any process
  count.
- Resume: after each epoch, the training state (meli.training.state: weights, optimizer,
  schedule, random generators, best epoch so far, the dvclive log) goes to `checkpoints/<model>/`,
  a `persist: true` output; a run killed at any moment continues, under `dvc repro`, from its
  last finished epoch, and on CPU with one process ends bit-identical to a run never interrupted.
- Batches are read from the memory-mapped token arrays (meli.training.data); nothing copies a
  split into memory.

Run by dvc.yaml as `python -m meli.stages.train <model>` for each model of the registry
(meli.models); reads the `train` section and the model's own section of params.yaml.
"""

from __future__ import annotations

import logging
import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from meli.bundles import bundle
from meli.bundles.calibration import calibrate_bundle
from meli.bundles.pytorch import TorchClassifier
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
    VOCAB_FILE,
    bundle_dir,
    checkpoint_dir,
    train_results_dir,
)
from meli.models import build_model, names, params_classes
from meli.params import TrainParams, load_params, to_dict
from meli.training import checkpoint, distributed, watcher
from meli.training.data import Split, shuffled_loader
from meli.training.device import resolve_device, use_bf16, use_bf16_training
from meli.training.distributed import ALONE, Group
from meli.training.live import TrainingLog
from meli.training.loop import Setup, bf16_inference_check, run_epochs, seed_everything
from meli.training.optimization import class_weights, make_optimizer, make_schedule
from meli.training.state import TrainingState

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    best_epoch: int
    epochs_run: int
    validation_balanced_accuracy: float
    validation_accuracy: float
    train_titles_per_second: float
    resumed_from_epoch: int = 0


def model_config(model_params: Any, freeze_embeddings: bool) -> dict:
    """The model's constructor arguments (word dropout is part of training, not the model)."""
    config = to_dict(model_params)
    del config["word_dropout"]
    config["freeze_embeddings"] = freeze_embeddings
    return config


def train(architecture: str, params: TrainParams, model_params: Any,
          features_dir: str | Path, embeddings_dir: str | Path, prepared_dir: str | Path,
          output_dir: str | Path, live_dir: str | Path,
          checkpoints: str | Path | None = None, group: Group = ALONE) -> TrainResult:
    """Train one model and write its bundle to `output_dir` and its dvclive log to `live_dir`.

    With `checkpoints`, a checkpoint is written there after every epoch and a matching one is
    resumed from. Under several processes, every rank calls this; rank 0 writes the outputs.
    """
    features_dir, prepared_dir = Path(features_dir), Path(prepared_dir)
    embeddings_dir, live_dir = Path(embeddings_dir), Path(live_dir)
    checkpoints = Path(checkpoints) if checkpoints is not None else None

    # Setup: everything built from the params, in an order that keeps the random draws of a run
    # the same as before.
    device = resolve_device(params.device, group.local_rank)
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
    scheduler = make_schedule(optimizer, params, math.ceil(len(train_split) / params.batch_size))
    # One generator, seeded alike on every rank, draws the order and the word dropout.
    generator = torch.Generator().manual_seed(params.seed)
    loader = shuffled_loader(train_split, params.batch_size, generator, params.seed,
                             params.loader_workers, pin_memory=device.type == "cuda")
    if group.world == 1:
        trained = model
    elif device.type == "cuda":
        trained = nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    else:
        trained = nn.parallel.DistributedDataParallel(model)
    setup = Setup(architecture, trained, loader, validation, loss_function, len(labels),
                  params.epochs, params.patience, model_params.word_dropout, group, device,
                  bf16=use_bf16_training(params.precision, device),
                  # Validation as inference runs there by default: float32 on a CPU, bf16 on
                  # CUDA.
                  bf16_validation=use_bf16(params.precision, device))
    settings = {"model": architecture, "train": to_dict(params), architecture:
                to_dict(model_params), "world": group.world}
    # The loader's worker count changes no result: it stays out of the fingerprint.
    settings["train"].pop("loader_workers")
    fingerprint = checkpoint.fingerprint(
        settings, [*checkpoint.package_code(),
                   *_data_files(features_dir, embeddings_dir, prepared_dir)])
    state = TrainingState(fingerprint, model, optimizer, scheduler, generator)

    # Epochs, from the last checkpointed one if any.
    resumed = state.resume(checkpoints, group)
    if resumed and group.main:
        log.info("%s: resuming after epoch %d of %d from %s", architecture, state.epoch,
                 params.epochs, checkpoints)
    resumed_from = state.epoch
    if group.main:
        log.info("%s: %s training titles, %s validation, %d categories; %s batches of %d an "
                 "epoch on %s%s", architecture, f"{len(train_split):,}", f"{len(validation):,}",
                 len(labels), f"{len(loader):,}", params.batch_size, device,
                 " under bf16 autocast" if setup.bf16 else "")
    training_log = (TrainingLog(live_dir, {"model": architecture, "train": to_dict(params),
                                           architecture: to_dict(model_params)},
                                state if resumed else None)
                    if group.main else None)
    run_epochs(setup, state, training_log, checkpoints)

    # Finish: rank 0 writes the log's summary, the bundle of the best epoch, and the record
    # that the run is done.
    assert state.best is not None
    result = TrainResult(state.best_epoch, state.epoch, state.best.validation_balanced_accuracy,
                         state.best.validation_accuracy,
                         state.epoch * len(train_split) / max(state.train_seconds, 1e-9),
                         resumed_from)
    if not group.main:
        return result
    assert training_log is not None and state.best_state is not None
    training_log.end(state)
    bf16_check = bf16_inference_check(architecture, config, matrix, len(labels),
                                      state.best_state, validation, loss_function.cpu(),
                                      state.best.validation_balanced_accuracy)
    bundle.write_torch_bundle(
        output_dir, architecture=architecture, model_config=config,
        state_dict=state.best_state, vocabulary=Vocabulary.load(features_dir / VOCAB_FILE),
        max_length=int(train_split.tokens.shape[1]), labels=labels,
        normalization=read_json(prepared_dir / NORMALIZATION_FILE),
        details={"best_epoch": state.best_epoch,
                 "validation_balanced_accuracy": state.best.validation_balanced_accuracy,
                 **bf16_check, "train": to_dict(params)})
    # The bundle just written, as `meli predict` loads it, calibrated on validation titles.
    files = bundle.read_bundle(output_dir)
    calibrate_bundle(TorchClassifier(files.directory, files.config, files.labels,
                                     files.normalization, params.device, params.precision),
                     prepared_dir)
    if checkpoints is not None:
        # The run is done: what is left is the small record that it finished.
        checkpoint.finish(checkpoints, {"fingerprint": fingerprint, "epochs": state.epoch,
                                        "best_epoch": state.best_epoch})
    return result


def _data_files(features_dir: Path, embeddings_dir: Path, prepared_dir: Path) -> list[Path]:
    return [*sorted(features_dir.iterdir()), embeddings_dir / MATRIX_FILE,
            prepared_dir / NORMALIZATION_FILE]


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("train", __doc__)
    parser.add_argument("model", choices=names(), help="the registered model to train")
    parser.add_argument("--node-rank", type=int, default=0,
                        help="this machine's place when train.nodes > 1: 0 on the machine that "
                             "runs dvc repro (it writes the outputs), 1, 2, ... on the others")
    args = parser.parse_args(argv)

    def stage() -> None:
        watcher.die_with_parent()
        params = load_params(args.params, models=params_classes())
        group = distributed.current()
        world = params.train.processes * params.train.nodes
        if group.world == 1 and world > 1:
            # This process only starts the ranks and waits for them.
            if not 0 <= args.node_rank < params.train.nodes:
                raise MeliError(f"--node-rank {args.node_rank} is not one of the "
                                f"{params.train.nodes} machines of train.nodes")
            with checkpoint.exclusive(checkpoint_dir(args.model), args.model):
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
            # Under several ranks, the process that started them holds the lock.
            lock = (checkpoint.exclusive(checkpoint_dir(args.model), args.model)
                    if group.world == 1 else nullcontext())
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


if __name__ == "__main__":
    sys.exit(main())
