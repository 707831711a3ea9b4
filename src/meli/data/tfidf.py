"""TF-IDF features of normalized titles: word n-grams and in-word character n-grams, computed for
a whole batch of titles at once, in numpy, with no Python loop per title or per word (that loop is
what makes scikit-learn's analyzers slow to predict with).

- A batch of normalized titles (the Arrow array `meli.data.text.normalize` returns) becomes one
  UTF-8 byte buffer " t1 t2 ... tN ", a space before, between and after the titles.
- Character n-grams are windows of n bytes (n <= 7) with no space inside, so they never cross a
  word: " fu", "und", "da " of " funda " (scikit-learn's `char_wb`). The n bytes packed into an
  integer, n in its top byte, are the n-gram's key: exact, no hashing. (Normalization folds
  accents, so bytes are characters for nearly every title.)
- Words are the runs between spaces; a word's key is a 64-bit polynomial hash of its bytes,
  computed for every word at once from one prefix sum, and word n-grams chain the keys of
  consecutive words of a title. Deterministic: Python's salted `hash` is never used.
- A key becomes a feature id through a hash table of the sorted keys kept at fit time; keys
  never seen in training are dropped.
- Per title: term frequency (1 + log tf when sublinear) times the feature's idf, L2-normalized
  per block (words, characters); the blocks are weighted and stacked into one CSR matrix.

`TfidfFeatures` holds the kept keys and idf as plain arrays, saved as `.npy` files and read back
with `allow_pickle=False`: loading features never runs code from a file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from meli.params import LinearParams
from meli.progress import Progress

log = logging.getLogger(__name__)

SPACE = 0x20
WORD_KEYS_FILE = "word_keys.npy"
CHAR_KEYS_FILE = "char_keys.npy"
IDF_FILE = "idf.npy"
# Titles featurized at a time while fitting: memory follows the distinct n-grams, not the rows.
FIT_CHUNK = 100_000


@dataclass
class TfidfFeatures:
    """The kept n-grams (sorted uint64 keys) and one idf weight per feature: feature i is word
    n-gram word_keys[i] for i < len(word_keys), character n-gram char_keys[i - len(word_keys)]
    after that."""

    word_ngrams: tuple[int, int]
    char_ngrams: tuple[int, int]
    sublinear_tf: bool
    char_weight: float
    word_keys: np.ndarray
    char_keys: np.ndarray
    idf: np.ndarray
    _word_index: _KeyIndex = field(init=False, repr=False, compare=False)
    _char_index: _KeyIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._word_index = _KeyIndex(self.word_keys)
        self._char_index = _KeyIndex(self.char_keys)

    @property
    def size(self) -> int:
        return len(self.word_keys) + len(self.char_keys)

    def settings(self) -> dict:
        return {"word_ngrams": list(self.word_ngrams), "char_ngrams": list(self.char_ngrams),
                "sublinear_tf": self.sublinear_tf, "char_weight": self.char_weight}

    def matrix(self, texts: pa.Array | pa.ChunkedArray | list[str]) -> sp.csr_matrix:
        """The TF-IDF matrix (titles x features, float32 CSR, feature ids increasing within a
        row) of normalized texts."""
        batch = _Batch.of(texts)
        words, chars = _keys(batch, self.word_ngrams, self.char_ngrams)
        word_count = len(self.word_keys)
        rows, ids = [], []
        for found, index, offset in ((words, self._word_index, 0),
                                     (chars, self._char_index, word_count)):
            if found is not None:
                positions = index.lookup(found[0])
                known = positions >= 0
                rows.append(found[1][known])
                ids.append(positions[known] + offset)
        entries = sum(len(part) for part in rows)
        if not entries:
            return sp.csr_matrix((batch.size, self.size), dtype=np.float32)
        # SciPy counts the repeated (title, n-gram) pairs and sorts each row's ids in C: a
        # counting sort by title, then short per-title sorts, where one sort of all the pairs
        # took twice as long.
        matrix = sp.csr_matrix((np.ones(entries, np.float32),
                                (np.concatenate(rows), np.concatenate(ids))),
                               shape=(batch.size, self.size))
        matrix.sum_duplicates()
        counts = matrix.data
        tf = 1.0 + np.log(counts) if self.sublinear_tf else counts
        values = tf * self.idf[matrix.indices]
        # Each block (words, characters) L2-normalized per title, characters then weighted.
        title = np.repeat(np.arange(batch.size), np.diff(matrix.indptr))
        is_char = matrix.indices >= word_count
        squares = values * values
        scale = np.empty(len(values))
        for block, weight in ((~is_char, 1.0), (is_char, self.char_weight)):
            norms = np.sqrt(np.bincount(title[block], weights=squares[block],
                                        minlength=batch.size))
            scale[block] = weight / np.maximum(norms[title[block]], 1e-12)
        matrix.data = (values * scale).astype(np.float32)
        return matrix

    def known_words(self, texts: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray:
        """How many words of each normalized text are in the word vocabulary (as unigrams)."""
        batch = _Batch.of(texts)
        starts, ends, rows = _words(batch)
        known = self._word_index.lookup(_word_keys(batch, starts, ends)) >= 0
        return np.bincount(rows[known], minlength=batch.size)[:batch.size].astype(np.int64)

    def save(self, directory: Path) -> None:
        for name, array in ((WORD_KEYS_FILE, self.word_keys), (CHAR_KEYS_FILE, self.char_keys),
                            (IDF_FILE, self.idf)):
            np.save(directory / name, array, allow_pickle=False)

    @classmethod
    def load(cls, directory: Path, settings: dict) -> TfidfFeatures:
        """Read the arrays `save` wrote (never unpickling); ValueError names a file whose type
        or shape is not what the settings and the other files say."""
        arrays = {name: np.load(directory / name, allow_pickle=False)
                  for name in (WORD_KEYS_FILE, CHAR_KEYS_FILE, IDF_FILE)}
        words, chars = arrays[WORD_KEYS_FILE], arrays[CHAR_KEYS_FILE]
        expected = {WORD_KEYS_FILE: (np.uint64, (len(words),)),
                    CHAR_KEYS_FILE: (np.uint64, (len(chars),)),
                    IDF_FILE: (np.float32, (len(words) + len(chars),))}
        for name, (dtype, shape) in expected.items():
            if arrays[name].dtype != dtype or arrays[name].shape != shape:
                raise ValueError(f"{directory / name}: {arrays[name].dtype}"
                                 f"{arrays[name].shape}, expected {np.dtype(dtype)}{shape}")
        return cls(word_ngrams=tuple(settings["word_ngrams"]),
                   char_ngrams=tuple(settings["char_ngrams"]),
                   sublinear_tf=bool(settings["sublinear_tf"]),
                   char_weight=float(settings["char_weight"]),
                   word_keys=words, char_keys=chars, idf=arrays[IDF_FILE])


def fit_features(texts: pa.Array, params: LinearParams) -> TfidfFeatures:
    """The n-grams kept (min_df, max_features) and their idf (smooth, as scikit-learn's:
    ln((1 + N) / (1 + df)) + 1), counted over the training texts a chunk at a time."""
    word_ngrams, char_ngrams = tuple(params.word_ngrams), tuple(params.char_ngrams)
    empty = (np.zeros(0, np.uint64), np.zeros(0, np.int64))
    word_df, char_df = empty, empty
    done = 0
    with Progress("linear: counting n-grams", len(texts), "titles", logger=log) as progress:
        for chunk in chunks(texts, FIT_CHUNK):
            words, chars = _keys(_Batch.of(chunk), word_ngrams, char_ngrams)
            if words is not None:
                word_df = _merge(word_df, _document_frequencies(*words))
            if chars is not None:
                char_df = _merge(char_df, _document_frequencies(*chars))
            done += len(chunk)
            progress.update(done)
    word_keys, word_counts = _kept(*word_df, params.word_min_df, params.max_word_features)
    char_keys, char_counts = _kept(*char_df, params.char_min_df, params.max_char_features)
    log.info("linear: %d of %d word n-grams and %d of %d character n-grams kept",
             len(word_keys), len(word_df[0]), len(char_keys), len(char_df[0]))
    counts = np.concatenate([word_counts, char_counts])
    idf = np.log((1.0 + len(texts)) / (1.0 + counts)) + 1.0
    return TfidfFeatures(word_ngrams, char_ngrams, params.sublinear_tf, params.char_weight,
                         word_keys, char_keys, idf.astype(np.float32))


def chunks(texts: pa.Array, size: int) -> Iterator[pa.Array]:
    for start in range(0, len(texts), size):
        yield texts.slice(start, size)


# ---- keys: the n-grams of a batch of normalized titles, all at once --------------------------

@dataclass
class _Batch:
    """Normalized titles as one byte buffer with a space before, between and after them."""

    buffer: np.ndarray       # uint8
    row_of_byte: np.ndarray  # int32: the title each byte belongs to (it owns its leading space)
    size: int                # titles

    @classmethod
    def of(cls, texts: pa.Array | pa.ChunkedArray | list[str]) -> _Batch:
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks()
        elif not isinstance(texts, pa.Array):
            texts = pa.array(list(texts), type=pa.string())
        if texts.null_count:
            texts = pc.fill_null(texts, "")
        count = len(texts)
        offset_type = np.int64 if texts.type == pa.large_string() else np.int32
        _, offsets, data = texts.buffers()
        offsets = np.frombuffer(offsets, dtype=offset_type)[texts.offset:texts.offset + count + 1]
        data = (np.frombuffer(data, dtype=np.uint8) if data is not None
                else np.zeros(0, dtype=np.uint8))[offsets[0]:offsets[-1]]
        lengths = np.diff(offsets).astype(np.int64)
        # Title i's bytes move right by i + 1: one separator before each title, one at the end.
        buffer = np.full(len(data) + count + 1, SPACE, dtype=np.uint8)
        shift = np.repeat(np.arange(1, count + 1, dtype=np.int64), lengths)
        buffer[np.arange(len(data), dtype=np.int64) + shift] = data
        # The final space gets row `count`, a row no n-gram ends up in.
        row_of_byte = np.repeat(np.arange(count + 1, dtype=np.int32), np.append(lengths + 1, 1))
        return cls(buffer, row_of_byte, count)


_P = np.uint64(0x100000001B3)  # the FNV prime: odd, so invertible mod 2**64
_P_INVERSE = np.uint64(pow(0x100000001B3, -1, 2**64))
_CHAIN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads every input bit over the whole 64-bit key."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _powers(base: np.uint64, count: int) -> np.ndarray:
    powers = np.full(count, base, dtype=np.uint64)
    powers[0] = 1
    return np.cumprod(powers, dtype=np.uint64)  # wraps mod 2**64, as intended


def _words(batch: _Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, row) of every word: the runs of bytes between spaces."""
    spaces = np.flatnonzero(batch.buffer == SPACE)
    starts, ends = spaces[:-1] + 1, spaces[1:]
    nonempty = ends > starts
    starts, ends = starts[nonempty], ends[nonempty]
    return starts, ends, batch.row_of_byte[starts]


def _word_keys(batch: _Batch, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """64-bit keys of the words buffer[start:end], all at once: with S[i] = sum_{j<i} b_j P^-j,
    the polynomial hash sum_j b_j P^(end-1-j) of a word is P^(end-1) (S[end] - S[start])."""
    size = len(batch.buffer)
    prefix = np.zeros(size + 1, dtype=np.uint64)
    np.cumsum(batch.buffer.astype(np.uint64) * _powers(_P_INVERSE, size), out=prefix[1:])
    hashes = _powers(_P, size)[ends - 1] * (prefix[ends] - prefix[starts])
    return _mix(hashes + (ends - starts).astype(np.uint64))


def word_ngrams(batch: _Batch, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """(keys, rows) of every word n-gram, low <= n <= high, of a batch."""
    starts, ends, rows = _words(batch)
    unigrams = _word_keys(batch, starts, ends)
    keys, key_rows = [], []
    chained = unigrams
    for n in range(1, high + 1):
        if n > 1:  # the (n-1)-gram starting at word i, chained with word i + n - 1
            chained = _mix(chained[:-1] * _CHAIN + unigrams[n - 1:])
        if n >= low:
            same_title = rows[n - 1:] == rows[:len(rows) - n + 1]
            keys.append(chained[same_title])
            key_rows.append(rows[:len(rows) - n + 1][same_title])
    if not keys:
        return np.zeros(0, np.uint64), np.zeros(0, np.int32)
    return np.concatenate(keys), np.concatenate(key_rows)


def char_ngrams(batch: _Batch, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """(keys, rows) of every in-word character n-gram, low <= n <= high bytes, of a batch: a
    window counts when none of its inner bytes is a space (" fu" and "da " of " funda " do,
    "a c" does not). Key: the bytes packed big-endian, n in the top byte."""
    buffer = batch.buffer
    size = len(buffer)
    is_space = buffer == SPACE
    spaces_before = np.zeros(size + 1, dtype=np.int32)  # spaces in buffer[:i]
    np.cumsum(is_space, out=spaces_before[1:])
    packed = np.zeros(size, dtype=np.uint64)
    keys, rows = [], []
    for n in range(1, high + 1):
        count = size - n + 1
        if count <= 0:
            break
        packed = (packed[:count] << np.uint64(8)) | buffer[n - 1:].astype(np.uint64)
        if n < low:
            continue
        if n == 1:
            valid = ~is_space
        else:  # no space among the n - 2 inner bytes, and not two spaces alone ("  ")
            valid = (spaces_before[n - 1:n - 1 + count] - spaces_before[1:1 + count]) == 0
            if n == 2:
                valid &= ~(is_space[:count] & is_space[1:])
        starts = np.flatnonzero(valid)
        keys.append(packed[starts] | np.uint64(n << 56))
        rows.append(batch.row_of_byte[starts])
    if not keys:
        return np.zeros(0, np.uint64), np.zeros(0, np.int32)
    return np.concatenate(keys), np.concatenate(rows)


def _keys(batch: _Batch, word_range: tuple[int, int], char_range: tuple[int, int]):
    words = word_ngrams(batch, *word_range) if word_range[1] else None
    chars = char_ngrams(batch, *char_range) if char_range[1] else None
    return words, chars


# ---- keys -> TF-IDF ---------------------------------------------------------------------------

class _KeyIndex:
    """Where each of some keys stands in the sorted keys of a vocabulary, by an open-addressing
    hash table (Fibonacci hashing, linear probing) built once: a lookup reads about one slot
    per key where a binary search reads eighteen, scattered over the keys (measured on the
    real sample's 66,000 character n-grams: 3 times faster than numpy's searchsorted)."""

    _MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / the golden ratio, odd

    def __init__(self, keys: np.ndarray):
        bits = max(4, int(np.ceil(np.log2(2 * max(len(keys), 1)))))  # at most half full
        self._shift = np.uint64(64 - bits)
        self._mask = (1 << bits) - 1
        self._keys = np.zeros(1 << bits, np.uint64)
        self._positions = np.full(1 << bits, -1, np.int64)
        slots, pending = self._home(keys), np.arange(len(keys))
        while len(pending):
            free = np.flatnonzero(self._positions[slots] < 0)
            # Of the keys whose slot is free, the first to claim each slot takes it; the others
            # (and those whose slot was taken) try the next slot.
            claimed, first = np.unique(slots[free], return_index=True)
            winners = pending[free[first]]
            self._positions[claimed] = winners
            self._keys[claimed] = keys[winners]
            placed = np.zeros(len(pending), bool)
            placed[free[first]] = True
            pending, slots = pending[~placed], (slots[~placed] + 1) & self._mask

    def _home(self, keys: np.ndarray) -> np.ndarray:
        return ((keys * self._MULTIPLIER) >> self._shift).astype(np.int64)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """The position of each key in the vocabulary, -1 where it is absent."""
        found = np.full(len(keys), -1, np.int64)
        slots = self._home(keys)
        waiting = np.arange(len(keys))
        while len(waiting):
            positions = self._positions[slots]
            occupied = positions >= 0
            hit = occupied & (self._keys[slots] == keys[waiting])
            found[waiting[hit]] = positions[hit]
            going_on = occupied & ~hit  # another key in the slot: probe the next one
            waiting, slots = waiting[going_on], (slots[going_on] + 1) & self._mask
        return found


# ---- fitting: document frequencies, merged chunk by chunk -------------------------------------

def _document_frequencies(keys: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct keys, sorted; the number of titles each occurs in)."""
    if len(keys) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    order = np.lexsort((rows, keys))  # by key, then title: one occurrence per (title, key)
    keys, rows = keys[order], rows[order]
    first_of_pair = np.ones(len(keys), dtype=bool)
    first_of_pair[1:] = (keys[1:] != keys[:-1]) | (rows[1:] != rows[:-1])
    keys = keys[first_of_pair]
    first = np.flatnonzero(np.diff(keys, prepend=keys[:1] ^ np.uint64(1)))
    return keys[first], np.diff(first, append=len(keys))


def _merge(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]):
    keys = np.concatenate([a[0], b[0]])
    counts = np.concatenate([a[1], b[1]])
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    if len(keys) == 0:
        return keys, counts
    first = np.flatnonzero(np.diff(keys, prepend=keys[:1] ^ np.uint64(1)))
    return keys[first], np.add.reduceat(counts, first)


def _kept(keys: np.ndarray, df: np.ndarray, min_df: int, limit: int | None):
    keep = df >= min_df
    keys, df = keys[keep], df[keep]
    if limit is not None and len(keys) > limit:
        # The most frequent; ties broken by key, so that the choice is deterministic.
        order = np.sort(np.lexsort((keys, -df))[:limit])
        keys, df = keys[order], df[order]
    return keys, df
