"""`python -m meli.stages.<stage>` (as dvc.yaml runs it): one error line, no traceback."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ports import free_port

from meli.params import DataParams, FeaturizeParams, PrepareParams
from meli.stages.featurize import featurize
from meli.stages.ingest import ingest
from meli.stages.prepare import prepare


def meli(cwd: Path, stage: str, params: str | None) -> subprocess.CompletedProcess:
    if params is not None:
        (cwd / "params.yaml").write_text(params, encoding="utf-8")
    # Without proxy settings, so that a 127.0.0.1 URL is asked directly.
    env = {name: value for name, value in os.environ.items()
           if name.lower() not in ("http_proxy", "https_proxy")}
    return subprocess.run([sys.executable, "-m", f"meli.stages.{stage}"], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=env)


def one_line_error(result: subprocess.CompletedProcess, stage: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"meli {stage}: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("stage", "params", "expected"),
    [
        ("ingest", "data:\n  sorce: sample\n",
         "params.yaml: unknown key 'data.sorce' (did you mean 'data.source'?)"),
        ("prepare", "prepare:\n  text:\n    digitz: zero\n",
         "params.yaml: unknown key 'prepare.text.digitz' (did you mean 'prepare.text.digits'?)"),
        ("ingest", "data:\n  source: sample\n  sample_rows: 12: 3\n",
         "params.yaml: line 3: mapping values are not allowed here"),
        ("featurize", "featurize:\n  max_length: many\n",
         "params.yaml: featurize.max_length must be an integer, got str 'many'"),
        ("prepare", "prepare:\n  validation_fraction: 0.7\n",
         "params.yaml: prepare.validation_fraction must be <= 0.5, got float 0.7"),
        ("embeddings", "embeddings:\n  min_ngram: 7\n  max_ngram: 6\n",
         "params.yaml: embeddings.min_ngram (7) must not exceed max_ngram (6)"),
        ("ingest", None, "params.yaml: no such params file"),
        ("baseline", "baseline:\n  threads: all\n",
         "params.yaml: baseline.threads must be 'auto' or an integer, got str 'all'"),
    ],
)
def test_params_errors(tmp_path, stage, params, expected):
    line = one_line_error(meli(tmp_path, stage, params), stage)
    assert line == f"meli {stage}: error: {expected}"
    # The check comes before any work.
    assert not (tmp_path / "data").exists()


def test_ingest_missing_source(tmp_path):
    line = one_line_error(meli(tmp_path, "ingest", "data:\n  source: nothere.jsonl.gz\n"),
                          "ingest")
    assert line.endswith("error: nothere.jsonl.gz: no such file or directory")


def test_ingest_truncated_gzip(tmp_path):
    data = gzip.compress(b"".join(
        json.dumps({"title": f"producto {i}", "category": f"C{i % 5}"}).encode() + b"\n"
        for i in range(2000)))
    (tmp_path / "titles.jsonl.gz").write_bytes(data[: len(data) // 2])
    line = one_line_error(meli(tmp_path, "ingest", "data:\n  source: titles.jsonl.gz\n"),
                          "ingest")
    assert "titles.jsonl.gz: unreadable or truncated gzip data" in line
    assert not (tmp_path / "data" / "raw").exists()


def test_ingest_url_that_does_not_answer(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/titles.jsonl.gz"
    line = one_line_error(meli(tmp_path, "ingest", f"data:\n  source: {url}\n"), "ingest")
    assert f"{url}: no answer from the server" in line


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("prepare", "data/raw/titles.parquet: not found; run the ingest stage first"),
        ("featurize", "data/prepared/train.parquet: not found; run the prepare stage first"),
        ("embeddings", "data/features/vocab.txt: not found; run the featurize stage first"),
    ],
)
def test_stage_run_before_its_inputs_exist(tmp_path, stage, expected):
    line = one_line_error(meli(tmp_path, stage, "{}\n"), stage)
    assert line.endswith(f"error: {expected}")


def test_prepare_with_a_single_category(tmp_path):
    source = tmp_path / "titles.jsonl"
    source.write_text("".join(json.dumps({"title": f"zapatilla {i}", "category": "SNEAKERS",
                                          "language": "spanish", "label_quality": "reliable"})
                                    + "\n" for i in range(30)))
    ingest(DataParams(source=str(source)), tmp_path / "data" / "raw")
    line = one_line_error(meli(tmp_path, "prepare", "{}\n"), "prepare")
    assert "data/raw/titles.parquet: a classifier needs at least 2 categories" in line
    assert "only 'SNEAKERS'" in line


def test_embeddings_with_a_bad_pretrained_file(tmp_path):
    data = tmp_path / "data"
    ingest(DataParams(source="sample", sample_rows=200), data / "raw")
    prepare(PrepareParams(min_examples=2), data / "raw", data / "prepared", tmp_path / "m.json")
    featurize(FeaturizeParams(), data / "prepared", data / "features", tmp_path / "f.json")
    (tmp_path / "vectors.vec").write_text("not a header\nremera 1 2 3\n")
    line = one_line_error(meli(tmp_path, "embeddings", "embeddings:\n  pretrained: vectors.vec\n"),
                          "embeddings")
    assert line.endswith("error: vectors.vec: line 1: expected a '<words> <dim>' header")
    assert not (tmp_path / "models" / "embeddings").exists()


def test_an_output_that_cannot_be_written(tmp_path):
    (tmp_path / "data").write_text("a file where the data directory should be")
    line = one_line_error(meli(tmp_path, "ingest", "data:\n  sample_rows: 200\n"), "ingest")
    assert line == ("meli ingest: error: data: cannot write: a file stands where a directory "
                    "is needed (writing data/raw)")


def test_a_good_run_exits_zero(tmp_path):
    # The same harness on a run that works: exit 0 and the stage's output in place.
    result = meli(tmp_path, "ingest", "data:\n  sample_rows: 100\n")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert pq.read_metadata(tmp_path / "data" / "raw" / "titles.parquet").num_rows == 100


def test_prepare_when_the_selection_leaves_nothing(tmp_path):
    # No language field: ingest says "unknown", which prepare.languages does not select.
    source = tmp_path / "titles.jsonl"
    source.write_text("".join(json.dumps({"title": f"producto {i}", "category": f"C{i % 2}"})
                              + "\n" for i in range(30)))
    ingest(DataParams(source=str(source)), tmp_path / "data" / "raw")
    line = one_line_error(meli(tmp_path, "prepare", "{}\n"), "prepare")
    assert "found none" in line
    assert "prepare.languages ['spanish', 'portuguese'] left out 30 rows" in line
