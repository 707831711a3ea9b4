"""The search-space grammar: keys checked against the params, distributions, draws."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
from dvc_repo import ROOT

from meli.errors import MeliError
from meli.experiments.space import (
    Dimension,
    digest,
    draw,
    parse_space,
    section_of,
    with_values,
)
from meli.models import names, params_classes
from meli.params import Params, load_params, parse_params, to_dict

SRC = ROOT / "src" / "meli"


@pytest.fixture(scope="module")
def params() -> Params:
    """The default params, model sections included (as `meli search` loads them)."""
    return parse_params(to_dict(Params()), models=params_classes())


@pytest.mark.parametrize(("space", "expected"), [
    ({"train.lerning_rate": {"uniform": [0.1, 0.2]}}, "no params key 'train.lerning_rate'"),
    ({"train": {"uniform": [0.1, 0.2]}}, "'train' is a whole section"),
    ({"cnn": {"int": [1, 2]}}, "'cnn' is a whole section"),
    ({"train.epochs.x": {"int": [1, 2]}}, "no params key 'train.epochs.x'"),
    ({"cnn.filterz": {"int": [1, 2]}}, "no params key 'cnn.filterz' ('cnn' holds filters,"),
    ({"rnn.units": {"int": [1, 2]}}, "no params key 'rnn.units'"),
    ({"models.cnn.filters": {"int": [1, 2]}}, "no params key 'models.cnn.filters'"),
    ({"search.trials": {"int": [1, 2]}}, "the search section itself"),
    ({"cnn.filters": {"choice": []}}, "choice needs a non-empty list"),
    ({"cnn.filters": {"normal": [0, 1]}}, "unknown distribution 'normal'"),
    ({"cnn.filters": {"int": [64, 16]}}, "low < high"),
    ({"cnn.filters": {"int": [1.5, 16]}}, "two integers"),
    ({"train.learning_rate": {"uniform": [0.1]}}, "[low, high]"),
    ({"train.learning_rate": {"uniform": [True, 2]}}, "two numbers"),
    ({"train.learning_rate": {"loguniform": [0.0, 0.1]}}, "loguniform needs low > 0"),
    ({"train.learning_rate": {"uniform": [0.1, 0.2], "choice": [1]}}, "one distribution"),
    ({"train.learning_rate": 0.01}, "one distribution"),
])
def test_a_bad_space_is_one_clear_error_naming_the_key(params, space, expected):
    with pytest.raises(MeliError) as caught:
        parse_space(space, params)
    message = str(caught.value)
    assert expected in message
    assert message.startswith(f"search.space.{next(iter(space))}: ")
    assert "\n" not in message


def test_an_unknown_model_section_lists_the_sections_there_are(params):
    with pytest.raises(MeliError) as caught:
        parse_space({"transformer.units": {"int": [16, 64]}}, params)
    holds = str(caught.value).split("('params' holds ", 1)[1].rstrip(")").split(", ")
    assert set(holds) == {"data", "prepare", "featurize", "embeddings", "train", "baseline",
                          "linear", "evaluate", "ensemble", "search", *names()}


def test_model_keys_resolve_through_the_model_sections(params):
    space = {"cnn.filters": {"int": [16, 64]}, "mlp.hidden_sizes": {"choice": [[32], [64]]},
             "prepare.text.digits": {"choice": ["keep", "zero"]},
             "train.learning_rate": {"loguniform": [0.001, 0.01]}}
    dimensions = parse_space(space, params)
    assert [d.key for d in dimensions] == sorted(space)
    assert [d.section for d in dimensions] == ["cnn", "mlp", "prepare", "train"]
    assert dimensions[0] == Dimension("cnn.filters", "int", (16, 64))
    assert dimensions[1].values == ([32], [64])


def test_model_keys_need_the_model_sections_loaded():
    without = parse_params(to_dict(Params()))
    assert without.models == {}
    with pytest.raises(MeliError, match="no params key 'cnn.filters' .*model sections were not "
                                        "loaded"):
        parse_space({"cnn.filters": {"int": [16, 64]}}, without)
    assert parse_space({"train.epochs": {"int": [1, 3]}}, without)


def test_the_repository_space_is_valid():
    params = load_params(ROOT / "params.yaml", models=params_classes())
    dimensions = parse_space(params.search.space, params)
    assert dimensions
    assert {section_of(d.key) for d in dimensions} <= {*params.models, "train", "embeddings",
                                                       "featurize", "prepare", "evaluate",
                                                       "baseline", "linear", "data"}


def test_draws_stay_in_bounds_and_repeat_with_the_seed():
    dimensions = [Dimension("a.int", "int", (1, 3)), Dimension("a.u", "uniform", (0.0, 0.2)),
                  Dimension("a.log", "loguniform", (1e-4, 1e-1)),
                  Dimension("a.choice", "choice", ([1], [2, 3]))]
    draws = [draw(dimensions, random.Random(5)) for _ in range(2)]
    assert draws[0] == draws[1]
    many = [draw(dimensions, rng) for rng in [random.Random(1)] for _ in range(300)]
    assert {values["a.int"] for values in many} == {1, 2, 3}  # both ends included
    assert all(0.0 <= values["a.u"] <= 0.2 for values in many)
    assert all(1e-4 <= values["a.log"] <= 1e-1 for values in many)
    assert all(float(f"{values['a.log']:.4g}") == values["a.log"] for values in many)
    assert {tuple(values["a.choice"]) for values in many} == {(1,), (2, 3)}


def test_with_values_sets_dotted_keys_on_a_copy():
    plain = {"train": {"learning_rate": 0.1}, "prepare": {"text": {"digits": "zero"}}}
    changed = with_values(plain, {"train.learning_rate": 0.2, "prepare.text.digits": "keep"})
    assert changed == {"train": {"learning_rate": 0.2}, "prepare": {"text": {"digits": "keep"}}}
    assert plain == {"train": {"learning_rate": 0.1}, "prepare": {"text": {"digits": "zero"}}}
    assert digest({"x": 1, "y": [2]}) == digest({"y": [2], "x": 1}) != digest({"x": 2, "y": [2]})


def meli_imports(path: Path) -> set[str]:
    """The meli modules a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("meli"):
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names
                                      if (SRC.parent / node.module.replace(".", "/")
                                          / f"{alias.name}.py").exists()}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("meli")}
    return found


def test_the_experiments_modules_import_no_circle():
    modules = {f"meli.experiments.{path.stem}": path
               for path in (SRC / "experiments").glob("*.py") if path.stem != "__init__"}
    modules |= {f"meli.params.{path.stem}".removesuffix(".__init__"): path
                for path in (SRC / "params").glob("*.py")}
    graph = {name: meli_imports(path) & set(modules) for name, path in modules.items()}
    assert meli_imports(SRC / "experiments" / "space.py") <= {"meli.errors", "meli.params"}
    assert meli_imports(SRC / "experiments" / "git_dvc.py") == {"meli.errors"}
    assert not any(name.startswith("meli.experiments")
                   for module in ("meli.params", "meli.params.load", "meli.params.schema")
                   for name in graph[module])

    def reaches(start: str, goal: str, seen: frozenset = frozenset()) -> bool:
        return any(step == goal or (step not in seen and reaches(step, goal, seen | {step}))
                   for step in graph[start])

    assert [name for name in graph if reaches(name, name)] == []
