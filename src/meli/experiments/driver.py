"""What `meli search` does with its command-line options: draw the configurations from the seed,
keep this machine's shard, then queue them (random search) or take the next step of successive
halving, and say what happened. `meli.cli` only parses the options; the strategies themselves
are `meli.experiments.search` and `meli.experiments.halving`.
"""

from __future__ import annotations

import argparse
import logging

from meli.errors import MeliError
from meli.experiments import git_dvc, halving, names, search
from meli.experiments.leaderboard import leaderboard

log = logging.getLogger("meli")


def _full_params(path: str):
    from meli.models import params_classes  # imports PyTorch: only when a search runs
    from meli.params import load_params

    return load_params(path, models=params_classes())


def settings_for(args: argparse.Namespace, params, exp_show: list[dict]) -> search.SearchSettings:
    """The search this call is about. A successive halving search that the commit's
    experiments already hold (see `search.recorded_searches`) is resumed as it was started:
    its models, seed and number of configurations, not the defaults of params.yaml (`--next-rung`
    alone finds it; `--model` and `--seed` say which, when there are several). A new search,
    or a random one (where a larger `--trials` adds trials), takes the flags, then params.yaml."""
    strategy = args.strategy or ("halving" if args.next_rung else params.search.strategy)
    models = tuple(dict.fromkeys(args.model)) if args.model else None
    seed = args.seed
    if strategy == "halving":
        recorded = [found for found in search.recorded_searches(exp_show)
                    if found.strategy == "halving"]
        if args.next_rung:
            which = [found for found in recorded if (models is None or found.models == models)
                     and (seed is None or found.seed == seed)]
            if not which:
                asked = "" if models is None and seed is None else " of " + names.prefix(
                    models or params.search.models, params.search.seed if seed is None else seed)
                raise MeliError(f"--next-rung: no successive halving search{asked} on this "
                                f"commit to promote; start one with `meli search --strategy "
                                f"halving`")
            if len(which) > 1:
                raise MeliError(f"--next-rung: {len(which)} successive halving searches on "
                                f"this commit ({'; '.join(found.describe() for found in which)})"
                                f": say which with --model and --seed")
            resumed: search.SearchSettings | None = which[0]
        else:
            started = names.prefix(models or params.search.models,
                                   params.search.seed if seed is None else seed)
            resumed = next((found for found in recorded if found.prefix == started), None)
        if resumed is not None:
            if args.trials is not None and args.trials != resumed.trials:
                raise MeliError(f"--trials {args.trials}: the search {resumed.describe()} is "
                                f"under way on this commit; resume it without --trials, or "
                                f"start another with --seed")
            return resumed
    return search.SearchSettings(
        strategy, tuple(search.check_models(models or params.search.models)),
        params.search.seed if seed is None else seed, args.trials or params.search.trials)


def run_search(args: argparse.Namespace) -> None:
    params = _full_params(args.params)
    halving_asked = (args.strategy or ("halving" if args.next_rung
                                       else params.search.strategy)) == "halving"
    settings = settings_for(args, params, git_dvc.exp_show() if halving_asked and
                            not args.dry_run else [])
    models, seed = list(settings.models), settings.seed
    drawn = search.sample_trials(params, settings.trials, seed, models)
    part, parts = search.parse_shard(args.shard) if args.shard else (1, 1)
    trials = search.shard(drawn, part, parts)
    if parts > 1:
        log.info("search: shard %d/%d runs %d of the %d configurations (%s)", part, parts,
                 len(trials), len(drawn), ", ".join(f"{index:02d}" for index in trials))
    if settings.strategy == "halving":
        if search.LINEAR in models:
            raise MeliError("--strategy halving: the linear model has no epochs to budget; "
                            "search it with --strategy random")
        _halving(args, params, trials, settings)
        return
    if args.next_rung:
        raise MeliError("--next-rung: only with successive halving (--strategy halving or "
                        "search.strategy: halving)")
    queued = [] if args.dry_run else search.queue(list(trials.values()), settings,
                                                  force=args.force)
    for trial in trials.values():
        mark = "drawn" if args.dry_run else "queued" if trial in queued else "exists"
        print(f"{mark:7} {trial.name}  {_values(trial)}")
    if args.dry_run:
        log.info("search: %d trial(s) drawn, none queued (--dry-run)", len(trials))
        return
    log.info("search: %d trial(s) queued, %d already queued or done; stages %s",
             len(queued), len(trials) - len(queued), ", ".join(search.targets(models)))
    if args.run and queued:
        states = git_dvc.run_queue(args.jobs, [trial.name for trial in queued])
        failed = sorted(name for name, state in states.items() if state == "Failed")
        log.info("search: %d trial(s) finished, %d failed%s", len(states), len(failed),
                 f" ({', '.join(failed)})" if failed else "")
        print_leaderboard(None, top=10)
    elif not args.run:
        log.info("start them with `dvc queue start -j 2`, then see `meli leaderboard`; "
                 "`meli leaderboard --apply` applies the best once they are done")


def _values(trial) -> str:
    return ", ".join(f"{key}={value}" for key, value in trial.values.items())


def _halving(args: argparse.Namespace, params, trials: dict,
             settings: search.SearchSettings) -> None:
    rungs = halving.plan(params)
    if args.force:
        raise MeliError("--force: only with --strategy random (a halving search picks up where "
                        "its experiments are; remove them with `dvc exp remove` to start over)")
    if args.dry_run:
        kept = len(trials)
        for rung, budget in enumerate(rungs.budgets):
            print(f"rung {rung}: {kept} trial(s) of {budget} epoch(s)")
            kept = rungs.keep(kept)
        for index, trial in trials.items():
            print(f"drawn   {names.trial_name(settings.prefix, index, 0)}  {_values(trial)}")
        return

    def run(step: halving.Step, queued: list[str]) -> None:
        states = git_dvc.run_queue(min(args.jobs, len(queued)), queued,
                                    desc=f"rung {step.rung} ({step.budget} epochs)")
        failed = sorted(name for name, state in states.items() if state == "Failed")
        log.info("search: rung %d: %d trial(s) finished, %d failed%s", step.rung,
                 len(states), len(failed), f" ({', '.join(failed)})" if failed else "")

    step = halving.advance(params, trials, settings, run if args.run else None, jobs=args.jobs)
    trial_names = [names.trial_name(settings.prefix, index, step.rung)
                   for index in step.indices]
    last = step.rung == rungs.last
    after = ("once they are done, the search is done: `meli leaderboard --apply` applies its "
             "best" if last else "once they are done, promote the best with "
             "`meli search --next-rung`")
    if step.action == "queue":
        for index, name in zip(step.indices, trial_names, strict=True):
            print(f"queued  {name}  {_values(trials[index])}")
        log.info("search: rung %d (the last is %d): %d trial(s) of %d epoch(s) queued; start "
                 "them with `dvc queue start -j 2`; %s", step.rung, rungs.last,
                 len(trial_names), step.budget, after)
    elif step.action == "wait":
        message = (f"rung {step.rung}: {len(trial_names)} trial(s) still queued or running "
                   f"({', '.join(trial_names)}); "
                   + ("the search is done once they are" if last else "promote once they are done")
                   + " (`dvc queue status`)")
        if args.next_rung:
            raise MeliError(message)
        log.info("search: %s", message)
    else:
        log.info("search: done; rung %d (%d epochs) ranks %s; `meli leaderboard --apply` "
                 "applies the best", step.rung, step.budget, ", ".join(trial_names))
        print_leaderboard(None, top=10)


def print_leaderboard(models: list[str] | None, top: int, remote: str | None = None) -> list:
    table, done = leaderboard(models, top, remote)
    print(table)
    return done
