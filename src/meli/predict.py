"""`meli predict`: categories of titles from a model bundle.

Titles come from the command line, from a file of one title per line, from a CSV with a `title`
column, or from standard input (`-`). Titles given on the command line print as a readable list;
titles read from a file or stdin become a CSV of the top-k categories with probabilities.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path
from typing import TextIO

from meli.bundle import Classifier
from meli.errors import MeliError

log = logging.getLogger(__name__)


def read_titles(source: str) -> list[str]:
    """Titles from a file (or stdin for "-"): a CSV with a `title` column, or one per line."""
    name = "<stdin>" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise MeliError(f"{name}: no such file") from None
    except UnicodeDecodeError as error:
        raise MeliError(f"{name}: not valid UTF-8 (byte {error.start})") from None
    except IsADirectoryError:
        raise MeliError(f"{name}: is a directory, not a file of titles") from None
    lines = text.splitlines()
    header = next(csv.reader(lines[:1]), []) if lines else []
    if any(field.strip().lower() == "title" for field in header):
        titles = _csv_titles(text, name)
    else:
        titles = [line.strip() for line in lines if line.strip()]
    if not titles:
        raise MeliError(f"{name}: no titles to classify")
    return titles


def _csv_titles(text: str, name: str) -> list[str]:
    reader = csv.DictReader(io.StringIO(text))
    column = next(f for f in reader.fieldnames or [] if f.strip().lower() == "title")
    titles, skipped = [], []
    try:
        for row in reader:
            title = (row.get(column) or "").strip()
            if title:
                titles.append(title)
            else:
                skipped.append(reader.line_num)
    except csv.Error as error:
        raise MeliError(f"{name}: line {reader.line_num}: malformed CSV: {error}") from None
    if skipped:
        shown = ", ".join(map(str, skipped[:10])) + (", ..." if len(skipped) > 10 else "")
        log.warning("%s: skipped %d row(s) with an empty title (line %s)", name, len(skipped),
                    shown)
    return titles


def print_predictions(classifier: Classifier, titles: list[str], top_k: int,
                      out: TextIO) -> None:
    for title, best in zip(titles, classifier.top(titles, top_k), strict=True):
        out.write(f"{title}\n")
        for category, probability in best:
            out.write(f"  {probability:6.1%}  {category}\n")


def write_predictions_csv(classifier: Classifier, titles: list[str], top_k: int,
                          out: TextIO, batch_size: int = 10_000) -> None:
    writer = csv.writer(out)
    k = min(top_k, len(classifier.labels))
    header = ["title", "category", "probability"]
    for rank in range(2, k + 1):
        header += [f"category_{rank}", f"probability_{rank}"]
    writer.writerow(header)
    for start in range(0, len(titles), batch_size):
        batch = titles[start:start + batch_size]
        for title, best in zip(batch, classifier.top(batch, k), strict=True):
            row: list[str] = [title]
            for category, probability in best:
                row += [category, f"{probability:.6f}"]
            writer.writerow(row)
