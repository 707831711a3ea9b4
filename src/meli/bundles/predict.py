"""`meli predict`: categories of titles from a model bundle, streamed from any size of input.

Titles come from the command line (printed as a readable list), or from `--input`: a file of
one title per line, a CSV with a title column (`--column`, default `title`), gzip-compressed or
not, or standard input (`-`). Input is read, classified and written as CSV in blocks, so memory
stays flat whatever the number of titles; the top-k choice and the CSV are computed a column at
a time, not row by row.

Input that is not what it should be ends in one line naming the file (and line) and a non-zero
exit: a missing file, a directory, an empty input, bytes that are not UTF-8, a CSV without the
title column. Rows that can be skipped (an empty title, a title too long to be one) are skipped,
counted and named on stderr. A title none of whose words the model knows is still classified,
and the CSV's `known_words` column says so (0).
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from meli.bundles.answers import NO_KNOBS, Answers, Knobs, answer
from meli.bundles.calibration import Calibration
from meli.bundles.classifier import Classifier
from meli.data.blocks import whole_lines
from meli.data.formats import DECOMPRESSORS, MAGIC_BYTES, compression_of
from meli.errors import MeliError

log = logging.getLogger(__name__)

BLOCK_BYTES = 4 << 20  # input read per block: a few tens of thousands of titles
# Longer "titles" are skipped: real ones are at most a few hundred characters, and a line of a
# million characters is a broken file, not a product.
MAX_TITLE_CHARS = 10_000
STDIN = "-"


@dataclass
class Skipped:
    """Rows left out of the output, by reason, with the first few line numbers of each."""

    counts: dict[str, int] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)

    def add(self, reason: str, line_numbers: np.ndarray) -> None:
        if len(line_numbers):
            self.counts[reason] = self.counts.get(reason, 0) + len(line_numbers)
            shown = self.lines.setdefault(reason, [])
            shown += line_numbers[: max(0, 10 - len(shown))].tolist()

    def report(self, name: str) -> None:
        for reason, count in self.counts.items():
            more = ", ..." if count > len(self.lines[reason]) else ""
            where = ", ".join(map(str, self.lines[reason]))
            print(f"{name}: skipped {count} row(s) with {reason} (line {where}{more})",
                  file=sys.stderr)


# ---- reading ------------------------------------------------------------------------------------

def _open_input(source: str) -> tuple[IO[bytes], str, int | None]:
    """A binary stream of the input (gzip undone), its display name and its size in bytes."""
    if source == STDIN:
        if sys.stdin is None:
            raise MeliError("<stdin>: standard input is closed; nothing to classify")
        return sys.stdin.buffer, "<stdin>", None
    path = Path(source)
    if path.is_dir():
        raise MeliError(f"{source}: is a directory, not a file of titles")
    try:
        raw = path.open("rb")
    except FileNotFoundError:
        raise MeliError(f"{source}: no such file") from None
    except OSError as error:
        raise MeliError(f"{source}: cannot read: {error.strerror}") from None
    size = path.stat().st_size
    if compression_of(raw.peek(MAGIC_BYTES)) == "gzip":
        return DECOMPRESSORS["gzip"](raw), source, size
    return raw, source, size


def _blocks(stream: IO[bytes], read_ahead: bool) -> Iterator[bytes]:
    """The input in blocks of whole lines (`meli.data.blocks`); a regular file is read ahead in a
    thread, standard input and pipes are not (a pipe left open would keep an error waiting)."""
    blocks = whole_lines(stream, BLOCK_BYTES, read_ahead=read_ahead)
    while True:
        try:
            block = next(blocks, None)
        except (OSError, EOFError) as error:  # a truncated or damaged gzip stream
            raise MeliError(f"unreadable input: {error}") from None
        if block is None:
            return
        yield block


def _decode(block: bytes, name: str, first_line: int) -> str:
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError as error:
        line = first_line + block.count(b"\n", 0, error.start)
        raise MeliError(f"{name}: line {line}: not valid UTF-8 (byte 0x{block[error.start]:02x})"
                        f"; save the file as UTF-8") from None


@dataclass
class TitleBlock:
    titles: pa.Array  # string
    line_numbers: np.ndarray  # the input line of each title (1 = the first line)


class TitleReader:
    """Titles of an input in blocks: plain lines, or one column of a CSV."""

    def __init__(self, source: str, column: str | None = None):
        self.stream, self.name, self.size = _open_input(source)
        self.skipped = Skipped()
        self.bytes_read = 0
        regular_file = source != STDIN and Path(source).is_file()
        self._blocks = _blocks(self.stream, read_ahead=regular_file)
        first = next(self._blocks, b"")
        self.bytes_read += len(first)
        if source == STDIN and not first:
            raise MeliError("<stdin>: no input (standard input was empty or closed)")
        if not first.strip():
            raise MeliError(f"{self.name}: empty, no titles to classify")
        self._first = first.removeprefix(b"\xef\xbb\xbf")
        header_line = _decode(self._first.split(b"\n", 1)[0], self.name, 1)
        self.columns = self._csv_columns(header_line, source, column)
        self.column = None
        if self.columns is not None:
            wanted = column or "title"
            matches = [name for name in self.columns if name.strip().lower() == wanted.lower()]
            if not matches:
                raise MeliError(f"{self.name}: line 1: no '{wanted}' column; the columns are "
                                f"{', '.join(repr(c) for c in self.columns)} (give the titles' "
                                f"column with --column NAME)")
            self.column = matches[0]

    def _csv_columns(self, header: str, source: str, column: str | None) -> list[str] | None:
        """The CSV header's columns, or None for a plain file of one title per line."""
        fields = next(iter(_parse_csv_header(header)), [])
        named_csv = source.lower().removesuffix(".gz").endswith(".csv")
        has_title = any(f.strip().lower() == (column or "title").lower() for f in fields)
        if column is not None or named_csv or has_title:
            return fields
        return None

    def __iter__(self) -> Iterator[TitleBlock]:
        yield from (self._csv() if self.columns is not None else self._lines())

    def _lines(self) -> Iterator[TitleBlock]:
        line = 1
        for _, text in self._decoded_blocks():
            lines = pa.array(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"))
            numbers = np.arange(line, line + len(lines))
            line += len(lines)
            yield self._keep(pc.utf8_trim_whitespace(lines), numbers)

    def _csv(self) -> Iterator[TitleBlock]:
        assert self.column is not None
        # One parsing thread: only then does Arrow know the number of a row it rejects (the
        # model, not the parsing, is what takes the time).
        options = pa_csv.ReadOptions(block_size=BLOCK_BYTES * 4, use_threads=False)
        convert = pa_csv.ConvertOptions(column_types={self.column: pa.string()},
                                        include_columns=[self.column], strings_can_be_null=False)
        wrong_width: list[int] = []

        def skip_row(row) -> str:
            # Arrow counts rows from 1, the header included: the row's line, unless a quoted
            # value above it spans several lines.
            wrong_width.append(row.number)
            return "skip"

        parse = pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip_row)
        stream = _Concatenated(block for block, _ in self._decoded_blocks())
        try:
            reader = pa_csv.open_csv(stream, read_options=options, convert_options=convert,
                                     parse_options=parse)
            line = 2
            for batch in reader:
                titles = pc.utf8_trim_whitespace(batch.column(0))
                # The batch's rows and the rows rejected while it was parsed, in file order.
                rows = np.arange(line, line + len(titles) + len(wrong_width))
                rejected = np.array(wrong_width, dtype=np.int64)
                line += len(rows)
                self.skipped.add("the wrong number of CSV fields", rejected)
                wrong_width.clear()
                yield self._keep(titles, rows[~np.isin(rows, rejected)])
        except pa.ArrowInvalid as error:
            raise MeliError(f"{self.name}: malformed CSV: {str(error).splitlines()[0]}") from None

    def _decoded_blocks(self) -> Iterator[tuple[bytes, str]]:
        """Every block with its text: each is checked to be UTF-8 before anything reads it, so
        that a bad byte is named by its line."""
        yield self._first, _decode(self._first, self.name, 1)
        line = 1 + self._first.count(b"\n")
        for block in self._blocks:
            self.bytes_read += len(block)
            yield block, _decode(block, self.name, line)
            line += block.count(b"\n")

    def _keep(self, titles: pa.Array, numbers: np.ndarray) -> TitleBlock:
        lengths = pc.utf8_length(titles).to_numpy(zero_copy_only=False)
        empty, too_long = lengths == 0, lengths > MAX_TITLE_CHARS
        self.skipped.add("an empty title", numbers[empty])
        self.skipped.add(f"a title longer than {MAX_TITLE_CHARS:,} characters",
                         numbers[too_long])
        keep = ~(empty | too_long)
        if keep.all():
            return TitleBlock(titles, numbers)
        return TitleBlock(titles.filter(pa.array(keep)), numbers[keep])


def _parse_csv_header(line: str) -> list[list[str]]:
    import csv

    if len(line) > MAX_TITLE_CHARS:  # no header is that long (and csv refuses such fields)
        return []
    return list(csv.reader([line]))


class _Concatenated(io.RawIOBase):
    """A file-like view of an iterator of byte blocks, for Arrow's streaming CSV reader."""

    def __init__(self, blocks: Iterator[bytes]):
        self._blocks, self._pending = blocks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            self._pending = next(self._blocks, b"")
            if not self._pending:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


# ---- writing ----------------------------------------------------------------------------------

def _fixed6(values: np.ndarray) -> pa.Array:
    """Probabilities as text with six decimals ("0.052031"), computed a column at a time."""
    micro = np.rint(np.asarray(values, dtype=np.float64) * 1e6).astype(np.int64)
    whole = pc.cast(pa.array(micro // 1_000_000), pa.string())
    fraction = pc.utf8_lpad(pc.cast(pa.array(micro % 1_000_000), pa.string()), 6, "0")
    return pc.binary_join_element_wise(whole, fraction, ".")


def csv_header(k: int, knobs: Knobs = NO_KNOBS) -> list[str]:
    header = ["title", "category", "probability"]
    for rank in range(2, k + 1):
        header += [f"category_{rank}", f"probability_{rank}"]
    header.append("known_words")
    if knobs.coverage is not None:
        header += ["set", "set_size"]
    if knobs.min_confidence is not None:
        header.append("abstain")
    return header


def prediction_table(classifier: Classifier, titles: pa.Array, k: int, knobs: Knobs = NO_KNOBS,
                     calibration: Calibration | None = None) -> pa.Table:
    """One row per title: its top-k categories and probabilities, its known word count, and
    with the knobs its set (categories joined by `|`, most probable first) and size, and
    whether the model abstains."""
    answers = answer(classifier, calibration, titles, k, knobs)
    labels = pa.array(classifier.labels, pa.string())
    columns: list[pa.Array] = [titles]
    for rank in range(answers.indices.shape[1]):
        columns.append(labels.take(pa.array(answers.indices[:, rank])))
        columns.append(_fixed6(answers.probabilities[:, rank]))
    columns.append(pa.array(answers.known_words, pa.int32()))
    if answers.in_set is not None:
        columns += [_joined_sets(answers, classifier.labels),
                    pa.array(answers.set_sizes, pa.int32())]
    if answers.abstain is not None:
        columns.append(pc.if_else(pa.array(answers.abstain), "true", "false"))
    return pa.Table.from_arrays(columns,
                                names=csv_header(answers.indices.shape[1], knobs))


def _joined_sets(answers: Answers, labels: list[str]) -> pa.Array:
    """Each title's set as one string, "A|B|C", a column of candidates at a time."""
    assert answers.candidates is not None and answers.in_set is not None
    prefixed = pa.array([f"|{label}" for label in labels], pa.string())
    parts = [pc.if_else(pa.array(answers.in_set[:, rank]),
                        prefixed.take(pa.array(answers.candidates[:, rank])), "")
             for rank in range(answers.candidates.shape[1])]
    # Joined with no separator, each part carrying its own; the first one's is cut.
    return pc.utf8_slice_codeunits(pc.binary_join_element_wise(*parts, ""), 1)


def _progress(reader: TitleReader, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=reader.size, unit="B", unit_scale=True, desc="predict", leave=False,
                disable=not enabled, mininterval=0.5)


def show_progress() -> bool:
    """A progress bar on a terminal, never in a pipe, a file or CI."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def write_predictions_csv(classifier: Classifier, reader: TitleReader, top_k: int,
                          out: IO[bytes], progress: bool = False, knobs: Knobs = NO_KNOBS,
                          calibration: Calibration | None = None) -> int:
    """Classify every title of `reader` and write the CSV to `out` block by block; the number
    of titles written. Nothing is written when there is no title at all."""
    k = min(top_k, len(classifier.labels))
    written = 0
    writer = None
    with _progress(reader, progress) as bar:
        try:
            for block in reader:
                if len(block.titles):
                    table = prediction_table(classifier, block.titles, k, knobs, calibration)
                    writer = writer or pa_csv.CSVWriter(out, table.schema)
                    writer.write_table(table)
                    written += len(block.titles)
                bar.update(reader.bytes_read - bar.n)
        finally:
            if writer is not None:
                writer.close()
    if written == 0:
        raise MeliError(f"{reader.name}: no titles to classify")
    reader.skipped.report(reader.name)
    return written


def print_predictions(classifier: Classifier, titles: list[str], top_k: int,
                      out: TextIO, knobs: Knobs = NO_KNOBS,
                      calibration: Calibration | None = None) -> None:
    answers = answer(classifier, calibration, pa.array(titles, pa.string()), top_k, knobs)
    sets = answers.sets()
    for row, title in enumerate(titles):
        note = "" if answers.known_words[row] else "  (no word of it is known to the model)"
        out.write(f"{title}{note}\n")
        for index, probability in zip(answers.indices[row], answers.probabilities[row],
                                      strict=True):
            out.write(f"  {probability:6.1%}  {classifier.labels[index]}\n")
        if sets is not None and len(sets[row]):
            names = " | ".join(classifier.labels[index] for index in sets[row])
            out.write(f"  {percent(knobs.coverage)} sure it is one of: {names}\n")
        elif sets is not None:  # an empty set, as the page says it
            out.write(f"  no category is likely enough to be {percent(knobs.coverage)} "
                      f"sure of\n")
        if answers.abstain is not None and answers.abstain[row]:
            out.write(f"  unsure: the top probability is below "
                      f"{percent(knobs.min_confidence)}\n")


def percent(share: float | None) -> str:
    """0.95 -> "95%", 0.975 -> "97.5%"."""
    return f"{round((share or 0.0) * 100, 4):g}%"
