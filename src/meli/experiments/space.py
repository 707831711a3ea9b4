"""The grammar of `search.space` in params.yaml: one distribution per params key.

    space:
      train.learning_rate: {loguniform: [0.0005, 0.01]}   # log-uniform between the ends
      train.label_smoothing: {uniform: [0.0, 0.2]}        # uniform between the ends
      cnn.filters: {int: [128, 512]}                       # a whole number, both ends included
      cnn.kernel_sizes: {choice: [[1, 2, 3], [2, 3, 4]]}   # one of the values

A key is a dotted path to one value of params.yaml: a pipeline section's key (`train.epochs`,
`prepare.text.digits`) or a model section's (`cnn.filters`, found in `Params.models`). Only the
shape of the space is checked here; whether a drawn value is valid params is for
`meli.params.parse_params` to say, trial by trial (see `meli.experiments.search`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from meli.errors import MeliError

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int")


@dataclass(frozen=True)
class Dimension:
    key: str
    kind: str  # one of DISTRIBUTIONS
    values: tuple  # the choices, or (low, high)

    @property
    def section(self) -> str:
        """The params section the key belongs to (`train`, `cnn`, ...)."""
        return section_of(self.key)

    def sample(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return self.values[rng.randrange(len(self.values))]
        low, high = self.values
        if self.kind == "int":
            return rng.randint(low, high)
        if self.kind == "uniform":
            return _round(rng.uniform(low, high))
        return _round(math.exp(rng.uniform(math.log(low), math.log(high))))


def section_of(key: str) -> str:
    return key.split(".")[0]


def _round(value: float) -> float:
    """Four significant digits: readable in names and tables, and still continuous enough."""
    return float(f"{value:.4g}")


def parse_space(space: Mapping[str, Any], params: Any) -> list[Dimension]:
    """The dimensions of `space`, sorted by key, after checking each against `params` (a
    `meli.params.Params`): the key names one value, and its distribution is well formed.

    Model keys resolve through `params.models`, so load the params with the model registry
    (`load_params(models=meli.models.params_classes())`) to search them.
    """
    dimensions = []
    for key in sorted(space):
        where = f"search.space.{key}"
        if section_of(key) == "search":
            raise MeliError(f"{where}: the search section itself cannot be searched")
        _check_leaf(params, key, where)
        dimensions.append(_dimension(key, space[key], where))
    return dimensions


def _dimension(key: str, spec: Any, where: str) -> Dimension:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise MeliError(f"{where}: must be one distribution, e.g. {{choice: [a, b]}}, "
                        f"{{uniform: [low, high]}}, {{loguniform: [low, high]}} or "
                        f"{{int: [low, high]}}")
    ((kind, values),) = spec.items()
    if kind not in DISTRIBUTIONS:
        raise MeliError(f"{where}: unknown distribution '{kind}' "
                        f"(use one of {', '.join(DISTRIBUTIONS)})")
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise MeliError(f"{where}: choice needs a non-empty list of values")
        return Dimension(key, kind, tuple(values))
    numbers = int if kind == "int" else (int, float)
    if (not isinstance(values, list) or len(values) != 2
            or not all(isinstance(v, numbers) and not isinstance(v, bool) for v in values)):
        expected = "integers" if kind == "int" else "numbers"
        raise MeliError(f"{where}: {kind} needs [low, high], two {expected}")
    low, high = values
    if not low < high:
        raise MeliError(f"{where}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise MeliError(f"{where}: loguniform needs low > 0, got {low}")
    return Dimension(key, kind, (low, high))


def _top_level(params: Any) -> dict[str, Any]:
    """{section name: section} of the whole params: the pipeline sections, then the models'."""
    sections = {f.name: getattr(params, f.name) for f in fields(params) if f.name != "models"}
    return sections | dict(getattr(params, "models", None) or {})


def _check_leaf(params: Any, key: str, where: str) -> None:
    parts = key.split(".")
    children = _top_level(params)
    node: Any = None
    for depth, part in enumerate(parts):
        if part not in children:
            prefix = ".".join(parts[:depth]) or "params"
            known = ", ".join(children) if children else "nothing (it is a value)"
            note = ("; model sections were not loaded" if depth == 0
                    and not getattr(params, "models", None) else "")
            raise MeliError(f"{where}: no params key '{key}' ('{prefix}' holds {known}{note})")
        node = children[part]
        children = ({f.name: getattr(node, f.name) for f in fields(node)}
                    if is_dataclass(node) else {})
    if is_dataclass(node):
        raise MeliError(f"{where}: '{key}' is a whole section; name one of its keys")


def draw(dimensions: Iterable[Dimension], rng: random.Random) -> dict[str, Any]:
    """One value per dimension, {key: value}, in the dimensions' order."""
    return {dimension.key: dimension.sample(rng) for dimension in dimensions}


def digest(values: Mapping[str, Any]) -> str:
    """Six hex digits that tell drawn configurations apart (the same values, the same digest)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:6]


def with_values(plain: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `plain` (params in params.yaml's layout, `meli.params.to_dict`) with each
    dotted key of `values` set."""
    changed = copy.deepcopy(dict(plain))
    for key, value in values.items():
        *path, leaf = key.split(".")
        section = changed
        for part in path:
            section = section[part]
        section[leaf] = value
    return changed
