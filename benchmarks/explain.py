"""`meli explain`: the time to explain one title with the model loaded, and how often the
explanations' strongest word names the product on synthetic titles.

    python benchmarks/explain.py speed --repo DIR [--model ensemble] [--titles 300] [--threads N]
    python benchmarks/explain.py serve --repo DIR [--model ensemble] [--connections 8]
    python benchmarks/explain.py confusions --repo DIR [--models linear ensemble ...] [--pairs 15]
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

serve: `meli serve --model DIR/models/<model>` in its own process, driven by wrk (one thread,
the other core; needs `wrk`) with `--connections` concurrent connections, each request one test
title: `POST /explain`, then `POST /predict` for scale, `--duration` seconds each after a warm-up.
Printed: requests/s, latency p50/p95/p99 (wrk's), non-2xx answers, and the server's CPU
milliseconds per request (every thread of its process: what a busy machine inflates least).
Target (issue 28): /explain p99 at 100 ms or less at 8 connections.

confusions: what confusions.md adds to `evaluate@<model>` on `--repo`'s test split: the
model's predictions are made first (evaluate has them already), then `write_confusions` is timed
alone, wall and CPU seconds. Target (issue 28): 10 s or less per model on the real sample.

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
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from dvc_repo import real_sample_repo  # noqa: E402
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
            repo = real_sample_repo(Path(scratch) / "repo")
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


def serve(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import serve as load  # benchmarks/serve.py: its wrk script and HTTP helpers

    bundle = args.repo / "models" / args.model
    test = pq.read_table(args.repo / "data/prepared/test.parquet", columns=["title"])
    titles = [t for t in test.column("title").to_pylist() if t.strip()][:512]
    bodies = [json.dumps({"titles": [title]}).encode() for title in titles]
    with tempfile.TemporaryDirectory(prefix="meli-explain-serve-") as scratch:
        workdir = Path(scratch)
        port = load.free_port()
        url = f"http://{load.HOST}:{port}"
        log = (workdir / "serve.log").open("w")
        server = subprocess.Popen(
            [sys.executable, "-m", "meli", "serve", "--model", str(bundle), "--host", load.HOST,
             "--port", str(port), "--threads", str(args.threads or 1)],
            stdout=log, stderr=log, env=os.environ.copy())
        try:
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"meli serve ended:\n{(workdir / 'serve.log').read_text()}")
                try:
                    if load.request(url + "/health", timeout=1)[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.05)
            rows = []
            for path in ("/explain", "/predict"):
                load.finish(load.wrk(url, bodies, args.connections, 2, workdir, path))  # warm-up
                cpu = cpu_seconds(server.pid)
                result = load.finish(load.wrk(url, bodies, args.connections, args.duration,
                                              workdir, path))
                rows.append((path, result, cpu_seconds(server.pid) - cpu))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
    print(f"{bundle}: meli serve --threads {args.threads or 1}, wrk -t1 -c{args.connections}, "
          f"{args.duration:g} s per endpoint, 1 test title per request "
          f"({np.mean([len(t.split()) for t in titles]):.1f} words on average); "
          f"{os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f} at the end\n")
    print(f"{'endpoint':<10} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
          f"{'non-2xx':>8} {'errors':>7} {'server CPU ms/req':>18}")
    for path, r, cpu in rows:
        failed = r["connect"] + r["read"] + r["write"] + r["timeout"]
        print(f"{path:<10} {r['requests'] / r['seconds']:>7.0f} {r['p50'] / 1000:>7.1f} "
              f"{r['p95'] / 1000:>7.1f} {r['p99'] / 1000:>7.1f} {r['status']:>8} {failed:>7} "
              f"{1000 * cpu / max(r['requests'], 1):>18.1f}")
    p99 = rows[0][1]["p99"] / 1000
    print(f"\n/explain p99 {p99:.1f} ms: {'meets' if p99 <= 100 else 'misses'} the 100 ms "
          f"target at {args.connections} connections")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far (Linux /proc), every thread."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def confusions(args: argparse.Namespace) -> None:
    from meli.bundles.confusions import write_confusions

    test = pq.read_table(args.repo / "data/prepared/test.parquet", columns=["title", "label"])
    titles = test.column("title").to_pylist()
    truth = test.column("label").to_numpy().astype(np.int64)
    print(f"{len(titles):,} test titles of {args.repo}; {os.cpu_count()} CPU cores, load "
          f"{os.getloadavg()[0]:.1f}; {args.pairs} pairs\n")
    print(f"{'bundle':<10} {'method':<14} {'wrong':>6} {'wall s':>7} {'CPU s':>6}")
    with tempfile.TemporaryDirectory(prefix="meli-confusions-") as scratch:
        for name in args.models:
            classifier = load_classifier(args.repo / "models" / name)
            predicted = classifier.predict(titles)
            started, started_cpu = time.perf_counter(), time.process_time()
            write_confusions(Path(scratch) / f"{name}.md", classifier, titles, truth, predicted,
                             args.pairs, name)
            print(f"{name:<10} {default_method(classifier):<14} "
                  f"{int((truth != predicted).sum()):>6} {time.perf_counter() - started:>7.2f} "
                  f"{time.process_time() - started_cpu:>6.2f}", flush=True)


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
    load = commands.add_parser("serve", help="POST /explain latency under wrk (real sample)")
    load.add_argument("--repo", type=Path, required=True,
                      help="a repository with real-sample bundles")
    load.add_argument("--model", default="ensemble")
    load.add_argument("--connections", type=int, default=8)
    load.add_argument("--duration", type=float, default=10.0, help="seconds per endpoint")
    load.add_argument("--threads", type=int, help="the server's --threads (default: 1)")
    errors = commands.add_parser("confusions", help="evaluate's extra time for confusions.md")
    errors.add_argument("--repo", type=Path, required=True,
                        help="a repository with real-sample bundles")
    errors.add_argument("--models", nargs="+", default=list(MODELS))
    errors.add_argument("--pairs", type=int, default=15,
                        help="params.yaml's evaluate.confused_pairs (default: %(default)s)")
    check = commands.add_parser("sanity", help="strongest words on synthetic titles")
    check.add_argument("--repo", type=Path, help="a repository with synthetic-sample bundles "
                                                 "(default: this one)")
    check.add_argument("--models", nargs="+", default=list(MODELS))
    check.add_argument("--titles", type=int, default=1000)
    args = parser.parse_args()
    {"speed": speed, "serve": serve, "confusions": confusions, "sanity": sanity}[args.command](args)


if __name__ == "__main__":
    main()
