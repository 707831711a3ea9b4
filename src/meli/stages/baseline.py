"""baseline: fastText's supervised classifier on the same training split (settings: see README).

It reads the same normalized titles as the PyTorch models, is bundled the same way
(`models/fasttext/`) and logs its validation figures with dvclive like them, so `dvc exp show`
and `meli leaderboard` compare the three side by side.

Run by dvc.yaml as `python -m meli.stages.baseline`; reads the `baseline` section of params.yaml.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from meli.bundles import bundle, metrics
from meli.bundles.calibration import calibrate_bundle
from meli.bundles.fasttext import FastTextClassifier
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
from meli.params import BaselineParams, load_params, to_dict
from meli.training import fasttext as fasttext_training

log = logging.getLogger(__name__)

@dataclass
class BaselineResult:
    validation_balanced_accuracy: float
    validation_accuracy: float
    seconds: float


def train_baseline(params: BaselineParams, prepared_dir: str | Path, output_dir: str | Path,
                   live_dir: str | Path) -> BaselineResult:
    from dvclive import Live

    prepared_dir, output_dir = Path(prepared_dir), Path(output_dir)
    train_path = split_path(prepared_dir, "train")
    if not train_path.exists():
        raise MeliError(f"{train_path}: not found; run the prepare stage first")
    labels = read_json(prepared_dir / LABELS_FILE)
    normalization = read_json(prepared_dir / NORMALIZATION_FILE)
    scratch = output_dir.parent / f".{output_dir.name}.corpus.txt"
    # models/ itself may not exist yet: the baseline needs nothing of the stages writing there.
    scratch.parent.mkdir(parents=True, exist_ok=True)
    log.info("baseline: fastText supervised (%s loss), %d epochs on %d thread(s), %d "
             "categories", params.loss, params.epochs,
             fasttext_training.thread_count(params.threads), len(labels))
    started = time.perf_counter()
    try:
        fasttext_training.write_corpus(train_path, scratch, labelled=True)
        model = fasttext_training.train("supervised", scratch, {
            "epoch": params.epochs, "lr": params.learning_rate, "dim": params.dim,
            "wordNgrams": params.word_ngrams, "minn": params.min_ngram,
            "maxn": params.max_ngram, "minCount": params.min_count, "bucket": params.buckets,
            "loss": params.loss, "thread": params.threads, "seed": params.seed,
        }, "the training titles", "baseline.learning_rate")
    finally:
        scratch.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    bundle.write_fasttext_bundle(output_dir, model=model, labels=labels,
                                 normalization=normalization,
                                 details={"baseline": to_dict(params)})
    # Scored through the bundle just written, exactly as `meli predict` will use it.
    files = bundle.read_bundle(output_dir)
    classifier = FastTextClassifier(files.directory, files.config, files.labels,
                                    files.normalization)
    validation = pq.read_table(split_path(prepared_dir, "validation"),
                               columns=["title", "label"])
    true = validation.column("label").to_numpy().astype(np.int64)
    predicted = classifier.predict(validation.column("title"))
    balanced = metrics.balanced_accuracy(true, predicted, len(labels))
    accuracy = metrics.accuracy(true, predicted)
    calibrate_bundle(classifier, prepared_dir)
    with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False) as live:
        live.log_params({"model": "fasttext", "baseline": to_dict(params)})
        live.log_metric("validation/balanced_accuracy", balanced)
        live.log_metric("validation/accuracy", accuracy)
        live.summary["best"] = {"epoch": params.epochs,
                                "validation_balanced_accuracy": balanced,
                                "validation_accuracy": accuracy}
    return BaselineResult(balanced, accuracy, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("baseline", __doc__)
    args = parser.parse_args(argv)

    def stage() -> None:
        params = load_params(args.params)
        with writing(bundle_dir("fasttext"), train_results_dir("fasttext")):
            result = train_baseline(params.baseline, PREPARED_DIR, bundle_dir("fasttext"),
                                    train_results_dir("fasttext"))
        log.info("baseline fasttext: validation balanced accuracy %.4f, accuracy %.4f (%.1fs)",
                 result.validation_balanced_accuracy, result.validation_accuracy,
                 result.seconds)

    return run("baseline", stage)


if __name__ == "__main__":
    sys.exit(main())
