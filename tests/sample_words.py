"""Which words of a synthetic title (meli.data.sample) name its product, from the generator's
catalogue, and how often an explanation's strongest word is one of them: the sanity check of
`meli explain` (tests/test_explain.py, benchmarks/explain.py)."""

from __future__ import annotations

import collections
import math
import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from meli.bundles.explain import explain
from meli.data.sample import CATALOGUE, _generate_columns
from meli.data.text import normalize
from meli.params import TextParams

# Words of the catalogue's nouns that name nothing ("capa de silicone", "fone de ouvido").
FUNCTION_WORDS = {"de", "da", "do", "del", "para", "com", "con", "sem", "sin", "e", "y", "a",
                  "o", "em", "en"}


def telling_words(category, attributes: bool = False) -> list[re.Pattern]:
    """What names the product of a synthetic title: its category's nouns (Spanish and
    Portuguese), brands and model names; with `attributes`, also the attributes and specs only
    that category's titles carry ("silicona", "tpu"). A model pattern matches any digits and
    letters it stands for; a bare number ("Flip {1-9}"'s "9") names nothing."""
    phrases = [*category.nouns_es, *category.nouns_pt,
               *(line.replace(":", " ") for line in category.lines)]
    if attributes:
        phrases += [*category.words_es, *category.words_pt, *category.specs]
    patterns = []
    for text in (word for phrase in phrases for word in phrase.split()):
        if fold(text) in FUNCTION_WORDS or not re.search(r"[^\W\d_]", re.sub(r"\{.*?\}", "",
                                                                              text)):
            continue
        pattern = re.escape(fold(text))
        pattern = re.sub(r"\\\{\d+\\-\d+\\\}", r"\\d+", pattern).replace("\\#", r"\d")
        patterns.append(re.compile(pattern.replace("@", "[a-z]") + "$"))
    return patterns


def fold(word: str) -> str:
    word = unicodedata.normalize("NFKD", word.lower())
    return "".join(c for c in word if not unicodedata.combining(c)).strip("()-,/+.")


def names_the_product(word: str, patterns: list[re.Pattern]) -> bool:
    """A telling word, or one typo away from one (the generator swaps, drops or doubles a
    letter of a word of 4 letters or more)."""
    word = fold(word)
    if any(pattern.match(word) for pattern in patterns):
        return True
    literal = [p.pattern.removesuffix("$").replace("\\", "") for p in patterns]
    return len(word) >= 4 and any(one_typo_apart(word, text) for text in literal
                                  if len(text) >= 4 and text.isalpha())


def one_typo_apart(a: str, b: str) -> bool:
    if abs(len(a) - len(b)) > 1 or a == b:
        return a == b
    if len(a) == len(b):
        differ = [i for i in range(len(a)) if a[i] != b[i]]
        return len(differ) == 2 and differ[1] == differ[0] + 1 and \
            a[differ[0]] == b[differ[1]] and a[differ[1]] == b[differ[0]]
    shorter, longer = sorted((a, b), key=len)
    return any(longer[:i] + longer[i + 1:] == shorter for i in range(len(longer)))


@dataclass
class Sanity:
    titles: int           # classified right, of those generated
    product: float        # share whose top positive word is a brand, model or product noun
    own_words: float      # ... or an attribute or spec only that category's titles carry


def explanation_sanity(classifier, rows: int = 400, seed: int = 11,
                       method: str | None = None) -> Sanity:
    """Synthetic titles of a seed the model never saw, explained (by `method`, default the
    bundle's); of those it classifies right, the share whose top positive word names the
    product, and the share whose top word is one of the category's own catalogue words."""
    columns = _generate_columns(rows, seed)
    by_name = {category.name: category for category in CATALOGUE}
    titles, truth = columns["title"], columns["true_category"]
    known = [i for i, name in enumerate(truth) if name in classifier.labels]
    explanations = explain(classifier, [titles[i] for i in known], method=method)
    right = [(i, e) for i, e in zip(known, explanations, strict=True) if e.category == truth[i]]
    product = own = 0
    for i, explanation in right:
        top = explanation.strongest(1)
        if top is None:
            continue
        word, category = explanation.words[top], by_name[truth[i]]
        product += names_the_product(word, telling_words(category))
        own += names_the_product(word, telling_words(category, attributes=True))
    return Sanity(len(right), product / len(right), own / len(right))


def evidence_sanity(rows: int = 1000, seed: int = 11, reference_rows: int = 100_000,
                    reference_seed: int = 123) -> float:
    """The same share for an ideal reader of the generator rather than a model: each word's
    evidence for the true category, log P(word | category) / P(word | other categories) over
    `reference_rows` generated titles (the tokens of a word summed), and the word of the most.
    Where that is an attribute or a spec, no faithful explanation should name the product."""
    settings = TextParams()
    reference = _generate_columns(reference_rows, reference_seed)
    categories = sorted(set(reference["true_category"]))
    index = {name: number for number, name in enumerate(categories)}
    titles_with = collections.defaultdict(lambda: np.zeros(len(categories)))
    per_category = np.zeros(len(categories))
    for text, name in zip(normalize(reference["title"], settings).to_pylist(),
                          reference["true_category"], strict=True):
        per_category[index[name]] += 1
        for token in set(text.split()):
            titles_with[token][index[name]] += 1
    total = per_category.sum()

    def evidence(token: str, category: int) -> float:
        counts = titles_with.get(token)
        if counts is None:
            return 0.0
        inside = (counts[category] + 0.5) / (per_category[category] + 1)
        outside = (counts.sum() - counts[category] + 0.5) / (total - per_category[category] + 1)
        return math.log(inside / outside)

    by_name = {category.name: category for category in CATALOGUE}
    sample = _generate_columns(rows, seed)
    hits = 0
    for title, name in zip(sample["title"], sample["true_category"], strict=True):
        words = title.split()
        forms = normalize(words, settings).to_pylist()
        scores = [sum(evidence(token, index[name]) for token in form.split()) for form in forms]
        hits += names_the_product(words[int(np.argmax(scores))], telling_words(by_name[name]))
    return hits / rows
