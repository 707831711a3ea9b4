"""Loading params.yaml into the schema (`meli.params.schema`), validated once at the start.

A misspelled or unknown key, a value of the wrong type or one out of range fails at load time
with one line that names the key, before any stage does work.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from meli.errors import MeliError
from meli.layout import PARAMS_FILE
from meli.params.schema import SECTIONS, Params


class _Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where `1e-05` (no dot) is a string; DVC writes floats that way
    (`dvc exp run -S train.weight_decay=0.00001`), so exponent floats are read as numbers too."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)



def load_params(path: str | Path = PARAMS_FILE,
                models: Mapping[str, type] | None = None) -> Params:
    """Read params.yaml into `Params`, raising MeliError with one line on any problem.

    `models` maps each registered model name to its params class (`meli.models.params_classes()`);
    without it, model sections are left unread.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MeliError(f"{path}: no such params file") from None
    except UnicodeDecodeError:
        raise MeliError(f"{path}: not valid UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # a SafeLoader: builds plain data only
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise MeliError(f"{path}:{where}: {problem}") from None
    return parse_params(raw or {}, source=str(path), models=models)


def parse_params(raw: Any, source: str = PARAMS_FILE,
                 models: Mapping[str, type] | None = None) -> Params:
    if not isinstance(raw, dict):
        raise MeliError(f"{source}: the top level must be a mapping of sections, got "
                        f"{_describe(raw)}")
    known = [*SECTIONS, *(models or {})]
    for key in raw:
        if key in known:
            continue
        hint = difflib.get_close_matches(str(key), known, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        if models is not None:
            raise MeliError(f"{source}: unknown key '{key}'{suggestion}")
        # Without the registry an unknown section may be a model's; a near-miss of a
        # pipeline section's name is a typo all the same.
        close = difflib.get_close_matches(str(key), list(SECTIONS), n=1, cutoff=0.75)
        if close or not isinstance(raw[key], dict):
            raise MeliError(f"{source}: unknown key '{key}'{suggestion}")
    sections = {name: _build(kind, raw[name], prefix=f"{name}.", source=source)
                for name, kind in SECTIONS.items() if name in raw}
    typed_models = {name: _build(kind, raw.get(name, {}), prefix=f"{name}.", source=source)
                    for name, kind in (models or {}).items()}
    return Params(**sections, models=typed_models)


def to_dict(value: Any) -> Any:
    """Plain dict/list form of a params object (for logging and bundles); a whole `Params`
    gives the layout of params.yaml, model sections at the top level."""
    if isinstance(value, Params):
        plain = {name: to_dict(getattr(value, name)) for name in SECTIONS}
        return plain | {name: to_dict(section) for name, section in value.models.items()}
    if is_dataclass(value):
        return {f.name: to_dict(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list | tuple):
        return [to_dict(item) for item in value]
    return value


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise MeliError(f"{source}: {where} must be a mapping of keys, got {_describe(raw)}")
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            suggestion = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise MeliError(f"{source}: unknown key '{prefix}{key}'{suggestion}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, spec in known.items():
        if name not in raw:
            continue
        values[name] = _convert(raw[name], hints[name], spec.metadata, f"{prefix}{name}", source)
    built = cls(**values)
    problem = built.problem() if hasattr(built, "problem") else None
    if problem:
        raise MeliError(f"{source}: {prefix}{problem}")
    return built


def _convert(value: Any, kind: Any, limits: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)

    def fail(expected: str) -> typing.NoReturn:
        raise MeliError(f"{source}: {key} must be {expected}, got {_describe(value)}")

    if is_dataclass(kind):
        return _build(typing.cast(type, kind), value, prefix=f"{key}.", source=source)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:
            return _convert(value, options[0], limits, key, source)
        # Such as `int | Literal["auto"]`: a word among the literals, else the other type.
        words = [word for option in options if typing.get_origin(option) is Literal
                 for word in typing.get_args(option)]
        if value in words and not isinstance(value, bool):
            return value
        others = [option for option in options if typing.get_origin(option) is not Literal]
        if isinstance(value, str) or len(others) != 1:
            fail(" or ".join([*(repr(word) for word in words), *(_name(o) for o in others)]))
        return _convert(value, others[0], limits, key, source)
    if origin is Literal:
        if value not in args:
            fail("one of " + ", ".join(repr(arg) for arg in args))
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            fail("a mapping with text keys")
        return value
    if origin is list:
        if not isinstance(value, list):
            fail("a list")
        if limits.get("min_items") and len(value) < limits["min_items"]:
            fail(f"a list of at least {limits['min_items']} item(s)")
        return [_convert(item, args[0], {}, f"{key}[{i}]", source) for i, item in enumerate(value)]
    if kind is bool:
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail("a number")
        value = float(value)
        if value != value:
            fail("a number")
    elif kind is str:
        if not isinstance(value, str) or not value.strip():
            fail("a non-empty string")
        return value
    low, high = limits.get("min"), limits.get("max")
    if low is not None and (value < low or (limits.get("min_exclusive") and value == low)):
        fail(f"{'>' if limits.get('min_exclusive') else '>='} {low}")
    if high is not None and value > high:
        fail(f"<= {high}")
    return value


def _name(kind: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        kind, getattr(kind, "__name__", str(kind)))


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"a list {value!r}" if len(repr(value)) < 60 else "a list"
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"
