"""ingest: every source format into one table; bad rows set aside, bad sources stopped clearly."""

from __future__ import annotations

import bz2
import errno
import functools
import gzip
import hashlib
import http.server
import io
import json
import lzma
import tarfile
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ports import free_port

import meli.data.blocks
import meli.data.merge
import meli.data.sink
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


def test_a_control_character_in_a_title_is_named_once(tmp_path, write_jsonl):
    """A raw tab or newline inside a JSON string (half a line cut off makes one too)."""
    source = write_jsonl("titles.jsonl", ['{"title": "Funda\tSamsung", "category": "X"}\n',
                                          {"title": "Zapatillas Nike", "category": "SNEAKERS"}])
    run_ingest(source, tmp_path / "raw")
    (bad_json,) = rejected(tmp_path / "raw")
    assert bad_json["reason"] == "malformed JSON: Invalid control character at column 17"


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
    message = ingest_error(f"http://127.0.0.1:{free_port()}/titles.jsonl.gz", tmp_path / "raw")
    assert "no answer from the server" in message


# --- the vectorized reader: the same rows, order and rejects as the row-by-row one ----------------

def messy_jsonl() -> bytes:
    """Good rows among every kind of line the row-by-row reader judges, some of them twice."""
    good = [{"title": f"Zapatillas Nike {i}", "category": "SNEAKERS", "language": "Spanish",
             "label_quality": "reliable", "split": ["train", "test", "holdout"][i % 3],
             "tokenized_title": ["zapatillas"], "data": [1, 2]} for i in range(40)]
    lines = [json.dumps(record, ensure_ascii=i % 2 == 0).encode() for i, record in
             enumerate(good)]
    odd = [
        b'{"title": "Funda", "category": ',                          # malformed
        b'["a", "list"]',                                             # not an object
        b'{"title": "Caf\xe9", "category": "COFFEE"}',                # not UTF-8
        b'{"title": "  ", "category": "A"}',                          # blank title
        b'{"title": "\x1c\xc2\xa0", "category": "A"}'.replace(b"\x1c", b"\\u001c"),
        b'{"title": "Sin categoria", "category": null}',
        b'{"title": 42, "category": "A"}',                            # a number: Arrow refuses
        b'{"title": "a", "title": "b dup", "category": "A"}',         # Python keeps the last
        b'{"title": "NaN inside", "category": "A", "x": NaN}',        # Python accepts NaN
        b'{"title": "two", "category": "A"}{"title": "objects"}',     # Arrow reads two rows
        b'{"title": "' + b"x" * 60 + b'", "category": "A"}',          # too long (limit 50)
        b'   ',                                                       # blank line
        b'',
        b'  {"title": "indented", "category": "A"}\r',
        b'{"title": "\\ud83d\\ude00 emoji", "category": " EMOJI ", "language": "\xc4\xb0"}',
    ]
    mixed = []
    for i, line in enumerate(lines):
        mixed.append(line)
        mixed.append(odd[i % len(odd)])
    return b"\n".join(mixed) + b"\n"


def messy_csv() -> bytes:
    lines = [b"\xef\xbb\xbfTitle,label_quality,language,category,split"]
    for i in range(40):
        lines.append(f"Zapatillas {i},reliable,Spanish,SNEAKERS,train".encode())
        lines.append([
            b'"Zapatillas, con coma",reliable,spanish,SNEAKERS,test',
            b'"Funda ""Premium"" A10",RELIABLE,portuguese, CASES ,',
            b'"multi\nline title",reliable,spanish,SNEAKERS,',        # a quoted line break
            b'Caf\xe9,reliable,spanish,COFFEE,',                      # not UTF-8
            b'only,three,fields',
            b',reliable,spanish,EMPTY_TITLE,',
            b'sin categoria,reliable,spanish,,',
            b'ab"c,reliable,spanish,STRAY_QUOTE,',                    # a quote inside a field
            b'""',                                                    # skipped like a blank line
            b'',
            b'x' * 60 + b',reliable,spanish,LONG,',
            b'\xef\xbb\xbfBOM title,reliable,spanish,BOM,',
            b'tab\there,reliable,\xc4\xb0,TAB,validation',
        ][i % 13])
    return b"\r\n".join(lines) + b"\r\n"


def both_ways(source: Path, tmp_path: Path, monkeypatch) -> tuple:
    """(table, rejected, counts) read vectorized in tiny blocks, and row by row."""
    outputs = []
    for vectorized, block in ((True, 97), (False, None)):
        monkeypatch.setattr(meli.data.merge, "VECTORIZED", vectorized)
        monkeypatch.setattr(meli.data.blocks, "BLOCK_BYTES", block or meli.data.blocks.BLOCK_BYTES)
        raw = tmp_path / f"raw-{vectorized}"
        result = run_ingest(source, raw, max_title_chars=50)
        outputs.append((table(raw), rejected(raw),
                        (result.rows_read, result.rows_written, result.rows_rejected)))
    return outputs[0], outputs[1]


@pytest.mark.parametrize("compression", ["", ".gz", ".bz2", ".xz"])
def test_vectorized_jsonl_is_the_row_by_row_reading(tmp_path, monkeypatch, compression):
    data = messy_jsonl()
    compress = {"": bytes, ".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}
    source = tmp_path / f"titles.jsonl{compression}"
    source.write_bytes(compress[compression](data))
    fast, slow = both_ways(source, tmp_path, monkeypatch)
    assert fast == slow
    rows, rejects, counts = fast
    kinds = {entry["kind"] for entry in rejects}
    assert kinds == {"malformed_json", "not_an_object", "not_utf8", "empty_title",
                     "missing_category", "title_too_long"}
    assert counts[1] == len(rows) > 40
    assert {"title": "b dup", "category": "A", "language": "unknown",
            "label_quality": "unknown", "split": None} in rows
    # Every reject names its line, in file order.
    numbers = [int(entry["where"].rsplit(":", 1)[1]) for entry in rejects]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


def test_vectorized_csv_is_the_row_by_row_reading(tmp_path, monkeypatch):
    source = tmp_path / "train.csv"
    source.write_bytes(messy_csv())
    fast, slow = both_ways(source, tmp_path, monkeypatch)
    assert fast == slow
    rows, rejects, _ = fast
    assert {"title": "multi\nline title", "category": "SNEAKERS", "language": "spanish",
            "label_quality": "reliable", "split": None} in rows
    assert {"title": 'Funda "Premium" A10', "category": "CASES", "language": "portuguese",
            "label_quality": "reliable", "split": None} in rows
    assert {entry["kind"] for entry in rejects} == {"not_utf8", "wrong_field_count",
                                                    "empty_title", "missing_category",
                                                    "title_too_long"}
    numbers = [int(entry["where"].rsplit(":", 1)[1]) for entry in rejects]
    assert numbers == sorted(numbers)


def test_a_quoted_line_break_across_blocks_keeps_the_line_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(meli.data.blocks, "BLOCK_BYTES", 16)
    source = tmp_path / "train.csv"
    source.write_text(CSV_HEADER + '"a title\nthat goes on\nand on",reliable,spanish,A\n'
                      + "two,fields\n" + "fine title,reliable,spanish,A\n")
    result = run_ingest(source, tmp_path / "raw")
    assert (result.rows_read, result.rows_written) == (3, 2)
    assert [row["title"] for row in table(tmp_path / "raw")] == [
        "a title\nthat goes on\nand on", "fine title"]
    (entry,) = rejected(tmp_path / "raw")
    assert entry["where"] == f"{source}:5"


def test_row_groups_do_not_depend_on_how_rows_arrived(tmp_path, monkeypatch, rows):
    monkeypatch.setattr(meli.data.sink, "BATCH_ROWS", 7)
    monkeypatch.setattr(meli.data.blocks, "BLOCK_BYTES", 50)
    source = tmp_path / "titles.jsonl"
    source.write_bytes(jsonl_bytes(rows({"A": 20, "B": 13})) + b"not json\n")
    run_ingest(source, tmp_path / "raw")
    metadata = pq.ParquetFile(tmp_path / "raw" / layout.RAW_TABLE_FILE).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [
        7, 7, 7, 7, 5]


# --- outputs that cannot be written ------------------------------------------------------------

def run_stage_in(directory: Path, source: Path, monkeypatch, capsys) -> tuple[int, str]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "params.yaml").write_text(f"data:\n  source: {source}\n")
    monkeypatch.chdir(directory)
    code = ingest_module.main([])
    return code, capsys.readouterr().err.strip()


def test_a_full_disk_is_one_line_naming_the_output(tmp_path, monkeypatch, capsys, rows):
    source = tmp_path / "titles.jsonl"
    source.write_bytes(jsonl_bytes(rows({"A": 3, "B": 3})))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    code, error = run_stage_in(tmp_path / "repo", source, monkeypatch, capsys)
    assert code == 1
    assert error.startswith("meli ingest: error: ")
    assert "\n" not in error
    assert "No space left on device" in error and "data/raw" in error
    assert not (tmp_path / "repo" / "data" / "raw").exists()
    assert not [p for p in (tmp_path / "repo" / "data").iterdir() if ".partial" in p.name]


def test_an_output_path_that_cannot_be_made(tmp_path, monkeypatch, capsys, rows):
    source = tmp_path / "titles.jsonl"
    source.write_bytes(jsonl_bytes(rows({"A": 3})))
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "data").write_text("a file where the data directory should be")
    code, error = run_stage_in(tmp_path / "repo", source, monkeypatch, capsys)
    assert code == 1
    assert "\n" not in error
    assert error.startswith("meli ingest: error: data: cannot write: a file stands where a "
                            "directory is needed (writing data/raw)")


def test_a_source_that_cannot_be_read_is_not_called_an_output(tmp_path):
    from meli.files import writing

    with pytest.raises(MeliError) as caught, writing("data/raw"):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "train.csv"))
    assert str(caught.value) == f"{tmp_path / 'train.csv'}: cannot read: Permission denied"
    with pytest.raises(MeliError) as caught, writing("data/raw"):
        raise PermissionError(errno.EACCES, "Permission denied", "data/.raw.partial-7/x")
    assert str(caught.value) == ("data/.raw.partial-7/x: cannot write: Permission denied "
                                 "(writing data/raw)")
    with pytest.raises(ValueError), writing("data/raw"):
        raise ValueError("not about the disk: left alone")
