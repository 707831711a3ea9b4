"""evaluate: score a model bundle on the test split, the way `meli predict` would use it.

Writes `metrics/<name>.json` (balanced accuracy, accuracy, macro F1; balanced accuracy and rows
per language and per label quality, so that Portuguese and unreliable labels show apart) and, under
`results/evaluate/<name>/`, the per-class recall table (every category), the rows of the recall
plot (the `worst_categories` of lowest recall) and the rows of a confusion plot limited to the
categories of the most confused (true, predicted) pairs: 600 categories do not fit one plot.

How far the model can be trusted, in the same file and beside it (meli.bundles.confidence,
meli.bundles.calibration):
- `calibration`: the expected calibration error over `calibration_bins` equal-width bins of the
  top probability, and the mean top probability; `reliability.csv`, a plot of accuracy against
  confidence per bin;
- `risk_coverage`: the top-1 accuracy of the 50, 80, 90, 95 and 99% most confident titles and
  the top probability that keeps each share, the share of titles (most confident first) whose
  accuracy reaches each of `target_accuracies`, and the area under the risk-coverage curve;
  `risk_coverage.csv`, the curve from 5 to 100%;
- `sets`: for each of `set_coverages`, the prediction sets of the bundle's own calibration,
  marginal and class-conditional: the share of test titles whose set holds their category,
  the mean set size, and the categories whose test titles reach that coverage.
The test split is scored a chunk at a time; only a few numbers per title are kept.

Run by dvc.yaml as `python -m meli.stages.evaluate <model>` for every model, the fastText baseline
included; reads the `evaluate` section of params.yaml.

Beside the confusion plot, `confusions.md`: the most confused pairs with the words that drove
their titles to the wrong category (meli.bundles.confusions).
"""

from __future__ import annotations

import csv
import io
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow.parquet as pq

from meli.bundles import metrics
from meli.bundles.calibration import (
    Calibration,
    Scored,
    confidence_figures,
    load_calibration,
    score_split,
    set_figures,
)
from meli.bundles.confidence import RiskCoverage, reliability, share_key
from meli.bundles.confusions import CONFUSIONS_FILE, write_confusions
from meli.bundles.load import load_classifier
from meli.errors import MeliError, run, stage_parser
from meli.files import atomic_file, read_json, write_json, writing
from meli.layout import (
    LABELS_FILE,
    PREPARED_DIR,
    bundle_dir,
    evaluate_results_dir,
    model_metrics_path,
    split_path,
)
from meli.params import EvaluateParams, load_params
from meli.progress import Progress

log = logging.getLogger(__name__)

RECALL_FILE = "per_class_recall.csv"
WORST_RECALL_FILE = "worst_recall.csv"
CONFUSION_FILE = "confusion.csv"
RELIABILITY_FILE = "reliability.csv"
RISK_COVERAGE_FILE = "risk_coverage.csv"


@dataclass
class EvaluateResult:
    balanced_accuracy: float
    accuracy: float
    macro_f1: float
    rows: int
    titles_per_second: float
    # Per group of test rows ("spanish", "reliable", ...): balanced accuracy over the categories
    # present in that group, and its rows.
    by_language: dict[str, dict[str, float | int]]
    by_label_quality: dict[str, dict[str, float | int]]
    # Calibration, risk-coverage and prediction sets: the metrics file's sections of them.
    trust: dict[str, Any] = field(default_factory=dict)


def evaluate(params: EvaluateParams, bundle_dir: str | Path, prepared_dir: str | Path,
             metrics_path: str | Path, plots_dir: str | Path) -> EvaluateResult:
    prepared_dir, plots_dir = Path(prepared_dir), Path(plots_dir)
    classifier = load_classifier(bundle_dir, params.device, params.precision)
    labels = read_json(prepared_dir / LABELS_FILE)
    if classifier.labels != labels:
        raise MeliError(f"{bundle_dir}: its categories differ from {prepared_dir}'s; the model "
                        f"was trained on other data, rerun `dvc repro`")
    test_path = split_path(prepared_dir, "test")
    test = pq.read_table(test_path, columns=["title", "label", "language", "label_quality"])
    if len(test) == 0:
        raise MeliError(f"{test_path}: the test split is empty")
    true = test.column("label").to_numpy().astype(np.int64)
    calibration = load_calibration(classifier)
    if calibration is None:
        raise MeliError(f"{bundle_dir}: the bundle carries no calibration (it was written "
                        f"before bundles had one); rebuild it with `dvc repro`")
    sets = [(coverage, class_conditional, calibration.thresholds(coverage, class_conditional))
            for coverage in params.set_coverages for class_conditional in (False, True)]
    log.info("evaluate %s: %s test titles, %s categories", classifier.name, f"{len(test):,}",
             f"{len(labels):,}")
    started = time.perf_counter()
    # A thread writes the progress lines: an ensemble scores hundreds of thousands of titles
    # with every member for minutes, and one chunk may outlast the interval between two lines.
    with Progress(f"evaluate {classifier.name}: scoring the test split", len(test), "titles",
                  ticking=True) as progress:
        scored = score_split(classifier, test.column("title"), true,
                             [thresholds for _, _, thresholds in sets], params.batch_size,
                             progress=progress.update)
    seconds = time.perf_counter() - started
    predicted = scored.predicted
    result = EvaluateResult(
        balanced_accuracy=metrics.balanced_accuracy(true, predicted, len(labels)),
        accuracy=metrics.accuracy(true, predicted),
        macro_f1=metrics.macro_f1(true, predicted, len(labels)),
        rows=len(true),
        titles_per_second=len(true) / max(seconds, 1e-9),
        by_language=by_group(test.column("language"), true, predicted, len(labels)),
        by_label_quality=by_group(test.column("label_quality"), true, predicted, len(labels)),
    )
    figures = trust_figures(params, scored, true, len(labels), calibration, sets)
    result.trust = figures
    # Timing stays out of the metrics file: same params must give the same metrics.
    write_json(metrics_path, {
        "test": {"balanced_accuracy": round(result.balanced_accuracy, 6),
                 "accuracy": round(result.accuracy, 6),
                 "macro_f1": round(result.macro_f1, 6),
                 "rows": result.rows,
                 "by_language": result.by_language,
                 "by_label_quality": result.by_label_quality,
                 **figures},
    })
    plots_dir.mkdir(parents=True, exist_ok=True)
    _write_recall(plots_dir, true, predicted, labels, params.worst_categories)
    write_confusions(plots_dir / CONFUSIONS_FILE, classifier, test.column("title").to_pylist(),
                     true, predicted, params.confused_pairs, Path(bundle_dir).name)
    _write_confusion(plots_dir / CONFUSION_FILE, true, predicted, labels, params.confused_pairs)
    _write_reliability(plots_dir / RELIABILITY_FILE, scored, params.calibration_bins)
    _write_rows(plots_dir / RISK_COVERAGE_FILE, ["coverage", "accuracy", "min_confidence"],
                RiskCoverage.of(scored.confidence, scored.correct).curve())
    return result


# ---- how far the model can be trusted ------------------------------------------------------

def trust_figures(params: EvaluateParams, scored: Scored, true: np.ndarray, num_classes: int,
                  calibration: Calibration,
                  sets: list[tuple[float, bool, np.ndarray]]) -> dict[str, Any]:
    """Calibration, risk-coverage and the prediction sets on test: the metrics file's
    `calibration`, `risk_coverage` and `sets` sections."""
    confidence, risk_coverage = confidence_figures(scored, params.calibration_bins,
                                                   tuple(params.target_accuracies))
    figures: dict[str, Any] = {"calibration": confidence, "risk_coverage": risk_coverage,
                               "sets": {}}
    for column, (coverage, class_conditional, thresholds) in enumerate(sets):
        entry = set_figures(scored.true_probability >= thresholds[true],
                            scored.set_sizes[:, column], true, num_classes, coverage)
        if class_conditional:
            entry["categories_own_threshold"] = int(
                calibration.scores.class_conditional(coverage)[1].sum())
        figures["sets"].setdefault(share_key(coverage), {})[
            "class_conditional" if class_conditional else "marginal"] = entry
    return figures


def _write_reliability(path: Path, scored: Scored, bins: int) -> None:
    _, rows = reliability(scored.confidence, scored.correct, bins)
    _write_rows(path, ["confidence", "accuracy", "titles", "bin"],
                [{"confidence": round(row.confidence, 6), "accuracy": round(row.accuracy, 6),
                  "titles": row.titles, "bin": f"{row.lower:.3f}-{row.upper:.3f}"}
                 for row in rows])


def _write_rows(path: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    with _atomic_text(path) as out:
        writer = csv.DictWriter(out, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def by_group(groups, true: np.ndarray, predicted: np.ndarray,
             num_classes: int) -> dict[str, dict[str, float | int]]:
    """Balanced accuracy (rounded like the overall figure) and rows of each group of rows."""
    names = np.asarray(groups.to_pylist() if hasattr(groups, "to_pylist") else groups,
                       dtype=object)
    figures = {}
    for name in sorted({str(value) for value in names}):
        chosen = names.astype(str) == name
        figures[name] = {
            "balanced_accuracy": round(metrics.balanced_accuracy(true[chosen], predicted[chosen],
                                                                 num_classes), 6),
            "rows": int(chosen.sum()),
        }
    return figures


def _write_recall(directory: Path, true: np.ndarray, predicted: np.ndarray, labels: list[str],
                  worst: int) -> None:
    """Recall and test support of every category present, worst first: all of them in
    RECALL_FILE, the `worst` first in WORST_RECALL_FILE (the plot's)."""
    recall = metrics.recall_per_class(true, predicted, len(labels))
    support = np.bincount(true, minlength=len(labels))
    order = np.lexsort((np.arange(len(labels)), recall))  # worst first; NaN (no rows) last
    rows = [[labels[i], f"{recall[i]:.4f}", int(support[i])] for i in order if support[i]]
    for name, chosen in ((RECALL_FILE, rows), (WORST_RECALL_FILE, rows[:worst])):
        with _atomic_text(directory / name) as out:
            writer = csv.writer(out)
            writer.writerow(["category", "recall", "support"])
            writer.writerows(chosen)


@contextmanager
def _atomic_text(path: Path) -> Iterator[IO[str]]:
    """A text file for csv.writer, renamed into place only once complete."""
    with atomic_file(path) as raw:
        out = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        yield out
        out.flush()
        out.detach()  # atomic_file closes the file itself


def most_confused_pairs(true: np.ndarray, predicted: np.ndarray,
                        count: int) -> list[tuple[tuple[int, int], int]]:
    """The `count` most frequent (true, predicted) mistakes, ties broken by class ids."""
    wrong = true != predicted
    if not wrong.any():
        return []
    width = int(max(true.max(), predicted.max())) + 1
    pairs, counts = np.unique(true[wrong].astype(np.int64) * width + predicted[wrong],
                              return_counts=True)
    # np.unique sorts the pairs by (true, predicted): a stable sort by count keeps that order.
    order = np.argsort(-counts, kind="stable")[:count]
    return [((int(pairs[i] // width), int(pairs[i] % width)), int(counts[i])) for i in order]


def _write_confusion(path: Path, true: np.ndarray, predicted: np.ndarray, labels: list[str],
                     pairs: int) -> None:
    """One (actual, predicted) row per test title whose true and predicted categories are both
    among those of the most confused pairs: the input of DVC's confusion template."""
    involved = np.array(sorted({c for (actual, guess), _ in
                                most_confused_pairs(true, predicted, pairs)
                                for c in (actual, guess)}), dtype=np.int64)
    chosen = np.isin(true, involved) & np.isin(predicted, involved)
    names = np.array(labels, dtype=object)
    with _atomic_text(path) as out:
        writer = csv.writer(out)
        writer.writerow(["actual", "predicted"])
        writer.writerows(zip(names[true[chosen]], names[predicted[chosen]], strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("evaluate", __doc__)
    parser.add_argument("model", help="the bundle to score: models/<model>")
    args = parser.parse_args(argv)

    def stage() -> None:
        params = load_params(args.params)
        with writing(model_metrics_path(args.model), evaluate_results_dir(args.model)):
            result = evaluate(params.evaluate, bundle_dir(args.model), PREPARED_DIR,
                              model_metrics_path(args.model), evaluate_results_dir(args.model))
        log.info("evaluate %s: test balanced accuracy %.4f, accuracy %.4f, macro F1 %.4f on %d "
                 "titles; %.0f titles/s", args.model, result.balanced_accuracy, result.accuracy,
                 result.macro_f1, result.rows, result.titles_per_second)
        trust = result.trust
        log.info("evaluate %s: expected calibration error %.4f (%d bins); accuracy %.4f on the "
                 "90%% most confident titles; sets %s", args.model,
                 trust["calibration"]["expected_calibration_error"],
                 trust["calibration"]["bins"],
                 trust["risk_coverage"]["accuracy_at_coverage"]["at_90"],
                 "; ".join(f"{level}: coverage {sets['marginal']['coverage']:.4f}, "
                           f"{sets['marginal']['mean_set_size']:.2f} categories"
                           for level, sets in trust["sets"].items()))
        for what, groups in (("language", result.by_language),
                             ("label quality", result.by_label_quality)):
            log.info("evaluate %s: balanced accuracy by %s: %s", args.model, what,
                     ", ".join(f"{name} {figures['balanced_accuracy']:.4f} "
                               f"({figures['rows']} titles)" for name, figures in groups.items()))

    return run("evaluate", stage)


if __name__ == "__main__":
    sys.exit(main())
