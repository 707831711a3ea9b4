"""Every tunable of the pipeline as typed dataclasses, loaded once from params.yaml and validated.

Each stage reads only its own section (`params.prepare`, `params.embeddings`, ...). A misspelled or
unknown key, a value of the wrong type or one out of range fails at load time with one line that
names the key, before any stage does work.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from meli.errors import MeliError
from meli.layout import PARAMS_FILE

__all__ = ["PARAMS_FILE", "Params", "load_params", "param", "parse_params", "to_dict"]


class _Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where `1e-05` (no dot) is a string; DVC writes floats that way
    (`dvc exp run -S train.weight_decay=0.00001`), so exponent floats are read as numbers too."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def param(default: Any, *, min: float | None = None, max: float | None = None,
          min_exclusive: bool = False, min_items: int | None = None) -> Any:
    """A dataclass field with bounds checked when params are loaded."""
    metadata = {"min": min, "max": max, "min_exclusive": min_exclusive, "min_items": min_items}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: typing.cast(Any, default).copy(), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class DataParams:
    # "sample" (the synthetic set generated offline), a local file or directory, or a URL.
    source: str = "sample"
    sample_rows: int = param(12_000, min=100)
    sample_seed: int = 2019
    # Longer titles are rejected as broken rows: real MeLi titles are at most a few hundred chars.
    max_title_chars: int = param(1_000, min=10)


@dataclass(frozen=True)
class TextParams:
    lowercase: bool = True
    fold_accents: bool = True
    # keep: "32gb" stays; zero: every digit becomes 0 ("00gb"), so sizes share tokens; drop.
    digits: Literal["keep", "zero", "drop"] = "zero"
    # split: punctuation becomes its own token; drop: it becomes a space; keep: left in words.
    punctuation: Literal["split", "drop", "keep"] = "drop"


@dataclass(frozen=True)
class PrepareParams:
    languages: list[str] = param(["spanish", "portuguese"], min_items=1)
    label_quality: list[str] = param(["reliable", "unreliable"], min_items=1)
    min_examples: int = param(10, min=2)
    keep_source_split: bool = True
    validation_fraction: float = param(0.1, min=0.0, max=0.5, min_exclusive=True)
    test_fraction: float = param(0.1, min=0.0, max=0.5, min_exclusive=True)
    seed: int = 42
    text: TextParams = field(default_factory=TextParams)

    def problem(self) -> str | None:
        if self.validation_fraction + self.test_fraction >= 0.9:
            return "validation_fraction + test_fraction must leave at least 10% for training"
        return None


@dataclass(frozen=True)
class FeaturizeParams:
    min_count: int = param(1, min=1)
    max_size: int = param(50_000, min=10)
    max_length: int = param(24, min=1, max=512)


@dataclass(frozen=True)
class EmbeddingsParams:
    model: Literal["skipgram", "cbow"] = "skipgram"
    dim: int = param(100, min=2, max=1024)
    epochs: int = param(10, min=1, max=1000)
    learning_rate: float = param(0.05, min=0.0, max=1.0, min_exclusive=True)
    window: int = param(5, min=1, max=50)
    min_count: int = param(1, min=1)
    # Character n-gram lengths give vectors to rare and misspelled words; 0/0 turns them off.
    min_ngram: int = param(3, min=0, max=20)
    max_ngram: int = param(6, min=0, max=20)
    # Hash buckets for the n-grams: the fastText default (2M) makes an 800 MB model at dim 100.
    buckets: int = param(200_000, min=1_000)
    seed: int = 0
    # fastText is only reproducible with one thread (its threads update the vectors unlocked);
    # "auto" uses every core this process may run on (for the full data: see the README).
    threads: int | Literal["auto"] = param(1, min=1, max=256)
    # Path to a word2vec-format .vec(.gz) file to use instead of training (e.g. SBW vectors).
    pretrained: str | None = None

    def problem(self) -> str | None:
        if self.min_ngram > self.max_ngram:
            return f"min_ngram ({self.min_ngram}) must not exceed max_ngram ({self.max_ngram})"
        if self.min_ngram == 0 and self.max_ngram != 0:
            return "min_ngram is 0 (n-grams off), so max_ngram must be 0 too"
        return None


@dataclass(frozen=True)
class TrainParams:
    """Shared by every PyTorch model (train@mlp, train@cnn, ...); each model's own settings
    are its section, typed in its file under meli/models/."""

    epochs: int = param(10, min=1, max=1000)
    batch_size: int = param(128, min=1, max=65_536)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    learning_rate: float = param(0.004, min=0.0, max=10.0, min_exclusive=True)
    # onecycle: linear warm-up then cosine decay to zero; cosine: decay only; constant.
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup_fraction: float = param(0.1, min=0.0, max=0.5)
    weight_decay: float = param(0.0, min=0.0, max=1.0)
    label_smoothing: float = param(0.1, min=0.0, max=0.5)
    # balanced: loss weights 1/frequency; sqrt: 1/sqrt(frequency); none.
    class_weighting: Literal["none", "balanced", "sqrt"] = "none"
    # Epochs without a better validation balanced accuracy before training stops.
    patience: int = param(4, min=1)
    freeze_embeddings: bool = False
    seed: int = 42
    # Threads per process. With one process on a CPU, results are bit-identical run to run.
    threads: int = param(2, min=1, max=256)
    # auto: CUDA when PyTorch sees a GPU, else the CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 autocast on CUDA and on a CPU with native bf16 (AVX-512 BF16, AMX), else fp32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # CUDA kernels that give the same result every run (slower); a CPU is always deterministic.
    cuda_deterministic: bool = False
    # Processes per machine, and machines: above 1 in all, training runs under torch.distributed
    # (gloo on CPU, NCCL on CUDA); batch_size stays the global batch.
    processes: int = param(1, min=1, max=1024)
    nodes: int = param(1, min=1, max=4096)
    # Where the machines of a multi-machine run meet (the machine of --node-rank 0).
    master_address: str = "127.0.0.1"
    master_port: int = param(29500, min=1, max=65535)
    # Processes that read batches ahead (0: the training process reads them; more keep a GPU
    # busy). Changes no result.
    loader_workers: int = param(0, min=0, max=64)


@dataclass(frozen=True)
class BaselineParams:
    """fastText's supervised classifier, the reference the PyTorch models must beat."""

    epochs: int = param(30, min=1, max=1000)
    learning_rate: float = param(0.5, min=0.0, max=5.0, min_exclusive=True)
    dim: int = param(100, min=2, max=1024)
    word_ngrams: int = param(1, min=1, max=5)
    min_ngram: int = param(0, min=0, max=20)
    max_ngram: int = param(0, min=0, max=20)
    min_count: int = param(1, min=1)
    buckets: int = param(500_000, min=1_000)
    loss: Literal["softmax", "ns", "hs", "ova"] = "softmax"
    seed: int = 0
    # One thread is bit-reproducible; "auto" uses every core (see embeddings.threads).
    threads: int | Literal["auto"] = param(1, min=1, max=256)

    def problem(self) -> str | None:
        if self.min_ngram > self.max_ngram:
            return f"min_ngram ({self.min_ngram}) must not exceed max_ngram ({self.max_ngram})"
        return None


@dataclass(frozen=True)
class EvaluateParams:
    # The confusion plot shows the categories of this many most-confused (true, predicted) pairs.
    confused_pairs: int = param(15, min=1, max=500)
    batch_size: int = param(2048, min=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 autocast on CUDA; on a CPU with native bf16, only for a bundle whose training
    # found that bf16 kept its validation balanced accuracy within 0.001 of float32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"


@dataclass(frozen=True)
class EnsembleParams:
    """The ensemble stage: which bundles it combines and how it fits their weights."""

    # Registered models and/or fasttext; each needs its bundle in models/<name>.
    members: list[str] = param(["mlp", "cnn", "rnn", "fasttext"], min_items=1)
    # Fit a temperature per member on validation before weighting.
    temperature: bool = True
    # Greedy selection steps: weights are multiples of 1/rounds.
    rounds: int = param(20, min=1, max=1000)
    # Validation titles the weights are fitted on (a seeded sample when there are more).
    max_rows: int = param(50_000, min=100)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    def problem(self) -> str | None:
        if len(set(self.members)) != len(self.members):
            return "members names a model twice"
        return None


@dataclass(frozen=True)
class SearchParams:
    """Hyperparameter search (`meli search`), run through the DVC experiment queue: random, or
    successive halving (see meli.experiments.halving)."""

    # random: every trial trains train.epochs. halving: rung 0 trains every trial min_epochs,
    # each next rung the best 1/eta of the previous one eta times longer, the last train.epochs.
    strategy: Literal["random", "halving"] = "random"
    trials: int = param(12, min=1, max=1000)
    seed: int = 0
    eta: int = param(3, min=2)
    min_epochs: int = param(1, min=1)
    rungs: int = param(3, min=1)
    # Registered model names (see meli.models); checked by `meli search` against the registry.
    models: list[str] = param(["cnn"], min_items=1)
    # params key -> one distribution: {choice: [values]}, {uniform: [low, high]},
    # {loguniform: [low, high]} or {int: [low, high]} (both ends included).
    space: dict[str, Any] = param({})


@dataclass(frozen=True)
class Params:
    """The whole params.yaml: one section per pipeline stage, plus one per registered model.

    Model sections (`mlp:`, `cnn:`, ...) are typed by the model registry (`meli.models`), which
    needs PyTorch; the stages that build models pass the registry's classes to `load_params`,
    the others leave those sections to them (a misspelled section name is still caught).
    """

    data: DataParams = field(default_factory=DataParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    featurize: FeaturizeParams = field(default_factory=FeaturizeParams)
    embeddings: EmbeddingsParams = field(default_factory=EmbeddingsParams)
    train: TrainParams = field(default_factory=TrainParams)
    baseline: BaselineParams = field(default_factory=BaselineParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    ensemble: EnsembleParams = field(default_factory=EnsembleParams)
    search: SearchParams = field(default_factory=SearchParams)
    # Model name -> its typed section; empty when loaded without the registry.
    models: dict[str, Any] = field(default_factory=dict)

    def model(self, name: str) -> Any:
        if name not in self.models:
            raise MeliError(f"params: no section for model '{name}' (known: "
                            f"{', '.join(self.models) or 'none loaded'})")
        return self.models[name]


# The sections params.py itself types, in params.yaml's order.
SECTIONS: dict[str, type] = {f.name: f.default_factory for f in fields(Params)  # type: ignore[misc]
                             if f.name != "models"}


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
