"""dvc.yaml tells the truth: each stage's code deps are exactly the package files its command
imports, stages do not import each other, and the matrices follow the model registry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from import_closure import SRC, closure, imported_names, module_file

ROOT = SRC.parent
STAGES_PACKAGE = "meli.stages"


def stage_entry(command: str) -> str | None:
    """`python -m meli.stages.train ${item.model}` -> meli.stages.train."""
    match = re.match(r"python -m (meli\.[\w.]+)", command)
    return match.group(1) if match else None


def problems(dvc_yaml: dict) -> list[str]:
    """One line per stage whose code deps differ from its command's import closure."""
    found = []
    for name, stage in dvc_yaml["stages"].items():
        entry = stage_entry(stage["cmd"])
        if entry is None:
            found.append(f"{name}: command {stage['cmd']!r} does not run a meli module")
            continue
        declared = {Path(dep) for dep in stage.get("deps", []) if dep.startswith("src/")}
        needed = closure(entry)
        found += [f"{name}: imports {path} but does not list it in deps"
                  for path in sorted(needed - declared)]
        found += [f"{name}: lists {path} in deps but its command never imports it"
                  for path in sorted(declared - needed)]
    return found


@pytest.fixture(scope="module")
def dvc_yaml_text() -> str:
    return (ROOT / "dvc.yaml").read_text(encoding="utf-8")


def test_every_stage_declares_exactly_the_code_it_runs(dvc_yaml_text):
    assert problems(yaml.safe_load(dvc_yaml_text)) == []


def test_a_removed_dep_line_is_caught_and_named(dvc_yaml_text):
    line = "      - src/meli/bundles/metrics.py\n"
    train = dvc_yaml_text.index("\n  train:\n")
    start = dvc_yaml_text.index(line, train)
    broken = dvc_yaml_text[:start] + dvc_yaml_text[start + len(line):]
    assert problems(yaml.safe_load(broken)) == [
        "train: imports src/meli/bundles/metrics.py but does not list it in deps"]


def test_an_extra_dep_line_is_caught_and_named(dvc_yaml_text):
    loaded = yaml.safe_load(dvc_yaml_text)
    loaded["stages"]["prepare"]["deps"].append("src/meli/data/vocabulary.py")
    assert problems(loaded) == [
        "prepare: lists src/meli/data/vocabulary.py in deps but its command never imports it"]


def test_an_import_inside_a_function_counts(tmp_path):
    package = tmp_path / "src" / "meli"
    (package / "stages").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "stages" / "__init__.py").write_text("")
    (package / "helper.py").write_text("")
    (package / "data.py").write_text("")
    (package / "stages" / "one.py").write_text(
        "def main():\n    from meli import helper\n    import meli.data\n")
    assert {str(path) for path in closure("meli.stages.one", tmp_path / "src")} == {
        "src/meli/__init__.py", "src/meli/stages/__init__.py", "src/meli/stages/one.py",
        "src/meli/helper.py", "src/meli/data.py"}


def stage_modules() -> list[str]:
    return sorted(f"{STAGES_PACKAGE}.{path.stem}" for path in (SRC / "meli" / "stages").glob("*.py")
                  if path.stem != "__init__")


def test_every_stage_module_is_a_dvc_stage(dvc_yaml_text):
    entries = {stage_entry(stage["cmd"]) for stage in yaml.safe_load(dvc_yaml_text)["stages"]
               .values()}
    assert entries == set(stage_modules())


@pytest.mark.parametrize("module", stage_modules())
def test_a_stage_imports_no_other_stage(module):
    others = {name for name in imported_names(module) if name.startswith(f"{STAGES_PACKAGE}.")}
    assert others == set()


def test_layout_is_a_leaf():
    assert imported_names("meli.layout") == set()


def test_train_does_not_depend_on_ingest_or_the_sample():
    files = {str(path) for path in closure("meli.stages.train")}
    assert not {file for file in files if "ingest" in file or "/sample/" in file}


def test_the_sample_catalogue_is_a_dep_of_ingest_only(dvc_yaml_text):
    stages = yaml.safe_load(dvc_yaml_text)["stages"]
    users = [name for name, stage in stages.items()
             if "src/meli/data/sample/catalogue.json" in stage.get("deps", [])]
    assert users == ["ingest"]


def test_no_import_cycle_among_the_package_modules():
    modules = sorted(".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(
        ".__init__") for path in (SRC / "meli").rglob("*.py"))
    graph = {module: imported_names(module) for module in modules if module_file(module)}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*path, module, target]))
            if target not in state:
                visit(target, [*path, module])
        state[module] = "done"

    for module in modules:
        if module not in state:
            visit(module, [])


def test_the_matrices_follow_the_model_registry(dvc_yaml_text):
    from meli.bundles.registry import models
    from meli.models import names

    stages = yaml.safe_load(dvc_yaml_text)["stages"]
    assert stages["train"]["matrix"]["model"] == list(names())
    # Every bundle is evaluated: the registry's models, fastText, linear, the ensemble.
    assert stages["evaluate"]["matrix"]["model"] == models()
    assert models()[-3:] == ["fasttext", "linear", "ensemble"]


def test_meli_lists_every_stage_of_the_pipeline(dvc_yaml_text):
    from meli.cli import stages

    pipeline = {name.split("@")[0] for name in yaml.safe_load(dvc_yaml_text)["stages"]}
    listed = stages()
    assert set(listed) == pipeline
    assert listed["train"].startswith("fit one registered PyTorch model")
