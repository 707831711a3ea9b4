"""Ingest's reader of the course tarball (`meli-challenge-2019.tar.bz2`): its
`<language>.<split>.jsonl(.gz)` members, streamed one after the other through the JSON lines
reader with their language and split as defaults; other members are skipped.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import tarfile
from typing import IO

from meli.data.jsonl import read_json_lines
from meli.data.sink import TableSink
from meli.errors import MeliError

log = logging.getLogger(__name__)

# Members of the course tarball that hold titles, e.g. "meli/spanish.train.jsonl.gz".
_COURSE_MEMBER = re.compile(r"(?:^|/)(spanish|portuguese)\.(train|validation|test)\.jsonl(\.gz)?$")


def read_tar(stream: IO[bytes], name: str, sink: TableSink) -> None:
    """The course members of the tar archive `stream` into `sink`; none stops the stage."""
    found = []
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            match = _COURSE_MEMBER.search(member.name)
            if not member.isfile() or not match:
                log.info("%s: skipping member %s", name, member.name)
                continue
            language, split, compressed = match.groups()
            found.append(member.name)
            content = archive.extractfile(member)
            assert content is not None
            lines = gzip.GzipFile(fileobj=content) if compressed else content
            read_json_lines(io.BufferedReader(lines) if compressed else lines,
                            f"{name}:{member.name}", sink, split=split, language=language)
    if not found:
        raise MeliError(f"{name}: tar archive holds no <language>.<split>.jsonl(.gz) members "
                        f"(expected e.g. spanish.train.jsonl.gz)")
