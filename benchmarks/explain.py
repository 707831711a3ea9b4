"""`meli explain`: the time to explain one title with the model loaded, and how often the
explanations' strongest word names the product on synthetic titles.

    python benchmarks/explain.py speed --repo DIR [--model ensemble] [--titles 300] [--threads N]
    python benchmarks/explain.py sanity [--repo .] [--models mlp cnn rnn fasttext linear ensemble]

speed: needs a repository whose models were trained on the real sample (`--repo`, for instance
the one `python benchmarks/models.py --keep DIR` leaves; else one is built here first, a few
minutes). The model is loaded once; then each of `--titles` titles of its test split is
explained alone, as `meli explain TITLE` does once the model is loaded (occlusion's n + 1
titles through the model, or the linear decomposition, and the text view), and the wall and
CPU time of each are recorded. Printed: the median, p90, p99 and mean wall milliseconds, the
median CPU milliseconds (every thread of the process), the titles' mean words,
and the same figures for predicting alone (`Classifier.top`, one title), for scale. Target
(issue 28): the ensemble at 50 ms or less per title.

sanity: for each bundle of `--repo`'s models/ trained on the synthetic sample (the default
`dvc repro`), 1,000 generated titles of a seed no model saw are explained; of those the model
classifies right, the share whose strongest word is a brand, model or product noun of the
category, and the share whose strongest word is any of the category's own catalogue words
(attributes and specs too). Printed beside them: the same share for an ideal reader of the
generator, the word with the most evidence (likelihood ratio over 100,000 generated titles).
Target (issue 28): the brand or product word for 90% or more.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from dvc_repo import REAL_SAMPLE, dvc, make_repo  # noqa: E402
from sample_words import evidence_sanity, explanation_sanity  # noqa: E402

from meli.bundles.explain import (  # noqa: E402
    DECOMPOSITION,
    OCCLUSION,
    default_method,
    explain,
    format_explanation,
)
from meli.bundles.load import load_classifier  # noqa: E402

MODELS = ("mlp", "cnn", "rnn", "fasttext", "linear", "ensemble")


def milliseconds(run, titles: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Wall and CPU milliseconds (this process, every thread) of `run` on each title."""
    for title in titles[:10]:  # warm-up: first calls compile kernels and fill caches
        run(title)
    wall, cpu = [], []
    for title in titles:
        started, started_cpu = time.perf_counter(), time.process_time()
        run(title)
        wall.append(1000 * (time.perf_counter() - started))
        cpu.append(1000 * (time.process_time() - started_cpu))
    return np.array(wall), np.array(cpu)


def summary(label: str, times: tuple[np.ndarray, np.ndarray]) -> str:
    wall, cpu = times
    p50, p90, p99 = np.percentile(wall, [50, 90, 99])
    return (f"{label:<22} {p50:>7.1f} {p90:>7.1f} {p99:>7.1f} {wall.mean():>7.1f} "
            f"{np.median(cpu):>8.1f}")


def speed(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="meli-explain-") as scratch:
        repo = args.repo
        if repo is None:
            if not REAL_SAMPLE.exists():
                raise SystemExit(f"{REAL_SAMPLE}: real sample not found")
            repo = make_repo(Path(scratch) / "repo",
                             {"data": {"source": str(REAL_SAMPLE.resolve())}})
            print("building the real-sample repository (dvc repro) ...", flush=True)
            dvc(repo, "repro")
        bundle = repo / "models" / args.model
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        started = time.perf_counter()
        classifier = load_classifier(bundle)
        loaded = time.perf_counter() - started
        test = pq.read_table(repo / "data/prepared/test.parquet", columns=["title"])
        titles = [t for t in test.column("title").to_pylist() if t.strip()][:args.titles]
        words = np.mean([len(title.split()) for title in titles])
        members = ", ".join(f"{m.name} {w:.2f}" for m, w in
                            zip(getattr(classifier, "members", []),
                                getattr(classifier, "weights", []), strict=True))
        print(f"{bundle} ({members or classifier.config.get('architecture')}), loaded in "
              f"{loaded:.1f} s; {len(titles)} test titles of {words:.1f} words on average; "
              f"{os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f}, PyTorch threads "
              f"{args.threads or 'default'}\n")
        print(f"{'ms per title':<22} {'median':>7} {'p90':>7} {'p99':>7} {'mean':>7} "
              f"{'CPU med.':>8}")
        explained = milliseconds(
            lambda title: format_explanation(explain(classifier, [title])[0]), titles)
        print(summary("explain (text view)", explained))
        print(summary("predict (top 3)", milliseconds(lambda t: classifier.top([t]), titles)))
        median = float(np.median(explained[0]))
        print(f"\nexplain median {median:.1f} ms: {'meets' if median <= 50 else 'misses'} the "
              f"50 ms target (CPU ms: the process's CPU time, every thread; on a busy machine "
              f"wall time is the larger)")


def sanity(args: argparse.Namespace) -> None:
    repo = args.repo or ROOT
    print(f"{'bundle':<10} {'method':<14} {'right':>6} {'product':>8} {'own words':>10}")
    for name in args.models:
        bundle = repo / "models" / name
        if not bundle.exists():
            print(f"{name:<10} (no bundle in {bundle.parent})")
            continue
        classifier = load_classifier(bundle)
        methods = [default_method(classifier)]
        if methods[0] == DECOMPOSITION:
            methods.append(OCCLUSION)  # the linear model: both, side by side
        for method in methods:
            result = explanation_sanity(classifier, rows=args.titles, method=method)
            print(f"{name:<10} {method:<14} {result.titles:>6} {result.product:>8.1%} "
                  f"{result.own_words:>10.1%}", flush=True)
    print(f"{'evidence':<10} {'likelihood':<14} {args.titles:>6} "
          f"{evidence_sanity(rows=args.titles):>8.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    timing = commands.add_parser("speed", help="ms per title, model loaded (real sample)")
    timing.add_argument("--repo", type=Path, help="a repository with real-sample bundles")
    timing.add_argument("--model", default="ensemble")
    timing.add_argument("--titles", type=int, default=300)
    timing.add_argument("--threads", type=int,
                        help="PyTorch threads (default: PyTorch's, one per core)")
    check = commands.add_parser("sanity", help="strongest words on synthetic titles")
    check.add_argument("--repo", type=Path, help="a repository with synthetic-sample bundles "
                                                 "(default: this one)")
    check.add_argument("--models", nargs="+", default=list(MODELS))
    check.add_argument("--titles", type=int, default=1000)
    args = parser.parse_args()
    speed(args) if args.command == "speed" else sanity(args)


if __name__ == "__main__":
    main()
