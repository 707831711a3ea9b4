"""The whole pipeline on the real MeLi sample with the default params: time, accuracy, throughput.

    python benchmarks/models.py [--sample PATH] [--keep DIR]

Builds a temporary git + DVC repository of this project with `data.source` pointing at the real
sample, runs every stage with `dvc repro -s <stage>` in pipeline order (timing each), then prints
the validation and test balanced accuracy of every model (MLP, CNN, RNN, the fastText baseline,
the TF-IDF linear model and the ensemble), each PyTorch model's training throughput, each
bundle's size on disk (its files' bytes in MB of 2^20, as `du -sh` counts them), and prediction
throughput through the same code as `meli predict` (titles normalized, featurized, classified,
top 3 chosen). Targets (issue 18): the linear model above the CNN on validation, the ensemble
>= 0.952 on test, the whole pipeline <= 6 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from dvc_repo import REAL_SAMPLE, dvc, make_repo  # noqa: E402

from meli.bundles.load import load_classifier  # noqa: E402

STAGES = ("ingest", "prepare", "featurize", "embeddings", "train@mlp", "train@cnn", "train@rnn",
          "baseline", "linear", "ensemble", "evaluate@mlp", "evaluate@cnn", "evaluate@rnn",
          "evaluate@fasttext", "evaluate@linear", "evaluate@ensemble")
MODELS = ("mlp", "cnn", "rnn", "fasttext", "linear", "ensemble")


def prediction_speed(repo: Path, model: str, titles: list[str]) -> float:
    classifier = load_classifier(repo / "models" / model)
    classifier.top_k(titles[:1000], 3)  # warm up
    started = time.perf_counter()
    classifier.top_k(titles, 3)
    return len(titles) / (time.perf_counter() - started)


def size_mb(bundle: Path) -> float:
    return sum(path.stat().st_size for path in bundle.rglob("*") if path.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=Path, default=REAL_SAMPLE)
    parser.add_argument("--keep", type=Path, help="build the repository here and keep it")
    args = parser.parse_args()
    if not args.sample.exists():
        raise SystemExit(f"{args.sample}: real sample not found (see ../shared/data/README.md)")
    with tempfile.TemporaryDirectory(prefix="meli-models-") as scratch:
        repo = make_repo(args.keep or Path(scratch) / "repo",
                         {"data": {"source": str(args.sample.resolve())}})
        seconds: dict[str, float] = {}
        throughput: dict[str, float] = {}
        started = time.perf_counter()
        for stage in STAGES:
            stage_started = time.perf_counter()
            result = dvc(repo, "repro", "-s", stage)
            seconds[stage] = time.perf_counter() - stage_started
            found = re.search(r"([0-9]+) titles/s while training", result.stderr + result.stdout)
            if found:
                throughput[stage.split("@")[1]] = float(found.group(1))
            print(f"{stage:<18} {seconds[stage]:7.1f} s", flush=True)
        total = time.perf_counter() - started
        print(f"{'whole pipeline':<18} {total:7.1f} s (target <= 360 s)")

        titles = pq.read_table(repo / "data/raw/titles.parquet", columns=["title"])
        titles = titles.column("title").to_pylist()
        print(f"\n{'model':<9} {'validation':>10} {'test':>8} {'train titles/s':>15} "
              f"{'predict titles/s':>17} {'size MB':>8}")
        test, validation = {}, {}
        for model in MODELS:
            summary = json.loads((repo / f"results/train/{model}/metrics.json").read_text())
            metrics = json.loads((repo / f"metrics/{model}.json").read_text())
            test[model] = metrics["test"]["balanced_accuracy"]
            validation[model] = summary["best"]["validation_balanced_accuracy"]
            speed = prediction_speed(repo, model, titles)
            trained = f"{throughput[model]:,.0f}" if model in throughput else "-"
            print(f"{model:<9} {summary['best']['validation_balanced_accuracy']:>10.4f} "
                  f"{test[model]:>8.4f} {trained:>15} {speed:>17,.0f} "
                  f"{size_mb(repo / 'models' / model):>8,.1f}")
        weights = json.loads((repo / "results/train/ensemble/metrics.json").read_text())
        print(f"\nensemble test {test['ensemble']:.4f} (target >= 0.952), weights "
              + ", ".join(f"{name} {weight:.2f}" for name, weight in weights["weights"].items()))
        print(f"linear validation {validation['linear']:.4f} against the CNN's "
              f"{validation['cnn']:.4f} (target: above)")


if __name__ == "__main__":
    main()
