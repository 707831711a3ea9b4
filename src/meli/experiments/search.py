"""Random hyperparameter search through the DVC experiment queue (`meli search`).

DVC offers grids (`-S key=a,b`) but no random search. The `search:` section of params.yaml
names the models a search trains and describes a space, one distribution per params key (the
grammar is in `meli.experiments.space`):

    search:
      trials: 12
      seed: 0
      models: [cnn]
      space:
        train.learning_rate: {loguniform: [0.0005, 0.01]}
        cnn.kernel_sizes: {choice: [[1, 2, 3], [2, 3, 4]]}
        cnn.filters: {int: [128, 512]}

`meli search` draws the trials from the seed (the same seed and count give the same trials),
checks each against the params' types and ranges, and queues one `dvc exp run --queue` per trial
that reproduces only the chosen models' stages. Each trial also records what its search is
(`-S search.models=[...]` and the strategy, seed and number of trials: `SearchSettings`), so
that the leaderboard knows its models and a later `meli search` resumes that search.
`dvc queue start` (or `--run`) runs them. `search.strategy: halving` runs the same trials as
successive halving instead (`meli.experiments.halving`).

Several machines share a search without any coordinator: each draws the same trials (same
commit, same seed) and queues only its share (`--shard I/N`: configurations I, I+N, I+2N, ...),
named by their place in the whole draw so that no two machines name two trials alike; `dvc exp
push` and `dvc exp pull` bring the results together.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from meli.errors import MeliError
from meli.experiments import git_dvc
from meli.experiments.names import prefix
from meli.experiments.space import digest, draw, parse_space, with_values
from meli.models import names, params_classes
from meli.params import Params, parse_params, to_dict


@dataclass(frozen=True)
class Trial:
    name: str
    values: dict[str, Any]  # params key -> the value drawn

    def set_params(self) -> list[str]:
        """`-S key=value` arguments for `dvc exp run`."""
        return [argument for key, value in self.values.items()
                for argument in ("-S", f"{key}={_yaml(value)}")]


def _yaml(value: Any) -> str:
    """A value written as one line of YAML that reads back as the same value (JSON would write
    1e-05, which YAML reads as a string); lists in flow style, `[mlp, cnn]`."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000)
    return text.removesuffix("\n").removesuffix("\n...")  # YAML's end-of-document mark


# The TF-IDF linear model: trained by its own stage from its own params section, not by
# train@<model> from `train` and a registry section like the PyTorch models.
LINEAR = "linear"


def searchable() -> tuple[str, ...]:
    """The models a search can train: the registry's PyTorch models, then the linear model."""
    return (*names(), LINEAR)


def training_stage(model: str) -> str:
    return LINEAR if model == LINEAR else f"train@{model}"


def sections_of(model: str) -> set[str]:
    """The params sections that only the training of `model` reads (and that a search of
    other models must therefore leave alone)."""
    return {LINEAR} if model == LINEAR else {"train", model}


def check_models(models: Sequence[str]) -> list[str]:
    """The models, each a searchable one (see `searchable`) named once."""
    known = searchable()
    if not models:
        raise MeliError(f"search.models: name at least one model (searchable: "
                        f"{', '.join(known)})")
    for model in models:
        if model not in known:
            raise MeliError(f"search.models: unknown model '{model}' (searchable: "
                            f"{', '.join(known)})")
    if len(set(models)) != len(models):
        raise MeliError(f"search.models: a model is named twice in {', '.join(models)}")
    return list(models)


def sample_trials(params: Params, trials: int, seed: int, models: Sequence[str]) -> list[Trial]:
    """`trials` distinct configurations drawn from the seed, each valid params.

    `params` must hold the model sections (`load_params(models=meli.models.params_classes())`):
    each trial is the whole params with its values set, validated as params.yaml would be.
    """
    models = check_models(models)
    missing = [name for name in names() if name not in params.models]
    if missing:
        raise ValueError(f"sample_trials needs params loaded with the model registry (no "
                         f"section for {', '.join(missing)})")
    # A trial of some models leaves the sections only the other models read as they are.
    others = set().union(*map(sections_of, searchable())) - set().union(*map(sections_of, models))
    dimensions = [dimension for dimension in parse_space(params.search.space, params)
                  if dimension.section not in others]
    if not dimensions:
        raise MeliError(f"search.space has no key for {', '.join(models)}: give at least one "
                        f"params key and its distribution (see params.yaml)")
    plain = to_dict(params)
    rng = random.Random(seed)
    found: list[Trial] = []
    seen: set[str] = set()
    attempts = 0
    while len(found) < trials:
        attempts += 1
        if attempts > 100 * trials:
            raise MeliError(f"search.space has only {len(found)} distinct configurations; "
                            f"ask for fewer trials than {trials}")
        values = draw(dimensions, rng)
        key = digest(values)
        if key in seen:
            continue
        seen.add(key)
        try:
            parse_params(with_values(plain, values), source="a sampled trial",
                         models=params_classes())
        except MeliError as error:
            raise MeliError(f"search.space: trial {values} is not valid params: "
                            f"{str(error).split(': ', 1)[1]}") from None
        found.append(Trial(f"{prefix(models, seed)}-{len(found) + 1:02d}-{key}", values))
    return found


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` (this machine is the I-th of N, 1 <= I <= N) as (I, N)."""
    part, _, parts = text.partition("/")
    try:
        shard = int(part), int(parts)
    except ValueError:
        raise MeliError(f"--shard {text}: give I/N, this machine's place I among N machines, "
                        f"e.g. 1/2") from None
    if not 1 <= shard[0] <= shard[1]:
        raise MeliError(f"--shard {text}: I must be between 1 and N")
    return shard


def shard(trials: Sequence[Trial], part: int, parts: int) -> dict[int, Trial]:
    """{place in the draw (from 1): trial} of the trials shard `part` of `parts` runs."""
    return {index: trial for index, trial in enumerate(trials, start=1)
            if (index - 1) % parts == part - 1}


def targets(models: Sequence[str]) -> list[str]:
    """The stages a trial reproduces: its models' training and evaluation (and what they
    depend on, if a trial's values make it stale upstream).

    The ensemble joins only a trial that trains every searchable model. It reads every model,
    so reproducing it in a CNN trial would retrain the MLP and the RNN too (a trial's
    `train.*` values make every model stale): measured on the real sample, that tripled a
    CNN trial's time. A trial of fewer models leaves the others and the ensemble stale in its
    results (`dvc status` says so); `dvc exp apply` and `dvc repro` rebuild them.
    """
    stages = [stage for model in models
              for stage in (training_stage(model), f"evaluate@{model}")]
    if set(searchable()) <= set(models):
        stages += ["ensemble", "evaluate@ensemble"]
    return stages


@dataclass(frozen=True)
class SearchSettings:
    """What a search is: its strategy, models, seed and number of configurations (all shards
    together). Each trial records them in its own params (`-S search.strategy=...`, ...), so
    that the leaderboard knows the models a trial trained and a later `meli search` resumes
    the search as it was started, whatever that call's flags or params.yaml would default to.
    Only the check stage reads the `search` section, and its output does not change with it:
    recording them makes no other stage stale."""

    strategy: str  # random | halving
    models: tuple[str, ...]
    seed: int
    trials: int

    @property
    def prefix(self) -> str:
        """What each of its trials is named with first: `cnn-s0`."""
        return prefix(self.models, self.seed)

    def set_params(self) -> list[str]:
        values = {"search.strategy": self.strategy, "search.models": list(self.models),
                  "search.seed": self.seed, "search.trials": self.trials}
        return [argument for key, value in values.items()
                for argument in ("-S", f"{key}={_yaml(value)}")]

    def describe(self) -> str:
        return (f"{self.prefix} ({self.strategy}, {self.trials} configuration(s) of "
                f"{', '.join(self.models)}, seed {self.seed})")


def recorded_searches(exp_show: list[dict[str, Any]]) -> list[SearchSettings]:
    """The searches that the experiments of `dvc exp show --json` are trials of (queued,
    running and finished alike), as their params record them, in the order first met."""
    found: dict[SearchSettings, None] = {}
    for baseline in exp_show:
        for experiment in baseline.get("experiments") or []:
            data = ((experiment.get("revs") or [{}])[0].get("data") or {})
            section = (((data.get("params") or {}).get("params.yaml") or {}).get("data")
                       or {}).get("search") or {}
            strategy, models = section.get("strategy"), section.get("models")
            seed, trials = section.get("seed"), section.get("trials")
            if not (strategy in ("random", "halving") and isinstance(models, list) and models
                    and all(isinstance(model, str) for model in models)
                    and isinstance(seed, int) and isinstance(trials, int)):
                continue
            settings = SearchSettings(strategy, tuple(models), seed, trials)
            # A plain `dvc exp run` carries params.yaml's search section too: only trials,
            # named after their search, count.
            if str(experiment.get("name") or "").startswith(f"{settings.prefix}-"):
                found[settings] = None
    return list(found)


def queue(trials: Sequence[Trial], settings: SearchSettings,
          force: bool = False) -> list[Trial]:
    """Queue the trials not already known to DVC (all of them with `force`); the ones queued."""
    models = check_models(settings.models)
    git_dvc.check_committed()
    known = set() if force else git_dvc.existing_experiments()
    queued = []
    for trial in trials:
        if trial.name in known:
            continue
        git_dvc.dvc("exp", "run", "--queue", "-n", trial.name, *(["-f"] if force else []),
                     *trial.set_params(), *settings.set_params(), *targets(models))
        queued.append(trial)
    return queued
