"""A synthetic, MercadoLibre-like dataset of product titles, generated offline.

It is the project's default data source: `dvc repro` on a fresh machine needs no network, yet
the vocabulary, fastText embeddings and classifiers still meet the real problem's difficulties in
small: Spanish and Portuguese titles, brands and model codes shared across categories, accessories
that reuse the words of the product they fit ("Funda Samsung Galaxy A10" is a case, not a phone),
dropped accents, typos, mixed capitalization, unequal category sizes and some wrong labels among
the rows marked "unreliable". A good model reaches high, but not perfect, balanced accuracy.

The vocabulary, invented for this project, is package data: catalogue.json, next to this file,
holds every category and its words, the words any title may carry, colors and bundle phrasings.
This module holds the generator's behaviour: its shares, rates of noise, limits and code.
Generation is deterministic: the same `(rows, seed)` gives a byte-identical table on any machine,
because every random draw comes, in a fixed order, from the raw PCG64 stream, whose output numpy
guarantees never to change.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import operator
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["COLUMNS", "generate"]

COLUMNS = ("title", "category", "language", "label_quality")

SPANISH = "spanish"
PORTUGUESE = "portuguese"
RELIABLE = "reliable"
UNRELIABLE = "unreliable"

# Proportions of the real challenge data, roughly.
PORTUGUESE_SHARE = 0.4
UNRELIABLE_SHARE = 0.3
# Share of unreliable rows whose category is wrong; reliable rows are always right.
WRONG_LABEL_SHARE = 0.17

MAX_TITLE_CHARS = 100
MAX_TITLE_WORDS = 15


@dataclass(frozen=True)
class Category:
    """One product category: the words its titles are made of, per language."""

    name: str
    weight: int  # relative frequency, 2 (rare) to 10 (common)
    nouns_es: tuple[str, ...]  # what the product is called; synonyms
    nouns_pt: tuple[str, ...]
    lines: tuple[str, ...]  # "Brand" or "Brand:Model"; model patterns, see _fill_pattern
    words_es: tuple[str, ...]  # attributes a seller would write
    words_pt: tuple[str, ...]
    specs: tuple[str, ...]  # language-neutral codes, numbers and units
    confusable: tuple[str, ...]  # categories a careless seller would pick instead
    bundles: tuple[str, ...]  # categories sold along with it: "celular + funda de regalo"
    accessory_for: str  # category whose noun follows "para" ("funda para celular")
    colored: bool


CATALOGUE_FILE = importlib.resources.files(__package__).joinpath("catalogue.json")
_LANGUAGE_TABLES = ("generic_words", "colors", "for_word", "bundle_forms")
_CATEGORY_FIELDS = tuple(field.name for field in dataclasses.fields(Category))
# In the file, these lists may hold {"shared": NAME}, standing for the words of shared[NAME]:
# brand and model lines used by several categories are written once, so they cannot drift apart.
_WORD_LISTS = tuple(
    name for name in _CATEGORY_FIELDS if name not in ("name", "weight", "accessory_for", "colored")
)


class CatalogueError(ValueError):
    """The catalogue file is not what the generator needs; the message names the file."""


def _load_catalogue(resource: Traversable) -> tuple[tuple[Category, ...], dict[str, Any]]:
    """The categories and the per-language tables. A mistake in the file fails here, naming it,
    rather than as a KeyError in the middle of a generation."""

    def fail(problem: str) -> CatalogueError:
        return CatalogueError(f"{resource}: {problem}")

    data = json.loads(resource.read_text(encoding="utf-8"))
    missing = [key for key in ("shared", *_LANGUAGE_TABLES, "categories") if key not in data]
    if missing:
        raise fail(f"missing {', '.join(missing)}")
    for table in _LANGUAGE_TABLES:
        if set(data[table]) != {SPANISH, PORTUGUESE}:
            raise fail(f"{table} must have exactly the keys {SPANISH!r} and {PORTUGUESE!r}")

    def expand(items: list[str | dict[str, str]], where: str) -> tuple[str, ...]:
        words: list[str] = []
        for item in items:
            if isinstance(item, str):
                words.append(item)
            elif isinstance(item, dict) and item.get("shared") in data["shared"]:
                words += data["shared"][item["shared"]]
            else:
                raise fail(f"{where}: {item!r} is neither a word nor a known shared list")
        return tuple(words)

    categories = []
    for number, record in enumerate(data["categories"]):
        where = f"category {record.get('name', number)!r}"
        missing = [field for field in _CATEGORY_FIELDS if field not in record]
        if missing:
            raise fail(f"{where} lacks the field(s) {', '.join(missing)}")
        unknown = [key for key in record if key not in _CATEGORY_FIELDS]
        if unknown:
            raise fail(f"{where} has unknown field(s) {', '.join(unknown)}")
        lists = {name: expand(record[name], f"{where}, {name}") for name in _WORD_LISTS}
        categories.append(Category(**(record | lists)))

    names = {category.name for category in categories}
    for category in categories:
        unknown = {*category.confusable, *category.bundles, category.accessory_for} - {""} - names
        if unknown:
            raise fail(f"category {category.name!r} refers to unknown {', '.join(sorted(unknown))}")
    return tuple(categories), {table: data[table] for table in _LANGUAGE_TABLES}


CATALOGUE, _TABLES = _load_catalogue(CATALOGUE_FILE)
CATEGORY_NAMES: tuple[str, ...] = tuple(category.name for category in CATALOGUE)
_CATEGORY_BY_NAME = {category.name: category for category in CATALOGUE}
# Words any seller might add to any title; they carry no information about the category.
GENERIC_WORDS = {language: tuple(words) for language, words in _TABLES["generic_words"].items()}
COLORS = {language: tuple(words) for language, words in _TABLES["colors"].items()}
# "para celular", "+ funda de regalo": how titles come to name another category's product.
FOR_WORD: dict[str, str] = _TABLES["for_word"]
BUNDLE_FORMS = {language: tuple(forms) for language, forms in _TABLES["bundle_forms"].items()}

# The rates of each kind of noise, per title unless said otherwise. Sellers often type without
# accents: whole titles lose them, or single words do (so "algodón" and "algodon" both occur).
ACCENTLESS_TITLE_SHARE = 0.35
ACCENTLESS_WORD_SHARE = 0.08  # per word with an accent
TYPO_SHARE = 0.2  # one typo, in a word of four letters or more
NO_NOUN_SHARE = 0.2  # "Samsung Galaxy A10 32gb": the reader must guess from brand and specs
BUNDLE_SHARE = 0.15  # of categories with bundles: also names another product, "+ funda"
ACCESSORY_FOR_SHARE = 0.4  # an accessory names what it fits: "funda para celular"

_ACCENTS = str.maketrans(
    "áàâãäéêèëíìîïóòôõöúùûüçñÁÀÂÃÉÊÍÓÔÕÚÜÇÑ",
    "aaaaaeeeeiiiiooooouuuucnAAAAEEIOOOUUCN",
)
_PATTERN_PART = re.compile(r"\{(\d+)-(\d+)\}|[#@]")
_UPPERCASE = "ABCDEFGHJKLMNPRSTUVWXZ"


def _uniform_floats(seed: int) -> Iterator[float]:
    """Endless uniform floats in [0, 1) from the raw PCG64 stream, drawn in large blocks.

    Raw 64-bit outputs, unlike numpy's derived distributions, are guaranteed never to change
    between numpy versions; the top 53 bits of each make one float, as numpy itself does.
    """
    bits = np.random.PCG64(seed)
    while True:
        raw = bits.random_raw(1 << 16)
        yield from ((raw >> np.uint64(11)).astype(np.float64) * 2.0**-53).tolist()


class _Draws:
    """Every random decision of one generation, taken in a fixed order from one stream."""

    def __init__(self, seed: int) -> None:
        # A bound `next` is much cheaper than a method call, and generation makes millions.
        self.uniform = functools.partial(next, _uniform_floats(seed))

    def below(self, n: int) -> int:
        return int(self.uniform() * n)

    def chance(self, probability: float) -> bool:
        return self.uniform() < probability

    def choice(self, options: Sequence[str]) -> str:
        return options[int(self.uniform() * len(options))]

    def distinct(self, options: Sequence[str], count: int) -> list[str]:
        """Up to `count` different options, so that a title does not repeat an attribute."""
        pool = list(options)
        return [pool.pop(self.below(len(pool))) for _ in range(min(count, len(pool)))]


def _fill_pattern(text: str, draws: _Draws) -> str:
    """Replace "#" (a digit), "@" (a capital letter) and "{a-b}" (an integer from a to b)."""
    if "{" not in text and "#" not in text and "@" not in text:
        return text  # most words are plain, and this test is much cheaper than a regex search

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "#":
            return str(draws.below(10))
        if token == "@":
            return draws.choice(_UPPERCASE)
        low, high = int(match.group(1)), int(match.group(2))
        return str(low + draws.below(high - low + 1))

    return _PATTERN_PART.sub(replace, text)


def _category_counts(rows: int) -> list[int]:
    """Rows per category, proportional to weight (largest remainder), so sizes are exact."""
    total_weight = sum(category.weight for category in CATALOGUE)
    shares = [rows * category.weight / total_weight for category in CATALOGUE]
    counts = [int(share) for share in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: (counts[i] - shares[i], i))
    for index in by_remainder[: rows - sum(counts)]:
        counts[index] += 1
    return counts


def _nouns(category: Category, language: str) -> tuple[str, ...]:
    return category.nouns_es if language == SPANISH else category.nouns_pt


def _title_segments(category: Category, language: str, draws: _Draws) -> list[str]:
    """The phrases of one title, in a typical seller's order, before any noise."""
    generic = GENERIC_WORDS[language]

    product = ""
    if category.lines and draws.chance(0.8):
        brand, _, model = _fill_pattern(draws.choice(category.lines), draws).partition(":")
        if model and draws.chance(0.75):
            product = model if draws.chance(0.12) else f"{brand} {model}"
        else:
            product = brand

    prefix = [draws.choice(generic)] if draws.chance(0.12) else []
    what: list[str] = []  # what the product is: "funda", "funda para celular"
    # Only a title that names a brand or model may leave out what the product is.
    if not (product and draws.chance(NO_NOUN_SHARE)):
        what.append(draws.choice(_nouns(category, language)))
    if category.accessory_for and draws.chance(ACCESSORY_FOR_SHARE):
        fitted = draws.choice(_nouns(_CATEGORY_BY_NAME[category.accessory_for], language))
        what.append(f"{FOR_WORD[language]} {fitted}")

    words = category.words_es if language == SPANISH else category.words_pt
    tail = [_fill_pattern(word, draws) for word in draws.distinct(words, draws.below(4))]
    specs = draws.distinct(category.specs, draws.choice((0, 1, 1, 2)))
    tail += [_fill_pattern(spec, draws) for spec in specs]
    if category.colored and draws.chance(0.35):
        tail.append(draws.choice(COLORS[language]))
    if category.bundles and draws.chance(BUNDLE_SHARE):
        other = _CATEGORY_BY_NAME[draws.choice(category.bundles)]
        bundled = draws.choice(_nouns(other, language))
        tail.append(draws.choice(BUNDLE_FORMS[language]).format(bundled))
    if draws.chance(0.25):
        tail.append(draws.choice(generic))
    if len(tail) > 1 and draws.chance(0.3):
        # Sellers do not agree on an order; one swap is enough to break fixed positions.
        i, j = draws.below(len(tail)), draws.below(len(tail))
        tail[i], tail[j] = tail[j], tail[i]

    named = [product] if product else []
    if named and what and draws.chance(0.15):
        segments = [*prefix, *named, *what, *tail]  # "Samsung Galaxy A10 Celular Libre"
    else:
        segments = [*prefix, *what, *named, *tail]
    if len(" ".join(segments).split()) < 2:
        segments.append(_fill_pattern(draws.choice(category.specs), draws))
    return segments


def _fit_length(segments: list[str]) -> list[str]:
    """Drop trailing phrases, the least informative, until the title is short enough."""
    while len(segments) > 2 and (
        len(" ".join(segments)) > MAX_TITLE_CHARS
        or len(" ".join(segments).split()) > MAX_TITLE_WORDS
    ):
        segments.pop()
    return segments


def _join_segments(segments: list[str], draws: _Draws) -> str:
    """Join phrases the way sellers do: mostly spaces, sometimes dashes, commas, slashes, (...)."""
    punctuated = draws.chance(0.3)
    parts = [segments[0]]
    for segment in segments[1:]:
        if not punctuated or draws.chance(0.7) or segment[0] == "+":
            parts.append(" " + segment)
        elif draws.chance(0.15):
            parts.append(f" ({segment})")
        else:
            parts.append(draws.choice((" - ", ", ", " / ", " + ", " - ")) + segment)
    return "".join(parts)


def _typo(word: str, draws: _Draws) -> str:
    """Swap, drop or double one inner letter: the commonest slips of a fast typist."""
    position = 1 + draws.below(len(word) - 2)
    kind = draws.below(3)
    if kind == 0:
        return word[:position] + word[position + 1] + word[position] + word[position + 2 :]
    if kind == 1:
        return word[:position] + word[position + 1 :]
    return word[:position] + word[position] + word[position:]


def _add_noise(title: str, draws: _Draws) -> str:
    """Drop accents, add typos and pick a capitalization style, as real titles vary."""
    if draws.chance(ACCENTLESS_TITLE_SHARE):
        title = title.translate(_ACCENTS)
    words = title.split(" ")
    for index, word in enumerate(words):
        if not word.isascii() and draws.chance(ACCENTLESS_WORD_SHARE):
            words[index] = word.translate(_ACCENTS)
    if draws.chance(TYPO_SHARE):
        typeable = [index for index, word in enumerate(words) if len(word) >= 4 and word.isalpha()]
        if typeable:
            index = typeable[draws.below(len(typeable))]
            words[index] = _typo(words[index], draws)
    style = draws.uniform()
    if style < 0.45:  # Title Case, the commonest on MercadoLibre
        words = [word[:1].upper() + word[1:] for word in words]
    elif style < 0.72:  # as typed: a capital first letter, brands as written
        words[0] = words[0][:1].upper() + words[0][1:]
    elif style < 0.88:
        words = [word.lower() for word in words]
    else:
        words = [word.upper() for word in words]
    return " ".join(words)


def _cut_to_limit(title: str) -> str:
    """Cut a title that punctuation or a typo pushed past the limit, at a word boundary."""
    if len(title) <= MAX_TITLE_CHARS:
        return title
    cut = title[: MAX_TITLE_CHARS + 1].rsplit(" ", 1)[0].rstrip(" -,/+(")
    if cut.count("(") > cut.count(")"):
        cut = cut.rsplit("(", 1)[0].rstrip(" -,/+")
    return cut


def _make_title(category: Category, language: str, draws: _Draws) -> str:
    segments = _fit_length(_title_segments(category, language, draws))
    return _cut_to_limit(_add_noise(_join_segments(segments, draws), draws))


def _wrong_category(category: Category, draws: _Draws) -> str:
    """A label a careless seller might pick: usually a confusable category, else any other."""
    if category.confusable and draws.chance(0.85):
        return draws.choice(category.confusable)
    other = draws.below(len(CATALOGUE) - 1)
    return CATALOGUE[other if other < CATALOGUE.index(category) else other + 1].name


def _generate_columns(rows: int, seed: int) -> dict[str, list[str]]:
    """The table's columns, plus "true_category" (what each title really is) for tests."""
    rows = operator.index(rows)  # a TypeError for 2.5 or "10", rather than a puzzling failure
    if rows < 1:
        raise ValueError(f"rows must be a positive number of titles to generate, got {rows}")
    draws = _Draws(seed)
    category_of_row = [
        index for index, count in enumerate(_category_counts(rows)) for _ in range(count)
    ]
    # Shuffle by sorting on random keys: a permutation that depends only on the raw stream.
    keys = np.array([draws.uniform() for _ in range(rows)])
    order = np.argsort(keys, kind="stable").tolist()

    columns: dict[str, list[str]] = {name: [] for name in (*COLUMNS, "true_category")}
    for row in order:
        category = CATALOGUE[category_of_row[row]]
        language = PORTUGUESE if draws.chance(PORTUGUESE_SHARE) else SPANISH
        quality = UNRELIABLE if draws.chance(UNRELIABLE_SHARE) else RELIABLE
        label = category.name
        if quality == UNRELIABLE and draws.chance(WRONG_LABEL_SHARE):
            label = _wrong_category(category, draws)
        columns["title"].append(_make_title(category, language, draws))
        columns["category"].append(label)
        columns["language"].append(language)
        columns["label_quality"].append(quality)
        columns["true_category"].append(category.name)
    return columns


def generate(rows: int, seed: int) -> pa.Table:
    """Return `rows` synthetic titles as a table with string columns title, category, language,
    label_quality.

    The same `(rows, seed)` gives a byte-identical table everywhere; `seed` is any non-negative
    integer, and different seeds give different tables.
    """
    columns = _generate_columns(rows, seed)
    return pa.table({name: pa.array(columns[name], type=pa.string()) for name in COLUMNS})
