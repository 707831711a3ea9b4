"""`meli leaderboard`: experiments ranked by validation balanced accuracy, from `dvc exp show`.

Each experiment is ranked by the models in its own params' `search.models`, which `meli search`
sets to the models the trial trained (a trial of the MLP leaves the CNN's figures of its commit
in place: ranking it by them would rank every MLP trial alike). A commit's own row is shown for
the models its experiments searched. `--model` ranks every row by the models named instead.

The test figure is shown beside the validation one but never used to rank: choosing among many
trials by their test score would make that score optimistic. Failed trials are listed after the
ranked ones with the last error line of their log; queued and running ones are counted.

Each row shows the trial's rung (successive halving, from its name) and its budget
(`train.epochs`). Trials that trained the full budget of their commit rank first, then the
others by budget, the longest first: a trial stopped after one epoch is not comparable with one
that trained ten, and `--apply` applies the best full-budget one. With `--remote`, the
experiments of every machine that pushed to that Git remote are pulled first (`dvc exp pull
--no-cache`: their params and metrics, not their models).
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
from meli.layout import model_metrics_path, train_results_dir

BASELINE = "(baseline)"
# Bundles that are no registered model yet have their validation and test figures.
BUNDLES_BESIDES = ("fasttext", "ensemble")


@dataclass
class Entry:
    name: str
    model: str
    state: str  # success | failed | queued | running
    validation: float | None = None
    test: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    rung: int | None = None  # successive halving's rung, from the trial's name
    epochs: int | None = None  # the trial's train.epochs
    full: bool = True  # trained its commit's full train.epochs

    @property
    def partial(self) -> bool:
        return not self.full


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
    """The registered models in flattened params' `search.models`, in the registry's order."""
    listed = params.get("search.models")
    listed = listed if isinstance(listed, list) else []
    return [model for model in known if model in listed]


def collect(exp_show: list[dict], models: Sequence[str] | None = None,
            known: Sequence[str] | None = None) -> list[Entry]:
    """One entry per (experiment, model) from `dvc exp show --json`, plus each commit's own row.

    Without `models`, each experiment counts for the models of its own params' `search.models`,
    and a commit's row for every model it has a validation figure of: the registered ones, the
    fastText baseline and the ensemble. `known` is the searchable models (`searchable()` of
    `meli.experiments.search` when not given): an experiment whose params name none of them
    counts for all of them.
    """
    if known is None:
        from meli.experiments.search import searchable

        known = searchable()
    entries = []
    for baseline in exp_show:
        if baseline.get("rev") == "workspace":
            continue
        rows = [(BASELINE, baseline.get("data") or {}, {"state": "success"})]
        for experiment in baseline.get("experiments") or []:
            revision = (experiment.get("revs") or [{}])[0]
            rows.append((experiment.get("name") or revision.get("rev", "?")[:7],
                         revision.get("data") or {}, experiment.get("executor") or {}))
        parsed = [(name, data, executor, _params_of(data)) for name, data, executor in rows]
        full = _epochs(parsed[0][3])
        searched = [searched_models(params, known) for *_, params in parsed]
        searched[0] = [*known, *BUNDLES_BESIDES]
        for (name, data, executor, params), own in zip(parsed, searched, strict=True):
            state = executor.get("state") or "success"
            metrics = data.get("metrics") or {}
            error = _last_error((executor.get("local") or {}).get("log")) \
                if state == "failed" else None
            for model in models or own or known:
                if name == BASELINE and not models and _metric(
                        metrics, (train_results_dir(model) / "metrics.json").as_posix(),
                        "best", "validation_balanced_accuracy") is None:
                    continue  # a model this commit has no figures of
                # `dvc exp show` names metrics files with forward slashes.
                entries.append(Entry(
                    name=name, model=model, state=state,
                    validation=_metric(metrics,
                                       (train_results_dir(model) / "metrics.json").as_posix(),
                                       "best", "validation_balanced_accuracy"),
                    test=_metric(metrics, model_metrics_path(model).as_posix(), "test",
                                 "balanced_accuracy"),
                    params=params, error=error, rung=rung_of(name), epochs=_epochs(params),
                    full=full is None or _epochs(params) in (None, full)))
    return entries


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
    """Params keys whose value is not the same in every entry (the search section aside)."""
    keys = sorted({key for entry in entries for key in entry.params})
    return [key for key in keys if not key.startswith("search.") and key != "train.epochs"
            and len({json.dumps(entry.params.get(key), sort_keys=True) for entry in entries}) > 1]


def format_table(done: list[Entry], failed: list[Entry], pending: list[Entry], top: int) -> str:
    shown = done[:top]
    keys = differing_keys(shown + failed)
    header = ["rank", "experiment", "model", "rung", "epochs", "validation", "test", *keys]
    rows = [[str(i), e.name, e.model, "-" if e.rung is None else str(e.rung),
             "-" if e.epochs is None else f"{e.epochs}{'' if e.full else '*'}",
             f"{e.validation:.4f}", "-" if e.test is None else f"{e.test:.4f}",
             *[_short(e.params.get(k)) for k in keys]] for i, e in enumerate(shown, start=1)]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows,
                                                                        strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in [header, *rows]]
    lines[0:0] = ["balanced accuracy on validation (ranks) and test (shown only); "
                  "full-budget trials first, * a shorter budget"]
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
    """The table of the `top` best, and every ranked entry (best first). With `models`, every
    row is ranked by those models; without, each by the models it searched. With `remote`,
    the experiments pushed there are pulled first."""
    if remote is not None:
        pull(remote)
    done, failed, pending = rank(collect(git_dvc.exp_show(), models))
    if not done and not failed and not pending:
        raise MeliError("no experiments yet: run `meli search` and `dvc queue start`, or "
                        "`dvc exp run`")
    return format_table(done, failed, pending, top), done


def apply_best(done: list[Entry], remote: str | None = None) -> str:
    """`dvc exp apply` the best full-budget entry's experiment; its name. With `remote`, its
    outputs are pulled from there first (`dvc exp pull`), in case another machine ran it."""
    full = [entry for entry in done if entry.full]
    if not full or all(entry.name == BASELINE for entry in full):
        raise MeliError("no successful full-budget experiment to apply" +
                        (" (only shorter rungs so far: `meli search --next-rung`)"
                         if done and not full else ""))
    best = full[0]
    if best.name == BASELINE:
        raise MeliError("the last commit's params are already the best: nothing to apply")
    if remote is not None:
        git_dvc.dvc("exp", "pull", "--force", remote, best.name)
    git_dvc.dvc("exp", "apply", best.name)
    return best.name
