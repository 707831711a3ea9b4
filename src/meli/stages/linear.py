"""linear: TF-IDF word and character n-grams with a linear classifier, the field's first model.

It reads the same normalized titles as every other model, fits the n-gram vocabularies and
their idf on the training split (meli.data.tfidf), the weights of liblinear's SVM and/or of a
streamed softmax regression (meli.training.linear), then, on the validation split only, one
temperature per head, so that its probabilities are calibrated for the ensemble, and the two
heads' shares of the probabilities (best validation balanced accuracy, as the ensemble's).
The bundle (`models/linear/`) is plain arrays and JSON; its validation figures are logged with
dvclive like the other models'.

Run by dvc.yaml as `python -m meli.stages.linear`; reads the `linear` section of params.yaml.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from meli.bundles import metrics
from meli.bundles.bundle import read_bundle
from meli.bundles.calibration import calibrate_bundle
from meli.bundles.linear import (
    ESTIMATORS,
    Head,
    LinearClassifier,
    bundle_bytes,
    write_linear_bundle,
)
from meli.data.tfidf import TfidfFeatures, chunks
from meli.errors import MeliError, run, stage_parser
from meli.files import read_json, writing
from meli.layout import (
    LABELS_FILE,
    NORMALIZATION_FILE,
    PREPARED_DIR,
    bundle_dir,
    split_path,
    train_results_dir,
)
from meli.params import LinearParams, load_params, to_dict
from meli.training.linear import Mixture, compact_heads, estimators, fit

log = logging.getLogger(__name__)

NAME = "linear"
CALIBRATION_ROWS = 50_000  # validation titles the temperatures and shares are fitted on


@dataclass
class LinearResult:
    validation_balanced_accuracy: float
    validation_accuracy: float
    temperatures: list[float]
    shares: list[float]
    features: int
    estimator: str
    seconds: float
    # The same figures of the heads as fitted, before `compact`, calibrated the same way.
    uncompacted_balanced_accuracy: float
    uncompacted_accuracy: float
    bundle_bytes: int
    uncompacted_bytes: int  # the heads as float32 arrays, one weight per feature and category


def _split(prepared_dir: Path, name: str, columns: list[str]):
    path = split_path(prepared_dir, name)
    if not path.exists():
        raise MeliError(f"{path}: not found; run the prepare stage first")
    table = pq.read_table(path, columns=columns)
    if len(table) == 0:
        raise MeliError(f"{path}: the {name} split is empty")
    return table


def _predict(mixture: Mixture, features: TfidfFeatures, texts) -> np.ndarray:
    """The classes the heads, calibrated, choose for normalized texts, a chunk at a time."""
    return np.concatenate([mixture.probabilities(features.matrix(chunk)).argmax(axis=1)
                           for chunk in chunks(texts, CALIBRATION_ROWS)])


def _dense_bytes(head: Head) -> int:
    """A head's bytes as float32 arrays of one weight per feature and category (or per feature
    and rank, and rank and category), as bundles stored it before `compact`."""
    if head.rank:
        return 4 * (head.size * head.rank + head.rank * head.num_categories
                    + head.num_categories)
    return 4 * (head.size * head.num_categories + head.num_categories)


def train_linear(params: LinearParams, prepared_dir: str | Path, output_dir: str | Path,
                 live_dir: str | Path) -> LinearResult:
    from dvclive import Live

    prepared_dir = Path(prepared_dir)
    # The raw titles of the training split are not needed: on millions of rows they would
    # double the table held while fitting.
    train = _split(prepared_dir, "train", ["text", "label"])
    validation = _split(prepared_dir, "validation", ["title", "text", "label"])
    labels = read_json(prepared_dir / LABELS_FILE)
    normalization = read_json(prepared_dir / NORMALIZATION_FILE)
    log.info("linear: %s training titles, %s validation, %d categories; %s", f"{len(train):,}",
             f"{len(validation):,}", len(labels),
             " and ".join(f"the {name} head" for name in estimators(params, len(train))))
    fitted = fit(train.column("text").combine_chunks(),
                 train.column("label").to_numpy().astype(np.int64), len(labels), params)
    del train
    truth = validation.column("label").to_numpy().astype(np.int64)
    texts = validation.column("text").combine_chunks()
    # Temperatures and shares are fitted on validation only: the test split is never looked at.
    # Two numbers need thousands of titles, not millions: a seeded sample of them (all 485,000
    # titles of the course's file would take 3 GB of scores at 1,600 categories).
    sample = np.arange(len(validation))
    if len(sample) > CALIBRATION_ROWS:
        sample = np.sort(np.random.default_rng(0).choice(len(sample), CALIBRATION_ROWS,
                                                         replace=False))
    matrix = fitted.features.matrix(texts.take(sample))
    calibration_truth = truth[sample]
    compacted, fitted_mixture = compact_heads(fitted.heads, matrix, calibration_truth,
                                              len(labels), params)
    # What compacting costs, measured in the same run: the heads as fitted, calibrated alike.
    uncompacted = _predict(fitted_mixture, fitted.features, texts)
    uncompacted_bytes = sum(map(_dense_bytes, fitted.heads))
    estimator = fitted.estimator
    # The heads as fitted are the largest arrays: freed before the bundle is written and read.
    fitted.heads.clear()
    del fitted_mixture, matrix
    write_linear_bundle(output_dir, features=fitted.features, heads=compacted.heads,
                        temperatures=compacted.temperatures, shares=compacted.shares,
                        labels=labels, normalization=normalization,
                        details={"linear": to_dict(params), "estimator": estimator,
                                 "kept": compacted.kept,
                                 "validation_log_loss": compacted.log_loss})
    del compacted.heads
    size = bundle_bytes(output_dir)
    uncompacted_bytes += size - sum(path.stat().st_size for path in Path(output_dir).iterdir()
                                    if path.name.split(".")[0] in ESTIMATORS)
    # Scored through the bundle just written, from the raw titles, as `meli predict` will.
    files = read_bundle(output_dir)
    classifier = LinearClassifier(files.directory, files.config, files.labels,
                                  files.normalization)
    predicted = classifier.predict(validation.column("title"))
    balanced = metrics.balanced_accuracy(truth, predicted, len(labels))
    accuracy = metrics.accuracy(truth, predicted)
    uncompacted_balanced = metrics.balanced_accuracy(truth, uncompacted, len(labels))
    uncompacted_accuracy = metrics.accuracy(truth, uncompacted)
    calibrate_bundle(classifier, prepared_dir)
    with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False) as live:
        live.log_params({"model": NAME, "linear": to_dict(params)})
        live.log_metric("validation/balanced_accuracy", balanced)
        live.log_metric("validation/accuracy", accuracy)
        live.summary["best"] = {"validation_balanced_accuracy": balanced,
                                "validation_accuracy": accuracy,
                                "validation_log_loss": compacted.log_loss}
        live.summary["uncompacted"] = {"validation_balanced_accuracy": uncompacted_balanced,
                                       "validation_accuracy": uncompacted_accuracy,
                                       "bytes": uncompacted_bytes}
        live.summary["bundle_bytes"] = size
        live.summary["kept"] = dict(zip(estimator.split("+"), compacted.kept, strict=True))
        live.summary["features"] = fitted.features.size
    return LinearResult(balanced, accuracy, compacted.temperatures, compacted.shares,
                        fitted.features.size, estimator, fitted.seconds,
                        uncompacted_balanced, uncompacted_accuracy, size, uncompacted_bytes)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(NAME, __doc__)
    args = parser.parse_args(argv)

    def stage() -> None:
        params = load_params(args.params)
        with writing(bundle_dir(NAME), train_results_dir(NAME)):
            result = train_linear(params.linear, PREPARED_DIR, bundle_dir(NAME),
                                  train_results_dir(NAME))
        log.info("linear: %s over %d features fitted in %.1fs; shares %s; validation "
                 "balanced accuracy %.4f, accuracy %.4f (as fitted, before compacting: %.4f, "
                 "%.4f); bundle %.1f MB (as fitted, float32: %.1f MB)", result.estimator,
                 result.features, result.seconds,
                 " / ".join(f"{share:.2f}" for share in result.shares),
                 result.validation_balanced_accuracy, result.validation_accuracy,
                 result.uncompacted_balanced_accuracy, result.uncompacted_accuracy,
                 result.bundle_bytes / 1e6, result.uncompacted_bytes / 1e6)

    return run(NAME, stage)


if __name__ == "__main__":
    sys.exit(main())
