"""The check stage: the whole of params.yaml validated first, in one line on a mistake, and an
output that is the same for any valid params (so that it makes no other stage stale). What DVC
does with it (a typo stops `dvc exp run` before any output is removed) is tested end to end in
test_search.py::test_the_readme_search_sequence_end_to_end."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from meli.models import params_classes
from meli.params import Params, to_dict
from meli.stages.check import CHECKED_TEXT, PARAMS_CHECKED_FILE, main

ROOT = Path(__file__).resolve().parents[1]


def check(cwd: Path, params: dict | str, monkeypatch, capsys) -> tuple[int, list[str]]:
    """Run the stage as dvc.yaml does, in `cwd`: its exit status and its stderr lines."""
    text = params if isinstance(params, str) else yaml.safe_dump(params)
    (cwd / "params.yaml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    status = main([])
    return status, capsys.readouterr().err.splitlines()


def shipped() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def test_valid_params_of_any_value_write_the_same_bytes(tmp_path, monkeypatch, capsys):
    assert check(tmp_path, shipped(), monkeypatch, capsys)[0] == 0
    first = (tmp_path / PARAMS_CHECKED_FILE).read_bytes()
    changed = shipped()
    changed["train"]["learning_rate"] = 0.002
    changed["search"]["models"] = ["mlp"]
    changed["cnn"]["filters"] = 512
    assert check(tmp_path, changed, monkeypatch, capsys)[0] == 0
    assert (tmp_path / PARAMS_CHECKED_FILE).read_bytes() == first == CHECKED_TEXT


@pytest.mark.parametrize(("change", "expected"), [
    (("train", "learnig_rate", 0.01),
     "params.yaml: unknown key 'train.learnig_rate' (did you mean 'train.learning_rate'?)"),
    (("cnn", "filtres", 512), "params.yaml: unknown key 'cnn.filtres' (did you mean "
                              "'cnn.filters'?)"),  # a model's section: the registry is loaded
    (("trian", "epochs", 3), "params.yaml: unknown key 'trian' (did you mean 'train'?)"),
    (("train", "learning_rate", -1.0),
     "params.yaml: train.learning_rate must be > 0.0, got float -1.0"),
    (("data", "source", "/no/such/titles.jsonl.gz"),
     "data.source: /no/such/titles.jsonl.gz: no such file or directory"),
    (("embeddings", "pretrained", "vectors.vec"),
     "embeddings.pretrained: vectors.vec: no such vectors file"),
])
def test_a_mistake_anywhere_is_one_line_and_leaves_the_output_alone(tmp_path, change, expected,
                                                                   monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / PARAMS_CHECKED_FILE).write_bytes(b"from the last valid params\n")
    section, key, value = change
    params = shipped()
    params.setdefault(section, {})[key] = value
    assert check(tmp_path, params, monkeypatch, capsys) == (1, [f"meli check: error: {expected}"])
    assert (tmp_path / PARAMS_CHECKED_FILE).read_bytes() == b"from the last valid params\n"


def test_a_local_source_is_found_from_where_dvc_runs_the_stage(tmp_path, monkeypatch, capsys):
    (tmp_path / "titles.jsonl").write_text('{"title": "x", "category": "Y"}\n')
    params = shipped()
    params["data"]["source"] = "titles.jsonl"
    assert check(tmp_path, params, monkeypatch, capsys)[0] == 0
    params["data"]["source"] = "https://example.org/titles.jsonl.gz"  # reaching it is ingest's
    assert check(tmp_path, params, monkeypatch, capsys)[0] == 0


def test_the_shipped_params_are_what_the_schema_defaults_to():
    # The check loads with the model registry: every section of params.yaml is read.
    assert set(shipped()) == set(to_dict(Params(models={
        name: kind() for name, kind in params_classes().items()})))


def expanded(stages: dict) -> dict[str, dict]:
    """dvc.yaml's stages with their matrices expanded: {"train@mlp": {"deps": [...], ...}}."""
    found = {}
    for name, stage in stages.items():
        models = (stage.get("matrix") or {}).get("model")
        for model in models or [None]:
            def fill(path: str, model=model) -> str:
                return path if model is None else path.replace("${item.model}", model)

            found[name if model is None else f"{name}@{model}"] = {
                "deps": [fill(dep) for dep in stage.get("deps", [])],
                "outs": [fill(out if isinstance(out, str) else next(iter(out)))
                         for out in stage.get("outs", [])]}
    return found


def test_dvc_yaml_runs_the_check_before_every_other_stage():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert stages["check"]["params"] == [{"params.yaml": None}]  # every key, top-level typos too
    assert stages["check"]["outs"] == [{PARAMS_CHECKED_FILE: {"persist": True}}]
    graph = expanded(stages)
    # DVC runs a stage after every stage whose outputs it reads: each must come after `check`.
    after: dict[str, set[str]] = {}

    def upstream(name: str) -> set[str]:
        if name not in after:
            direct = {other for other, stage in graph.items() if other != name and any(
                dep == out or dep.startswith(f"{out}/") for dep in graph[name]["deps"]
                for out in stage["outs"])}
            after[name] = direct.union(*(upstream(other) for other in direct))
        return after[name]

    assert [name for name in graph if name != "check" and "check" not in upstream(name)] == []
