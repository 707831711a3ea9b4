"""Shared fixtures: small hand-made sources written to tmp_path, and ingesting them."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from meli.ingest import ingest
from meli.params import DataParams


def make_rows(counts: dict[str, int], language: str = "spanish", quality: str = "reliable",
              split: str | None = None, prefix: str = "") -> list[dict]:
    """`counts[category]` distinct titles per category; each title's words name its category."""
    rows = []
    for category, count in counts.items():
        for i in range(count):
            row = {"title": f"{prefix}{category.lower()} modelo {i} premium", "category": category,
                   "language": language, "label_quality": quality}
            if split:
                row["split"] = split
            rows.append(row)
    return rows


@pytest.fixture
def rows() -> Callable[..., list[dict]]:
    return make_rows


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    """Write records (dicts, or ready-made lines as str/bytes) as JSON lines; .gz compresses."""

    def write(name: str, records: Iterable[dict | str | bytes]) -> Path:
        lines = []
        for record in records:
            if isinstance(record, dict):
                record = json.dumps(record, ensure_ascii=False) + "\n"
            lines.append(record if isinstance(record, bytes) else record.encode("utf-8"))
        data = b"".join(lines)
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        return path

    return write


@pytest.fixture
def ingest_rows(tmp_path: Path, write_jsonl) -> Callable[..., Path]:
    """Ingest records through a JSON-lines file; returns the raw directory."""

    def run(records: Iterable[dict | str | bytes], name: str = "source.jsonl") -> Path:
        source = write_jsonl(name, records)
        raw = tmp_path / f"raw-{source.stem}"
        ingest(DataParams(source=str(source)), raw)
        return raw

    return run
