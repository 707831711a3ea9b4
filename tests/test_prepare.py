"""Text normalization, and prepare: filter, deduplicate, drop rare categories, split."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from meli import layout
from meli.data import text as text_module
from meli.data.text import normalize, normalize_title, tokens
from meli.errors import MeliError
from meli.params import PrepareParams, TextParams, to_dict
from meli.stages import prepare as prepare_module
from meli.stages.prepare import PrepareResult, prepare, split_path, stratified_split

SPLITS = ("train", "validation", "test")

# --- text normalization ---------------------------------------------------------------------------


def test_lowercase():
    assert normalize_title("ZAPATILLAS Nike AIR", TextParams()) == "zapatillas nike air"
    assert normalize_title("ZAPATILLAS Nike", TextParams(lowercase=False)) == "ZAPATILLAS Nike"


def test_accent_folding():
    settings = TextParams()
    assert normalize_title("Algodón Niño Açúcar Pingüino", settings) == (
        "algodon nino acucar pinguino")
    assert normalize_title("CAMIÓN ÑANDÚ", settings) == "camion nandu"
    kept = normalize_title("Algodón Niño", TextParams(fold_accents=False))
    assert kept == "algodón niño"


def test_accent_folding_of_decomposed_input_matches_composed():
    # "o" + U+0301 (combining acute) is the same title as the precomposed "ó".
    assert normalize_title("algodo\u0301n", TextParams()) == "algodon"
    assert normalize_title("algodo\u0301n", TextParams(fold_accents=False)) == "algodón"


@pytest.mark.parametrize(
    ("digits", "expected"),
    [("keep", "iphone 11 pro 64gb"), ("zero", "iphone 00 pro 00gb"), ("drop", "iphone pro gb")],
)
def test_digits(digits, expected):
    assert normalize_title("iPhone 11 Pro 64GB", TextParams(digits=digits)) == expected


@pytest.mark.parametrize(
    ("punctuation", "expected"),
    [
        ("split", "air - max ( 2m ) , 3 . 5 !"),
        ("drop", "air max 2m 3 5"),
        ("keep", "air-max (2m), 3.5!"),
    ],
)
def test_punctuation(punctuation, expected):
    settings = TextParams(digits="keep", punctuation=punctuation)
    assert normalize_title("Air-Max (2m), 3.5!", settings) == expected


@pytest.mark.parametrize("punctuation", ["split", "drop", "keep"])
def test_whitespace_collapses(punctuation):
    # Tabs, newlines, a no-break space, a vertical tab and a line separator all separate words.
    title = "  Funda\tSamsung\n\n A10\u00a0Azul\x0bRojo\u2028Verde   "
    settings = TextParams(punctuation=punctuation)
    assert normalize_title(title, settings) == "funda samsung a00 azul rojo verde"


def test_title_of_only_punctuation_is_empty():
    assert normalize_title(" ¡¡!! -- ", TextParams()) == ""
    assert tokens(" ¡¡!! -- ", TextParams()) == []


def test_column_equals_each_title():
    titles = ["Zapatillas Nike Air-Max 42", "ALGODÓN  niño", "", "Çà\tva 3.5", None,
              "Funda (Samsung) A10"]
    chunked = pa.chunked_array([titles[:3], titles[3:]], type=pa.string())
    for settings in (TextParams(), TextParams(digits="keep", punctuation="split"),
                     TextParams(lowercase=False, fold_accents=False, digits="drop",
                                punctuation="keep")):
        column = normalize(chunked, settings).to_pylist()
        # A null title becomes an empty text.
        assert column == [normalize_title(title or "", settings) for title in titles]
        assert normalize(titles[:3], settings).to_pylist() == column[:3]
        assert tokens(titles[0], settings) == column[0].split()


def normalized_by_patterns(titles: pa.Array, settings: TextParams) -> pa.Array:
    """What normalize does, written as Arrow's regular expressions alone (how it was first
    written): the reference for the byte-level shortcuts."""
    text = pc.fill_null(titles, "")
    if settings.lowercase:
        text = pc.utf8_lower(text)
    if settings.fold_accents:
        text = pc.replace_substring_regex(pc.utf8_normalize(text, "NFKD"), r"\p{Mn}+", "")
    else:
        text = pc.utf8_normalize(text, "NFKC")
    if settings.digits == "zero":
        text = pc.replace_substring_regex(text, r"\d", "0")
    elif settings.digits == "drop":
        text = pc.replace_substring_regex(text, r"\d+", " ")
    if settings.punctuation != "keep":
        text = pc.replace_substring_regex(text, r"([^\p{L}\p{N}\s])",
                                          r" \1 " if settings.punctuation == "split" else " ")
    text = pc.replace_substring_regex(text, text_module._WHITESPACE, " ")
    return pc.utf8_trim_whitespace(text)


def test_normalization_on_the_bytes_is_exactly_the_patterns():
    """ASCII text and the accents NFKD leaves are normalized on the UTF-8 bytes, other text by
    the patterns: every setting gives what the patterns alone give, on titles mixing ASCII,
    accents, decomposed marks, other marks, symbols, every kind of whitespace, control
    characters and scripts, alone (a served title) and in a batch."""
    rng = random.Random(0)
    characters = ([chr(code) for code in range(0x250)] + list(
        "ñÑáéíóúüçãõâôàÁÉÓÚ°ºª²½™€×…“”‘’«»¡¿·\u0301\u0303\u0327\u0308\u0345\u20dd\u0483"
        "\u2028\u00a0\u3000\u200b\ufeff\u1680😀中文한국ß") + [" "] * 40
        + list("abcdefghijklmnopqrstuvwxyz0123456789") * 4)
    titles = ["".join(rng.choice(characters) for _ in range(rng.randint(0, 30)))
              for _ in range(3_000)]
    titles += [None, "", " ", "a\u0301", "\u0301", "n\u0303\u0303x", "x\u0341y", "\x00\x0b",
               "Zapatillas Nike Air-Max 42", "  Funda\tSamsung  A10 ", "CAMIÓN ÑANDÚ (2m)"]
    batch = pa.array(titles, pa.string())
    for lowercase, fold, digits, punctuation in itertools.product(
            (True, False), (True, False), ("keep", "zero", "drop"), ("split", "drop", "keep")):
        settings = TextParams(lowercase, fold, digits, punctuation)
        assert normalize(batch, settings).equals(normalized_by_patterns(batch, settings))
        part = batch.slice(101, 700)  # an offset into the buffers
        assert normalize(part, settings).equals(normalized_by_patterns(part, settings))
        for title in titles[::150]:
            one = pa.array([title], pa.string())
            assert normalize(one, settings).equals(normalized_by_patterns(one, settings)), title


# --- prepare --------------------------------------------------------------------------------------


def run(raw: Path, tmp_path: Path, **params) -> tuple[PrepareResult, Path, dict]:
    prepared = tmp_path / "prepared"
    metrics_path = tmp_path / "metrics" / "data.json"
    result = prepare(PrepareParams(**params), raw, prepared, metrics_path)
    return result, prepared, json.loads(metrics_path.read_text(encoding="utf-8"))


def read_split(prepared: Path, split: str) -> list[dict]:
    return pq.read_table(split_path(prepared, split)).to_pylist()


def titles_by_split(prepared: Path) -> dict[str, list[str]]:
    return {split: [row["title"] for row in read_split(prepared, split)] for split in SPLITS}


def read_rejected(prepared: Path) -> list[dict]:
    lines = (prepared / layout.REJECTED_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def check_accounting(result: PrepareResult, metrics: dict) -> None:
    assert metrics["rows_kept"] == sum(result.rows.values())
    assert metrics["rows_read"] == metrics["rows_kept"] + sum(metrics["dropped"].values())
    assert metrics["dropped"] == result.dropped
    assert metrics["rows"] == result.rows
    assert metrics["split"] == result.split
    assert metrics["classes"] == result.classes


def test_language_and_label_quality_filters_are_counted(tmp_path, ingest_rows, rows):
    raw = ingest_rows(rows({"A": 12, "B": 12})
                      + rows({"A": 5}, language="portuguese", prefix="pt ")
                      + rows({"B": 4}, quality="unreliable", prefix="unreliable ")
                      + rows({"B": 3}, language="portuguese", quality="unreliable", prefix="x "))
    result, prepared, metrics = run(raw, tmp_path, languages=["spanish"],
                                    label_quality=["reliable"], min_examples=2)
    # Language is filtered first, so the 3 Portuguese unreliable rows count as language.
    assert result.dropped["language"] == 8
    assert result.dropped["label_quality"] == 4
    assert sum(result.rows.values()) == 24
    kept = [row for split in SPLITS for row in read_split(prepared, split)]
    assert {(row["language"], row["label_quality"]) for row in kept} == {("spanish", "reliable")}
    # Rows outside the selection are counted, not written as rejected.
    assert read_rejected(prepared) == []
    check_accounting(result, metrics)


def test_exact_duplicates_are_dropped_keeping_the_first(tmp_path, ingest_rows, rows):
    source = rows({"A": 12, "B": 12})
    first = source[0]
    source += [
        # Same (title, category): a duplicate, whatever its other fields say.
        dict(first, label_quality="unreliable", language="spanish"),
        dict(first),
        # Same title, other category: not a duplicate.
        dict(first, category="B"),
    ]
    raw = ingest_rows(source)
    result, prepared, metrics = run(raw, tmp_path, min_examples=2)
    assert result.dropped["duplicate"] == 2
    kept = [row for split in SPLITS for row in read_split(prepared, split)]
    copies = [row for row in kept if row["title"] == first["title"]]
    assert sorted(row["category"] for row in copies) == ["A", "B"]
    # The first occurrence is the one kept: it is the reliable one.
    assert [row["label_quality"] for row in copies if row["category"] == "A"] == ["reliable"]
    duplicates = [entry for entry in read_rejected(prepared) if entry["kind"] == "duplicate"]
    assert len(duplicates) == 2
    assert {entry["row"]["title"] for entry in duplicates} == {first["title"]}
    assert {entry["row"]["label_quality"] for entry in duplicates} == {"reliable", "unreliable"}
    assert all(entry["reason"] for entry in duplicates)
    check_accounting(result, metrics)


def test_rare_categories_are_dropped_after_deduplication(tmp_path, ingest_rows, rows):
    source = rows({"A": 12, "B": 12, "RARE": 3, "DUPLICATED": 4})
    duplicated = [row for row in source if row["category"] == "DUPLICATED"]
    # 6 rows of DUPLICATED, but only 4 distinct: below min_examples=5.
    source += duplicated[:2]
    raw = ingest_rows(source)
    result, prepared, metrics = run(raw, tmp_path, min_examples=5)
    assert result.dropped["rare_category"] == 3 + 4
    assert result.dropped["duplicate"] == 2
    assert result.classes == 2
    assert json.loads((prepared / "labels.json").read_text()) == ["A", "B"]
    rare = [entry for entry in read_rejected(prepared) if entry["kind"] == "rare_category"]
    assert Counter(entry["row"]["category"] for entry in rare) == {"RARE": 3, "DUPLICATED": 4}
    assert all("min_examples" in entry["reason"] for entry in rare)
    check_accounting(result, metrics)


def test_min_examples_is_inclusive(tmp_path, ingest_rows, rows):
    raw = ingest_rows(rows({"A": 12, "B": 5, "C": 4}))
    result, _, _ = run(raw, tmp_path, min_examples=5)
    assert result.classes == 2
    assert result.dropped["rare_category"] == 4


def test_every_row_read_is_kept_or_dropped_with_a_reason(tmp_path, ingest_rows, rows):
    raw = ingest_rows(rows({"A": 15, "B": 15, "C": 2})
                      + rows({"A": 3}, language="portuguese", prefix="pt ")
                      + ['{"title": broken\n', {"title": "", "category": "A"},
                         {"title": "¡¡!!", "category": "A", "language": "spanish",
                          "label_quality": "reliable"}, rows({"A": 1})[0]])
    result, prepared, metrics = run(raw, tmp_path, languages=["spanish"], min_examples=3)
    assert metrics["rows_read"] == 15 + 15 + 2 + 3 + 4
    assert result.dropped == {
        "duplicate": 1, "empty_after_normalization": 1, "empty_title": 1, "label_quality": 0,
        "language": 3, "malformed_json": 1, "rare_category": 2}
    check_accounting(result, metrics)
    # Everything dropped except by the language/quality selection is written with its reason.
    entries = read_rejected(prepared)
    assert Counter(entry["kind"] for entry in entries) == {
        "duplicate": 1, "empty_after_normalization": 1, "empty_title": 1, "malformed_json": 1,
        "rare_category": 2}


def test_stratified_split_keeps_class_proportions(tmp_path, ingest_rows, rows):
    counts = {"A": 400, "B": 200, "C": 60, "D": 25}
    raw = ingest_rows(rows(counts))
    result, prepared, metrics = run(raw, tmp_path, validation_fraction=0.1, test_fraction=0.2)
    assert result.split == "stratified"
    per_split = {split: Counter(row["category"] for row in read_split(prepared, split))
                 for split in SPLITS}
    assert set(per_split["train"]) == set(counts)
    for category, count in counts.items():
        # Each class is divided in the asked fractions, to the nearest row.
        assert abs(per_split["validation"][category] - 0.1 * count) <= 0.5
        assert abs(per_split["test"][category] - 0.2 * count) <= 0.5
    train_total = sum(per_split["train"].values())
    for split in ("validation", "test"):
        total = sum(per_split[split].values())
        for category in counts:
            share = per_split[split][category] / total
            assert share == pytest.approx(per_split["train"][category] / train_total, abs=0.02)
    check_accounting(result, metrics)


def test_small_classes_keep_a_training_row():
    labels = np.array([0] * 2 + [1] * 3 + [2] * 100)
    split = stratified_split(labels, 0.4, 0.4, seed=1)
    for label in range(3):
        assert (split[labels == label] == 0).sum() >= 1
    assert Counter(split[labels == 2].tolist()) == {0: 20, 1: 40, 2: 40}


def test_same_seed_same_split_other_seed_other_split(tmp_path, ingest_rows, rows):
    raw = ingest_rows(rows({"A": 60, "B": 40, "C": 30}))
    splits = []
    for seed in (7, 7, 8):
        run(raw, tmp_path, seed=seed)
        splits.append(titles_by_split(tmp_path / "prepared"))
    assert splits[0] == splits[1]
    assert splits[0] != splits[2]
    # Another seed changes which rows go where, not how many.
    assert {split: len(titles) for split, titles in splits[0].items()} == {
        split: len(titles) for split, titles in splits[2].items()}


def test_a_real_source_split_is_kept(tmp_path, ingest_rows, rows):
    source = {
        "train": rows({"A": 20, "B": 20}, split="train", prefix="tr "),
        "validation": rows({"A": 3, "B": 2}, split="validation", prefix="va "),
        "test": rows({"A": 2, "B": 4}, split="test", prefix="te "),
    }
    raw = ingest_rows(source["train"] + source["test"] + source["validation"])
    result, prepared, metrics = run(raw, tmp_path)
    assert result.split == "source"
    assert metrics["split"] == "source"
    for split, records in source.items():
        assert sorted(titles_by_split(prepared)[split]) == sorted(row["title"] for row in records)


def test_train_and_test_source_gets_validation_from_train(tmp_path, ingest_rows, rows):
    train = rows({"A": 50, "B": 30}, split="train", prefix="tr ")
    test = rows({"A": 5, "B": 5}, split="test", prefix="te ")
    raw = ingest_rows(train + test)
    result, prepared, _ = run(raw, tmp_path, validation_fraction=0.2)
    assert result.split == "source"
    titles = titles_by_split(prepared)
    assert sorted(titles["test"]) == sorted(row["title"] for row in test)
    assert sorted(titles["train"] + titles["validation"]) == sorted(row["title"] for row in train)
    validation = Counter(row["category"] for row in read_split(prepared, "validation"))
    # 20% of each class's training rows.
    assert validation == {"A": 10, "B": 6}


def test_a_file_that_is_all_test_gets_a_fresh_split(tmp_path, ingest_rows, rows):
    raw = ingest_rows(rows({"A": 30, "B": 20}, split="test"))
    result, prepared, metrics = run(raw, tmp_path)
    assert result.split == "stratified"
    assert metrics["split"] == "stratified"
    assert result.rows == {"train": 40, "validation": 5, "test": 5}


def test_keep_source_split_false_splits_afresh(tmp_path, ingest_rows, rows):
    raw = ingest_rows(rows({"A": 30, "B": 30}, split="train")
                      + rows({"A": 10, "B": 10}, split="test", prefix="te "))
    result, _, _ = run(raw, tmp_path, keep_source_split=False)
    assert result.split == "stratified"
    assert result.rows == {"train": 64, "validation": 8, "test": 8}


def test_labels_are_sorted_and_ids_match_names(tmp_path, ingest_rows, rows):
    raw = ingest_rows(rows({"ZAPATOS": 12, "ANTEOJOS": 15, "MOCHILAS": 11}))
    result, prepared, _ = run(raw, tmp_path)
    labels = json.loads((prepared / "labels.json").read_text(encoding="utf-8"))
    assert labels == ["ANTEOJOS", "MOCHILAS", "ZAPATOS"]
    assert result.classes == 3
    for split in SPLITS:
        for row in read_split(prepared, split):
            assert labels[row["label"]] == row["category"]


def test_text_column_and_normalization_json(tmp_path, ingest_rows, rows):
    raw = ingest_rows([dict(row, title=f"Zapatilla N°{i}, Talle 4{i % 10}!")
                       for i, row in enumerate(rows({"A": 12, "B": 12}))])
    text = TextParams(digits="keep", punctuation="split")
    _, prepared, _ = run(raw, tmp_path, text=text)
    assert json.loads((prepared / "normalization.json").read_text()) == to_dict(text)
    for split in SPLITS:
        for row in read_split(prepared, split):
            assert row["text"] == normalize_title(row["title"], text)
    assert sorted(path.name for path in prepared.iterdir()) == [
        "labels.json", "normalization.json", "rejected.jsonl", "test.parquet", "train.parquet",
        "validation.parquet"]


def test_a_batch_emptied_by_the_filters(tmp_path, ingest_rows, rows, monkeypatch):
    # With small batches, the first batches hold only Portuguese rows: the language filter
    # leaves them empty, which must count as zero kept rather than fail.
    monkeypatch.setattr(prepare_module, "BATCH_ROWS", 10)
    raw = ingest_rows(rows({"A": 25}, language="portuguese", prefix="pt ")
                      + rows({"A": 12, "B": 12}))
    result, _, metrics = run(raw, tmp_path, languages=["spanish"])
    assert result.dropped["language"] == 25
    assert sum(result.rows.values()) == 24
    check_accounting(result, metrics)


def test_missing_raw_table(tmp_path):
    with pytest.raises(MeliError, match="run the ingest stage first"):
        prepare(PrepareParams(), tmp_path / "raw", tmp_path / "prepared", tmp_path / "m.json")


def test_nothing_left_after_filtering(tmp_path, ingest_rows, rows):
    raw = ingest_rows(rows({"A": 12, "B": 12}))
    with pytest.raises(MeliError) as caught:
        run(raw, tmp_path, languages=["klingon"])
    assert "found none" in str(caught.value)
    assert "prepare.languages ['klingon'] left out 24 rows" in str(caught.value)
    assert not (tmp_path / "prepared").exists()
