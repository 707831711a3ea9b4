"""Training and prediction speed of the MLP and the CNN on data of the course's shape.

    python benchmarks/train_speed.py [--cpu-rows 100000] [--gpu-rows 4900000]

The data is made up here, with the shape of the course's Spanish set: titles of 24 token ids
(zero-padded, about 9 real tokens on average) from a 50,000-word vocabulary with Zipf-like word
frequencies, 632 categories of unequal size, each with a few words of its own mixed among common
ones, so that the models learn something; 100-dimensional random word vectors stand in for the
embeddings stage. Each run is the train stage itself (`python -m meli.stages.train <model>`, one
epoch) in a workspace holding those arrays, timed by its own "titles/s while training" (the
training passes alone) and its peak resident memory:

- CPU: float32 and bf16 with one process of 2 threads, and 2 processes of 1 thread each, on
  `--cpu-rows` titles (an epoch over 4.9M titles takes rows / titles-per-second);
- CUDA, when PyTorch sees a GPU: one epoch over `--gpu-rows` titles (4.9M, the course's
  training split) with bf16 autocast, a global batch of `--gpu-batch-size` and 4 loader
  processes; then prediction titles/s of the trained bundle over every training row's token
  ids (the model and top-k alone; text normalization is CPU work, measured by
  benchmarks/predict_speed.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

VOCABULARY, CLASSES, LENGTH, DIM = 50_000, 632, 24, 100
VALIDATION_ROWS = 20_000


def make_split(rows: int, seed: int, directory: Path, name: str) -> None:
    """Token ids and labels of `rows` made-up titles, written block by block as .npy files."""
    rng = np.random.default_rng(seed)
    own_words = np.random.default_rng(0).integers(2, VOCABULARY, size=(CLASSES, 30))
    category_weights = 1.0 / np.arange(1, CLASSES + 1) ** 0.5
    category_weights /= category_weights.sum()
    tokens = np.lib.format.open_memmap(directory / f"{name}.tokens.npy", mode="w+",
                                       dtype=np.int32, shape=(rows, LENGTH))
    labels = np.lib.format.open_memmap(directory / f"{name}.labels.npy", mode="w+",
                                       dtype=np.int32, shape=(rows,))
    for start in range(0, rows, 500_000):
        count = min(500_000, rows - start)
        label = rng.choice(CLASSES, size=count, p=category_weights)
        lengths = np.clip(rng.poisson(8, size=count) + 1, 1, LENGTH)
        common = np.minimum(rng.zipf(1.3, size=(count, LENGTH)) + 1, VOCABULARY - 1)
        own = own_words[label[:, None], rng.integers(0, 30, size=(count, LENGTH))]
        block = np.where(rng.random((count, LENGTH)) < 0.4, own, common).astype(np.int32)
        block[np.arange(LENGTH)[None, :] >= lengths[:, None]] = 0
        tokens[start:start + count] = block
        labels[start:start + count] = label
    tokens.flush()
    labels.flush()


def make_workspace(path: Path, rows: int) -> Path:
    features = path / "data/features"
    features.mkdir(parents=True)
    make_split(rows, 1, features, "train")
    make_split(VALIDATION_ROWS, 2, features, "validation")
    names = [f"c{i:03d}" for i in range(CLASSES)]
    (features / "labels.json").write_text(json.dumps(names))
    (features / "vocab.txt").write_text(
        "\n".join(["<pad>", "<unk>", *(f"w{i}" for i in range(2, VOCABULARY))]) + "\n")
    prepared = path / "data/prepared"
    prepared.mkdir(parents=True)
    (prepared / "normalization.json").write_text(json.dumps(
        {"lowercase": True, "fold_accents": True, "digits": "zero", "punctuation": "drop"}))
    embeddings = path / "models/embeddings"
    embeddings.mkdir(parents=True)
    matrix = np.random.default_rng(3).normal(0, 0.1, size=(VOCABULARY, DIM)).astype(np.float32)
    matrix[:2] = 0
    np.save(embeddings / "matrix.npy", matrix)
    return path


def train_once(workspace: Path, model: str, settings: dict) -> dict:
    (workspace / "params.yaml").write_text(yaml.safe_dump({"train": {
        "epochs": 1, "patience": 1, **settings}}))
    for stale in ("models/" + model, "results", "checkpoints"):
        shutil.rmtree(workspace / stale, ignore_errors=True)
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "meli.stages.train", model],
                               cwd=workspace, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    _, status, usage = os.wait4(process.pid, 0)
    log = process.stderr.read() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"train {model} {settings} failed:\n{log[-2000:]}")
    found = re.search(r"([0-9]+) titles/s while training", log)
    # Linux reports the largest resident size among the process and the children it waited
    # for: with several processes, the largest rank.
    return {"titles_per_second": float(found.group(1)) if found else float("nan"),
            "wall": time.perf_counter() - started, "peak_mb": usage.ru_maxrss / 1024}


def predict_speed(workspace: Path, model: str, device: str) -> float:
    from meli.bundles.load import load_classifier
    from meli.bundles.pytorch import INFERENCE_BATCH, _logits_by_length

    classifier = load_classifier(workspace / "models" / model, device=device)
    tokens = np.load(workspace / "data/features/train.tokens.npy", mmap_mode="r")
    with torch.inference_mode():
        for _ in _logits_by_length(classifier.model, tokens[:20_000], INFERENCE_BATCH,
                                   classifier.device, classifier.bf16):
            pass  # warm-up
        if classifier.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for start in range(0, len(tokens), 1 << 20):
            block = np.asarray(tokens[start:start + (1 << 20)])
            for _, logits in _logits_by_length(classifier.model, block, 8192,
                                               classifier.device, classifier.bf16):
                torch.topk(logits.float(), 3, dim=1)
        if classifier.device.type == "cuda":
            torch.cuda.synchronize()
    return len(tokens) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-rows", type=int, default=100_000)
    parser.add_argument("--gpu-rows", type=int, default=4_900_000)
    parser.add_argument("--gpu-batch-size", type=int, default=4096)
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores; torch {torch.__version__}; CUDA "
          f"{'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")
    with tempfile.TemporaryDirectory(prefix="meli-train-speed-") as scratch:
        if not args.skip_cpu:
            workspace = make_workspace(Path(scratch) / "cpu", args.cpu_rows)
            print(f"\nCPU, {args.cpu_rows:,} titles, batch 128")
            print(f"{'model':<5} {'run':<28} {'titles/s':>9} {'4.9M epoch':>11} {'peak MB':>8}")
            runs = {"fp32, 1 process x 2 threads": {"precision": "fp32", "threads": 2},
                    "bf16, 1 process x 2 threads": {"precision": "bf16", "threads": 2},
                    "auto, 2 processes x 1 thread": {"threads": 1, "processes": 2}}
            for model in args.models:
                for name, settings in runs.items():
                    result = train_once(workspace, model, {"device": "cpu", **settings})
                    epoch = 4_900_000 / result["titles_per_second"]
                    print(f"{model:<5} {name:<28} {result['titles_per_second']:>9,.0f} "
                          f"{epoch / 60:>9.1f} m {result['peak_mb']:>8,.0f}", flush=True)
                speed = predict_speed(workspace, model, "cpu")
                print(f"{model:<5} {'predict (model + top-3)':<28} {speed:>9,.0f}", flush=True)
        if torch.cuda.is_available():
            workspace = make_workspace(Path(scratch) / "gpu", args.gpu_rows)
            print(f"\nCUDA, {args.gpu_rows:,} titles, batch {args.gpu_batch_size}, bf16")
            print(f"{'model':<5} {'train titles/s':>15} {'epoch s':>8} {'predict titles/s':>17}")
            for model in args.models:
                result = train_once(workspace, model, {
                    "device": "cuda", "batch_size": args.gpu_batch_size, "loader_workers": 4,
                    # A batch 32x larger takes a rate about sqrt(32)x larger.
                    "learning_rate": 0.004 * (args.gpu_batch_size / 128) ** 0.5})
                speed = predict_speed(workspace, model, "cuda")
                print(f"{model:<5} {result['titles_per_second']:>15,.0f} "
                      f"{args.gpu_rows / result['titles_per_second']:>8.1f} {speed:>17,.0f}",
                      flush=True)


if __name__ == "__main__":
    main()
