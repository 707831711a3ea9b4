"""Measurements behind the calibration and prediction sets (meli.bundles.conformal): which
score, marginal or per category, where the calibration titles come from, and what the knobs
cost `meli predict`.

    python benchmarks/conformal.py --repo DIR [--models ensemble,linear,cnn] [--seeds 20]
    python benchmarks/conformal.py --repo DIR --speed [--titles 200000] [--threads N]
    python benchmarks/conformal.py --memory [--categories 1600] [--titles 100000,300000]

`--repo` names a repository whose pipeline ran on the real sample (for instance the one
`python benchmarks/models.py --keep DIR` leaves). Everything is measured on its test split,
which no choice here looks at. Printed, as markdown tables:

1. Scores, at 0.90 and 0.95, calibrated on all validation titles (what the bundles do): the
   least ambiguous score (LAC: a category is in the set when its probability reaches a
   threshold), adaptive prediction sets (APS: categories in order until their cumulated
   probability reaches one, Romano et al. 2020) and its randomized form; coverage, mean set
   size, share of single-category sets, and categories whose test titles were all covered.
2. Marginal against class-conditional sets: one threshold, a threshold per category with the
   categories too small for one pooled (what bundles do), and a threshold per category with
   every too small category in every set (the textbook Mondrian rule).
3. Where the calibration titles come from (`--seeds` random halvings): for the
   ensemble and the linear model, whose choices on validation (temperatures, weights, shares)
   are cheap to refit, (a) choices and calibration on all validation titles (the bundles), (b)
   choices on one half, calibration on the other (held out), (c) choices and calibration on
   the same half (reuse, at the same size as b): b - c is what reusing costs, a - b what the
   halving costs. Then, for every model, its choices as its bundle made them: coverage on half
   of the test titles of sets calibrated on all validation, against sets calibrated on the
   other half of test (titles no choice was made on: the exchangeable reference).
4. `--speed`: what `meli predict --input` runs, on `--titles` titles (the sample's, repeated
   and numbered), without knobs and with `--coverage 0.95`, alternately, three times each: the
   best titles/s of each, per second of wall time and of CPU time. `--threads 1` runs
   PyTorch on one thread: on a busy machine, two threads waiting on each other make the wall
   and CPU time of a PyTorch model vary by more than the cost measured.
5. `--memory` (no repository needed): what calibrating a bundle and scoring a split with the
   sets' thresholds (evaluate) hold at most, at the challenge's 1,600 categories, for splits of
   `--titles` titles, each in a fresh process: the peak of memory allocated (tracemalloc, which
   numpy reports to) and the peak resident memory, against the size of the split's whole
   probability matrix. The model is a stand-in that returns random probabilities for any title
   (what a real one allocates for its scores of a chunk is the same matrix), so the figures are
   those of the calibration code.

The sample's splits are small (4,388 validation and test titles over 632 categories): the
probability matrices are held in memory here, which the stages never do.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from meli.bundles.calibration import CALIBRATION_SEED
from meli.bundles.conformal import ConformalScores, rank_of
from meli.bundles.load import load_classifier

COVERAGES = (0.9, 0.95)


def split(repo: Path, name: str) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(repo / "data/prepared" / f"{name}.parquet", columns=["title", "label"])
    return table.column("title").to_pylist(), table.column("label").to_numpy().astype(np.int64)


# ---- sets by score --------------------------------------------------------------------------

def lac_sets(calibration: np.ndarray, labels: np.ndarray, test: np.ndarray,
             coverage: float, per_category: str = "no") -> np.ndarray:
    """Boolean (titles, categories) sets: per_category "no", "pooled" or "textbook"."""
    rows = np.arange(len(labels))
    scores = ConformalScores.of(calibration[rows, labels], labels, calibration.shape[1])
    if per_category == "no":
        thresholds = scores.marginal(coverage)
    else:
        thresholds, own = scores.class_conditional(coverage)
        if per_category == "textbook":
            thresholds[~own] = 0.0
    return test >= thresholds


def aps_sets(calibration: np.ndarray, labels: np.ndarray, test: np.ndarray, coverage: float,
             randomized: bool, seed: int = 0) -> np.ndarray:
    """Adaptive prediction sets: the score of a title is the probability of the categories
    ranked above its true one, plus the true one's (times a uniform draw when randomized)."""
    rng = np.random.default_rng(seed)

    def cumulated(probabilities):
        order = np.argsort(-probabilities, axis=1, kind="stable")
        ranked = np.take_along_axis(probabilities, order, axis=1)
        return order, ranked, np.cumsum(ranked, axis=1)

    order, ranked, total = cumulated(calibration)
    position = np.argmax(order == labels[:, None], axis=1)
    rows = np.arange(len(labels))
    before = total[rows, position] - ranked[rows, position]
    draw = rng.random(len(labels)) if randomized else np.ones(len(labels))
    score = before + draw * ranked[rows, position]
    j = rank_of(len(score), coverage)
    quantile = np.inf if j == 0 else np.sort(score)[len(score) - j]
    order, ranked, total = cumulated(test)
    draw = rng.random(len(test))[:, None] if randomized else 1.0
    keep = (total - ranked) + draw * ranked <= quantile
    if not randomized:  # the category that crosses the quantile is in the set
        keep |= np.concatenate([np.ones((len(test), 1), bool), keep[:, :-1]], axis=1)
    sets = np.zeros_like(keep)
    np.put_along_axis(sets, order, keep, axis=1)
    return sets


def describe(sets: np.ndarray, labels: np.ndarray, coverage: float) -> dict[str, float]:
    covered = sets[np.arange(len(labels)), labels]
    sizes = sets.sum(axis=1)
    support = np.bincount(labels, minlength=sets.shape[1])
    hits = np.bincount(labels[covered], minlength=sets.shape[1])
    present = support > 0
    return {"coverage": covered.mean(), "size": sizes.mean(), "single": np.mean(sizes == 1),
            "empty": np.mean(sizes == 0),
            "categories": np.mean(hits[present] / support[present] >= coverage - 1e-9)}


# ---- refitting the choices made on validation -----------------------------------------------

def ensemble_refit(repo: Path, titles: dict[str, list[str]]):
    """A function of validation rows -> (validation, test) probabilities of the ensemble with
    temperatures and weights fitted on those rows only, as the ensemble stage fits them."""
    from meli.params import load_params
    from meli.stages.ensemble import combine, fit_temperature, select_weights, tempered

    params = load_params(repo / "params.yaml").ensemble  # the members and rounds it was built with
    members = [load_classifier(repo / "models" / name) for name in params.members]
    validation = [m.probabilities(titles["validation"]) for m in members]
    test = [m.probabilities(titles["test"]) for m in members]
    labels = np.array(titles["validation_labels"])
    rounds = params.rounds

    def fit(rows: np.ndarray):
        temperatures = [fit_temperature(part[rows], labels[rows]) for part in validation]
        parts = [tempered(part[rows], t) for part, t in zip(validation, temperatures,
                                                              strict=True)]
        counts = select_weights(parts, labels[rows], validation[0].shape[1], rounds)
        weights = [c / sum(counts) for c in counts]
        return (combine(validation, weights, temperatures), combine(test, weights, temperatures))

    return fit


def linear_refit(repo: Path, titles: dict[str, list[str]]):
    """The same for the linear model's temperatures and heads' shares."""
    import pyarrow as pa

    from meli.bundles.linear import softmax
    from meli.training.linear import fit_temperature, mixing_weights

    classifier = load_classifier(repo / "models/linear")
    labels = np.array(titles["validation_labels"])
    validation = classifier.scores(classifier.normalize(pa.array(titles["validation"])))
    test = classifier.scores(classifier.normalize(pa.array(titles["test"])))

    def fit(rows: np.ndarray):
        temperatures = [fit_temperature(part[rows], labels[rows])[0] for part in validation]
        calibrated = [softmax(part[rows] / np.float32(t)) for part, t in
                      zip(validation, temperatures, strict=True)]
        shares = mixing_weights(calibrated, labels[rows], validation[0].shape[1])

        def mix(parts):
            return sum(share * softmax(part / np.float32(t)) for part, t, share in
                       zip(parts, temperatures, shares, strict=True))

        return mix(validation), mix(test)

    return fit


# ---- the report -----------------------------------------------------------------------------

def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def figures_row(name: str, figures: dict[str, float]) -> list[str]:
    return [name, f"{figures['coverage']:.4f}", f"{figures['size']:.3f}",
            f"{figures['single']:.3f}", f"{figures['empty']:.3f}", f"{figures['categories']:.3f}"]


HEADER = ["sets", "test coverage", "mean size", "one category", "empty",
          "categories at or above nominal"]


def scores_and_per_category(repo: Path, models: list[str], titles: dict) -> None:
    valid_labels, test_labels = titles["validation_labels"], titles["test_labels"]
    for model in models:
        classifier = load_classifier(repo / "models" / model)
        validation = classifier.probabilities(titles["validation"])
        test = classifier.probabilities(titles["test"])
        accuracy = np.mean(test.argmax(axis=1) == test_labels)
        print(f"\n### {model} (test top-1 accuracy {accuracy:.4f})\n")
        rows = []
        for coverage in COVERAGES:
            for name, sets in (
                    ("LAC", lac_sets(validation, valid_labels, test, coverage)),
                    ("APS", aps_sets(validation, valid_labels, test, coverage, False)),
                    ("APS randomized", aps_sets(validation, valid_labels, test, coverage, True)),
                    ("LAC per category, small ones pooled",
                     lac_sets(validation, valid_labels, test, coverage, "pooled")),
                    ("LAC per category, small ones in every set",
                     lac_sets(validation, valid_labels, test, coverage, "textbook"))):
                rows.append(figures_row(f"{name} at {coverage}",
                                        describe(sets, test_labels, coverage)))
        print(table(HEADER, rows))


def calibration_source(repo: Path, models: list[str], titles: dict, seeds: int) -> None:
    refits = {"ensemble": ensemble_refit, "linear": linear_refit}
    labels, test_labels = titles["validation_labels"], titles["test_labels"]
    n = len(labels)
    for model in models:
        if model not in refits:
            continue
        fit = refits[model](repo, titles)
        print(f"\n### {model}: where the calibration titles come from ({seeds} halvings)\n")
        everything = np.arange(n)
        all_validation, all_test = fit(everything)
        results: dict[str, dict[float, list[tuple[float, float]]]] = {
            key: {c: [] for c in COVERAGES} for key in ("held out", "reuse")}
        for seed in range(seeds):
            order = np.random.default_rng(1000 + seed).permutation(n)
            first, second = np.sort(order[: n // 2]), np.sort(order[n // 2:])
            validation, test = fit(first)
            for coverage in COVERAGES:
                for key, rows in (("held out", second), ("reuse", first)):
                    figures = describe(lac_sets(validation[rows], labels[rows], test, coverage),
                                       test_labels, coverage)
                    results[key][coverage].append((figures["coverage"], figures["size"]))
        rows = []
        for coverage in COVERAGES:
            figures = describe(lac_sets(all_validation, labels, all_test, coverage),
                               test_labels, coverage)
            rows.append([f"(a) all validation, {coverage}", f"{figures['coverage']:.4f}", "",
                         f"{figures['size']:.3f}"])
            for key in ("held out", "reuse"):
                values = np.array(results[key][coverage])
                label = ("(b) choices on one half, calibration on the other" if key == "held out"
                         else "(c) choices and calibration on the same half")
                rows.append([f"{label}, {coverage}", f"{values[:, 0].mean():.4f}",
                             f"{values[:, 0].std():.4f}", f"{values[:, 1].mean():.3f}"])
            difference = (np.array(results["held out"][coverage])[:, 0]
                          - np.array(results["reuse"][coverage])[:, 0])
            rows.append([f"(b) - (c), {coverage}", f"{difference.mean():+.4f}",
                         f"{difference.std() / np.sqrt(seeds):.4f} (standard error)", ""])
        print(table(["calibration", "test coverage (mean)", "spread over halvings",
                     "mean size"], rows))


def against_exchangeable(repo: Path, models: list[str], titles: dict, seeds: int) -> None:
    """Every model, its choices as the bundle made them: coverage on one half of test of sets
    calibrated on all validation (the bundles) and on the other half of test (titles nothing
    was chosen on, exchangeable with the half measured: the reference a reused validation split
    is measured against; a measurement only, nothing is chosen by it)."""
    labels, test_labels = titles["validation_labels"], titles["test_labels"]
    n = len(test_labels)
    rows = []
    for model in models:
        classifier = load_classifier(repo / "models" / model)
        validation = classifier.probabilities(titles["validation"])
        test = classifier.probabilities(titles["test"])
        for coverage in COVERAGES:
            differences, reused = [], []
            for seed in range(seeds):
                order = np.random.default_rng(2000 + seed).permutation(n)
                first, second = np.sort(order[: n // 2]), np.sort(order[n // 2:])
                from_validation = describe(lac_sets(validation, labels, test[second], coverage),
                                           test_labels[second], coverage)["coverage"]
                from_test = describe(lac_sets(test[first], test_labels[first], test[second],
                                              coverage), test_labels[second],
                                     coverage)["coverage"]
                differences.append(from_validation - from_test)
                reused.append(from_validation)
            error = np.std(differences) / np.sqrt(seeds)
            rows.append([f"{model} at {coverage}", f"{np.mean(reused):.4f}",
                         f"{np.mean(reused) - np.mean(differences):.4f}",
                         f"{np.mean(differences):+.4f} ({error:.4f})"])
    print(f"\n### Calibrated on validation against calibrated on held-out test titles "
          f"({seeds} halvings of test)\n")
    print(table(["model", "coverage, validation calibration", "coverage, test-half calibration",
                 "difference (standard error)"], rows))


def speed(repo: Path, models: list[str], count: int, threads: int | None = None) -> None:
    """What `meli predict --input FILE --output FILE` runs (reading, classifying, writing the
    CSV; the model loaded once before), with and without `--coverage 0.95`, alternately, three
    times each: titles per second of wall time and of the process's CPU time (all its threads),
    which a busy machine disturbs less."""
    import time

    from meli.bundles.answers import Knobs
    from meli.bundles.calibration import load_calibration
    from meli.bundles.predict import TitleReader, write_predictions_csv

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    titles = pq.read_table(repo / "data/raw/titles.parquet", columns=["title"])
    titles = [t.replace("\n", " ") for t in titles.column("title").to_pylist()]
    on = "" if threads is None else f", PyTorch on {threads} thread{'s' * (threads > 1)}"
    print(f"\n### `meli predict --input` on {count:,} titles{on}: titles/s, best of 3 "
          f"(wall / CPU)\n")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "titles.txt"
        with source.open("w", encoding="utf-8") as out:
            for index in range(count):
                copy, position = divmod(index, len(titles))
                out.write(f"{titles[position]} {copy + 1}\n" if copy else
                          f"{titles[position]}\n")
        for model in models:
            classifier = load_classifier(repo / "models" / model)
            calibration = load_calibration(classifier)
            knobs = {"plain": Knobs(), "coverage": Knobs(coverage=0.95)}
            best = {kind: [0.0, 0.0] for kind in knobs}
            for _ in range(3):
                for kind, chosen in knobs.items():
                    wall, cpu = time.perf_counter(), time.process_time()
                    with (Path(scratch) / "out.csv").open("wb") as out:
                        written = write_predictions_csv(classifier, TitleReader(str(source)), 3,
                                                        out, False, chosen, calibration)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    best[kind] = [max(best[kind][0], written / wall),
                                  max(best[kind][1], written / cpu)]
            rows.append([model, *(f"{best[kind][0]:,.0f} / {best[kind][1]:,.0f}" for kind in knobs),
                         f"{best['coverage'][0] / best['plain'][0]:.1%} / "
                         f"{best['coverage'][1] / best['plain'][1]:.1%}"])
    print(table(["model", "plain", "--coverage 0.95", "ratio"], rows))


class RandomClassifier:
    """A stand-in model for `--memory`: title "t<i>" is of category i mod `categories`, and gets
    random float32 probabilities that favour its category."""

    def __init__(self, directory: Path, categories: int):
        self.directory = directory
        self.labels = [f"CATEGORY_{c}" for c in range(categories)]

    def probabilities(self, titles, batch_size: int = 2048) -> np.ndarray:
        titles = titles.to_pylist()
        first = int(titles[0][1:])
        rng = np.random.default_rng(first)
        logits = rng.standard_normal((len(titles), len(self.labels)), dtype=np.float32)
        rows = np.arange(len(titles))
        logits[rows, (first + rows) % len(self.labels)] += 6.0
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits


def memory_child(categories: int, titles: int) -> None:
    """One measurement, in this process: calibrate, then score with four threshold vectors."""
    import resource
    import tracemalloc

    import pyarrow as pa

    from meli.bundles.calibration import calibrate, load_calibration, score_split

    names = pa.array([f"t{i}" for i in range(titles)])
    labels = np.arange(titles, dtype=np.int64) % categories
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as scratch:
        classifier = RandomClassifier(Path(scratch), categories)
        calibrate(classifier, names, labels)
        calibration = load_calibration(classifier)
        thresholds = [calibration.thresholds(c, conditional) for c in COVERAGES
                      for conditional in (False, True)]
        score_split(classifier, names, labels, thresholds)
    _, peak = tracemalloc.get_traced_memory()
    resident = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{peak} {resident}")


def memory(categories: int, counts: list[int]) -> None:
    import subprocess
    import sys

    print(f"\n### Calibrating and scoring at {categories:,} categories: peak memory\n")
    rows = []
    for titles in counts:
        done = subprocess.run([sys.executable, __file__, "--memory-child",
                               f"{categories},{titles}"], capture_output=True, text=True,
                              check=True)
        peak, resident = (int(value) for value in done.stdout.split())
        rows.append([f"{titles:,}", f"{titles * categories * 4 / 2**30:.2f} GiB",
                     f"{peak / 2**30:.2f} GiB", f"{resident / 2**30:.2f} GiB"])
    print(table(["titles", "whole probability matrix (float32)", "peak allocated",
                 "peak resident"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--models", default="ensemble,linear,cnn")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--titles", help="--speed: how many titles (200000); --memory: split "
                                         "sizes, comma-separated (100000,300000)")
    parser.add_argument("--threads", type=int, help="--speed: PyTorch's threads (its default)")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--categories", type=int, default=1_600)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*(int(value) for value in args.memory_child.split(",")))
        return
    if args.memory:
        memory(args.categories, [int(value) for value in
                                 (args.titles or "100000,300000").split(",")])
        return
    if args.repo is None:
        parser.error("--repo is required (but for --memory)")
    models = args.models.split(",")
    if args.speed:
        speed(args.repo, models, int(args.titles or 200_000), args.threads)
        return
    validation, validation_labels = split(args.repo, "validation")
    test, test_labels = split(args.repo, "test")
    titles = {"validation": validation, "validation_labels": validation_labels,
              "test": test, "test_labels": test_labels}
    assert len(validation) <= 100_000, "the sample's splits only: matrices are held in memory"
    print(f"calibration seed {CALIBRATION_SEED}; {len(validation):,} validation and "
          f"{len(test):,} test titles")
    scores_and_per_category(args.repo, models, titles)
    calibration_source(args.repo, models, titles, args.seeds)
    against_exchangeable(args.repo, models, titles, args.seeds)


if __name__ == "__main__":
    main()
