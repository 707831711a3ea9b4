"""Why a bundle chose a category: each word of a title with its signed contribution to that
category (the most probable one, or one that is named), in title order.

A title's words are its whitespace-separated words as written ("iPhone", "11"); each is shown
with what normalization makes of it ("iphone", "00"), which is what the model reads. Two methods:

- **decomposition**, the linear bundle's default, exact. The quantity decomposed is the bundle's
  *score* for the category c:

      score(c) = sum over heads h of a_h x (x . W_h[:, c] + b_h[c]),  a_h = share_h / temperature_h

  where x is the title's TF-IDF row, W_h and b_h head h's weights and intercepts (W_h = coef @
  projection for a factored head) and share_h the head's share of the probabilities (a lone
  head's a_h is 1 / temperature). With one head, score(c) is the calibrated logit, and
  softmax(score) is the bundle's probability; with two, the bundle mixes the heads' softmaxes
  (share_1 x softmax(s_1 / T_1) + share_2 x softmax(s_2 / T_2)), which no sum of per-word
  terms reproduces, and score(c) is the heads' calibrated logits mixed with the same shares.
  score(c) = intercept + sum of the features' contributions x_f x sum_h a_h W_h[f, c]; each
  feature's contribution goes to the words it was read from: split evenly among its occurrences
  in the title, a word n-gram's share of it split evenly among the n words it spans. The
  character n-grams are in-word (meli.data.tfidf): each lies inside one word, its boundary
  spaces (" fu", "da ") being that word's edges, so it goes wholly to that word. A word that
  normalization splits in several tokens ("usb-c" kept as "usb c" under punctuation: drop) gets
  the sum of its tokens', an n-gram across them included. So the words' contributions plus
  the intercept equal the score.
- **occlusion**, every other bundle (PyTorch, fastText, the ensemble), and the linear one on
  request: a word's contribution is how much the log-odds of the category's probability fall
  when the title is scored without that word, log(p / (1 - p)) - log(p' / (1 - p')). Log-odds,
  not probabilities, because a confident model's probability barely moves whatever word goes
  (0.999 to 0.998), while its log-odds still rank the words. A title of n words costs n + 1
  titles through `Classifier.probabilities`, and the titles of a call go through together.

The explanations are figures of the model, not of the language: they say what the model leans
on, which is what a catalogue team needs to tell a data problem from a model problem.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

import numpy as np
import pyarrow as pa

from meli.bundles.classifier import Classifier
from meli.errors import MeliError

if TYPE_CHECKING:
    from meli.bundles.linear import LinearClassifier
    from meli.bundles.predict import TitleReader
    from meli.data.tfidf import TfidfFeatures

DECOMPOSITION = "decomposition"
OCCLUSION = "occlusion"
METHODS = (DECOMPOSITION, OCCLUSION)
# What each method's contributions measure, said once for the CLI, the JSON and the page.
MEASURES = {
    DECOMPOSITION: "the category's score, sum over heads of share / temperature x (TF-IDF . "
                   "weights + intercept): the words' contributions plus the intercept equal it",
    OCCLUSION: "how much the log-odds of the category's probability fall when the word is "
               "left out",
}
# The same, in a few words, for the text view's header.
SHORT_MEASURES = {
    DECOMPOSITION: "exact: intercept + the words = the category's score",
    OCCLUSION: "occlusion: log-odds lost without the word",
}
# Words explained per title at most: occlusion scores one title per word, so a "title" of
# thousands of words would cost millions; real titles have a few dozen at most.
MAX_WORDS = 64
# Titles scored per `probabilities` call when occluding: with 1,600 categories, 8,192 rows of
# float32 probabilities are 52 MB.
OCCLUSION_ROWS = 8192
# Probabilities are float32: 1 - 6e-8 is the largest below 1, so log-odds are capped near 16.
_EPSILON = 1e-7


@dataclass
class NgramContribution:
    """One occurrence of an n-gram of the title, and the part of its contribution a word got."""

    text: str           # "funda", "funda silicona", " fu" (character n-grams keep their spaces)
    kind: str           # word | char
    contribution: float  # the word's part of it


@dataclass
class Explanation:
    """A title's words and their signed contributions to `category`."""

    title: str
    words: list[str]       # as written, in title order
    normalized: list[str]  # each word as the model reads it ("" when normalization drops it)
    category: str
    category_id: int
    probability: float     # of `category`, the whole title
    method: str            # decomposition | occlusion
    contributions: np.ndarray  # float64, one per word
    score: float           # the quantity explained, for the whole title (see MEASURES)
    intercept: float | None = None  # decomposition: the score no word carries
    probabilities_without: np.ndarray | None = None  # occlusion: p(category) without each word
    ngrams: list[list[NgramContribution]] | None = None  # decomposition, when asked: per word
    heads: list[dict] = field(default_factory=list)  # decomposition: estimator, share, temperature

    @property
    def measure(self) -> str:
        return MEASURES[self.method]

    def strongest(self, sign: int = 1) -> int | None:
        """The word that pushed hardest toward the category (sign 1) or away from it (-1);
        None when no word did (every contribution 0, or of the other sign)."""
        if not len(self.contributions):
            return None
        index = int(np.argmax(sign * self.contributions))
        return index if sign * self.contributions[index] > 0 else None

    def as_dict(self) -> dict:
        """For --json (and the server): plain Python values, words in title order."""
        words = []
        for index, (word, normalized) in enumerate(zip(self.words, self.normalized,
                                                       strict=True)):
            entry = {"word": word, "normalized": normalized,
                     "contribution": float(self.contributions[index])}
            if self.probabilities_without is not None:
                entry["probability_without"] = float(self.probabilities_without[index])
            if self.ngrams is not None:
                entry["ngrams"] = [{"text": gram.text, "kind": gram.kind,
                                    "contribution": gram.contribution}
                                   for gram in self.ngrams[index]]
            words.append(entry)
        result = {"title": self.title, "category": self.category,
                  "probability": self.probability, "method": self.method,
                  "measure": self.measure, "score": self.score}
        if self.intercept is not None:
            result["intercept"] = self.intercept
        if self.heads:
            result["heads"] = self.heads
        strongest_for, strongest_against = self.strongest(1), self.strongest(-1)
        result["strongest_for"] = None if strongest_for is None else self.words[strongest_for]
        result["strongest_against"] = (None if strongest_against is None
                                       else self.words[strongest_against])
        result["words"] = words
        return result


# ---- the entry point ------------------------------------------------------------------------

def default_method(classifier: Classifier) -> str:
    """decomposition for the linear bundle, occlusion for every other."""
    from meli.bundles.bundle import LINEAR_ARCHITECTURE

    return (DECOMPOSITION if classifier.config.get("architecture") == LINEAR_ARCHITECTURE
            else OCCLUSION)


def category_id(classifier: Classifier, name: str) -> int:
    """The class id of a category name; a one-line error naming the closest ones if unknown."""
    try:
        return classifier.labels.index(name)
    except ValueError:
        close = difflib.get_close_matches(name, classifier.labels, n=3, cutoff=0.6)
        hint = (f"; did you mean {', '.join(close)}?" if close
                else f"; it knows {len(classifier.labels)}, e.g. "
                     f"{', '.join(classifier.labels[:3])}")
        raise MeliError(f"unknown category {name!r} for the model in {classifier.directory}"
                        f"{hint}") from None


def explain(classifier: Classifier, titles: Sequence[str], category: str | None = None,
            method: str | None = None, ngrams: bool = False,
            categories: np.ndarray | None = None) -> list[Explanation]:
    """Explain each title's most probable category, or `category` for every title, or
    `categories` (one class id per title). `method`: decomposition (linear bundles only) or
    occlusion; None picks `default_method`. `ngrams`: with decomposition, also list each
    word's n-grams and their parts."""
    method = method or default_method(classifier)
    if method not in METHODS:
        raise MeliError(f"unknown explanation method {method!r} (choose from "
                        f"{', '.join(METHODS)})")
    if method == DECOMPOSITION and default_method(classifier) != DECOMPOSITION:
        raise MeliError(f"{classifier.directory}: the decomposition is exact for the linear "
                        f"model only; this bundle is explained by occlusion")
    wanted = np.full(len(titles), -1, dtype=np.int64)
    if category is not None:
        wanted[:] = category_id(classifier, category)
    elif categories is not None:
        wanted = np.asarray(categories, dtype=np.int64)
        if wanted.shape != (len(titles),):
            raise ValueError(f"{len(wanted)} categories for {len(titles)} titles")
    words = title_words(classifier, titles)
    if method == DECOMPOSITION:
        return decompose(classifier, titles, words, wanted, ngrams)
    return occlude(classifier, titles, words, wanted)


@dataclass
class TitleWords:
    """A title's words as written, each one's normalized form, and its tokens' positions."""

    words: list[str]
    normalized: list[str]
    tokens_per_word: list[int]
    text: str  # the whole title normalized: what the model reads


def title_words(classifier: Classifier, titles: Sequence[str]) -> list[TitleWords]:
    """Every title's words (str.split, as written) and their normalized forms, normalized in
    one call with the titles themselves. Normalization works character by character and keeps
    the spaces between words, so a title's tokens are its words' tokens in order; were a title
    ever to differ, its words would be its tokens, so that no figure is given to a wrong word."""
    split = [title.split() for title in titles]
    for number, words in enumerate(split, 1):
        if len(words) > MAX_WORDS:
            raise MeliError(f"title {number} has {len(words)} words; at most {MAX_WORDS} are "
                            f"explained (\"{titles[number - 1][:40]}...\")")
    flat = [word for words in split for word in words]
    normalized = classifier.normalize([*flat, *titles]).to_pylist() if titles else []
    result, start = [], 0
    for index, words in enumerate(split):
        forms = normalized[start:start + len(words)]
        start += len(words)
        counts = [len(form.split()) for form in forms]
        text = normalized[len(flat) + index]
        tokens = text.split()
        if " ".join(forms).split() != tokens:
            words, forms, counts = tokens, tokens, [1] * len(tokens)
        result.append(TitleWords(words, forms, counts, text))
    return result


# ---- occlusion --------------------------------------------------------------------------------

def occlusion_titles(title: str, words: list[str]) -> list[str]:
    """The title, then the title without each of its words in turn: n + 1 titles."""
    return [title, *(" ".join(words[:i] + words[i + 1:]) for i in range(len(words)))]


def occlude(classifier: Classifier, titles: Sequence[str], words: list[TitleWords],
            wanted: np.ndarray) -> list[Explanation]:
    explanations: list[Explanation] = []
    for group in _groups([len(entry.words) + 1 for entry in words], OCCLUSION_ROWS):
        variants = [variant for index in group
                    for variant in occlusion_titles(titles[index], words[index].words)]
        probabilities = classifier.probabilities(pa.array(variants, pa.string()))
        row = 0
        for index in group:
            entry = words[index]
            block = probabilities[row:row + len(entry.words) + 1]
            row += len(entry.words) + 1
            chosen = int(wanted[index]) if wanted[index] >= 0 else int(np.argmax(block[0]))
            column = block[:, chosen].astype(np.float64)
            odds = _log_odds(column)
            explanations.append(Explanation(
                title=titles[index], words=entry.words, normalized=entry.normalized,
                category=classifier.labels[chosen], category_id=chosen,
                probability=float(column[0]), method=OCCLUSION,
                contributions=odds[0] - odds[1:], score=float(odds[0]),
                probabilities_without=column[1:]))
    return explanations


def _log_odds(probabilities: np.ndarray) -> np.ndarray:
    clipped = np.clip(probabilities, _EPSILON, 1.0 - _EPSILON)
    return np.log(clipped) - np.log1p(-clipped)


def _groups(sizes: list[int], limit: int) -> Iterator[list[int]]:
    """Consecutive indices whose sizes sum to at most `limit` (one alone may exceed it)."""
    group: list[int] = []
    total = 0
    for index, size in enumerate(sizes):
        if group and total + size > limit:
            yield group
            group, total = [], 0
        group.append(index)
        total += size
    if group:
        yield group


# ---- the linear bundle's exact decomposition ---------------------------------------------------
# head_weights, linear_scores, linear_probabilities and head_factors are the only code that
# reads how the linear bundle stores its heads.

def head_weights(classifier: LinearClassifier, features: np.ndarray,
                 category: int) -> list[tuple[np.ndarray, float]]:
    """Per head, the weights (float32) of `features` for one category, and the head's intercept
    for it. Two formats of head: a compact one (sparse or factored, pruned, int8 or float)
    reads its own weights as it scores with them (`head.weights(features, category)`, 0 where
    pruned); a dense one holds them whole (`coef`, times `projection` when factored). A compact
    factored head's `coef` holds its kept rows only, so `weights` is asked first."""
    result = []
    for head in classifier.heads:
        if callable(getattr(head, "weights", None)):
            weights = head.weights(features, category)
        elif head.projection is None:
            weights = head.coef[features, category]
        else:
            weights = head.coef[features] @ head.projection[:, category]
        result.append((np.asarray(weights, dtype=np.float32), float(head.intercept[category])))
    return result


def linear_scores(classifier: LinearClassifier, matrix) -> list[np.ndarray]:
    """Each head's decision scores (titles x categories, float32) of a TF-IDF matrix."""
    return [head.scores(matrix) for head in classifier.heads]


def linear_probabilities(classifier: LinearClassifier,
                         head_scores: list[np.ndarray]) -> np.ndarray:
    """The bundle's probabilities from its heads' scores: sum over heads of share x
    softmax(scores / temperature), a lone head's share being 1 (as LinearClassifier)."""
    from meli.bundles.linear import softmax

    if len(head_scores) == 1:
        return softmax(head_scores[0] / classifier.temperatures[0])
    return sum(share * softmax(part / temperature)
               for part, share, temperature in zip(head_scores, classifier.shares,
                                                   classifier.temperatures, strict=True))


def head_factors(classifier: LinearClassifier) -> list[float]:
    """a_h: what each head's score is multiplied by in the decomposed score (module docstring)."""
    if len(classifier.heads) == 1:
        return [1.0 / float(classifier.temperatures[0])]
    return [float(share) / float(temperature)
            for share, temperature in zip(classifier.shares, classifier.temperatures,
                                          strict=True)]


def decompose(classifier: LinearClassifier, titles: Sequence[str], words: list[TitleWords],
              wanted: np.ndarray, ngrams: bool = False) -> list[Explanation]:
    # Normalized and featurized once: the scores, probabilities and contributions all come
    # from this one matrix.
    texts = pa.array([entry.text for entry in words], pa.string())
    matrix = classifier.features.matrix(texts).tocsr()
    matrix.sort_indices()
    head_scores = linear_scores(classifier, matrix)
    probabilities = linear_probabilities(classifier, head_scores)
    chosen = np.where(wanted >= 0, wanted, probabilities.argmax(axis=1)) if len(titles) else wanted
    factors = head_factors(classifier)
    # Each title's score as the bundle computes it, for the explained category.
    scores = sum(factor * part[np.arange(len(titles)), chosen].astype(np.float64)
                 for factor, part in zip(factors, head_scores, strict=True))
    # Per matrix entry (title, feature): x_f x sum_h a_h W_h[f, c], and per title the intercept.
    entry_title = np.repeat(np.arange(len(titles)), np.diff(matrix.indptr))
    entry_value = np.zeros(matrix.nnz, dtype=np.float64)
    intercepts = np.zeros(len(titles), dtype=np.float64)
    entry_category = chosen[entry_title]
    order = np.argsort(entry_category, kind="stable")
    categories, first = np.unique(entry_category[order], return_index=True)
    for category, entries in zip(categories, np.split(order, first[1:]) if matrix.nnz else [],
                                 strict=True):
        effective = np.zeros(len(entries), dtype=np.float64)
        for factor, (weights, _) in zip(factors, head_weights(
                classifier, matrix.indices[entries], int(category)), strict=True):
            effective += factor * weights.astype(np.float64)
        entry_value[entries] = matrix.data[entries].astype(np.float64) * effective
    for category in np.unique(chosen):
        intercepts[chosen == category] = sum(
            factor * bias for factor, (_, bias) in zip(
                factors, head_weights(classifier, np.zeros(0, np.int64), int(category)),
                strict=True))

    token_texts = [text.split() for text in texts.to_pylist()]
    token_start = np.zeros(len(titles) + 1, dtype=np.int64)
    np.cumsum([len(tokens) for tokens in token_texts], out=token_start[1:])
    occurrences = ngram_occurrences(classifier.features, texts)
    # Each occurrence's part: its matrix entry's value over the entry's occurrence count.
    pair = occurrences.title * classifier.features.size + occurrences.feature
    entry_pair = entry_title * classifier.features.size + matrix.indices
    entry_of = np.searchsorted(entry_pair, pair)  # entries are sorted by title, then feature
    if len(pair) and not np.array_equal(entry_pair[np.minimum(entry_of, len(entry_pair) - 1)],
                                        pair):
        raise AssertionError("an n-gram occurrence without its TF-IDF entry")
    counts = np.bincount(entry_of, minlength=matrix.nnz)
    if matrix.nnz and counts.min() == 0:
        raise AssertionError("a TF-IDF entry without an occurrence in its title")
    part = entry_value[entry_of] / counts[entry_of]
    # ... spread evenly over the tokens it spans.
    spans = occurrences.tokens
    token_of = np.repeat(token_start[occurrences.title] + occurrences.first, spans) + \
        _offsets_within(spans)
    token_value = np.bincount(token_of, weights=np.repeat(part / spans, spans),
                              minlength=int(token_start[-1]))

    heads = [{"estimator": head.estimator, "share": float(share),
              "temperature": float(temperature), "factor": factor}
             for head, share, temperature, factor in zip(
                 classifier.heads, classifier.shares, classifier.temperatures, factors,
                 strict=True)]
    explanations = []
    for index, entry in enumerate(words):
        tokens = token_value[token_start[index]:token_start[index + 1]]
        word_of_token = _word_of_token(entry)
        contributions = np.bincount(word_of_token, weights=tokens,
                                    minlength=len(entry.words)).astype(np.float64) \
            if len(entry.words) else np.zeros(0)
        c = int(chosen[index])
        explanation = Explanation(
            title=titles[index], words=entry.words, normalized=entry.normalized,
            category=classifier.labels[c], category_id=c,
            probability=float(probabilities[index, c]), method=DECOMPOSITION,
            contributions=contributions, score=float(scores[index]),
            intercept=float(intercepts[index]), heads=heads)
        if ngrams:
            explanation.ngrams = _word_ngrams(
                classifier, occurrences, index, part, token_texts[index], word_of_token,
                len(entry.words))
        explanations.append(explanation)
    return explanations


@dataclass
class Occurrences:
    """Every n-gram occurrence of a batch of normalized titles that is a feature of the model:
    its title, feature id, first token (within the title) and how many tokens it spans."""

    title: np.ndarray    # int64
    feature: np.ndarray  # int64
    first: np.ndarray    # int64
    tokens: np.ndarray   # int64: n for a word n-gram, 1 for a character n-gram


def ngram_occurrences(features: TfidfFeatures, texts: pa.Array) -> Occurrences:
    """Where in its title each feature of `features.matrix(texts)` comes from, found with the
    same key functions the matrix is built with (meli.data.tfidf), so the two agree.

    Word n-grams: one n at a time, a title's n-grams come out in the order they start, so an
    n-gram's first token is its rank within its title. Character n-grams: the titles' tokens,
    one per row, make the very byte buffer the titles make (" t1 t2 ... "), so scoring it gives
    the same n-grams with each one's token as its row."""
    from meli.data.tfidf import _Batch, char_ngrams, word_ngrams

    parts: list[tuple[np.ndarray, ...]] = []
    word_count = len(features.word_keys)
    low, high = features.word_ngrams
    if high and word_count:
        batch = _Batch.of(texts)
        for n in range(max(low, 1), high + 1):
            keys, rows = word_ngrams(batch, n, n)
            ids = _feature_ids(features.word_keys, keys)
            rows = rows.astype(np.int64)
            first = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
            known = ids >= 0
            parts.append((rows[known], ids[known], first[known],
                          np.full(int(known.sum()), n, dtype=np.int64)))
    low, high = features.char_ngrams
    if high and len(features.char_keys):
        tokens = [text.split() for text in texts.to_pylist()]
        token_title = np.repeat(np.arange(len(tokens)), [len(row) for row in tokens])
        token_start = np.zeros(len(tokens) + 1, dtype=np.int64)
        np.cumsum([len(row) for row in tokens], out=token_start[1:])
        flat = [token for row in tokens for token in row]
        keys, rows = char_ngrams(_Batch.of(pa.array(flat, pa.string())), low, high)
        ids = _feature_ids(features.char_keys, keys)
        known = ids >= 0
        rows = rows[known].astype(np.int64)
        title = token_title[rows]
        parts.append((title, ids[known] + word_count, rows - token_start[title],
                      np.ones(len(rows), dtype=np.int64)))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Occurrences(empty, empty, empty, empty)
    title, feature, first, spans = (np.concatenate(column) for column in zip(*parts,
                                                                             strict=True))
    order = np.lexsort((first, feature, title))
    return Occurrences(title[order], feature[order], first[order], spans[order])


def _feature_ids(vocabulary: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The position of each key in the sorted kept keys, -1 where it was not kept."""
    if len(vocabulary) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    positions = np.minimum(np.searchsorted(vocabulary, keys), len(vocabulary) - 1)
    return np.where(vocabulary[positions] == keys, positions, -1).astype(np.int64)


def _offsets_within(spans: np.ndarray) -> np.ndarray:
    """0, 1, ..., span - 1 for each span, concatenated."""
    total = int(spans.sum())
    starts = np.repeat(np.cumsum(spans) - spans, spans)
    return np.arange(total, dtype=np.int64) - starts


def _word_of_token(entry: TitleWords) -> np.ndarray:
    """Which word each of a title's tokens comes from."""
    return np.repeat(np.arange(len(entry.words)), entry.tokens_per_word)


def _word_ngrams(classifier: LinearClassifier, occurrences, title: int, part: np.ndarray,
                 tokens: list[str], word_of_token: np.ndarray,
                 word_count: int) -> list[list[NgramContribution]]:
    """Each word's n-gram occurrences with the part of their contribution it got."""
    word_features = len(classifier.features.word_keys)
    per_word: list[list[NgramContribution]] = [[] for _ in range(word_count)]
    for occurrence in np.flatnonzero(occurrences.title == title):
        first, span = int(occurrences.first[occurrence]), int(occurrences.tokens[occurrence])
        feature = int(occurrences.feature[occurrence])
        if feature < word_features:
            kind, text = "word", " ".join(tokens[first:first + span])
        else:
            kind = "char"
            text = _char_text(int(classifier.features.char_keys[feature - word_features]))
        shares: dict[int, float] = {}
        for token in range(first, first + span):
            word = int(word_of_token[token])
            shares[word] = shares.get(word, 0.0) + float(part[occurrence]) / span
        for word, value in shares.items():
            per_word[word].append(NgramContribution(text, kind, value))
    for grams in per_word:
        grams.sort(key=lambda gram: (-abs(gram.contribution), gram.kind != "word", gram.text))
    return per_word


def _char_text(key: int) -> str:
    """A character n-gram's text from its key: n bytes packed big-endian, n in the top byte."""
    length = key >> 56
    return (key & ((1 << 56) - 1)).to_bytes(length, "big").decode("utf-8", "replace")


# ---- reading explanations ----------------------------------------------------------------------

def format_explanation(explanation: Explanation, width: int = 12) -> str:
    """A person's view: the title, the category, then each word in title order with its signed
    contribution and a bar as long as its share of the largest, the strongest marked."""
    lines = [explanation.title,
             f"  {explanation.category}  {explanation.probability:.1%}   "
             f"({SHORT_MEASURES[explanation.method]})"]
    if explanation.intercept is not None:
        lines.append(f"  score {explanation.score:+.3f} = intercept {explanation.intercept:+.3f}"
                     f" + the words {explanation.score - explanation.intercept:+.3f}")
    if not explanation.words:
        lines.append("  (no words)")
        return "\n".join(lines)
    largest = float(np.abs(explanation.contributions).max())
    strongest_for, strongest_against = explanation.strongest(1), explanation.strongest(-1)
    shown = [_shown_word(word, normalized)
             for word, normalized in zip(explanation.words, explanation.normalized, strict=True)]
    column = max(len(text) for text in shown)
    for index, text in enumerate(shown):
        value = float(explanation.contributions[index])
        bar = ("+" if value > 0 else "-") * (math.ceil(width * abs(value) / largest)
                                             if largest > 0 and value else 0)
        mark = ("  <- strongest for" if index == strongest_for
                else "  <- strongest against" if index == strongest_against else "")
        lines.append(f"  {value:+8.3f}  {text:<{column}}  {bar:<{width}}{mark}".rstrip())
        if explanation.ngrams is not None:
            lines += _ngram_lines(explanation, index, column)
    return "\n".join(lines)


def _ngram_lines(explanation: Explanation, index: int, column: int, shown: int = 5) -> list[str]:
    """Under a word, its n-grams with the largest parts (decomposition with n-grams)."""
    grams = explanation.ngrams[index]
    lines = [f"  {'':8}    {gram.contribution:+8.3f}  {gram.kind} {gram.text!r}"
             for gram in grams[:shown]]
    if len(grams) > shown:
        lines.append(f"  {'':8}    {'':8}  ... {len(grams) - shown} more")
    return lines


def _shown_word(word: str, normalized: str) -> str:
    """The word, and what the model reads when that is more than its lowercase."""
    if normalized == word.lower():
        return word
    return f"{word} ({normalized})" if normalized else f"{word} (dropped)"


# ---- `meli explain --input`: many titles, streamed -----------------------------------------

# Titles explained per call: their occlusion titles go through the model together.
EXPLAIN_CHUNK = 512


def write_explanations(classifier: Classifier, reader: TitleReader, out: TextIO, *,
                       category: str | None = None, method: str | None = None,
                       as_json: bool = False, ngrams: bool = False) -> int:
    """Explain every title of `reader` (meli predict's input reader), block by block, writing
    the text view or JSON lines; the number explained. Titles of more than MAX_WORDS words are
    skipped, counted and named like predict's skipped rows."""
    import json

    written = 0
    for block in reader:
        titles = block.titles.to_pylist()
        too_long = np.array([len(title.split()) > MAX_WORDS for title in titles], dtype=bool)
        reader.skipped.add(f"more than {MAX_WORDS} words", block.line_numbers[too_long])
        kept = [title for title, skip in zip(titles, too_long, strict=True) if not skip]
        for start in range(0, len(kept), EXPLAIN_CHUNK):
            for explanation in explain(classifier, kept[start:start + EXPLAIN_CHUNK], category,
                                       method, ngrams):
                if as_json:
                    out.write(json.dumps(explanation.as_dict(), ensure_ascii=False) + "\n")
                else:
                    out.write(("\n" if written else "") + format_explanation(explanation) + "\n")
                written += 1
    if written == 0:
        raise MeliError(f"{reader.name}: no titles to explain")
    reader.skipped.report(reader.name)
    return written
