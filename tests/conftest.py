"""Shared fixtures: small hand-made sources written to tmp_path, and ingesting them."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from meli.models.cnn import CNNParams
from meli.models.mlp import MLPParams
from meli.params import (
    BaselineParams,
    DataParams,
    EmbeddingsParams,
    FeaturizeParams,
    PrepareParams,
    TrainParams,
)
from meli.stages.ingest import ingest

if TYPE_CHECKING:
    from meli.stages.train import TrainResult


def make_rows(counts: dict[str, int], language: str = "spanish", quality: str = "reliable",
              split: str | None = None, prefix: str = "") -> list[dict]:
    """`counts[category]` distinct titles per category; each title's words name its category."""
    rows = []
    for category, count in counts.items():
        for i in range(count):
            row = {"title": f"{prefix}{category.lower()} modelo {i} premium", "category": category,
                   "language": language, "label_quality": quality}
            if split:
                row["split"] = split
            rows.append(row)
    return rows


@pytest.fixture
def rows() -> Callable[..., list[dict]]:
    return make_rows


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    """Write records (dicts, or ready-made lines as str/bytes) as JSON lines; .gz compresses."""

    def write(name: str, records: Iterable[dict | str | bytes]) -> Path:
        lines = []
        for record in records:
            if isinstance(record, dict):
                record = json.dumps(record, ensure_ascii=False) + "\n"
            lines.append(record if isinstance(record, bytes) else record.encode("utf-8"))
        data = b"".join(lines)
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        return path

    return write


@pytest.fixture
def ingest_rows(tmp_path: Path, write_jsonl) -> Callable[..., Path]:
    """Ingest records through a JSON-lines file; returns the raw directory."""

    def run(records: Iterable[dict | str | bytes], name: str = "source.jsonl") -> Path:
        source = write_jsonl(name, records)
        raw = tmp_path / f"raw-{source.stem}"
        ingest(DataParams(source=str(source)), raw)
        return raw

    return run


# A small pipeline run once per session (models, train, evaluate and predict tests share it):
# 2,000 synthetic titles through ingest, prepare, featurize and 16-dimensional embeddings, laid
# out like the repository (data/..., models/embeddings) so the CLI can run in a copy of it.
SAMPLE_ROWS = 2_000
# One thread: tiny models gain nothing from more, and a busy 2-core machine makes two slow.
FAST_TRAIN = dict(epochs=3, batch_size=64, threads=1, patience=10)


@dataclass(frozen=True)
class SmallPipeline:
    root: Path

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def features(self) -> Path:
        return self.root / "data" / "features"

    @property
    def embeddings(self) -> Path:
        return self.root / "models" / "embeddings"


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> SmallPipeline:
    from meli.stages.embeddings import build_embeddings
    from meli.stages.featurize import featurize
    from meli.stages.prepare import prepare

    root = tmp_path_factory.mktemp("pipeline")
    small = SmallPipeline(root)
    ingest(DataParams(source="sample", sample_rows=SAMPLE_ROWS, sample_seed=7), root / "data/raw")
    prepare(PrepareParams(min_examples=5), root / "data/raw", small.prepared,
            root / "metrics" / "data.json")
    featurize(FeaturizeParams(max_length=16), small.prepared, small.features,
              root / "metrics" / "features.json")
    build_embeddings(EmbeddingsParams(dim=16, epochs=2, buckets=1_000, threads=1),
                     small.prepared, small.features, small.embeddings)
    return small


@pytest.fixture(scope="session")
def train_model(pipeline) -> Callable[..., tuple[TrainResult, Path, Path]]:
    """Train on the small pipeline: (result, bundle directory, dvclive directory).

    Keyword arguments override the fast TrainParams; `model` replaces the small model params.
    """
    from meli.stages.train import train

    def run(architecture: str, output: Path, model: MLPParams | CNNParams | None = None,
            **overrides) -> tuple[TrainResult, Path, Path]:
        if model is None:
            model = (MLPParams(hidden_sizes=[32], dropout=0.1) if architecture == "mlp"
                     else CNNParams(filters=16, kernel_sizes=[1, 2, 3], dropout=0.1))
        bundle_dir = output / "models" / architecture
        live_dir = output / "results" / "train" / architecture
        result = train(architecture, TrainParams(**(FAST_TRAIN | overrides)), model,
                       pipeline.features, pipeline.embeddings, pipeline.prepared, bundle_dir,
                       live_dir)
        return result, bundle_dir, live_dir

    return run


@pytest.fixture(scope="session")
def mlp_bundle(pipeline, train_model) -> Path:
    """An MLP trained long enough to be useful (models/mlp of the small pipeline)."""
    _, bundle_dir, _ = train_model("mlp", pipeline.root, MLPParams(hidden_sizes=[64], dropout=0.1),
                                   epochs=15, learning_rate=0.01, patience=100)
    return bundle_dir


@pytest.fixture(scope="session")
def fasttext_bundle(pipeline) -> Path:
    """The fastText baseline of the small pipeline (models/fasttext)."""
    from meli.stages.baseline import train_baseline

    bundle_dir = pipeline.root / "models" / "fasttext"
    train_baseline(BaselineParams(epochs=20, dim=16, word_ngrams=1, buckets=1_000),
                   pipeline.prepared, bundle_dir, pipeline.root / "results/train/fasttext")
    return bundle_dir


@pytest.fixture(scope="session")
def small_repo(tmp_path_factory) -> Path:
    """A temporary git + DVC repository of this project with SMALL params in which `dvc repro`
    has run once (its outputs in the workspace and its DVC cache, `dvc.lock` not committed).
    Every test that needs a built repository copies it (`copy_repo`) before changing anything.

    Built once per test run: with several pytest-xdist workers, the first to ask builds it under
    a lock in the run's shared temporary directory and the others wait for it.
    """
    from dvc_repo import SMALL, dvc, make_repo
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()  # this run's
    if os.environ.get("PYTEST_XDIST_WORKER") is not None:
        shared = shared.parent  # a worker's is within the run's, which its workers share
    repo, done = shared / "small-repo" / "repo", shared / "small-repo.built"
    with FileLock(str(shared / "small-repo.lock")):
        if not done.exists():
            shutil.rmtree(repo.parent, ignore_errors=True)  # a worker's failed try
            repo.parent.mkdir()
            make_repo(repo, SMALL)
            dvc(repo, "repro")
            done.touch()
    return repo
