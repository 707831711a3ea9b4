"""`meli leaderboard`: experiments ranked by validation balanced accuracy, from `dvc exp show`.

Each experiment is ranked by the models it retrained: those whose bundle (`models/<name>`) it
changed from its commit's, as `dvc exp show` reports the outputs. A search trial reproduces only
its models' stages, so a CNN trial is ranked by the CNN alone (the other models' figures in it
are its commit's, left in place); a plain `dvc exp run` that retrained everything is ranked by
every model. Where DVC reports no outputs, or an experiment changed no bundle, the models in its
own params' `search.models` count (`meli search` sets them to the models the trial trained).
The commit's own row (`(baseline)`) is shown for the models its experiments are ranked by, so a
CNN search is ranked against the commit's CNN and not against the ensemble or the linear model.
`--model` keeps only the experiments that retrained the models named, and the commit's rows of
them.

Each row shows only the params its model reads (its own section, `train` for the PyTorch
models, and the sections upstream of its training), so a linear trial shows no `cnn.*` value and
no epochs. `--apply` compares each experiment with the commit on the same models (the mean of
their validation figures): it applies the best experiment that beats its commit, and refuses,
naming them, when the experiments that do retrained different models (`--model` chooses).

The test figure is shown beside the validation one but never used to rank: choosing among many
trials by their test score would make that score optimistic. Failed trials are listed after the
ranked ones with the last error line of their log; queued and running ones are counted.

Each row shows the trial's rung (successive halving, from its name) and its budget
(`train.epochs`, for the PyTorch models). Trials that trained the full budget of their commit
rank first, then the others by budget, the longest first: a trial stopped after one epoch is not
comparable with one that trained ten, and `--apply` applies the best full-budget one. With
`--remote`, the experiments of every machine that pushed to that Git remote are pulled first
(`dvc exp pull --no-cache`: their params and metrics, not their models).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meli.errors import MeliError
from meli.experiments import git_dvc
from meli.experiments.names import rung_of
from meli.layout import bundle_dir, model_metrics_path, train_results_dir

BASELINE = "(baseline)"
FASTTEXT, LINEAR, ENSEMBLE = "fasttext", "linear", "ensemble"
# Every model is trained on the prepared titles; the PyTorch models also on the token ids and
# the fastText vectors; every bundle's test figure comes from evaluate.
SHARED_SECTIONS = ("data", "prepare", "evaluate")
VECTOR_SECTIONS = ("featurize", "embeddings")


@dataclass
class Entry:
    name: str
    model: str
    state: str  # success | failed | queued | running
    validation: float | None = None
    test: float | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the params its model reads
    error: str | None = None
    rung: int | None = None  # successive halving's rung, from the trial's name
    epochs: int | None = None  # the trial's train.epochs (PyTorch models only)
    full: bool = True  # trained its commit's full train.epochs

    @property
    def partial(self) -> bool:
        return not self.full


def bundles() -> list[str]:
    """Every model with a bundle, in the registry's order (`meli.bundles.registry.models`)."""
    from meli.bundles.registry import models  # imports PyTorch's registry: only when ranking

    return models()


def sections_read(model: str) -> set[str] | None:
    """The params sections that the training and evaluation of `model` read, its own and those
    of the stages upstream of it (a registered PyTorch model: `train` and its own section);
    None for the ensemble, which reads every model's."""
    if model == ENSEMBLE:
        return None
    own = {LINEAR: ("linear",), FASTTEXT: ("baseline",)}.get(model,
                                                             ("train", model, *VECTOR_SECTIONS))
    return {*SHARED_SECTIONS, *own}


def own_params(params: dict[str, Any], model: str) -> dict[str, Any]:
    """The flattened params that `model` reads (the search section never: no stage reads it)."""
    sections = sections_read(model)
    return {key: value for key, value in params.items() if not key.startswith("search.")
            and (sections is None or key.split(".")[0] in sections)}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat = {}
        for key, inner in value.items():
            flat |= _flatten(inner, f"{prefix}{key}.")
        return flat
    return {prefix[:-1]: value}


def _metric(metrics: dict, path: str, *keys: str) -> float | None:
    value: Any = (metrics.get(path) or {}).get("data")
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return float(value) if isinstance(value, int | float) else None


def _last_error(log: str | None) -> str | None:
    """The most telling line of a failed run's log: meli's own error line if there is one."""
    if not log or not Path(log).exists():
        return None
    lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines()
             if line.strip()]
    mine = [line for line in lines if line.startswith("meli ") and ": error: " in line]
    return (mine or lines or [None])[-1]


def searched_models(params: dict[str, Any], known: Sequence[str]) -> list[str]:
    """The models in flattened params' `search.models`, in the order of `known`."""
    listed = params.get("search.models")
    listed = listed if isinstance(listed, list) else []
    return [model for model in known if model in listed]


def retrained_models(data: dict, commit: dict, known: Sequence[str]) -> list[str]:
    """The models of `known` whose bundle an experiment's outputs (`data` of `dvc exp show`)
    hold at another hash than its commit's."""
    outs, before = data.get("outs") or {}, commit.get("outs") or {}
    changed = []
    for model in known:
        path = bundle_dir(model).as_posix()  # `dvc exp show` names outputs with forward slashes
        now = (outs.get(path) or {}).get("hash")
        if now and now != (before.get(path) or {}).get("hash"):
            changed.append(model)
    return changed


def collect(exp_show: list[dict], models: Sequence[str] | None = None,
            known: Sequence[str] | None = None) -> list[Entry]:
    """One entry per (experiment, model) from `dvc exp show --json`, plus each commit's own rows.

    Each experiment counts for the models it retrained (see the module's docstring), or with
    `models`, for those of them it retrained. A commit's row counts for every model its
    experiments count for; with no experiments, for every model it has a validation figure of.
    `known` is every model with a bundle (`bundles()` when not given).
    """
    known = list(bundles() if known is None else known)
    entries = []
    for baseline in exp_show:
        if baseline.get("rev") == "workspace":
            continue
        commit = baseline.get("data") or {}
        commit_params = _params_of(commit)
        full = _epochs(commit_params)
        rows = []
        for experiment in baseline.get("experiments") or []:
            revision = (experiment.get("revs") or [{}])[0]
            data = revision.get("data") or {}
            params = _params_of(data)
            executor = experiment.get("executor") or {}
            state = executor.get("state") or "success"
            ranked_by = (retrained_models(data, commit, known)
                         or searched_models(params, known) or known)
            if models:
                # A queued or failed trial has no outputs to tell by: it counts for `models`.
                ranked_by = [model for model in models
                             if model in ranked_by or state != "success"]
            rows.append((experiment.get("name") or revision.get("rev", "?")[:7], data, params,
                         state, executor, ranked_by))
        if models:
            commit_models = list(models)
        elif rows:
            commit_models = [model for model in known
                             if any(model in ranked_by for *_, ranked_by in rows)]
        else:
            commit_models = [model for model in known
                             if _validation(commit.get("metrics") or {}, model) is not None]
        rows.insert(0, (BASELINE, commit, commit_params, "success", {}, commit_models))
        for name, data, params, state, executor, ranked_by in rows:
            metrics = data.get("metrics") or {}
            error = _last_error((executor.get("local") or {}).get("log")) \
                if state == "failed" else None
            for model in ranked_by:
                epochs = _epochs(params) if "train" in (sections_read(model) or ()) else None
                entries.append(Entry(
                    name=name, model=model, state=state,
                    validation=_validation(metrics, model),
                    test=_metric(metrics, model_metrics_path(model).as_posix(), "test",
                                 "balanced_accuracy"),
                    params=own_params(params, model), error=error, rung=rung_of(name),
                    epochs=epochs, full=full is None or epochs in (None, full)))
    return entries


def _validation(metrics: dict, model: str) -> float | None:
    return _metric(metrics, (train_results_dir(model) / "metrics.json").as_posix(),
                   "best", "validation_balanced_accuracy")


def _epochs(params: dict[str, Any]) -> int | None:
    value = params.get("train.epochs")
    return value if isinstance(value, int) else None


def _params_of(data: dict) -> dict[str, Any]:
    return _flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})


def rank(entries: list[Entry]) -> tuple[list[Entry], list[Entry], list[Entry]]:
    """(ranked successes, failures, still queued or running)."""
    done = [e for e in entries if e.state == "success" and e.validation is not None]
    # Full-budget trials first, then the shorter ones (halving's early rungs), longest first.
    done.sort(key=lambda e: (e.partial, -(e.epochs or 0) if e.partial else 0,
                             -e.validation, e.name, e.model))  # type: ignore[operator]
    failed = [e for e in entries if e.state == "failed"]
    pending = [e for e in entries if e.state in ("queued", "running")]
    return done, failed, pending


def differing_keys(entries: list[Entry]) -> list[str]:
    """Params keys whose value is not the same in every entry whose model reads them (the
    search section and `train.epochs`, a column of its own, aside)."""
    keys = sorted({key for entry in entries for key in entry.params})
    return [key for key in keys if key != "train.epochs" and not key.startswith("search.")
            and len({json.dumps(entry.params[key], sort_keys=True) for entry in entries
                     if key in entry.params}) > 1]


def format_table(done: list[Entry], failed: list[Entry], pending: list[Entry], top: int) -> str:
    shown = done[:top]
    keys = differing_keys(shown + failed)
    header = ["rank", "experiment", "model", "rung", "epochs", "validation", "test", *keys]
    rows = [[str(i), e.name, e.model, "-" if e.rung is None else str(e.rung),
             "-" if e.epochs is None else f"{e.epochs}{'' if e.full else '*'}",
             f"{e.validation:.4f}", "-" if e.test is None else f"{e.test:.4f}",
             *[_short(e.params[k]) if k in e.params else "-" for k in keys]]
            for i, e in enumerate(shown, start=1)]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows,
                                                                        strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in [header, *rows]]
    lines[0:0] = ["balanced accuracy on validation (ranks) and test (shown only), each "
                  "experiment by the models it retrained; full-budget trials first, * a "
                  "shorter budget; - a param its model does not read"]
    seen_failures = set()
    for entry in failed:
        if entry.name not in seen_failures:
            seen_failures.add(entry.name)
            lines.append(f"FAILED  {entry.name}: {entry.error or 'see `dvc queue logs`'}")
    if pending:
        names = sorted({e.name for e in pending})
        lines.append(f"{len(names)} trial(s) queued or running: {', '.join(names)}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def pull(remote: str) -> None:
    """Bring in the experiments other machines pushed to the Git remote `remote` for the
    current commit: refs, params and metrics (not their cached models)."""
    git_dvc.dvc("exp", "pull", "--no-cache", remote)


def leaderboard(models: Sequence[str] | None, top: int,
                remote: str | None = None) -> tuple[str, list[Entry]]:
    """The table of the `top` best, and every ranked entry (best first). With `models`, only
    the experiments that retrained them, ranked by them; without, each experiment by the
    models it retrained. With `remote`, the experiments pushed there are pulled first."""
    if remote is not None:
        pull(remote)
    done, failed, pending = rank(collect(git_dvc.exp_show(), models))
    if not done and not failed and not pending:
        raise MeliError("no experiments yet: run `meli search` and `dvc queue start`, or "
                        "`dvc exp run`")
    return format_table(done, failed, pending, top), done


@dataclass(frozen=True)
class Candidate:
    """An experiment set against its commit on the models it retrained."""

    name: str
    models: tuple[str, ...]
    score: float  # the mean of its validation figures over `models`
    commit: float | None  # the commit's mean over the same models (None: it has no figures)

    def describe(self) -> str:
        against = "" if self.commit is None else f" against the commit's {self.commit:.4f}"
        return f"{self.name} ({'+'.join(self.models)}: {self.score:.4f}{against})"


def candidates(done: list[Entry]) -> list[Candidate]:
    """Every full-budget experiment of `done`, best first, with its commit's figure on the
    same models."""
    full = [entry for entry in done if entry.full]
    commit = {entry.model: entry.validation for entry in full if entry.name == BASELINE}
    figures: dict[str, dict[str, float]] = {}
    for entry in full:
        if entry.name != BASELINE and entry.validation is not None:
            figures.setdefault(entry.name, {})[entry.model] = entry.validation
    found = []
    for name, by_model in figures.items():
        models = tuple(by_model)
        score = sum(by_model.values()) / len(by_model)
        theirs = [commit.get(model) for model in models]
        found.append(Candidate(name, models, score, None if None in theirs else
                               sum(theirs) / len(theirs)))  # type: ignore[arg-type]
    return sorted(found, key=lambda candidate: (-candidate.score, candidate.name))


def best_experiment(done: list[Entry]) -> Candidate:
    """The experiment `--apply` applies: the best full-budget one that beats its commit on the
    models it retrained. MeliError when none does, or when those that do retrained different
    models (`--model` chooses)."""
    full = [entry for entry in done if entry.full]
    found = candidates(done)
    if not found:
        raise MeliError("no successful full-budget experiment to apply" +
                        (" (only shorter rungs so far: `meli search --next-rung`)"
                         if done and not full else ""))
    better = [c for c in found if c.commit is None or c.score > c.commit]
    if not better:
        raise MeliError(f"nothing to apply: no experiment beats the last commit on the models it "
                        f"retrained (the best: {found[0].describe()})")
    groups = {c.models: c for c in reversed(better)}  # the best of each set of models
    if len(groups) > 1:
        shown = "; ".join(c.describe() for c in sorted(
            groups.values(), key=lambda c: (-c.score, c.name)))
        raise MeliError(f"experiments that retrained different models beat the last commit "
                        f"({shown}): choose one with --model")
    return better[0]


def apply_best(done: list[Entry], remote: str | None = None) -> Candidate:
    """`dvc exp apply` the experiment `best_experiment` chooses; it. With `remote`, its outputs
    are pulled from there first (`dvc exp pull`), in case another machine ran it."""
    best = best_experiment(done)
    if remote is not None:
        git_dvc.dvc("exp", "pull", "--force", remote, best.name)
    git_dvc.dvc("exp", "apply", best.name)
    return best
