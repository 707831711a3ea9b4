"""Title normalization: the one function that training, evaluation and prediction all use.

It runs as vectorized Arrow string kernels, so the same code that normalizes a single title typed
at `meli predict` normalizes millions of rows in `prepare` at several hundred thousand rows/s.
Tokens are then simply the whitespace-separated words of the normalized text.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from meli.params import TextParams

# Arrow's regex engine (RE2) knows Unicode classes: Mn are the combining accents left by NFKD.
_COMBINING_MARKS = r"\p{Mn}+"
_PUNCTUATION = r"([^\p{L}\p{N}\s])"
# RE2's \s is only [\t\n\f\r ]: add the rest of what str.split() splits on (\v, \x1c-\x1f,
# \x85 and the Unicode separators), so that no whitespace survives inside a token.
_WHITESPACE = r"[\s\v\x{1c}-\x{1f}\x{85}\p{Z}]+"


def normalize(titles: pa.Array | pa.ChunkedArray | Iterable[str], settings: TextParams) -> pa.Array:
    """Normalize titles into space-separated tokens; null titles become empty strings."""
    if not isinstance(titles, pa.Array | pa.ChunkedArray):
        titles = pa.array(list(titles), type=pa.string())
    text = pc.fill_null(titles, "")
    if settings.lowercase:
        text = pc.utf8_lower(text)
    if settings.fold_accents:
        # NFKD splits "ó" into "o" + a combining accent ("ñ" into "n" + tilde), then the marks go.
        text = pc.utf8_normalize(text, "NFKD")
        text = pc.replace_substring_regex(text, _COMBINING_MARKS, "")
    else:
        text = pc.utf8_normalize(text, "NFKC")
    if settings.digits == "zero":
        text = pc.replace_substring_regex(text, r"\d", "0")
    elif settings.digits == "drop":
        text = pc.replace_substring_regex(text, r"\d+", " ")
    if settings.punctuation == "split":
        text = pc.replace_substring_regex(text, _PUNCTUATION, r" \1 ")
    elif settings.punctuation == "drop":
        text = pc.replace_substring_regex(text, _PUNCTUATION, " ")
    # Collapse every run of whitespace (tabs and newlines included) to one space.
    text = pc.replace_substring_regex(text, _WHITESPACE, " ")
    text = pc.utf8_trim_whitespace(text)
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    return text


def normalize_title(title: str, settings: TextParams) -> str:
    """Normalize one title (the same function as for a whole column)."""
    return normalize([title], settings)[0].as_py()


def tokens(title: str, settings: TextParams) -> list[str]:
    return normalize_title(title, settings).split()
