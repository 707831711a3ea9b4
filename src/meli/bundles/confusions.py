"""Error analysis a person reads: the category pairs a model confuses most on a split, and for
each pair the words that most often drove the wrong choice, from the explanations
(meli.bundles.explain) of its misclassified titles toward the category the model chose.

Bounded whatever the number of categories: pairs are counted from the (true, predicted) ids of
the misclassified titles alone (never a categories x categories matrix), and only the `pairs`
most frequent are explained, `titles_per_pair` titles each at most.

evaluate writes it as `results/evaluate/<model>/confusions.md` beside the confusion plot: a
Markdown table rather than a DVC plot, because what a person reads there is words (the drivers
and an example title per pair), which DVC's plot templates, made for numbers, cannot show.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from meli.bundles.explain import MAX_WORDS, default_method, explain
from meli.files import atomic_file

if TYPE_CHECKING:
    from pathlib import Path

    from meli.bundles.classifier import Classifier

CONFUSIONS_FILE = "confusions.md"
# Misclassified titles explained per pair at most, in the split's order: enough for a word to
# stand out, and a bound on evaluate's extra time (`benchmarks/explain.py confusions`: 2.2 CPU
# seconds for the real sample's ensemble, 15 pairs, 229 test titles misclassified).
TITLES_PER_PAIR = 30


@dataclass
class Driver:
    """A word (as the model reads it) that drove titles of a pair toward the wrong category."""

    word: str
    strongest: int      # titles where it was the word that pushed hardest toward the wrong one
    pushed: int         # titles where it pushed toward it at all
    mean_contribution: float  # over those it pushed


@dataclass
class ConfusedPair:
    true: str
    predicted: str
    titles: int                # of the split, classified `predicted` when they are `true`
    explained: int             # of those, explained
    drivers: list[Driver] = field(default_factory=list)
    example: str = ""          # the first explained title, as written


def most_confused(truth: np.ndarray, predicted: np.ndarray, top: int) -> list[tuple[int, int, int]]:
    """The `top` most frequent (true, predicted, count) among the misclassified, most first,
    ties by class ids."""
    wrong = truth != predicted
    if not wrong.any():
        return []
    pairs, counts = np.unique(np.stack([truth[wrong], predicted[wrong]], axis=1), axis=0,
                              return_counts=True)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))[:top]
    return [(int(pairs[i, 0]), int(pairs[i, 1]), int(counts[i])) for i in order]


def confused_pairs(classifier: Classifier, titles: list[str], truth: np.ndarray,
                   predicted: np.ndarray, pairs: int = 10, titles_per_pair: int = 50,
                   words: int = 5) -> list[ConfusedPair]:
    """The most confused pairs, each with the words that drove its titles (the first
    `titles_per_pair` of the split's order, of MAX_WORDS words at most) toward the category
    chosen, in one `explain` call."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    found = most_confused(truth, predicted, pairs)
    chosen: list[int] = []
    owner: list[int] = []
    for number, (true, wrong, _) in enumerate(found):
        rows = [row for row in np.flatnonzero((truth == true) & (predicted == wrong))
                if len(titles[row].split()) <= MAX_WORDS][:titles_per_pair]
        chosen += rows
        owner += [number] * len(rows)
    explanations = explain(classifier, [titles[row] for row in chosen],
                           categories=predicted[chosen]) if chosen else []
    result = [ConfusedPair(classifier.labels[true], classifier.labels[wrong], count, 0)
              for true, wrong, count in found]
    strongest: list[Counter] = [Counter() for _ in found]
    pushed: list[Counter] = [Counter() for _ in found]
    total: list[Counter] = [Counter() for _ in found]
    for number, explanation in zip(owner, explanations, strict=True):
        pair = result[number]
        pair.explained += 1
        pair.example = pair.example or explanation.title
        top = explanation.strongest(1)
        if top is not None and explanation.normalized[top]:
            strongest[number][explanation.normalized[top]] += 1
        for form, value in zip(explanation.normalized, explanation.contributions, strict=True):
            if form and value > 0:
                pushed[number][form] += 1
                total[number][form] += float(value)
    for number, pair in enumerate(result):
        ranked = sorted(pushed[number], key=lambda word: (-strongest[number][word],
                                                          -pushed[number][word], word))
        pair.drivers = [Driver(word, strongest[number][word], pushed[number][word],
                               total[number][word] / pushed[number][word])
                        for word in ranked[:words]]
    return result


def confusions_markdown(pairs: list[ConfusedPair], model: str, method: str, split: str,
                        misclassified: int, total: int) -> str:
    """The pairs as a Markdown table, with a line saying what the figures are."""
    lines = [f"# {model}: the most confused categories ({split})", "",
             f"{misclassified:,} of {total:,} {split} titles are misclassified. For each of the "
             f"{len(pairs)} most frequent (true, predicted) pairs, the words that drove its titles "
             f"toward the predicted category, by {method}: in how many of the explained titles "
             f"each was the strongest push (and pushed at all).", "",
             "| true category | predicted | titles | explained | words that drove the wrong "
             "choice: strongest in (pushed in) | example |",
             "| --- | --- | ---: | ---: | --- | --- |"]
    for pair in pairs:
        drivers = ", ".join(f"{_code(driver.word)} {driver.strongest} ({driver.pushed})"
                            for driver in pair.drivers) or "-"
        lines.append(f"| {_cell(pair.true)} | {_cell(pair.predicted)} | {pair.titles} | "
                     f"{pair.explained} | {drivers} | {_cell(pair.example)} |")
    return "\n".join(lines) + "\n"


def _code(word: str) -> str:
    """A word as a code span, so that a number read ("0000") is not taken for a count."""
    return "`" + _cell(word).replace("`", "'") + "`"


def _cell(text: str) -> str:
    """Text that cannot break a Markdown table's row."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def write_confusions(path: Path, classifier: Classifier, titles: list[str], truth: np.ndarray,
                     predicted: np.ndarray, pairs: int, model: str, split: str = "test") -> None:
    """The most confused pairs of a split and the words that drove them, as confusions.md."""
    found = confused_pairs(classifier, titles, truth, predicted, pairs, TITLES_PER_PAIR)
    text = confusions_markdown(found, model, default_method(classifier), split,
                               int((np.asarray(truth) != np.asarray(predicted)).sum()),
                               len(truth))
    with atomic_file(path) as out:
        out.write(text.encode("utf-8"))
