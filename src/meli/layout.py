"""Where every stage output lives: the paths and file names that more than one module uses.

Stages find each other's outputs through these names rather than by importing each other, so
each stage's code (and its `deps` in dvc.yaml) stays its own. Paths are relative to the
repository root, where DVC runs every stage's command. This module imports nothing of `meli`:
changing it makes every stage stale, so it holds names only, never behaviour.
"""

from __future__ import annotations

from pathlib import Path

PARAMS_FILE = "params.yaml"

# The three splits, in the order the split codes 0, 1, 2 of prepare refer to them.
SPLITS = ("train", "validation", "test")

# Token ids that every vocabulary reserves: padding fills rows up to max_length, and words
# missing from the vocabulary map to UNKNOWN.
PAD, UNKNOWN = 0, 1
PAD_TOKEN, UNKNOWN_TOKEN = "<pad>", "<unk>"

# Stage output directories.
RAW_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
FEATURES_DIR = Path("data/features")
MODELS_DIR = Path("models")
EMBEDDINGS_DIR = MODELS_DIR / "embeddings"
METRICS_DIR = Path("metrics")
RESULTS_DIR = Path("results")
CHECKPOINTS_DIR = Path("checkpoints")

# Files inside them.
RAW_TABLE_FILE = "titles.parquet"  # data/raw: the canonical table of ingest
SOURCE_FILE = "source.json"  # data/raw: what was read, its hash and row counts
REJECTED_FILE = "rejected.jsonl"  # data/raw and data/prepared: skipped rows with reasons
LABELS_FILE = "labels.json"  # data/prepared, data/features, bundles: category names by id
NORMALIZATION_FILE = "normalization.json"  # data/prepared, bundles: prepare.text settings
VOCAB_FILE = "vocab.txt"  # data/features, torch bundles: one token per line, line = id
MATRIX_FILE = "matrix.npy"  # models/embeddings: one vector per vocabulary id
DATA_METRICS_FILE = METRICS_DIR / "data.json"
FEATURES_METRICS_FILE = METRICS_DIR / "features.json"


def split_path(prepared_dir: str | Path, split: str) -> Path:
    """data/prepared/<split>.parquet: title, text, category, label, language, label_quality."""
    return Path(prepared_dir) / f"{split}.parquet"


def tokens_path(features_dir: str | Path, split: str) -> Path:
    """data/features/<split>.tokens.npy: int32 token ids, rows x max_length, zero-padded."""
    return Path(features_dir) / f"{split}.tokens.npy"


def labels_path(features_dir: str | Path, split: str) -> Path:
    """data/features/<split>.labels.npy: int32 label id per row."""
    return Path(features_dir) / f"{split}.labels.npy"


def bundle_dir(model: str) -> Path:
    """models/<model>: the self-contained bundle that `meli predict --model` loads."""
    return MODELS_DIR / model


def train_results_dir(model: str) -> Path:
    """results/train/<model>: the dvclive log (metrics.json, params.yaml, plots/)."""
    return RESULTS_DIR / "train" / model


def evaluate_results_dir(model: str) -> Path:
    """results/evaluate/<model>: per-category recall and confusion plots of the test split."""
    return RESULTS_DIR / "evaluate" / model


def checkpoint_dir(model: str) -> Path:
    """checkpoints/<model>: the last finished epoch of a training in progress (persist: true)."""
    return CHECKPOINTS_DIR / model


def model_metrics_path(model: str) -> Path:
    """metrics/<model>.json: the test figures of evaluate@<model>."""
    return METRICS_DIR / f"{model}.json"
