"""`meli predict --input` end to end: titles/s and peak memory for every model bundle; and the
fixed cost of scoring one title with each.

    python benchmarks/predict_speed.py [--titles 1000000] [--repo DIR] [--precision auto]
    python benchmarks/predict_speed.py --repo DIR --titles 0          # the fixed costs alone

Needs a repository whose models were trained on the real sample: `--repo` names one (for
instance the one `python benchmarks/models.py --keep DIR` leaves), else one is built here first
(a few minutes). The input is the real sample's titles, repeated until `--titles` lines, each
copy numbered (" 2", " 3", ...) so that no two lines are the same; it is written to a file,
and `meli predict --input FILE --output FILE` runs as its own process for each model. Printed
per model: the command's own titles/s (reading, classifying and writing; its start-up and
model loading excluded, as the command logs it), wall seconds of the whole process, and its
peak resident memory. Targets: 1,000,000 titles within 500 MB for every model, the MLP at
100,000 titles/s or more, the linear model at 15,000 (issue 18); on 20,000 titles, the CNN at
15,000 and the MLP at 150,000 titles/s; the ensemble at 12,000 titles/s within 1 GB (issue 26).

Then, in this process, the fixed cost of a bundle: the median time of `probabilities()` for one
title (what every batch pays whatever its size: normalization, word lookups, the members'
calls), and of `top_k()` for one title (what `meli serve` runs for a batch), in ms, and per
member for the ensemble (target: at most 1 ms a member, issue 26). `--threads` sets PyTorch's
threads for it (the server's `--threads`, default 2).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from dvc_repo import real_sample_repo  # noqa: E402

MODELS = ("mlp", "cnn", "rnn", "fasttext", "linear", "ensemble")
ONE_TITLE = ["Zapatillas Nike Air Max Talle 42 Niño"]


def write_titles(repo: Path, count: int, target: Path) -> None:
    titles = pq.read_table(repo / "data/raw/titles.parquet", columns=["title"])
    titles = [title.replace("\n", " ") for title in titles.column("title").to_pylist()]
    with target.open("w", encoding="utf-8") as out:
        for index in range(count):
            copy, position = divmod(index, len(titles))
            out.write(f"{titles[position]} {copy + 1}\n" if copy else f"{titles[position]}\n")


def run_predict(repo: Path, model: str, source: Path, target: Path,
                precision: str) -> tuple[float, float, float]:
    """(titles/s as the command logs it, wall seconds, peak resident MB)."""
    command = [sys.executable, "-m", "meli", "predict", "--model", str(repo / "models" / model),
               "--input", str(source), "--output", str(target), "--precision", precision]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    error = process.stderr.read() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"meli predict --model {model} failed:\n{error}")
    found = re.search(r"\(([0-9]+) titles/s\)", error)
    return float(found.group(1)) if found else float("nan"), wall, usage.ru_maxrss / 1024


def times_ms(call, repeats: int) -> tuple[float, float]:
    """(median, fastest) of `repeats` calls, in ms: on a busy machine the fastest is the one
    the other processes disturbed least."""
    call()  # warm up: lazily built lookups, PyTorch's kernels for the shape
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3, min(times) * 1e3


def fixed_costs(repo: Path, models: list[str], repeats: int, threads: int) -> None:
    import torch

    from meli.bundles.load import load_classifier

    torch.set_num_threads(threads)
    print(f"\nfixed cost of one title: median (fastest) of {repeats} calls, in ms, in this "
          f"process ({threads} PyTorch threads)\n")
    print(f"{'model':<11} {'members':>7} {'probabilities':>15} {'top_k':>15} "
          f"{'per member':>15}")
    for model in models:
        classifier = load_classifier(repo / "models" / model)
        members = len(getattr(classifier, "members", [classifier]))
        median, fastest = times_ms(lambda c=classifier: c.probabilities(ONE_TITLE), repeats)
        top, top_fastest = times_ms(lambda c=classifier: c.top_k(ONE_TITLE, 3), repeats)
        print(f"{model:<11} {members:>7} {median:>7.2f} ({fastest:5.2f}) {top:>7.2f} "
              f"({top_fastest:5.2f}) {median / members:>7.2f} ({fastest / members:5.2f})",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--titles", type=int, default=1_000_000)
    parser.add_argument("--repo", type=Path, help="a repository with real-sample bundles")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=300,
                        help="calls timed per bundle for the fixed cost (0: not measured)")
    parser.add_argument("--threads", type=int, default=2,
                        help="PyTorch threads while the fixed costs are measured")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meli-predict-") as scratch:
        repo = args.repo
        if repo is None:
            repo = real_sample_repo(Path(scratch) / "repo")
        if args.titles > 0:
            source = Path(scratch) / "titles.txt"
            write_titles(repo, args.titles, source)
            print(f"{args.titles:,} titles ({source.stat().st_size / 1e6:.0f} MB), precision "
                  f"{args.precision}, {os.cpu_count()} CPU cores\n")
            print(f"{'model':<9} {'titles/s':>10} {'wall s':>8} {'peak MB':>8}")
            for model in args.models:
                speed, wall, peak = run_predict(repo, model, source, Path(scratch) / "out.csv",
                                                args.precision)
                print(f"{model:<9} {speed:>10,.0f} {wall:>8.1f} {peak:>8,.0f}", flush=True)
        if args.repeats > 0:
            fixed_costs(repo, args.models, args.repeats, args.threads)


if __name__ == "__main__":
    main()
