"""evaluate: score a model bundle on the test split, the way `meli predict` would use it.

Writes `metrics/<name>.json` (balanced accuracy, accuracy, macro F1) and, under
`results/evaluate/<name>/`, the per-class recall table and the rows of a confusion plot limited to
the categories of the most confused (true, predicted) pairs: 600 categories do not fit one plot.

Run by dvc.yaml as `python -m meli.stages.evaluate <model>` for every model, the fastText baseline
included; reads the `evaluate` section of params.yaml.
"""

from __future__ import annotations

import csv
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from meli import metrics
from meli.classify import load_classifier
from meli.command import run, stage_parser
from meli.errors import MeliError
from meli.files import read_json, write_json
from meli.layout import (
    LABELS_FILE,
    PREPARED_DIR,
    bundle_dir,
    evaluate_results_dir,
    model_metrics_path,
    split_path,
)
from meli.params import EvaluateParams, load_params

log = logging.getLogger(__name__)

RECALL_FILE = "per_class_recall.csv"
CONFUSION_FILE = "confusion.csv"


@dataclass
class EvaluateResult:
    balanced_accuracy: float
    accuracy: float
    macro_f1: float
    rows: int
    titles_per_second: float


def evaluate(params: EvaluateParams, bundle_dir: str | Path, prepared_dir: str | Path,
             metrics_path: str | Path, plots_dir: str | Path) -> EvaluateResult:
    prepared_dir, plots_dir = Path(prepared_dir), Path(plots_dir)
    classifier = load_classifier(bundle_dir, params.device, params.precision)
    labels = read_json(prepared_dir / LABELS_FILE)
    if classifier.labels != labels:
        raise MeliError(f"{bundle_dir}: its categories differ from {prepared_dir}'s; the model "
                        f"was trained on other data, rerun `dvc repro`")
    test_path = split_path(prepared_dir, "test")
    test = pq.read_table(test_path, columns=["title", "label"])
    if len(test) == 0:
        raise MeliError(f"{test_path}: the test split is empty")
    true = test.column("label").to_numpy().astype(np.int64)
    started = time.perf_counter()
    predicted = classifier.predict(test.column("title"), batch_size=params.batch_size)
    seconds = time.perf_counter() - started
    result = EvaluateResult(
        balanced_accuracy=metrics.balanced_accuracy(true, predicted, len(labels)),
        accuracy=metrics.accuracy(true, predicted),
        macro_f1=metrics.macro_f1(true, predicted, len(labels)),
        rows=len(true),
        titles_per_second=len(true) / max(seconds, 1e-9),
    )
    # Timing stays out of the metrics file: same params must give the same metrics.
    write_json(metrics_path, {
        "test": {"balanced_accuracy": round(result.balanced_accuracy, 6),
                 "accuracy": round(result.accuracy, 6),
                 "macro_f1": round(result.macro_f1, 6),
                 "rows": result.rows},
    })
    plots_dir.mkdir(parents=True, exist_ok=True)
    _write_recall(plots_dir / RECALL_FILE, true, predicted, labels)
    _write_confusion(plots_dir / CONFUSION_FILE, true, predicted, labels, params.confused_pairs)
    return result


def _write_recall(path: Path, true: np.ndarray, predicted: np.ndarray, labels: list[str]) -> None:
    recall = metrics.recall_per_class(true, predicted, len(labels))
    support = np.bincount(true, minlength=len(labels))
    order = np.lexsort((np.arange(len(labels)), recall))  # worst first; NaN (no rows) last
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["category", "recall", "support"])
        for i in order:
            if support[i]:
                writer.writerow([labels[i], f"{recall[i]:.4f}", int(support[i])])


def most_confused_pairs(true: np.ndarray, predicted: np.ndarray,
                        count: int) -> list[tuple[tuple[int, int], int]]:
    """The `count` most frequent (true, predicted) mistakes, ties broken by class ids."""
    wrong = Counter(zip(true[true != predicted].tolist(), predicted[true != predicted].tolist(),
                        strict=True))
    return sorted(wrong.items(), key=lambda item: (-item[1], item[0]))[:count]


def _write_confusion(path: Path, true: np.ndarray, predicted: np.ndarray, labels: list[str],
                     pairs: int) -> None:
    """One (actual, predicted) row per test title whose true and predicted categories are both
    among those of the most confused pairs: the input of DVC's confusion template."""
    involved = {c for (actual, guess), _ in most_confused_pairs(true, predicted, pairs)
                for c in (actual, guess)}
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["actual", "predicted"])
        for actual, guess in zip(true.tolist(), predicted.tolist(), strict=True):
            if actual in involved and guess in involved:
                writer.writerow([labels[actual], labels[guess]])


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("evaluate", __doc__)
    parser.add_argument("model", help="the bundle to score: models/<model>")
    args = parser.parse_args(argv)

    def stage() -> None:
        params = load_params(args.params)
        result = evaluate(params.evaluate, bundle_dir(args.model), PREPARED_DIR,
                          model_metrics_path(args.model), evaluate_results_dir(args.model))
        log.info("evaluate %s: test balanced accuracy %.4f, accuracy %.4f, macro F1 %.4f on %d "
                 "titles; %.0f titles/s", args.model, result.balanced_accuracy, result.accuracy,
                 result.macro_f1, result.rows, result.titles_per_second)

    return run("evaluate", stage)


if __name__ == "__main__":
    sys.exit(main())
