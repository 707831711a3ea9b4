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
from meli.bundles.linear import LinearClassifier, softmax, write_linear_bundle
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
from meli.training.linear import fit, fit_temperature, mixing_weights

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


def _split(prepared_dir: Path, name: str, columns: list[str]):
    path = split_path(prepared_dir, name)
    if not path.exists():
        raise MeliError(f"{path}: not found; run the prepare stage first")
    table = pq.read_table(path, columns=columns)
    if len(table) == 0:
        raise MeliError(f"{path}: the {name} split is empty")
    return table


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
    fitted = fit(train.column("text").combine_chunks(),
                 train.column("label").to_numpy().astype(np.int64), len(labels), params)
    truth = validation.column("label").to_numpy().astype(np.int64)
    # Temperatures and shares are fitted on validation only: the test split is never looked at.
    # Two numbers need thousands of titles, not millions: a seeded sample of them (all 485,000
    # titles of the course's file would take 3 GB of scores at 1,600 categories).
    sample = np.arange(len(validation))
    if len(sample) > CALIBRATION_ROWS:
        sample = np.sort(np.random.default_rng(0).choice(len(sample), CALIBRATION_ROWS,
                                                         replace=False))
    matrix = fitted.features.matrix(validation.column("text").take(sample).combine_chunks())
    calibration_truth = truth[sample]
    temperatures, calibrated = [], []
    for head in fitted.heads:
        values = head.scores(matrix)
        temperature, log_loss = fit_temperature(values, calibration_truth)
        temperatures.append(temperature)
        calibrated.append(softmax(values / np.float32(temperature)))
        log.info("linear: %s head, temperature %.3f, validation log loss %.4f, balanced "
                 "accuracy %.4f", head.estimator, temperature, log_loss,
                 metrics.balanced_accuracy(calibration_truth, values.argmax(axis=1),
                                           len(labels)))
        del values
    shares = mixing_weights(calibrated, calibration_truth, len(labels))
    chosen = sum(share * part[np.arange(len(sample)), calibration_truth]
                 for share, part in zip(shares, calibrated, strict=True))
    log_loss = float(-np.log(np.maximum(chosen, 1e-12)).mean())
    del calibrated
    write_linear_bundle(output_dir, features=fitted.features, heads=fitted.heads,
                        temperatures=temperatures, shares=shares, labels=labels,
                        normalization=normalization,
                        details={"linear": to_dict(params), "estimator": fitted.estimator,
                                 "validation_log_loss": log_loss})
    # Scored through the bundle just written, from the raw titles, as `meli predict` will.
    files = read_bundle(output_dir)
    classifier = LinearClassifier(files.directory, files.config, files.labels,
                                  files.normalization)
    predicted = classifier.predict(validation.column("title"))
    balanced = metrics.balanced_accuracy(truth, predicted, len(labels))
    accuracy = metrics.accuracy(truth, predicted)
    calibrate_bundle(classifier, prepared_dir)
    with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False) as live:
        live.log_params({"model": NAME, "linear": to_dict(params)})
        live.log_metric("validation/balanced_accuracy", balanced)
        live.log_metric("validation/accuracy", accuracy)
        live.summary["best"] = {"validation_balanced_accuracy": balanced,
                                "validation_accuracy": accuracy,
                                "validation_log_loss": log_loss}
        live.summary["features"] = fitted.features.size
    return LinearResult(balanced, accuracy, temperatures, shares, fitted.features.size,
                        fitted.estimator, fitted.seconds)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(NAME, __doc__)
    args = parser.parse_args(argv)

    def stage() -> None:
        params = load_params(args.params)
        with writing(bundle_dir(NAME), train_results_dir(NAME)):
            result = train_linear(params.linear, PREPARED_DIR, bundle_dir(NAME),
                                  train_results_dir(NAME))
        log.info("linear: %s over %d features fitted in %.1fs; shares %s; validation "
                 "balanced accuracy %.4f, accuracy %.4f", result.estimator, result.features,
                 result.seconds, " / ".join(f"{share:.2f}" for share in result.shares),
                 result.validation_balanced_accuracy, result.validation_accuracy)

    return run(NAME, stage)


if __name__ == "__main__":
    sys.exit(main())
