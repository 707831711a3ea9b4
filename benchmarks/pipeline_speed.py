"""Time ingest, prepare and featurize on real MeLi titles; print rows/s and peak memory per stage.

    python benchmarks/pipeline_speed.py [--rows 2000000] [--sample PATH] [--keep DIR]

Runs each stage in its own process (as DVC does), so the peak resident memory reported is that
stage's alone; speed is rows over the time spent in the stage, the process's start-up aside.
Two datasets: the real sample as it is (42,667 titles), and a file of `--rows` rows built by
repeating it, each copy's titles tagged with its copy number so that they are not exact
duplicates (prepare would drop those). Targets: prepare at least 100,000 rows/s; every stage
under 1.5 GB at 2,000,000 rows.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE = ROOT.parent / "shared" / "data" / "meli-es-sample.jsonl.gz"
STAGES = ("ingest", "prepare", "featurize")


def build_repeated(sample: Path, rows: int, target: Path) -> None:
    """Write `rows` JSON lines cycling through the sample, copy number appended to titles."""
    marker = "\u0000TITLE\u0000"
    templates = []
    with gzip.open(sample, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            title = json.dumps(record["title"], ensure_ascii=False)[1:-1]
            record["title"] = marker
            before, after = json.dumps(record, ensure_ascii=False).split(
                json.dumps(marker)[1:-1])
            templates.append((before, title, after))
    with gzip.open(target, "wt", encoding="utf-8", compresslevel=1) as out:
        for index in range(rows):
            copy, position = divmod(index, len(templates))
            before, title, after = templates[position]
            suffix = f" r{copy}" if copy else ""
            out.write(f"{before}{title}{suffix}{after}\n")


# Imports the stage's module first, then times only the stage itself: the interpreter's start-up
# (about half a second) is not throughput.
_DRIVER = """
import importlib, json, sys, time
module = importlib.import_module(sys.argv[1])
started = time.perf_counter()
code = module.main(sys.argv[2:])
print(json.dumps({"seconds": time.perf_counter() - started}))
sys.exit(code)
"""


@dataclass
class StageRun:
    seconds: float  # in the stage, the interpreter's start-up aside
    wall: float  # of the whole process
    peak_mb: float  # its peak resident memory
    longest_silence: float  # the longest time without a byte written to its log or output


def run_stage(stage: str, workdir: Path, argv: Sequence[str] = (),
              module: str | None = None) -> StageRun:
    """Run `module`'s `main(argv)` (default: the stage's, `meli.stages.<stage>`) in `workdir`.

    The stage's output and log go to `<stage>.stdout` and `<stage>.log` in `workdir` (files, not
    pipes: a stage that logs a lot never blocks on a pipe nobody reads while it runs); both are
    watched every half second while it runs, for the longest time it stays silent.
    """
    module = module or f"meli.stages.{stage}"
    stdout, stderr = workdir / f"{stage}.stdout", workdir / f"{stage}.log"
    started = time.perf_counter()
    with open(stdout, "w") as out, open(stderr, "w") as log:
        process = subprocess.Popen([sys.executable, "-c", _DRIVER, module, *argv], cwd=workdir,
                                   stdout=out, stderr=log)
        written, last_output, silence = 0, started, 0.0
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            now = time.perf_counter()
            size = stdout.stat().st_size + stderr.stat().st_size
            if size != written:
                written, last_output = size, now
            silence = max(silence, now - last_output)
            if pid:
                break
            time.sleep(0.5)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait again
    wall = time.perf_counter() - started
    if process.returncode != 0:
        tail = stderr.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{stage} failed (exit {process.returncode}):\n{tail}")
    lines = stdout.read_text().strip().splitlines()
    seconds = json.loads(lines[-1])["seconds"]
    return StageRun(seconds, wall, usage.ru_maxrss / 1024, silence)  # Linux: kilobytes


def benchmark(name: str, source: Path, workdir: Path) -> list[dict]:
    workdir.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["source"] = str(source)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    results = []
    for stage in STAGES:
        seconds, wall, peak_mb = run_stage(stage, workdir)
        rows = _rows_into(stage, workdir)
        results.append({"dataset": name, "stage": stage, "rows": rows, "seconds": seconds,
                        "rows_per_second": rows / seconds, "peak_mb": peak_mb})
        print(f"{name:>12}  {stage:<10} {rows:>10,} rows {seconds:8.2f} s ({wall:6.2f} s) "
              f"{rows / seconds:>12,.0f} rows/s {peak_mb:9.0f} MB peak", flush=True)
    return results


def _rows_into(stage: str, workdir: Path) -> int:
    """Rows the stage read: ingest reads the source, prepare the raw table, featurize the
    prepared splits."""
    if stage == "featurize":
        data = json.loads((workdir / "metrics/data.json").read_text())
        return sum(data["rows"].values())
    source = json.loads((workdir / "data/raw/source.json").read_text())
    return source["rows_read"] if stage == "ingest" else source["rows_written"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    parser.add_argument("--keep", type=Path, help="work here and keep the files")
    args = parser.parse_args()
    if not args.sample.exists():
        raise SystemExit(f"{args.sample}: real sample not found (see ../shared/data/README.md)")
    with tempfile.TemporaryDirectory(prefix="meli-bench-") as scratch:
        base = args.keep or Path(scratch)
        base.mkdir(parents=True, exist_ok=True)
        print(f"{'dataset':>12}  {'stage':<10} {'rows':>15} {'stage time':>12} {'(process)':>10}"
              f" {'speed':>17} {'memory':>14}")
        results = benchmark("sample", args.sample.resolve(), base / "sample")
        repeated = base / f"repeated-{args.rows}.jsonl.gz"
        if not repeated.exists():
            started = time.perf_counter()
            build_repeated(args.sample, args.rows, repeated)
            print(f"(built {repeated.name} in {time.perf_counter() - started:.0f} s)")
        results += benchmark(f"{args.rows:,}", repeated, base / "repeated")
    prepare_speed = min(r["rows_per_second"] for r in results if r["stage"] == "prepare")
    peak = max(r["peak_mb"] for r in results)
    print(f"prepare: at least {prepare_speed:,.0f} rows/s (target 100,000); "
          f"highest peak {peak:,.0f} MB (target under 1,536 MB)")


if __name__ == "__main__":
    main()
