"""`meli predict`: titles from the command line, a file, a CSV or stdin; damaged bundles; and
known training titles predicted correctly, for a PyTorch bundle and the fastText one alike."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from meli.bundles.load import load_classifier
from meli.cli import main
from meli.files import read_json

TITLES = [
    "Zapatillas Nike Air Max Talle 42",
    'Mesa de luz, madera maciza "nórdica" 2 cajones',
    "Celular Samsung Galaxy A52 128gb",
    "qwxz zzkj",  # no known word at all
]
K = 3
CSV_HEADER = ["title", "category", "probability", "category_2", "probability_2", "category_3",
              "probability_3", "known_words"]
UNKNOWN_NOTE = "  (no word of it is known to the model)"


@pytest.fixture(params=["mlp", "fasttext"])
def model(request) -> Path:
    """Each test runs with a PyTorch bundle and with the fastText one, through the same CLI."""
    return request.getfixturevalue(f"{request.param}_bundle")


def predict(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what fixtures printed (training progress bars)
    code = main(["predict", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def listing(out: str) -> list[tuple[str, list[tuple[str, float]]]]:
    """The readable output: a title line, then `  12.3%  Category` lines."""
    parsed: list[tuple[str, list[tuple[str, float]]]] = []
    for line in out.splitlines():
        if not line.startswith("  "):
            parsed.append((line.removesuffix(UNKNOWN_NOTE), []))
            continue
        percent, category = line.strip().split("%", 1)
        parsed[-1][1].append((category.strip(), float(percent) / 100))
    return parsed


def predictions_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def one_line_error(code: int, err: str) -> str:
    assert code == 1
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("meli predict: error: ")
    return lines[0]


def test_titles_on_the_command_line_print_sorted_top_k(capsys, model):
    code, out, _ = predict(capsys, "--model", str(model), "-k", str(K), *TITLES)
    assert code == 0
    parsed = listing(out)
    assert [title for title, _ in parsed] == TITLES
    labels = read_json(model / "labels.json")
    expected = load_classifier(model).top(TITLES, K)
    for (title, best), reference in zip(parsed, expected, strict=True):
        assert len(best) == K, title
        categories = [category for category, _ in best]
        probabilities = [probability for _, probability in best]
        assert set(categories) <= set(labels)
        assert len(set(categories)) == K
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + K * 0.0005  # each printed to 0.1 %
        assert categories == [category for category, _ in reference]
        assert probabilities == pytest.approx([p for _, p in reference], abs=0.0005)


def test_a_title_of_unknown_words_still_gets_categories(capsys, model):
    code, out, _ = predict(capsys, "--model", str(model), "qwxz zzkj")
    assert code == 0
    assert out.splitlines()[0] == "qwxz zzkj" + UNKNOWN_NOTE
    [(title, best)] = listing(out)
    assert title == "qwxz zzkj"
    assert len(best) == K
    assert all(0 <= probability <= 1 for _, probability in best)


def write_lines(path: Path) -> str:
    path.write_text("\n".join(TITLES[:2]) + "\n\n  \n" + "\n".join(TITLES[2:]) + "\n",
                    encoding="utf-8")
    return str(path)


def write_csv(path: Path) -> str:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "title", "price, in pesos"])
        for number, title in enumerate(TITLES):
            writer.writerow([number, title, f"{number},50"])
    return str(path)


@pytest.mark.parametrize("source", ["lines", "csv", "stdin"])
def test_input_titles_become_a_csv_with_the_same_answers(capsys, monkeypatch, tmp_path, model,
                                                         source):
    if source == "lines":
        where = write_lines(tmp_path / "titles.txt")
    elif source == "csv":
        where = write_csv(tmp_path / "titles.csv")
    else:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(
            Path(write_csv(tmp_path / "in.csv")).read_bytes())))
        where = "-"
    code, out, _ = predict(capsys, "--model", str(model), "--input", where)
    assert code == 0
    rows = predictions_csv(out)
    assert rows[0] == CSV_HEADER
    assert [row[0] for row in rows[1:]] == TITLES
    for row in rows[1:]:
        assert len(row) == len(CSV_HEADER)
        probabilities = [float(value) for value in row[2:-1:2]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) <= 1 + 1e-5
    # The same top categories as titles given on the command line.
    _, printed, _ = predict(capsys, "--model", str(model), *TITLES)
    assert [row[1] for row in rows[1:]] == [best[0][0] for _, best in listing(printed)]


def test_output_file_and_top_k(capsys, tmp_path, mlp_bundle):
    target = tmp_path / "predictions.csv"
    code, out, _ = predict(capsys, "--model", str(mlp_bundle), "--input",
                           write_lines(tmp_path / "titles.txt"), "--output", str(target), "-k",
                           "5")
    assert code == 0
    assert out == ""
    rows = predictions_csv(target.read_text(encoding="utf-8"))
    assert rows[0][:3] == CSV_HEADER[:3]
    assert rows[0][-3:] == ["category_5", "probability_5", "known_words"]
    assert len(rows) == len(TITLES) + 1
    assert all(len(row) == 1 + 2 * 5 + 1 for row in rows)


@pytest.mark.parametrize("content", ["", "\n  \n\n", "title,price\n"],
                         ids=["empty", "blank-lines", "csv-header-only"])
def test_no_titles_in_the_input_is_one_line_error(capsys, tmp_path, mlp_bundle, content):
    empty = tmp_path / "titles.txt"
    empty.write_text(content, encoding="utf-8")
    code, out, err = predict(capsys, "--model", str(mlp_bundle), "--input", str(empty))
    assert "no titles to classify" in one_line_error(code, err)
    assert str(empty) in err
    assert out == ""


def test_a_missing_bundle_is_one_line_error(capsys, tmp_path):
    code, _, err = predict(capsys, "--model", str(tmp_path / "nowhere"), "mesa de luz")
    line = one_line_error(code, err)
    assert str(tmp_path / "nowhere") in line
    assert "no model bundle" in line


def copy_of(bundle_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / bundle_dir.name
    shutil.copytree(bundle_dir, copy)
    return copy


def test_a_bundle_of_another_format_version_is_one_line_error(capsys, tmp_path, model):
    bundle_dir = copy_of(model, tmp_path)
    config = read_json(bundle_dir / "config.json")
    (bundle_dir / "config.json").write_text(json.dumps(config | {"format_version": 999}))
    code, _, err = predict(capsys, "--model", str(bundle_dir), "mesa de luz")
    line = one_line_error(code, err)
    assert str(bundle_dir) in line
    assert "999" in line


@pytest.mark.parametrize("damage", ["deleted", "truncated", "emptied"])
def test_damaged_weights_are_one_line_error(capsys, tmp_path, model, damage):
    bundle_dir = copy_of(model, tmp_path)
    name = "model.bin" if (bundle_dir / "model.bin").exists() else "weights.pt"
    weights = bundle_dir / name
    if damage == "deleted":
        weights.unlink()
    else:
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    code, out, err = predict(capsys, "--model", str(bundle_dir), "mesa de luz")
    assert str(weights) in one_line_error(code, err)
    assert out == ""


def test_known_training_titles_get_their_own_category(capsys, tmp_path, pipeline, model):
    train = pq.read_table(pipeline.prepared / "train.parquet", columns=["title", "category"])
    # 50 titles spread over the whole split, so that many categories are asked about.
    picked = train.take(list(range(0, len(train), len(train) // 50))[:50]).to_pylist()
    assert len({row["category"] for row in picked}) >= 20
    source = tmp_path / "known.txt"
    source.write_text("".join(row["title"] + "\n" for row in picked), encoding="utf-8")
    code, out, _ = predict(capsys, "--model", str(model), "--input", str(source), "-k", "1")
    assert code == 0
    rows = predictions_csv(out)[1:]
    assert [row[0] for row in rows] == [row["title"] for row in picked]
    right = sum(row[1] == known["category"] for row, known in zip(rows, picked, strict=True))
    assert right >= 40, f"{right} of 50 training titles predicted right"


def test_the_console_script(tmp_path, mlp_bundle, capsys):
    script = Path(sys.executable).parent / "meli"
    result = subprocess.run([str(script), "predict", "--model", str(mlp_bundle), *TITLES[:2]],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    _, in_process, _ = predict(capsys, "--model", str(mlp_bundle), *TITLES[:2])
    assert result.stdout == in_process
    assert [len(best) for _, best in listing(result.stdout)] == [K, K]

    failed = subprocess.run([str(script), "predict", "--model", str(tmp_path / "nowhere"),
                             "mesa"], capture_output=True, text=True, timeout=120)
    assert "no model bundle" in one_line_error(failed.returncode, failed.stderr)


# ---- input that is not what it should be (each: one line and a non-zero exit, or a count) ----

def run_cli(tmp_path: Path, *args: str, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meli", "predict", *args], cwd=tmp_path,
                          stdin=stdin, capture_output=True, timeout=120)


def test_a_line_of_a_million_characters_is_skipped_and_counted(capsys, tmp_path, mlp_bundle):
    source = tmp_path / "huge.txt"
    source.write_text("x" * 1_000_000 + "\n" + TITLES[0] + "\n", encoding="utf-8")
    code, out, err = predict(capsys, "--model", str(mlp_bundle), "--input", str(source))
    assert code == 0
    assert [row[0] for row in predictions_csv(out)[1:]] == [TITLES[0]]
    assert "skipped 1 row(s) with a title longer than 10,000 characters (line 1)" in err
    alone = tmp_path / "alone.txt"
    alone.write_text("x" * 1_000_000, encoding="utf-8")
    code, _, err = predict(capsys, "--model", str(mlp_bundle), "--input", str(alone))
    assert code == 1
    assert err.strip().splitlines()[-1] == f"meli predict: error: {alone}: no titles to classify"


def test_csv_rows_skipped_are_named_by_their_line(capsys, tmp_path, mlp_bundle):
    """A row of the wrong width, and an empty title after it, each named by its own line (the
    README's example: the one-field row is line 3)."""
    source = tmp_path / "titles.csv"
    source.write_text('title,price\n"Cable HDMI 2m, 4K",10\nRemera Adidas Hombre\n'
                      'Mesa de luz,20\n,5\nSilla gamer,30,extra\nCelular Samsung,40\n',
                      encoding="utf-8")
    code, out, err = predict(capsys, "--model", str(mlp_bundle), "--input", str(source))
    assert code == 0
    assert [row[0] for row in predictions_csv(out)[1:]] == [
        "Cable HDMI 2m, 4K", "Mesa de luz", "Celular Samsung"]
    assert f"{source}: skipped 2 row(s) with the wrong number of CSV fields (line 3, 6)" in err
    assert f"{source}: skipped 1 row(s) with an empty title (line 5)" in err


def test_a_csv_without_a_title_column_names_its_columns(capsys, tmp_path, mlp_bundle):
    source = tmp_path / "products.csv"
    source.write_text("name,price\nMesa de luz,10\nCelular Samsung,20\n", encoding="utf-8")
    code, out, err = predict(capsys, "--model", str(mlp_bundle), "--input", str(source))
    line = one_line_error(code, err)
    assert line == (f"meli predict: error: {source}: line 1: no 'title' column; the columns are "
                    f"'name', 'price' (give the titles' column with --column NAME)")
    assert out == ""
    code, out, _ = predict(capsys, "--model", str(mlp_bundle), "--input", str(source),
                           "--column", "name")
    assert code == 0
    assert [row[0] for row in predictions_csv(out)[1:]] == ["Mesa de luz", "Celular Samsung"]


@pytest.mark.parametrize("what", ["empty", "directory", "missing"])
def test_an_input_that_is_no_file_of_titles_is_one_line_error(capsys, tmp_path, mlp_bundle,
                                                              what):
    source = tmp_path / "input.txt"
    expected = {"empty": "empty, no titles to classify",
                "directory": "is a directory, not a file of titles",
                "missing": "no such file"}[what]
    if what == "empty":
        source.write_bytes(b"")
    elif what == "directory":
        source.mkdir()
    code, out, err = predict(capsys, "--model", str(mlp_bundle), "--input", str(source))
    assert one_line_error(code, err) == f"meli predict: error: {source}: {expected}"
    assert out == ""


@pytest.mark.parametrize("csv_input", [False, True], ids=["lines", "csv"])
def test_bytes_that_are_not_utf8_are_named_by_line(capsys, tmp_path, mlp_bundle, csv_input):
    source = tmp_path / ("titles.csv" if csv_input else "titles.txt")
    header = b"title\n" if csv_input else b""
    source.write_bytes(header + b"Mesa de luz\nCelular Samsung\nCami\xf1a bordada\nRemera\n")
    code, out, err = predict(capsys, "--model", str(mlp_bundle), "--input", str(source))
    line = 4 if csv_input else 3
    assert one_line_error(code, err) == (
        f"meli predict: error: {source}: line {line}: not valid UTF-8 (byte 0xf1); save the "
        f"file as UTF-8")


def test_stdin_closed_at_once_is_one_line_error(tmp_path, mlp_bundle):
    result = run_cli(tmp_path, "--model", str(mlp_bundle), "--input", "-")
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "meli predict: error: <stdin>: no input (standard input was empty or closed)"]


def test_a_title_of_symbols_only_is_classified_and_marked(capsys, tmp_path, model):
    source = tmp_path / "titles.txt"
    source.write_text("🔥🔥 !!! ★★★\n" + TITLES[0] + "\n", encoding="utf-8")
    code, out, _ = predict(capsys, "--model", str(model), "--input", str(source))
    assert code == 0
    rows = predictions_csv(out)
    known = rows[0].index("known_words")
    assert [row[0] for row in rows[1:]] == ["🔥🔥 !!! ★★★", TITLES[0]]
    assert rows[1][known] == "0"
    assert int(rows[2][known]) > 0
    assert rows[1][1] in read_json(model / "labels.json")


def test_gzip_input_streams_in_blocks_and_writes_as_it_goes(capsys, tmp_path, monkeypatch,
                                                            mlp_bundle):
    import gzip

    from meli.bundles import predict as predict_module

    titles = [f"{TITLES[i % len(TITLES)]} {i}" for i in range(3_000)]
    source = tmp_path / "titles.txt.gz"
    source.write_bytes(gzip.compress(("\n".join(titles) + "\n").encode()))
    # Small blocks: the file arrives in many pieces, each classified and written in turn.
    monkeypatch.setattr(predict_module, "BLOCK_BYTES", 4096)
    blocks = []
    original = predict_module.prediction_table
    monkeypatch.setattr(predict_module, "prediction_table",
                        lambda *args: blocks.append(len(args[1])) or original(*args))
    code, out, _ = predict(capsys, "--model", str(mlp_bundle), "--input", str(source))
    assert code == 0
    assert len(blocks) > 10 and sum(blocks) == 3_000
    rows = predictions_csv(out)
    assert [row[0] for row in rows[1:]] == titles
    whole = load_classifier(mlp_bundle).top(titles[:50], K)
    assert [row[1] for row in rows[1:51]] == [best[0][0] for best in whole]


def test_a_failure_midway_leaves_no_half_written_output(capsys, tmp_path, monkeypatch,
                                                        mlp_bundle):
    from meli.bundles import predict as predict_module

    monkeypatch.setattr(predict_module, "BLOCK_BYTES", 256)
    source = tmp_path / "titles.txt"
    source.write_bytes(("\n".join(TITLES * 40) + "\n").encode() + b"caf\xe9\n")
    target = tmp_path / "predictions.csv"
    code, _, err = predict(capsys, "--model", str(mlp_bundle), "--input", str(source),
                           "--output", str(target))
    assert "not valid UTF-8" in one_line_error(code, err)
    assert not target.exists()
    assert list(tmp_path.glob(".predictions.csv.partial-*")) == []


def test_no_progress_bar_when_piped(tmp_path, mlp_bundle):
    source = tmp_path / "titles.txt"
    source.write_text("\n".join(TITLES) + "\n", encoding="utf-8")
    result = run_cli(tmp_path, "--model", str(mlp_bundle), "--input", str(source))
    assert result.returncode == 0
    assert result.stderr.decode().splitlines()[-1].startswith("predict: 4 titles in ")
    assert "\r" not in result.stderr.decode()


# ---- the knobs: --coverage, --class-conditional, --min-confidence ------------------------------

def csv_of_today(classifier, titles: list[str], k: int) -> bytes:
    """The CSV `meli predict --input` wrote before the knobs existed, built here on its own from
    the classifier's top k: what the output without the knobs must stay, byte for byte."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    indices, probabilities, known = classifier.top_k(titles, k)
    labels = pa.array(classifier.labels)
    columns, names = [pa.array(titles)], ["title"]
    for rank in range(k):
        columns.append(labels.take(pa.array(indices[:, rank])))
        columns.append(pa.array([f"{value:.6f}" for value in np.rint(
            probabilities[:, rank].astype(np.float64) * 1e6) / 1e6]))
        names += (["category", "probability"] if rank == 0 else
                  [f"category_{rank + 1}", f"probability_{rank + 1}"])
    columns.append(pa.array(known, pa.int32()))
    out = io.BytesIO()
    pa_csv.write_csv(pa.Table.from_arrays(columns, names=[*names, "known_words"]), out)
    return out.getvalue()


def test_without_the_knobs_the_csv_is_byte_identical_to_before(capsys, tmp_path, model):
    target = tmp_path / "predictions.csv"
    code, _, _ = predict(capsys, "--model", str(model), "--input",
                         write_lines(tmp_path / "titles.txt"), "--output", str(target))
    assert code == 0
    assert target.read_bytes() == csv_of_today(load_classifier(model), TITLES, K)


@pytest.mark.parametrize("class_conditional", [False, True])
def test_coverage_and_min_confidence_add_columns_and_change_nothing_else(
        capsys, tmp_path, model, class_conditional):
    import numpy as np

    from meli.bundles.calibration import Calibration

    titles = write_lines(tmp_path / "titles.txt")
    plain, knobs = tmp_path / "plain.csv", tmp_path / "knobs.csv"
    assert predict(capsys, "--model", str(model), "--input", titles, "--output", str(plain))[0] \
        == 0
    assert predict(capsys, "--model", str(model), "--input", titles, "--output", str(knobs),
                   "--coverage", "0.9", "--min-confidence", "0.8",
                   *(["--class-conditional"] if class_conditional else []))[0] == 0
    before, after = (predictions_csv(path.read_text(encoding="utf-8")) for path in (plain, knobs))
    assert after[0] == [*CSV_HEADER, "set", "set_size", "abstain"]
    # The top-k columns are those of the plain output, byte for byte.
    assert [row[:len(CSV_HEADER)] for row in after] == before
    classifier = load_classifier(model)
    probabilities = classifier.probabilities(TITLES)
    thresholds = Calibration.load(model, len(classifier.labels)).thresholds(0.9,
                                                                             class_conditional)
    for row, title_probabilities in zip(after[1:], probabilities, strict=True):
        members = row[-3].split("|") if row[-3] else []
        expected = [i for i in np.argsort(-title_probabilities, kind="stable")
                    if title_probabilities[i] >= thresholds[i]]
        assert members == [classifier.labels[i] for i in expected]
        assert int(row[-2]) == len(members)
        assert row[-1] == ("true" if title_probabilities.max() < 0.8 else "false")


def test_the_knobs_on_the_command_line_print_the_set_and_say_unsure(capsys, mlp_bundle):
    code, out, _ = predict(capsys, "--model", str(mlp_bundle), "--coverage", "0.95",
                           "--min-confidence", "0.99", "qwxz zzkj")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "qwxz zzkj" + UNKNOWN_NOTE
    set_line = next(line for line in lines if "95% sure" in line)
    classifier = load_classifier(mlp_bundle)
    if set_line != "  no category is likely enough to be 95% sure of":
        members = set_line.split("  95% sure it is one of: ")[1].split(" | ")
        assert members and set(members) <= set(classifier.labels)
    # A title of no known word is not 99% sure of anything.
    assert lines[-1] == "  unsure: the top probability is below 99%"


@pytest.mark.parametrize(("arguments", "message"), [
    (["--coverage", "1.5"], "--coverage: must be a share between 0 and 1 (such as 0.95), got 1.5"),
    (["--coverage", "0"], "--coverage: must be a share between 0 and 1"),
    (["--min-confidence", "-0.1"], "--min-confidence: must be a probability from 0 to 1"),
    (["--class-conditional"], "--class-conditional: needs --coverage"),
    (["--coverage", "0.99999"], "--coverage: 0.99999 is more than the "),
])
def test_bad_knobs_are_one_line_errors(capsys, mlp_bundle, arguments, message):
    code, out, err = predict(capsys, "--model", str(mlp_bundle), *arguments, "Zapatillas")
    assert out == ""
    assert one_line_error(code, err).startswith(f"meli predict: error: {message}")


def test_coverage_from_a_bundle_without_calibration_is_one_line_error(capsys, tmp_path,
                                                                     mlp_bundle):
    old = tmp_path / "old"
    shutil.copytree(mlp_bundle, old)
    for path in old.glob("calibration*"):
        path.unlink()
    code, _, err = predict(capsys, "--model", str(old), "--coverage", "0.9", "Zapatillas")
    assert one_line_error(code, err) == (
        f"meli predict: error: --coverage: the model {old} carries no calibration (it was "
        f"written before bundles had one); rebuild it with `dvc repro`")
    # --min-confidence needs no calibration.
    code, out, _ = predict(capsys, "--model", str(old), "--min-confidence", "0.5", "Zapatillas")
    assert code == 0 and out.startswith("Zapatillas\n")
