"""Random search against successive halving, on the real MeLi sample through the DVC queue.

    python benchmarks/search.py --strategy random|halving [--trials 9] [--jobs 2]
                                [--model cnn|mlp|rnn|linear] [--eta 3] [--min-epochs 1] [--rungs 3]
                                [--baseline DIR] [--keep DIR] [--sample PATH]

Builds a git + DVC repository of this project on the real sample and runs the pipeline with the
default params (the baseline commit; kept in `--baseline DIR` when given, and reused from there by
the next run, so that both strategies start from the same commit). Then, in a copy of it,
`meli search --strategy S --trials N --model M --run --jobs J` with the space in params.yaml,
and reports the search's wall time, the epochs it trained, and the best full-budget trial's
validation and test balanced accuracy beside the defaults'. The same seed draws the same N
configurations for both strategies. `--eta`, `--min-epochs` and `--rungs` change the
halving search's section of params.yaml (committed in the copy). With several jobs each
training uses one thread (`train.threads=1` and `linear.threads=1`, for the defaults too), so
that J trials share the cores fairly.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from dvc_repo import REAL_SAMPLE, dvc, environment, make_repo, run  # noqa: E402

from meli.experiments.leaderboard import BASELINE, collect, rank  # noqa: E402


def baseline(directory: Path, sample: Path, jobs: int) -> Path:
    """The repository with the default pipeline run and committed (built once per directory)."""
    if (directory / "dvc.lock").exists():
        print(f"baseline: reusing {directory}", flush=True)
        return directory
    changes: dict = {"data": {"source": str(sample.resolve())}}
    if jobs > 1:
        changes["train"] = {"threads": 1}
        changes["linear"] = {"threads": 1}
    repo = make_repo(directory, changes)
    started = time.perf_counter()
    dvc(repo, "repro")
    print(f"pipeline with the default params: {time.perf_counter() - started:.0f} s", flush=True)
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "defaults on the real sample")
    return repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategy", choices=("random", "halving"), default="random")
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--model", choices=("cnn", "mlp", "rnn", "linear"), default="cnn")
    parser.add_argument("--eta", type=int, help="search.eta for halving (default: params.yaml's)")
    parser.add_argument("--min-epochs", type=int, help="search.min_epochs for halving")
    parser.add_argument("--rungs", type=int, help="search.rungs for halving")
    parser.add_argument("--sample", type=Path, default=REAL_SAMPLE)
    parser.add_argument("--baseline", type=Path,
                        help="build the baseline repository here, or reuse it if built")
    parser.add_argument("--keep", type=Path, help="run the search in this copy and keep it")
    args = parser.parse_args()
    if not args.sample.exists():
        raise SystemExit(f"{args.sample}: real sample not found (see ../shared/data/README.md)")
    with tempfile.TemporaryDirectory(prefix="meli-search-") as scratch:
        built = baseline(args.baseline or Path(scratch) / "baseline", args.sample, args.jobs)
        repo = args.keep or Path(scratch) / "search"
        if repo.exists():
            raise SystemExit(f"{repo}: already exists")
        shutil.copytree(built, repo, symlinks=True)
        halving = {key: value for key, value in (("eta", args.eta),
                                                 ("min_epochs", args.min_epochs),
                                                 ("rungs", args.rungs)) if value is not None}
        if halving:
            params = yaml.safe_load((repo / "params.yaml").read_text())
            params["search"].update(halving)
            (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            run(repo, "git", "commit", "-qam", f"search: {halving}")
        started = time.perf_counter()
        # No time limit (a search takes tens of minutes); its progress bars show on stderr.
        subprocess.run([sys.executable, "-m", "meli", "search", "--strategy", args.strategy,
                        "--trials", str(args.trials), "--model", args.model, "--run",
                        "--jobs", str(args.jobs)], cwd=repo, env=environment(), check=True,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        shown = json.loads(dvc(repo, "exp", "show", "--json", "--no-fetch").stdout)
        done, failed, _ = rank(collect(shown, [args.model]))
        defaults = next(entry for entry in done if entry.name == BASELINE)
        trials = [entry for entry in done if entry.name != BASELINE]
        # A linear trial trains no epochs: every one of them runs its full budget.
        linear = args.model == "linear"
        full = 0 if linear else int(defaults.params.get("train.epochs", 0))

        def epochs_of(entry) -> int:
            return 0 if linear else int(entry.params.get("train.epochs", full))

        epochs = sum(epochs_of(entry) for entry in trials)
        print(f"{args.strategy}: {args.trials} {args.model} configurations, -j {args.jobs}: "
              f"{wall:.0f} s wall, {len(trials)} trials finished, {len(failed)} failed, "
              f"{epochs} epochs trained in all (at most {full} per trial)")
        print(f"{'':<22} {'epochs':>6} {'validation':>10} {'test':>8}")
        print(f"{'defaults':<22} {full:>6} {defaults.validation:>10.4f} {defaults.test:>8.4f}")
        for entry in trials:
            print(f"{entry.name:<22} {epochs_of(entry):>6} "
                  f"{entry.validation:>10.4f} {entry.test:>8.4f}")
        finished = [entry for entry in trials if epochs_of(entry) == full]
        if finished:
            best = finished[0]
            print(f"best full-budget trial {best.name}: validation {best.validation:.4f}, "
                  f"test {best.test:.4f}; search wall time {wall:.0f} s")
            changed = {key: value for key, value in best.params.items()
                       if defaults.params.get(key) != value and not key.startswith("search.")}
            print(f"its params: {changed}")


if __name__ == "__main__":
    main()
