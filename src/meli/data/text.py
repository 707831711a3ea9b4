"""Title normalization: the one function that training, evaluation and prediction all use.

It runs as vectorized Arrow string kernels, so the same code that normalizes a single title typed
at `meli predict` normalizes millions of rows in `prepare` at several hundred thousand rows/s.
Tokens are then simply the whitespace-separated words of the normalized text.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from meli.params import TextParams

# Arrow's regex engine (RE2) knows Unicode classes: Mn are the combining accents left by NFKD.
_COMBINING_MARKS = r"\p{Mn}+"
_PUNCTUATION = r"([^\p{L}\p{N}\s])"
# Every character str.split() splits on except the plain space: RE2's \s is only [\t\n\f\r ],
# so the rest (\v, \x1c-\x1f, \x85 and the Unicode separators) is spelled out.
_OTHER_WHITESPACE = (r"\t\n\f\r\v\x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}"
                     r"\x{2029}\x{202f}\x{205f}\x{3000}")
# Runs of whitespace and single non-space whitespace; lone spaces, by far the most common,
# are left alone, which makes this pass 5x faster than rewriting every space.
_WHITESPACE = f"[ {_OTHER_WHITESPACE}]{{2,}}|[{_OTHER_WHITESPACE}]"


def normalize(titles: pa.Array | pa.ChunkedArray | Iterable[str], settings: TextParams) -> pa.Array:
    """Normalize titles into space-separated tokens; null titles become empty strings."""
    if not isinstance(titles, pa.Array | pa.ChunkedArray):
        titles = pa.array(list(titles), type=pa.string())
    # (fill_null costs tens of microseconds even with nothing to fill: a short batch's share)
    text = _one_chunk(pc.fill_null(titles, "") if titles.null_count else titles)
    if settings.lowercase:
        text = pc.utf8_lower(text)
    # NFKD splits "ó" into "o" + a combining accent ("ñ" into "n" + tilde), then the marks go.
    text = _unicode_normalized(text, "NFKD" if settings.fold_accents else "NFKC",
                               strip_marks=settings.fold_accents)
    if settings.digits == "zero":
        text = _digits_to_zero(text)
    elif settings.digits == "drop":
        text = pc.replace_substring_regex(text, r"\d+", " ")
    if settings.punctuation != "keep":
        text = _punctuation_replaced(text, split=settings.punctuation == "split")
    return pc.utf8_trim_whitespace(_whitespace_collapsed(text))


def _one_chunk(text: pa.Array | pa.ChunkedArray) -> pa.Array:
    return text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text


# Arrow compiles a regular expression on every call, and RE2 takes milliseconds to compile the
# Unicode classes \p{L}, \p{N} and \p{Mn} (tests/test_prepare.py times it): more than all the
# rest of normalizing a short batch. So what those patterns do to ASCII text, and to the
# combining accents NFKD leaves (U+0300-U+036F), is done on the UTF-8 bytes instead, exactly,
# and the patterns run only on the titles that still hold other characters.

def _unicode_normalized(text: pa.Array, form: str, strip_marks: bool) -> pa.Array:
    """Unicode normalization (and combining marks dropped), done only on the texts that are not
    pure ASCII: NFKD/NFKC leave ASCII unchanged and it holds no marks, and these two passes are
    the costliest of all."""
    ascii_only = pc.string_is_ascii(text)
    count = ascii_only.false_count
    if count == 0:
        return text
    other = pc.invert(ascii_only)
    subset = text.filter(other) if count < len(text) else text
    subset = pc.utf8_normalize(subset, form)
    if strip_marks:
        subset = _without_combining_marks(subset)
    if count == len(text):
        return subset
    return pc.replace_with_mask(text, other, subset)


def _without_combining_marks(text: pa.Array) -> pa.Array:
    """The texts without their combining marks (Unicode class Mn): those of U+0300-U+036F
    (every accent of Spanish and Portuguese) dropped from the bytes, the pattern run only on
    the texts that hold some other non-ASCII character."""
    data, offsets = _utf8_of(text)
    # U+0300-U+033F are 0xCC 0x80-0xBF, U+0340-U+036F 0xCD 0x80-0xAF. In valid UTF-8, 0xCC and
    # 0xCD only ever lead a two-byte character.
    lead = data == 0xCC
    lead[:-1] |= (data[:-1] == 0xCD) & (data[1:] <= 0xAF)
    if lead.any():
        marks = np.flatnonzero(lead)
        marks = np.concatenate([marks, marks + 1])
        marks.sort()
        text = _string_array(text.type, np.delete(data, marks),
                             offsets - np.searchsorted(marks, offsets))
    ascii_only = pc.string_is_ascii(text)
    if ascii_only.false_count == 0:
        return text
    other = pc.invert(ascii_only)
    return pc.replace_with_mask(
        text, other, pc.replace_substring_regex(text.filter(other), _COMBINING_MARKS, ""))


# The ASCII characters [^\p{L}\p{N}\s] matches: all but letters, digits and RE2's \s, which
# is [\t\n\f\r ] (so the vertical tab and the other control characters are punctuation).
_ASCII_PUNCTUATION = np.zeros(256, dtype=bool)
_ASCII_PUNCTUATION[:0x80] = True
_ASCII_PUNCTUATION[list(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")] = False
_ASCII_PUNCTUATION[list(b"\t\n\f\r ")] = False
# The ASCII characters of _WHITESPACE: the space, \t-\r and \x1c-\x1f.
_ASCII_WHITESPACE = np.zeros(256, dtype=bool)
_ASCII_WHITESPACE[[0x20, *range(0x09, 0x0E), *range(0x1C, 0x20)]] = True


def _punctuation_replaced(text: pa.Array, split: bool) -> pa.Array:
    """Each punctuation character becomes a space, or (split) itself between two spaces."""

    def on_bytes(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        punctuation = _ASCII_PUNCTUATION[data]
        if not split:
            return np.where(punctuation, np.uint8(0x20), data), offsets
        # A space before and after each: a text's offsets move by two per mark before them.
        marks = np.flatnonzero(punctuation)
        spread = np.insert(data, np.concatenate([marks, marks + 1]), np.uint8(0x20))
        return spread, offsets + 2 * np.searchsorted(marks, offsets)

    return _ascii_by_bytes(text, on_bytes, _PUNCTUATION, r" \1 " if split else " ")


def _whitespace_collapsed(text: pa.Array) -> pa.Array:
    """Every run of whitespace (tabs and newlines included) becomes one space."""

    def on_bytes(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        space = _ASCII_WHITESPACE[data]
        # A space right after another of the same text goes; the first of each run stays.
        follows = np.zeros_like(space)
        follows[1:] = space[:-1]
        follows[offsets[:-1][offsets[:-1] < len(data)]] = False
        dropped = np.flatnonzero(space & follows)
        other = space & (data != 0x20)
        if other.any():
            data = np.where(other, np.uint8(0x20), data)
        return np.delete(data, dropped), offsets - np.searchsorted(dropped, offsets)

    return _ascii_by_bytes(text, on_bytes, _WHITESPACE, " ")


def _ascii_by_bytes(text: pa.Array, on_bytes, pattern: str, replacement: str) -> pa.Array:
    """What replacing `pattern` by `replacement` does, computed by `on_bytes` on the UTF-8 bytes
    (exact for ASCII characters, which are single bytes there), and by the pattern itself on
    the texts that hold other characters."""
    result = _string_array(text.type, *on_bytes(*_utf8_of(text)))
    ascii_only = pc.string_is_ascii(text)
    if ascii_only.false_count == 0:
        return result
    other = pc.invert(ascii_only)
    subset = pc.replace_substring_regex(text.filter(other), pattern, replacement)
    return pc.replace_with_mask(result, other, subset)


def _utf8_of(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of a string array without nulls, and its offsets into them (from 0)."""
    offset_type = np.int64 if text.type == pa.large_string() else np.int32
    _, offsets_buffer, data_buffer = text.buffers()
    if offsets_buffer is None:  # an empty array
        return np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=offset_type)
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[
        text.offset:text.offset + len(text) + 1]
    if data_buffer is None:  # only empty texts
        return np.zeros(0, dtype=np.uint8), np.zeros(len(text) + 1, dtype=offset_type)
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0]:offsets[-1]]
    return data, offsets - offsets[0]


def _string_array(kind: pa.DataType, data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    offset_type = np.int64 if kind == pa.large_string() else np.int32
    return pa.Array.from_buffers(kind, len(offsets) - 1, [
        None, pa.py_buffer(np.ascontiguousarray(offsets, dtype=offset_type)),
        pa.py_buffer(np.ascontiguousarray(data))])


# Byte -> byte: the ASCII digits 1-9 become 0, every other byte stays.
_ZERO_DIGITS = np.arange(256, dtype=np.uint8)
_ZERO_DIGITS[0x31:0x3A] = 0x30


def _digits_to_zero(text: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Every ASCII digit becomes "0" (what the regex \\d -> 0 does, 6x faster).

    Done on the UTF-8 bytes: bytes 0x31-0x39 are always the digits 1-9 there, since every byte
    of a multi-byte character is >= 0x80; lengths do not change, so the offsets stay valid.
    """
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    validity, offsets, data = text.buffers()
    if data is None:  # an empty array
        return text
    characters = _ZERO_DIGITS[np.frombuffer(data, dtype=np.uint8)]
    buffers = [validity, offsets, pa.py_buffer(characters)]
    return pa.Array.from_buffers(text.type, len(text), buffers,
                                 text.null_count, text.offset)


def normalize_title(title: str, settings: TextParams) -> str:
    """Normalize one title (the same function as for a whole column)."""
    return normalize([title], settings)[0].as_py()


def tokens(title: str, settings: TextParams) -> list[str]:
    return normalize_title(title, settings).split()
