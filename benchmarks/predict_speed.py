"""`meli predict --input` end to end: titles/s and peak memory for every model bundle.

    python benchmarks/predict_speed.py [--titles 1000000] [--repo DIR] [--precision auto]

Needs a repository whose models were trained on the real sample: `--repo` names one (for
instance the one `python benchmarks/models.py --keep DIR` leaves), else one is built here first
(a few minutes). The input is the real sample's titles, repeated until `--titles` lines, each
copy numbered (" 2", " 3", ...) so that no two lines are the same; it is written to a file,
and `meli predict --input FILE --output FILE` runs as its own process for each model. Printed
per model: the command's own titles/s (reading, classifying and writing; its start-up and
model loading excluded, as the command logs it), wall seconds of the whole process, and its
peak resident memory. Targets: 1,000,000 titles within 500 MB for every model, the MLP at
100,000 titles/s or more, the linear model at 15,000 (issue 18); on 20,000 titles, the CNN at
15,000 and the MLP at 150,000 titles/s.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from dvc_repo import REAL_SAMPLE, dvc, make_repo  # noqa: E402

MODELS = ("mlp", "cnn", "fasttext", "linear")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--titles", type=int, default=1_000_000)
    parser.add_argument("--repo", type=Path, help="a repository with real-sample bundles")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meli-predict-") as scratch:
        repo = args.repo
        if repo is None:
            if not REAL_SAMPLE.exists():
                raise SystemExit(f"{REAL_SAMPLE}: real sample not found")
            repo = make_repo(Path(scratch) / "repo",
                             {"data": {"source": str(REAL_SAMPLE.resolve())}})
            print("building the real-sample repository (dvc repro) ...", flush=True)
            dvc(repo, "repro")
        source = Path(scratch) / "titles.txt"
        write_titles(repo, args.titles, source)
        print(f"{args.titles:,} titles ({source.stat().st_size / 1e6:.0f} MB), precision "
              f"{args.precision}, {os.cpu_count()} CPU cores\n")
        print(f"{'model':<9} {'titles/s':>10} {'wall s':>8} {'peak MB':>8}")
        for model in args.models:
            speed, wall, peak = run_predict(repo, model, source, Path(scratch) / "out.csv",
                                            args.precision)
            print(f"{model:<9} {speed:>10,.0f} {wall:>8.1f} {peak:>8,.0f}", flush=True)


if __name__ == "__main__":
    main()
