"""ensemble: combine the trained models' probabilities, with weights chosen on validation.

For each member (`ensemble.members`: registered models, fastText and the linear model) the stage
scores the validation titles through the member's own bundle, as `meli predict` would. It then
fits, on validation only:
- a temperature per member (`ensemble.temperature`), the one that minimizes the member's
  validation log loss, so that over- and under-confident members average fairly;
- weights, by greedy ensemble selection with replacement: starting from the best single
  member, up to `ensemble.rounds` times add the member whose extra share most raises validation
  balanced accuracy (lower log loss breaks ties), and keep the best mixture seen. Weights are
  the shares; a member never picked is left out. On validation the ensemble is therefore never
  worse than its best member.
The test split is never looked at. The result is a bundle in `models/ensemble/` that
`meli predict` and `evaluate@ensemble` load like any other, and
`results/train/ensemble/metrics.json`.

Run by dvc.yaml as `python -m meli.stages.ensemble`; reads the `ensemble` section of params.yaml.
"""

from __future__ import annotations

import filecmp
import logging
import math
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from meli.bundles import metrics
from meli.bundles.bundle import (
    CONFIG_FILE,
    ENSEMBLE_ARCHITECTURE,
    FASTTEXT_ARCHITECTURE,
    FORMAT_VERSION,
    LINEAR_ARCHITECTURE,
    SHAREABLE_FILES,
    read_bundle,
)
from meli.bundles.calibration import (
    CALIBRATION_FILE,
    COUNTS_FILE,
    TRUE_PROBABILITIES_FILE,
    calibrate_bundle,
)
from meli.bundles.ensemble import MEMBERS_DIR, combine, tempered
from meli.bundles.load import load_classifier
from meli.errors import MeliError, run, stage_parser
from meli.files import atomic_directory, read_json, write_json
from meli.layout import (
    LABELS_FILE,
    NORMALIZATION_FILE,
    PREPARED_DIR,
    bundle_dir,
    split_path,
    train_results_dir,
)
from meli.models import names
from meli.params import EnsembleParams, TextParams, load_params
from meli.progress import Progress

log = logging.getLogger(__name__)

MEMBER_CALIBRATION_FILES = (CALIBRATION_FILE, TRUE_PROBABILITIES_FILE, COUNTS_FILE)

TEMPERATURES = np.exp(np.linspace(math.log(0.25), math.log(4.0), 41))


@dataclass
class EnsembleResult:
    weights: dict[str, float]
    temperatures: dict[str, float]
    validation_balanced_accuracy: float
    validation_accuracy: float
    best_member: str
    best_member_balanced_accuracy: float


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.maximum(probabilities[np.arange(len(labels)), labels],
                                    1e-12)).mean())


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature, on a log grid from 1/4 to 4, of least validation log loss.

    The loss at T is that of softmax(log p / T), the tempered probabilities (`tempered`),
    floored at 1e-12 as `log_loss` floors them; it is computed from log p, shifted once by each
    row's maximum, with one pass of exp a temperature into a reused buffer: building the
    tempered matrix for each of the 41 temperatures took minutes at 1,600 categories.
    """
    shifted = np.log(np.maximum(probabilities, 1e-12))
    shifted -= shifted.max(axis=1, keepdims=True)  # at most 0: exp cannot overflow
    true = shifted[np.arange(len(labels)), labels].astype(np.float64)
    buffer = np.empty_like(shifted)
    losses = []
    for t in TEMPERATURES:
        np.multiply(shifted, np.float32(1 / t), out=buffer)
        np.exp(buffer, out=buffer)
        normalizer = np.log(buffer.sum(axis=1, dtype=np.float64))
        losses.append(float(np.minimum(normalizer - true / t, -np.log(1e-12)).mean()))
    return float(TEMPERATURES[int(np.argmin(losses))])


def select_weights(parts: list[np.ndarray], labels: np.ndarray, num_classes: int,
                   rounds: int) -> list[int]:
    """How many of `rounds` shares each member gets (greedy selection with replacement).

    A mixture's log loss needs only each title's true-class share and its row's total, both
    sums of the members' own: per candidate, one addition into a reused buffer and an argmax
    over the full matrix, no normalized copy of it.
    """
    rows = np.arange(len(labels))
    true = [part[rows, labels].astype(np.float64) for part in parts]
    sums = [part.sum(axis=1, dtype=np.float64) for part in parts]

    def score(mixture: np.ndarray, true_share: np.ndarray, total: np.ndarray
              ) -> tuple[float, float]:
        predicted = mixture.argmax(axis=1)
        # A row of zeros (fastText knows no word of the title) gives the true class nothing.
        share = np.divide(true_share, total, out=np.zeros_like(total), where=total > 0)
        loss = -np.log(np.maximum(share, 1e-12)).mean()
        return metrics.balanced_accuracy(labels, predicted, num_classes), -float(loss)

    singles = [score(part, true[i], sums[i]) for i, part in enumerate(parts)]
    counts = [0] * len(parts)
    first = max(range(len(parts)), key=lambda i: singles[i])
    counts[first] = 1
    total, total_true, total_sum = parts[first].copy(), true[first].copy(), sums[first].copy()
    buffer = np.empty_like(total)
    best, best_counts = max(singles), list(counts)
    with Progress("ensemble: greedy selection", rounds - 1, "rounds", ticking=True) as progress:
        for round_ in range(rounds - 1):
            candidates = []
            for i, part in enumerate(parts):
                np.add(total, part, out=buffer)
                candidates.append((score(buffer, total_true + true[i], total_sum + sums[i]),
                                   -i))
            (value, negative_index) = max(candidates)
            counts[-negative_index] += 1
            total += parts[-negative_index]
            total_true += true[-negative_index]
            total_sum += sums[-negative_index]
            if value > best:  # the best mixture seen wins, never a worse later one
                best, best_counts = value, list(counts)
            progress.update(round_ + 1)
    return best_counts


def prepared_normalization(prepared_dir: Path) -> TextParams:
    return TextParams(**read_json(prepared_dir / NORMALIZATION_FILE))


def build_ensemble(params: EnsembleParams, prepared_dir: Path, output_dir: Path,
                   metrics_path: Path) -> EnsembleResult:
    labels = read_json(prepared_dir / LABELS_FILE)
    validation_path = split_path(prepared_dir, "validation")
    if not validation_path.exists():
        raise MeliError(f"{validation_path}: not found; run the prepare stage first")
    validation = pq.read_table(validation_path, columns=["title", "text", "label"])
    if len(validation) == 0:
        raise MeliError(f"{validation_path}: the validation split is empty; an ensemble is "
                        f"chosen on it")
    if len(validation) > params.max_rows:
        # A seeded sample of rows: the weights need thousands of titles, not millions.
        rows = np.sort(np.random.default_rng(0).choice(len(validation), params.max_rows,
                                                       replace=False))
        validation = validation.take(rows)
    truth = validation.column("label").to_numpy().astype(np.int64)
    # prepare stored each title normalized: members that normalize alike score that text.
    normalization = prepared_normalization(prepared_dir)
    known = (*names(), FASTTEXT_ARCHITECTURE, LINEAR_ARCHITECTURE)
    for name in params.members:
        if name not in known:
            raise MeliError(f"ensemble.members: unknown model '{name}' (known: "
                            f"{', '.join(known)})")
    log.info("ensemble: %s validation titles x %s categories x %d members: %.1f GB of "
             "probabilities", f"{len(truth):,}", f"{len(labels):,}", len(params.members),
             len(truth) * len(labels) * len(params.members) * 4 / 1e9)
    parts, members = [], []
    for name in params.members:
        directory = bundle_dir(name)
        if not directory.is_dir():
            raise MeliError(f"{directory}: ensemble member '{name}' has no bundle (train it, "
                            f"or remove it from ensemble.members)")
        classifier = load_classifier(directory, params.device, params.precision)
        if classifier.labels != labels:
            raise MeliError(f"{directory}: ensemble member '{name}' was trained on other data "
                            f"(its categories differ from {prepared_dir}'s); rerun `dvc repro`")
        if classifier.normalization == normalization:
            parts.append(classifier.taking_normalized().probabilities(validation.column("text")))
        else:
            parts.append(classifier.probabilities(validation.column("title")))
        members.append(name)
        log.info("ensemble: %s scored %d validation titles", name, len(truth))
    # Each member's probabilities replaced by their tempered copy one at a time: the two
    # versions of every member at once would double the stage's memory (1.6 GB more for 5
    # members, 50,000 titles and 1,600 categories).
    temperatures = []
    with Progress("ensemble: temperatures", len(members), "members", ticking=True) as progress:
        for index, name in enumerate(members):
            temperatures.append(fit_temperature(parts[index], truth) if params.temperature
                                else 1.0)
            parts[index] = tempered(parts[index], temperatures[-1])
            log.info("ensemble: %s temperature %.2f", name, temperatures[-1])
            progress.update(index + 1)
    counts = select_weights(parts, truth, len(labels), params.rounds)
    weights = [count / sum(counts) for count in counts]
    mixture = combine(parts, weights, [1.0] * len(parts))
    predicted = mixture.argmax(axis=1)
    singles = [metrics.balanced_accuracy(truth, part.argmax(axis=1), len(labels))
               for part in parts]
    best = int(np.argmax(singles))
    result = EnsembleResult(
        weights={name: weight for name, weight in zip(members, weights, strict=True)},
        temperatures={name: t for name, t in zip(members, temperatures, strict=True)},
        validation_balanced_accuracy=metrics.balanced_accuracy(truth, predicted, len(labels)),
        validation_accuracy=metrics.accuracy(truth, predicted),
        best_member=members[best], best_member_balanced_accuracy=singles[best])
    _write_bundle(output_dir, prepared_dir, result)
    # Calibrated as itself: its own probabilities, not its members'.
    calibrate_bundle(load_classifier(output_dir, params.device, params.precision), prepared_dir)
    write_json(metrics_path, {
        "best": {"validation_balanced_accuracy": result.validation_balanced_accuracy,
                 "validation_accuracy": result.validation_accuracy},
        "weights": result.weights, "temperatures": result.temperatures,
        "best_member": {"name": result.best_member,
                        "validation_balanced_accuracy": result.best_member_balanced_accuracy}})
    return result


def _write_bundle(output_dir: Path, prepared_dir: Path, result: EnsembleResult) -> None:
    """The ensemble's bundle: its members of weight above 0, no file stored twice (see
    meli.bundles.ensemble)."""
    kept = [name for name, weight in result.weights.items() if weight > 0]
    with atomic_directory(output_dir) as partial:
        shutil.copyfile(prepared_dir / LABELS_FILE, partial / LABELS_FILE)
        shutil.copyfile(prepared_dir / NORMALIZATION_FILE, partial / NORMALIZATION_FILE)
        for name in SHAREABLE_FILES:
            _store_common_file(partial, [bundle_dir(member) / name for member in kept])
        shared = {member: [name for name in SHAREABLE_FILES
                           if (partial / name).is_file() and (bundle_dir(member) / name).is_file()
                           and filecmp.cmp(partial / name, bundle_dir(member) / name,
                                           shallow=False)]
                  for member in kept}
        for member in kept:
            # A member's own calibration is not read inside an ensemble, which has its own.
            _copy_bundle(bundle_dir(member), partial / MEMBERS_DIR / member,
                         [*shared[member], *MEMBER_CALIBRATION_FILES])
        write_json(partial / CONFIG_FILE, {
            "format_version": FORMAT_VERSION, "architecture": ENSEMBLE_ARCHITECTURE,
            "members": [{"name": name, "weight": result.weights[name],
                         "temperature": result.temperatures[name],
                         "architecture": read_bundle(bundle_dir(name)).architecture
                         or FASTTEXT_ARCHITECTURE, "shared": shared[name]} for name in kept],
            "validation_balanced_accuracy": result.validation_balanced_accuracy})


def _store_common_file(directory: Path, copies: list[Path]) -> None:
    """Stores at `directory`, unless it holds a file of that name already, the bytes that two
    or more of `copies` (files of one name) hold alike, the most common if there are several:
    the members that hold them leave out their own copy."""
    if not copies or (directory / copies[0].name).exists():
        return
    contents = Counter(copy.read_bytes() for copy in copies if copy.is_file())
    if contents:
        content, count = contents.most_common(1)[0]
        if count >= 2:
            (directory / copies[0].name).write_bytes(content)


def _copy_bundle(source: Path, target: Path, leave_out: list[str]) -> None:
    """A copy of a member's bundle without the files of `leave_out` (at its top level)."""
    shutil.copytree(source, target, ignore=lambda folder, _: leave_out
                    if Path(folder) == source else [])


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("ensemble", __doc__)
    args = parser.parse_args(argv)

    def stage() -> None:
        params = load_params(args.params)
        result = build_ensemble(params.ensemble, PREPARED_DIR, bundle_dir(ENSEMBLE_ARCHITECTURE),
                                train_results_dir(ENSEMBLE_ARCHITECTURE) / "metrics.json")
        shares = ", ".join(f"{name} {weight:.2f} (T {result.temperatures[name]:.2f})"
                           for name, weight in result.weights.items())
        log.info("ensemble: validation balanced accuracy %.4f (best member %s %.4f); "
                 "weights %s", result.validation_balanced_accuracy, result.best_member,
                 result.best_member_balanced_accuracy, shares)

    return run("ensemble", stage)


if __name__ == "__main__":
    sys.exit(main())
