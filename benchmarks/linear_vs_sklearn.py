"""The linear stage against scikit-learn's TfidfVectorizer + LinearSVC(C=0.5), side by side.

    python benchmarks/linear_vs_sklearn.py [--sample PATH | --prepared DIR] [--rounds 1]
                                           [--keep DIR]

Both run on the same training titles of the real sample (the prepared splits, built with this
repository's params, or read from `--prepared`), each in its own process, one after the other
(`--rounds` alternates them that many times, so that a change in the machine's load falls on
both), and the script prints each one's wall time, from the process's start to its end, and its
validation balanced accuracy (for context: the two are not the same model).

- the stage: `python -m meli.stages.linear` with this repository's params.yaml, exactly as
  `dvc repro linear` runs it: TF-IDF features, liblinear's SVM and the softmax regression,
  temperatures, shares and compaction fitted on validation, the bundle written, and its
  validation figures scored through it (and through the heads as fitted, to measure what
  compacting costs);
- scikit-learn: the textbook pipeline on the same normalized titles (the `text` column
  `prepare` wrote, which the stage reads too), with features made to match the stage's: a
  FeatureUnion of `TfidfVectorizer(analyzer="word", token_pattern=r"\\S+", ngram_range=(1, 2),
  min_df=1)` and `TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2)`, both with
  `sublinear_tf=True` and float32 (each block L2-normalized, smooth idf, as the stage's), then
  `LinearSVC(C=0.5)`, which fits liblinear's one-vs-rest on one core; then the validation
  titles are transformed and predicted.

`--keep DIR` runs in DIR and leaves the stage's bundle there (`DIR/models/linear`), to time
`meli predict --model DIR/models/linear` afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from linear_compact import REAL_SAMPLE, prepared_splits  # noqa: E402

SKLEARN = r"""
import json, sys, time
started = time.perf_counter()
import numpy as np, pyarrow.parquet as pq
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion
from sklearn.svm import LinearSVC
from meli.bundles.metrics import balanced_accuracy

prepared = sys.argv[1]
train = pq.read_table(f"{prepared}/train.parquet", columns=["text", "label"])
validation = pq.read_table(f"{prepared}/validation.parquet", columns=["text", "label"])
categories = len(json.load(open(f"{prepared}/labels.json")))
features = FeatureUnion([
    ("words", TfidfVectorizer(analyzer="word", token_pattern=r"\S+", ngram_range=(1, 2),
                              min_df=1, sublinear_tf=True, dtype=np.float32)),
    ("characters", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2,
                                   sublinear_tf=True, dtype=np.float32)),
])
fit_started = time.perf_counter()
matrix = features.fit_transform(train.column("text").to_pylist())
featurized = time.perf_counter()
svm = LinearSVC(C=0.5, random_state=0).fit(matrix, train.column("label").to_numpy())
fitted = time.perf_counter()
predicted = svm.predict(features.transform(validation.column("text").to_pylist()))
print(json.dumps({
    "features": matrix.shape[1], "featurize_seconds": featurized - fit_started,
    "fit_seconds": fitted - featurized,
    "validation_balanced_accuracy": balanced_accuracy(validation.column("label").to_numpy(),
                                                      predicted, categories)}))
"""


def timed(command: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds, result.stdout + result.stderr


def run_stage(workspace: Path) -> dict:
    seconds, output = timed([sys.executable, "-m", "meli.stages.linear"], workspace)
    summary = json.loads((workspace / "results/train/linear/metrics.json").read_text())
    return {"seconds": seconds, "validation": summary["best"]["validation_balanced_accuracy"],
            "uncompacted": summary["uncompacted"]["validation_balanced_accuracy"],
            "megabytes": summary["bundle_bytes"] / 1e6,
            "log": [line for line in output.splitlines() if "fitted (" in line]}


def run_sklearn(prepared: Path, workspace: Path) -> dict:
    seconds, output = timed([sys.executable, "-c", SKLEARN, str(prepared.resolve())], workspace)
    figures = json.loads(output.strip().splitlines()[-1])
    return {"seconds": seconds, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=Path, default=REAL_SAMPLE)
    parser.add_argument("--prepared", type=Path, help="prepared splits to use as they are")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="run here and keep the stage's bundle")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meli-vs-sklearn-") as scratch:
        workspace = Path(scratch)
        if args.keep is not None:
            if args.keep.exists():
                raise SystemExit(f"{args.keep}: already exists; name a new directory")
            workspace = args.keep
            workspace.mkdir(parents=True)
        if args.prepared is None and not args.sample.exists():
            raise SystemExit(f"{args.sample}: real sample not found "
                             f"(see ../shared/data/README.md)")
        prepared = args.prepared or prepared_splits(args.sample, workspace / "build")
        (workspace / "data").mkdir()
        os.symlink(prepared.resolve(), workspace / "data" / "prepared")
        (workspace / "params.yaml").write_text((ROOT / "params.yaml").read_text())
        print(f"load before: {os.getloadavg()[0]:.1f} (1-minute average, {os.cpu_count()} "
              f"cores)", flush=True)
        for round_number in range(1, args.rounds + 1):
            stage = run_stage(workspace)
            print(f"round {round_number}: the linear stage    {stage['seconds']:6.1f} s, "
                  f"validation balanced accuracy {stage['validation']:.4f} (as fitted "
                  f"{stage['uncompacted']:.4f}), bundle {stage['megabytes']:.1f} MB; "
                  + "; ".join(stage["log"]), flush=True)
            sklearn = run_sklearn(prepared, workspace)
            print(f"round {round_number}: scikit-learn        {sklearn['seconds']:6.1f} s, "
                  f"validation balanced accuracy {sklearn['validation_balanced_accuracy']:.4f} "
                  f"(TfidfVectorizer {sklearn['featurize_seconds']:.1f} s over "
                  f"{sklearn['features']:,} features, LinearSVC {sklearn['fit_seconds']:.1f} s)",
                  flush=True)
            ratio = stage["seconds"] / sklearn["seconds"]
            print(f"round {round_number}: the stage takes {ratio:.2f}x scikit-learn's time; "
                  f"load now {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
