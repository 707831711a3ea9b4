"""A random CNN search on the real MeLi sample through the DVC queue, against the default params.

    python benchmarks/search.py [--trials 6] [--jobs 2] [--sample PATH] [--keep DIR]

Builds a temporary git + DVC repository of this project on the real sample, runs the pipeline
with the default params (the baseline commit), then `meli search --trials N --model cnn --run
--jobs J` with the space in params.yaml, and reports the search's wall time and the best trial's
validation and test balanced accuracy beside the defaults'. With several jobs each training uses
one thread (`train.threads=1`, for the defaults too), so that J trials share the cores fairly.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from dvc_repo import REAL_SAMPLE, dvc, make_repo, run  # noqa: E402

from meli.experiments.leaderboard import BASELINE, collect, rank  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sample", type=Path, default=REAL_SAMPLE)
    parser.add_argument("--keep", type=Path, help="build the repository here and keep it")
    args = parser.parse_args()
    if not args.sample.exists():
        raise SystemExit(f"{args.sample}: real sample not found (see ../shared/data/README.md)")
    changes: dict = {"data": {"source": str(args.sample.resolve())}}
    if args.jobs > 1:
        changes["train"] = {"threads": 1}
    with tempfile.TemporaryDirectory(prefix="meli-search-") as scratch:
        repo = make_repo(args.keep or Path(scratch) / "repo", changes)
        started = time.perf_counter()
        dvc(repo, "repro")
        print(f"pipeline with the default params: {time.perf_counter() - started:.0f} s",
              flush=True)
        run(repo, "git", "add", "-A")
        run(repo, "git", "commit", "-qm", "defaults on the real sample")
        started = time.perf_counter()
        run(repo, sys.executable, "-m", "meli", "search", "--trials", str(args.trials),
            "--model", "cnn", "--run", "--jobs", str(args.jobs))
        wall = time.perf_counter() - started
        shown = json.loads(dvc(repo, "exp", "show", "--json", "--no-fetch").stdout)
        done, failed, _ = rank(collect(shown, ["cnn"]))
        defaults = next(entry for entry in done if entry.name == BASELINE)
        trials = [entry for entry in done if entry.name != BASELINE]
        print(f"{args.trials} CNN trials with -j {args.jobs}: {wall:.0f} s wall "
              f"({len(trials)} finished, {len(failed)} failed)")
        print(f"{'':<26} {'validation':>10} {'test':>8}")
        print(f"{'defaults':<26} {defaults.validation:>10.4f} {defaults.test:>8.4f}")
        for entry in trials:
            print(f"{entry.name:<26} {entry.validation:>10.4f} {entry.test:>8.4f}")
        if trials:
            best = trials[0]
            verdict = "at least as good as" if best.validation >= defaults.validation else \
                "below"
            print(f"best trial {best.name}: validation {best.validation:.4f}, "
                  f"test {best.test:.4f} — {verdict} the defaults")
            changed = {key: value for key, value in best.params.items()
                       if defaults.params.get(key) != value and not key.startswith("search.")}
            print(f"its params: {changed}")


if __name__ == "__main__":
    main()
