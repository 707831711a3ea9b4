"""What compacting the linear bundle costs and saves: size on disk against balanced accuracy.

    python benchmarks/linear_compact.py [--sample PATH | --prepared DIR] [--work DIR]
                                        [--stage-only]

Fits the linear model once on the real sample's training split, with the `linear` params of
this repository's params.yaml (the prepared splits are built with its `prepare` params, or read
from `--prepared`, e.g. a repository's data/prepared), then writes it as a bundle in each of
several ways and prints, for each, the bundle's size on disk and the validation and test
balanced accuracy of the bundle as `meli predict` scores it (temperatures and shares fitted on
validation for each, as the stage does):

- as fitted (float32, every weight; the form bundles had before they were compacted);
- each head alone compacted (the other as fitted): the SVM's weights pruned to a share of the
  features x categories by magnitude, the factored softmax's feature rows to a share by norm (and
  by document frequency, for comparison), in float16 or int8 (a scale per feature row);
- both compacted, in int8;
- the stage's own choice with the params as they are (`linear.max_loss`, `keep_weights`,
  `keep_rows`, `precision`), marked `<- stage`.

`--stage-only` writes only the first and the last (what compacting costs and saves with the
params as they are, in one fit).

The last column is the share of the test titles whose first category is the one the bundle as
fitted gives them.

Every choice is made on validation; the test column is printed to show what the choice costs on
titles no choice looked at, never to choose. Run it under `nice`: it fits the SVM once (a few
minutes on 2 cores) and scores the splits some forty times.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLE = ROOT.parent / "shared" / "data" / "meli-es-sample.jsonl.gz"

from meli.bundles.linear import (  # noqa: E402
    FactoredHead,
    bundle_bytes,
    compact,
    write_linear_bundle,
)
from meli.bundles.load import load_classifier  # noqa: E402
from meli.bundles.metrics import balanced_accuracy  # noqa: E402
from meli.params import load_params  # noqa: E402
from meli.training.linear import calibrate, compact_heads, fit  # noqa: E402


def prepared_splits(sample: Path, work: Path) -> Path:
    """The real sample ingested and prepared with this repository's params, under `work`."""
    from meli.stages.ingest import ingest
    from meli.stages.prepare import prepare

    params = load_params(ROOT / "params.yaml")
    prepared = work / "data" / "prepared"
    if not (prepared / "labels.json").exists():
        ingest(replace(params.data, source=str(sample.resolve())), work / "data" / "raw")
        prepare(params.prepare, work / "data" / "raw", prepared, work / "metrics" / "data.json")
    return prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=Path, default=REAL_SAMPLE)
    parser.add_argument("--prepared", type=Path, help="prepared splits to use as they are")
    parser.add_argument("--work", type=Path, help="build the splits and bundles here and keep "
                                                  "them (default: a temporary directory)")
    parser.add_argument("--stage-only", action="store_true",
                        help="only the bundle as fitted and the stage's choice")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meli-compact-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        if args.prepared is None and not args.sample.exists():
            raise SystemExit(f"{args.sample}: real sample not found "
                             f"(see ../shared/data/README.md)")
        prepared = args.prepared or prepared_splits(args.sample, work)
        run(prepared, work / "bundles", args.stage_only)


def run(prepared: Path, bundles: Path, stage_only: bool = False) -> None:
    params = load_params(ROOT / "params.yaml").linear
    labels = json.loads((prepared / "labels.json").read_text())
    normalization = json.loads((prepared / "normalization.json").read_text())
    splits = {name: pq.read_table(prepared / f"{name}.parquet")
              for name in ("train", "validation", "test")}
    started = time.perf_counter()
    fitted = fit(splits["train"].column("text").combine_chunks(),
                 splits["train"].column("label").to_numpy(), len(labels), params)
    print(f"fitted {fitted.estimator} over {fitted.features.size:,} features in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    validation = splits["validation"]
    truth = validation.column("label").to_numpy()
    matrix = fitted.features.matrix(validation.column("text").combine_chunks())
    train_matrix = fitted.features.matrix(splits["train"].column("text").combine_chunks())
    document_frequency = np.diff(train_matrix.tocsc().indptr)
    del train_matrix

    def measure(name: str, heads: list, note: str = "") -> None:
        mixture = calibrate(heads, matrix, truth, len(labels))
        directory = bundles / f"{len(rows):02d}"
        write_linear_bundle(directory, features=fitted.features, heads=mixture.heads,
                            temperatures=mixture.temperatures, shares=mixture.shares,
                            labels=labels, normalization=normalization, details={})
        classifier = load_classifier(directory)
        predicted = {split: classifier.predict(splits[split].column("title"))
                     for split in ("validation", "test")}
        figures = [balanced_accuracy(splits[split].column("label").to_numpy(), predicted[split],
                                     len(labels))
                   for split in ("validation", "test")]
        first.setdefault("test", predicted["test"])  # the bundle as fitted's
        same = float(np.mean(predicted["test"] == first["test"]))
        size = (bundle_bytes(directory) if name != "as fitted"
                else _as_fitted_bytes(fitted.heads, bundle_bytes(directory), directory))
        shutil.rmtree(directory)
        rows.append((name, size, *figures, same, note))
        print(f"{name:<58} {size / 1e6:8.1f} MB  {figures[0]:.4f}  {figures[1]:.4f}  "
              f"{100 * same:6.2f}%  {note}", flush=True)

    rows: list[tuple] = []
    first: dict[str, np.ndarray] = {}
    print(f"\n{'bundle':<58} {'on disk':>11}  {'valid.':<6}  {'test':<6}  {'same':>7}")
    heads = fitted.heads
    measure("as fitted", heads, "float32, one weight per feature and category (or rank)")
    for position, head in enumerate([] if stage_only else heads):
        others = heads[:position], heads[position + 1:]
        shares = params.keep_weights if head.layout == "sparse" else params.keep_rows
        for precision in ("float16", "int8"):
            for share in sorted(set(shares) | {1.0}, reverse=True):
                what = "weights by magnitude" if head.layout == "sparse" else "rows by norm"
                measure(f"{head.estimator}: {share:g} of its {what}, {precision}",
                        [*others[0], compact(head, share, precision), *others[1]])
        if isinstance(head, FactoredHead):
            for share in (0.8, 0.5):
                measure(f"{head.estimator}: {share:g} of its rows by document frequency, int8",
                        [*others[0], _by_frequency(head, document_frequency, share),
                         *others[1]])
    if len(heads) == 2 and not stage_only:
        for weights_share in (0.01, 0.02, 0.03):
            for rows_share in (0.5, 0.7, 0.8):
                measure(f"both: svm {weights_share:g}, softmax {rows_share:g}, int8",
                        [compact(heads[0], weights_share, "int8"),
                         compact(heads[1], rows_share, "int8")])
    chosen, _ = compact_heads(heads, matrix, truth, len(labels), params)
    measure(f"max_loss {params.max_loss:g}: kept "
            + ", ".join(f"{head.estimator} {share:g}"
                        for head, share in zip(chosen.heads, chosen.kept, strict=True)),
            chosen.heads, "<- stage")


def _as_fitted_bytes(heads: list, written: int, directory: Path) -> int:
    """The bytes of the bundle with each head as dense float32 arrays, as written before."""
    heads_bytes = sum(path.stat().st_size for path in directory.iterdir()
                      if path.name.startswith(("svm.", "softmax.")))
    dense = 0
    for head in heads:
        width = head.rank or head.num_categories
        dense += 4 * (head.size * width + head.num_categories
                      + (head.rank * head.num_categories if head.rank else 0))
    return written - heads_bytes + dense


def _by_frequency(head: FactoredHead, document_frequency: np.ndarray,
                  share: float) -> FactoredHead:
    """The factored head keeping the rows of its most frequent features (int8)."""
    count = round(share * head.size)
    chosen = np.sort(np.lexsort((np.arange(head.size), -document_frequency))[:count])
    pruned = FactoredHead(head.estimator, head.size, chosen, head.dense_rows()[chosen], None,
                          head.projection, head.intercept)
    return compact(pruned, 1.0, "int8")


if __name__ == "__main__":
    sys.exit(main())
