"""ingest: every source format into one table; bad rows set aside, bad sources stopped clearly."""

from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from meli import layout
from meli.errors import MeliError
from meli.params import DataParams, PrepareParams
from meli.stages import ingest as ingest_module
from meli.stages.ingest import ingest
from meli.stages.prepare import prepare

CSV_HEADER = "title,label_quality,language,category\n"


def run_ingest(source: Path | str, raw: Path, **params) -> ingest_module.IngestResult:
    return ingest(DataParams(source=str(source), **params), raw)


def ingest_error(source: Path | str, raw: Path) -> str:
    """The one-line error of ingesting `source`; checks that it names the source."""
    with pytest.raises(MeliError) as caught:
        run_ingest(source, raw)
    message = str(caught.value)
    assert "\n" not in message
    assert str(source) in message
    # Outputs appear complete or not at all.
    assert not raw.exists()
    return message


def table(raw: Path) -> list[dict]:
    return pq.read_table(raw / layout.RAW_TABLE_FILE).to_pylist()


def rejected(raw: Path) -> list[dict]:
    lines = (raw / layout.REJECTED_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def source_info(raw: Path) -> dict:
    return json.loads((raw / layout.SOURCE_FILE).read_text(encoding="utf-8"))


def jsonl_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode()


# --- the canonical table --------------------------------------------------------------------------

def test_jsonl_rows_become_the_canonical_table(tmp_path, write_jsonl):
    source = write_jsonl("titles.jsonl", [
        {"title": "Zapatillas Nike Air", "category": " SNEAKERS ", "language": "Spanish",
         "label_quality": "RELIABLE", "split": "train", "extra": [1, 2]},
        {"title": "Funda Samsung A10", "category": "CELLPHONE_CASES"},
        {"title": "Remera Algodón", "category": "T_SHIRTS", "split": "holdout"},
    ])
    result = run_ingest(source, tmp_path / "raw")
    assert (result.rows_read, result.rows_written, result.rows_rejected) == (3, 3, 0)
    assert result.format == "jsonl"
    assert table(tmp_path / "raw") == [
        # Labels are trimmed and lower-cased; the category is only trimmed.
        {"title": "Zapatillas Nike Air", "category": "SNEAKERS", "language": "spanish",
         "label_quality": "reliable", "split": "train"},
        # Missing labels are "unknown", not null, so that prepare's filters can name them.
        {"title": "Funda Samsung A10", "category": "CELLPHONE_CASES", "language": "unknown",
         "label_quality": "unknown", "split": None},
        # Only train/validation/test count as a split.
        {"title": "Remera Algodón", "category": "T_SHIRTS", "language": "unknown",
         "label_quality": "unknown", "split": None},
    ]
    assert rejected(tmp_path / "raw") == []


def test_sample_source_is_generated(tmp_path):
    result = ingest(DataParams(source="sample", sample_rows=150, sample_seed=5), tmp_path / "raw")
    assert (result.rows_read, result.rows_written, result.rows_rejected) == (150, 150, 0)
    rows = table(tmp_path / "raw")
    assert len(rows) == 150
    assert {row["split"] for row in rows} == {None}
    assert {row["language"] for row in rows} <= {"spanish", "portuguese"}
    info = source_info(tmp_path / "raw")
    assert (info["source"], info["seed"], info["rows_written"]) == ("sample", 5, 150)


def test_source_json_records_the_sha256_of_the_file(tmp_path, write_jsonl, rows):
    source = write_jsonl("titles.jsonl.gz", rows({"A": 3, "B": 2}))
    run_ingest(source, tmp_path / "raw")
    info = source_info(tmp_path / "raw")
    assert info["source"] == str(source)
    assert info["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert info["bytes"] == source.stat().st_size
    assert info["format"] == "jsonl.gz"
    assert (info["rows_read"], info["rows_written"], info["rows_rejected"]) == (5, 5, 0)


def test_failed_ingest_keeps_the_previous_output(tmp_path, write_jsonl, rows):
    raw = tmp_path / "raw"
    run_ingest(write_jsonl("good.jsonl", rows({"A": 2})), raw)
    with pytest.raises(MeliError):
        run_ingest(tmp_path / "missing.jsonl", raw)
    assert len(table(raw)) == 2
    assert [path.name for path in tmp_path.iterdir() if ".partial" in path.name] == []


# --- sources that stop the stage ----------------------------------------------------------------

def test_missing_file(tmp_path):
    message = ingest_error(tmp_path / "nope.jsonl.gz", tmp_path / "raw")
    assert "no such file or directory" in message


def test_unreadable_gzip(tmp_path):
    source = tmp_path / "titles.jsonl.gz"
    source.write_bytes(b"\x1f\x8b" + b"this is not deflate data" * 20)
    message = ingest_error(source, tmp_path / "raw")
    assert "unreadable or truncated gzip data" in message


def test_truncated_gzip(tmp_path, rows):
    data = gzip.compress(jsonl_bytes(rows({"A": 400, "B": 400})))
    source = tmp_path / "titles.jsonl.gz"
    source.write_bytes(data[: len(data) // 2])
    message = ingest_error(source, tmp_path / "raw")
    assert "unreadable or truncated gzip data" in message
    assert "ended before the end-of-stream marker" in message


def test_truncated_bz2(tmp_path, rows):
    data = bz2.compress(jsonl_bytes(rows({"A": 400, "B": 400})))
    source = tmp_path / "titles.jsonl.bz2"
    source.write_bytes(data[: len(data) // 2])
    message = ingest_error(source, tmp_path / "raw")
    assert "unreadable or truncated bz2 data" in message


def test_empty_file(tmp_path):
    source = tmp_path / "titles.jsonl"
    source.write_bytes(b"")
    assert ingest_error(source, tmp_path / "raw").endswith(": file is empty")


def test_blank_file(tmp_path):
    source = tmp_path / "titles.jsonl"
    source.write_bytes(b"\n  \n\n")
    assert "file is empty" in ingest_error(source, tmp_path / "raw")


def test_empty_gzip(tmp_path):
    source = tmp_path / "titles.jsonl.gz"
    source.write_bytes(gzip.compress(b""))
    assert "file is empty after decompression" in ingest_error(source, tmp_path / "raw")


def test_unrecognized_format(tmp_path):
    source = tmp_path / "notes.txt"
    source.write_text("just some words\nand more\n")
    assert "unrecognized format" in ingest_error(source, tmp_path / "raw")


def test_csv_header_missing_columns(tmp_path):
    source = tmp_path / "train.csv"
    source.write_text("title,language,category\nZapatillas,spanish,SNEAKERS\n")
    message = ingest_error(source, tmp_path / "raw")
    assert f"{source}: line 1: CSV header lacks column(s) label_quality" in message


def test_no_usable_rows_names_the_first_reason(tmp_path, write_jsonl):
    source = write_jsonl("titles.jsonl", [{"title": "", "category": "A"}, {"title": "x"}])
    message = ingest_error(source, tmp_path / "raw")
    assert "no usable rows (2 read, 2 rejected" in message
    assert f"{source}:1: empty or missing title" in message


# --- rows that are skipped, counted and set aside ------------------------------------------------

def test_malformed_json_line_is_skipped(tmp_path, write_jsonl):
    source = write_jsonl("titles.jsonl", [
        {"title": "Zapatillas Nike", "category": "SNEAKERS"},
        '{"title": "Funda", "category": \n',
        '["a", "list"]\n',
        {"title": "Funda Samsung", "category": "CELLPHONE_CASES"},
    ])
    result = run_ingest(source, tmp_path / "raw")
    assert (result.rows_read, result.rows_written, result.rows_rejected) == (4, 2, 2)
    assert [row["title"] for row in table(tmp_path / "raw")] == ["Zapatillas Nike",
                                                                  "Funda Samsung"]
    bad_json, not_object = rejected(tmp_path / "raw")
    assert (bad_json["where"], bad_json["kind"]) == (f"{source}:2", "malformed_json")
    assert bad_json["reason"].startswith("malformed JSON: ")
    assert bad_json["row"] == '{"title": "Funda", "category": \n'
    assert (not_object["where"], not_object["kind"]) == (f"{source}:3", "not_an_object")


def test_empty_or_missing_title_and_category(tmp_path, write_jsonl):
    source = write_jsonl("titles.jsonl", [
        {"title": "", "category": "A"},
        {"title": "   ", "category": "A"},
        {"category": "A"},
        {"title": 42, "category": "A"},
        {"title": "Sin categoría"},
        {"title": "Categoría vacía", "category": " "},
        {"title": "Categoría nula", "category": None},
        {"title": "Zapatillas", "category": "SNEAKERS"},
    ])
    result = run_ingest(source, tmp_path / "raw")
    assert (result.rows_read, result.rows_written, result.rows_rejected) == (8, 1, 7)
    entries = rejected(tmp_path / "raw")
    assert [entry["kind"] for entry in entries] == ["empty_title"] * 4 + ["missing_category"] * 3
    assert [entry["where"] for entry in entries] == [f"{source}:{line}" for line in range(1, 8)]
    assert entries[0]["reason"] == "empty or missing title"
    assert entries[4]["reason"] == "empty or missing category"


def test_bytes_that_are_not_utf8_in_jsonl(tmp_path, write_jsonl):
    source = write_jsonl("titles.jsonl", [
        {"title": "Zapatillas", "category": "SNEAKERS"},
        b'{"title": "Caf\xe9 molido", "category": "COFFEE"}\n',
        {"title": "Café en grano", "category": "COFFEE"},
    ])
    result = run_ingest(source, tmp_path / "raw")
    assert (result.rows_read, result.rows_written, result.rows_rejected) == (3, 2, 1)
    (entry,) = rejected(tmp_path / "raw")
    assert (entry["where"], entry["kind"]) == (f"{source}:2", "not_utf8")
    # 0xe9 is the 15th byte of the line: Latin-1 "é", not UTF-8.
    assert entry["reason"] == "not valid UTF-8 (byte 0xe9 at column 15)"
    assert [row["title"] for row in table(tmp_path / "raw")] == ["Zapatillas", "Café en grano"]


def test_bytes_that_are_not_utf8_in_csv(tmp_path):
    source = tmp_path / "train.csv"
    source.write_bytes(CSV_HEADER.encode() + b"Caf\xe9 molido,reliable,spanish,COFFEE\n"
                       + "Café en grano,reliable,spanish,COFFEE\n".encode())
    result = run_ingest(source, tmp_path / "raw")
    assert (result.rows_read, result.rows_written, result.rows_rejected) == (2, 1, 1)
    (entry,) = rejected(tmp_path / "raw")
    assert (entry["where"], entry["kind"]) == (f"{source}:2", "not_utf8")
    assert table(tmp_path / "raw")[0]["title"] == "Café en grano"


def test_csv_row_with_missing_fields_is_skipped(tmp_path):
    source = tmp_path / "train.csv"
    source.write_text(CSV_HEADER + "Zapatillas,reliable,spanish\nFunda,reliable,spanish,CASES\n")
    result = run_ingest(source, tmp_path / "raw")
    assert (result.rows_read, result.rows_written, result.rows_rejected) == (2, 1, 1)
    (entry,) = rejected(tmp_path / "raw")
    assert (entry["where"], entry["kind"]) == (f"{source}:2", "wrong_field_count")
    assert entry["reason"] == "expected 4 CSV fields, found 3"


def test_title_of_100000_characters(tmp_path, write_jsonl):
    source = write_jsonl("titles.jsonl", [
        {"title": "x" * 100_000, "category": "A"},
        {"title": "Zapatillas", "category": "SNEAKERS"},
    ])
    result = run_ingest(source, tmp_path / "raw")
    assert (result.rows_written, result.rows_rejected) == (1, 1)
    (entry,) = rejected(tmp_path / "raw")
    assert (entry["where"], entry["kind"]) == (f"{source}:1", "title_too_long")
    assert "100000 characters" in entry["reason"]
    assert "data.max_title_chars=1000" in entry["reason"]
    # The rejected file keeps only the start of a huge row.
    assert len(entry["row"]) == 500


def test_max_title_chars_is_the_limit(tmp_path, write_jsonl):
    source = write_jsonl("titles.jsonl", [{"title": "x" * 20, "category": "A"},
                                          {"title": "x" * 21, "category": "A"}])
    result = run_ingest(source, tmp_path / "raw", max_title_chars=20)
    assert (result.rows_written, result.rows_rejected) == (1, 1)


def test_byte_order_mark_does_not_cost_the_first_row(tmp_path, write_jsonl):
    source = write_jsonl("titles.jsonl", [
        "\ufeff" + json.dumps({"title": "Zapatillas", "category": "SNEAKERS"}) + "\n",
        {"title": "Funda", "category": "CASES"},
    ])
    result = run_ingest(source, tmp_path / "raw")
    assert (result.rows_written, result.rows_rejected) == (2, 0)


def test_single_category_fails_in_prepare_naming_the_file(tmp_path, ingest_rows, rows):
    raw = ingest_rows(rows({"SNEAKERS": 30}))
    with pytest.raises(MeliError) as caught:
        prepare(PrepareParams(), raw, tmp_path / "prepared", tmp_path / "data.json")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{raw / layout.RAW_TABLE_FILE}: ")
    assert "at least 2 categories" in message
    assert "only 'SNEAKERS'" in message


# --- formats, told apart by content ---------------------------------------------------------------

def test_gzip_jsonl_named_bin_is_detected(tmp_path, rows):
    source = tmp_path / "data.bin"
    source.write_bytes(gzip.compress(jsonl_bytes(rows({"A": 3, "B": 4}))))
    result = run_ingest(source, tmp_path / "raw")
    assert (result.format, result.rows_written) == ("jsonl.gz", 7)


def test_csv_named_txt_is_detected(tmp_path):
    source = tmp_path / "x.txt"
    source.write_text(CSV_HEADER + "Zapatillas,reliable,spanish,SNEAKERS\n")
    result = run_ingest(source, tmp_path / "raw")
    assert (result.format, result.rows_written) == ("csv", 1)


@pytest.mark.parametrize("name", ["train.csv", "train.csv.gz"])
def test_challenge_csv(tmp_path, name):
    text = (
        CSV_HEADER
        + '"Zapatillas Nike, Talle 42",reliable,spanish,SNEAKERS\n'
        + 'Tênis Adidas,unreliable,portuguese,SNEAKERS\n'
        + '"Funda ""Premium"", Samsung A10",reliable,spanish,CELLPHONE_CASES\n'
    )
    source = tmp_path / name
    data = text.encode()
    source.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    result = run_ingest(source, tmp_path / "raw")
    assert result.format == ("csv.gz" if name.endswith(".gz") else "csv")
    assert table(tmp_path / "raw") == [
        {"title": "Zapatillas Nike, Talle 42", "category": "SNEAKERS", "language": "spanish",
         "label_quality": "reliable", "split": None},
        {"title": "Tênis Adidas", "category": "SNEAKERS", "language": "portuguese",
         "label_quality": "unreliable", "split": None},
        {"title": 'Funda "Premium", Samsung A10', "category": "CELLPHONE_CASES",
         "language": "spanish", "label_quality": "reliable", "split": None},
    ]


def test_csv_columns_in_another_order_with_bom_and_crlf(tmp_path):
    source = tmp_path / "train.csv"
    source.write_bytes(b"\xef\xbb\xbfCategory,Title,Language,Label_Quality\r\n"
                       b"SNEAKERS,Zapatillas,spanish,reliable\r\n")
    run_ingest(source, tmp_path / "raw")
    assert table(tmp_path / "raw") == [{"title": "Zapatillas", "category": "SNEAKERS",
                                        "language": "spanish", "label_quality": "reliable",
                                        "split": None}]


def course_member(split: str, count: int) -> bytes:
    # The course files say "test" in every row's own split field; the member name decides.
    records = [{"language": "spanish", "label_quality": "reliable", "split": "test",
                "title": f"{split} producto {i}", "category": f"CAT_{i % 3}",
                "tokenized_title": ["producto"], "data": [1], "target": i % 3}
               for i in range(count)]
    return gzip.compress(jsonl_bytes(records))


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    path.write_bytes(buffer.getvalue())
    return path


def test_course_tarball(tmp_path):
    source = write_tar(tmp_path / "meli-challenge-2019.tar.bz2", {
        "meli-challenge-2019/spanish.train.jsonl.gz": course_member("train", 12),
        "meli-challenge-2019/spanish_token_to_index.json.gz": gzip.compress(b'{"de": 2}'),
        "meli-challenge-2019/spanish.validation.jsonl.gz": course_member("validation", 4),
        "meli-challenge-2019/spanish.test.jsonl.gz": course_member("test", 5),
    })
    result = run_ingest(source, tmp_path / "raw")
    assert (result.format, result.rows_read, result.rows_written) == ("tar.bz2", 21, 21)
    rows = table(tmp_path / "raw")
    for split, count in (("train", 12), ("validation", 4), ("test", 5)):
        chosen = [row for row in rows if row["split"] == split]
        assert len(chosen) == count
        assert all(row["title"].startswith(f"{split} ") for row in chosen)
    assert {row["language"] for row in rows} == {"spanish"}
    assert source_info(tmp_path / "raw")["sha256"] == hashlib.sha256(
        source.read_bytes()).hexdigest()


def test_tarball_without_course_members(tmp_path):
    source = write_tar(tmp_path / "other.tar.bz2", {"docs/readme.txt": b"hello " * 200})
    assert "holds no <language>.<split>.jsonl(.gz) members" in ingest_error(source,
                                                                             tmp_path / "raw")


def test_truncated_tarball(tmp_path):
    source = write_tar(tmp_path / "meli-challenge-2019.tar.bz2", {
        "meli-challenge-2019/spanish.train.jsonl.gz": course_member("train", 3000)})
    data = source.read_bytes()
    source.write_bytes(data[: len(data) // 2])
    assert "unreadable or truncated bz2 data" in ingest_error(source, tmp_path / "raw")


def test_directory_source(tmp_path, rows):
    directory = tmp_path / "source"
    directory.mkdir()
    (directory / "a.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(rows({"A": 2}))))
    (directory / "b.csv").write_text(CSV_HEADER + "Zapatillas,reliable,spanish,SNEAKERS\n")
    (directory / ".hidden").write_text("not data, and not read")
    result = run_ingest(directory, tmp_path / "raw")
    assert (result.format, result.rows_written) == ("csv, jsonl.gz", 3)
    # Files are read in sorted order.
    assert [row["category"] for row in table(tmp_path / "raw")] == ["A", "A", "SNEAKERS"]
    info = source_info(tmp_path / "raw")
    assert len(info["sha256"]) == 64
    assert info["bytes"] == sum(file.stat().st_size for file in directory.iterdir()
                                if not file.name.startswith("."))


def test_directory_source_names_the_bad_file(tmp_path, rows):
    directory = tmp_path / "source"
    directory.mkdir()
    (directory / "a.jsonl").write_bytes(jsonl_bytes(rows({"A": 2})))
    (directory / "b.jsonl").write_bytes(b"")
    message = ingest_error(directory, tmp_path / "raw")
    assert f"{directory}/b.jsonl: file is empty" in message


def test_empty_directory(tmp_path):
    directory = tmp_path / "source"
    directory.mkdir()
    assert "directory holds no files" in ingest_error(directory, tmp_path / "raw")


# --- URLs -----------------------------------------------------------------------------------------

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY")


@pytest.fixture
def no_proxy(monkeypatch):
    """127.0.0.1 must be asked directly, not through a proxy the environment names."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def http_root(tmp_path, no_proxy):
    """A local HTTP server on a free 127.0.0.1 port serving a folder: (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_url_that_serves_a_file(tmp_path, http_root, rows):
    root, base = http_root
    served = root / "titles.jsonl.gz"
    served.write_bytes(gzip.compress(jsonl_bytes(rows({"A": 3, "B": 2}))))
    url = f"{base}/titles.jsonl.gz"
    result = run_ingest(url, tmp_path / "raw")
    assert (result.format, result.rows_written) == ("jsonl.gz", 5)
    info = source_info(tmp_path / "raw")
    assert info["source"] == url
    assert info["sha256"] == hashlib.sha256(served.read_bytes()).hexdigest()
    # The download is scratch space, not part of the output.
    assert sorted(path.name for path in (tmp_path / "raw").iterdir()) == [
        "rejected.jsonl", "source.json", "titles.parquet"]


def test_url_answering_404(tmp_path, http_root):
    _, base = http_root
    message = ingest_error(f"{base}/missing.jsonl.gz", tmp_path / "raw")
    assert "server answered HTTP 404" in message


def test_url_that_does_not_answer(tmp_path, no_proxy):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port was free a moment ago and nothing listens on it now.
    message = ingest_error(f"http://127.0.0.1:{port}/titles.jsonl.gz", tmp_path / "raw")
    assert "no answer from the server" in message
