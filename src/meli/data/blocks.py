"""Whole lines read from a (decompressing) byte stream, a few MB at a time: ingest's readers
take them as blocks, `meli predict` as pieces of bytes.

A block is a few MB of text cut at a newline, with the offsets of its lines as numpy arrays, so
that the readers can look at every line at once (first and last bytes, UTF-8 validity, a regular
expression) and hand the lines they trust to Arrow's parsers in one piece. Decompression runs in
a background thread (zlib, bz2 and lzma release the GIL), so that inflating the next block
overlaps with parsing this one; at most two blocks wait in between, so memory stays bounded.
"""

from __future__ import annotations

import codecs
import queue
import threading
from collections.abc import Iterator
from typing import IO

import numpy as np
import pyarrow as pa

BLOCK_BYTES = 8 << 20
_UTF8_SEGMENT = 32 << 10


class LineBlock:
    """Whole lines: `data[starts[i]:stops[i]]` is line i with its newline (the file's last line
    may lack one); `first_number` is the 1-based line number of line 0 in the file."""

    def __init__(self, data: bytes, first_number: int):
        self.data = data
        self.bytes = np.frombuffer(data, dtype=np.uint8)
        stops = np.flatnonzero(self.bytes == 10) + 1
        if data and not data.endswith(b"\n"):
            stops = np.append(stops, len(data))
        self.stops = stops.astype(np.int64)
        self.starts = np.concatenate([np.zeros(1, np.int64), self.stops[:-1]])
        self.first_number = first_number

    def __len__(self) -> int:
        return len(self.stops)

    def line(self, index: int) -> bytes:
        return self.data[self.starts[index]:self.stops[index]]

    def content_ends(self) -> np.ndarray:
        """Per line, the offset just past its last byte before "\\n" or "\\r\\n"."""
        ends = self.stops.copy()
        if not len(ends):
            return ends
        newline = self.bytes[ends - 1] == 10
        ends -= newline
        carriage = newline & (ends > self.starts)
        carriage[carriage] = self.bytes[ends[carriage] - 1] == 13
        return ends - carriage

    def has_newline(self) -> np.ndarray:
        return self.bytes[self.stops - 1] == 10 if len(self) else np.zeros(0, bool)

    def lines_array(self, first: int = 0) -> pa.Array:
        """Lines `first`.. as an Arrow binary array over the block's own buffer (no copy)."""
        offsets = np.concatenate([self.starts[first:first + 1], self.stops[first:]])
        if not len(self) or first >= len(self):
            return pa.array([], pa.large_binary())
        return pa.Array.from_buffers(pa.large_binary(), len(self) - first,
                                     [None, pa.py_buffer(offsets), pa.py_buffer(self.data)])

    def invalid_utf8(self) -> np.ndarray:
        """Indices of the lines that are not valid UTF-8 (usually none: one fast pass)."""
        if self.data.isascii():
            return np.zeros(0, np.int64)
        view = memoryview(self.data)
        try:
            codecs.utf_8_decode(view, "strict", True)
            return np.zeros(0, np.int64)
        except UnicodeDecodeError:
            pass
        # Look again segment by segment (cut at line ends), so that each bad line costs a
        # rescan of its segment only, not of the rest of the block.
        bad = []
        cuts = np.searchsorted(self.stops, np.arange(_UTF8_SEGMENT, len(self.data),
                                                     _UTF8_SEGMENT))
        bounds = np.unique(np.concatenate([[0], self.stops[np.minimum(cuts, len(self) - 1)],
                                           [len(self.data)]]))
        for begin, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            position = begin
            while position < end:
                try:
                    codecs.utf_8_decode(view[position:end], "strict", True)
                    break
                except UnicodeDecodeError as error:
                    line = int(np.searchsorted(self.stops, position + error.start, side="right"))
                    bad.append(line)
                    position = int(self.stops[line])
        return np.array(bad, dtype=np.int64)

    def join(self, chosen: np.ndarray) -> bytes:
        """The chosen lines (a boolean mask) concatenated, in order."""
        if chosen.all():
            return self.data
        # Runs of consecutive chosen lines become single slices.
        edges = np.flatnonzero(np.diff(np.concatenate([[False], chosen, [False]]).astype(np.int8)))
        begins, ends = edges[0::2], edges[1::2]
        return b"".join(self.data[self.starts[b]:self.stops[e - 1]]
                        for b, e in zip(begins.tolist(), ends.tolist(), strict=True))


def read_blocks(stream: IO[bytes], size: int | None = None) -> Iterator[LineBlock]:
    """The stream's lines in blocks of about `size` bytes (BLOCK_BYTES unless given; a longer
    line makes a longer block)."""
    number = 1
    for data in whole_lines(stream, size):
        block = LineBlock(data, number)
        number += len(block)
        yield block


def whole_lines(stream: IO[bytes], size: int | None = None,
                read_ahead: bool = True) -> Iterator[bytes]:
    """The stream's bytes in pieces of about `size` bytes (BLOCK_BYTES unless given) that end
    with a newline (a longer line makes a longer piece; the last piece may lack the newline).

    With `read_ahead`, the stream is read (and decompressed) one or two pieces ahead in a
    thread, which a closed iterator waits for: leave it out for a pipe that may stay open.
    """
    size = size or BLOCK_BYTES
    tail = b""
    chunks = _prefetched(stream, size) if read_ahead else iter(lambda: stream.read(size), b"")
    for chunk in chunks:
        data = tail + chunk if tail else chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            tail = data
            continue
        tail = data[cut:]
        yield data[:cut] if cut < len(data) else data
    if tail:
        yield tail


def _prefetched(stream: IO[bytes], size: int) -> Iterator[bytes]:
    """`stream.read(size)` chunks, read one or two ahead in a thread; its errors re-raised here."""
    chunks: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    done = object()

    def reader() -> None:
        try:
            while not stop.is_set():
                chunk = stream.read(size)
                if not chunk:
                    break
                _put(chunks, chunk, stop)
        except BaseException as error:  # handed to the consumer, which raises it
            _put(chunks, error, stop)
            return
        _put(chunks, done, stop)

    thread = threading.Thread(target=reader, name="meli-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = chunks.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _put(chunks: queue.Queue, item: object, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            chunks.put(item, timeout=0.1)
            return
        except queue.Full:
            continue
