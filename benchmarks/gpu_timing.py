"""`meli predict` and `meli serve` timed on a device, and the one table of benchmarks/gpu.sh.

    python benchmarks/gpu_timing.py predict --workspace DIR --device cuda --model mlp [--titles N]
    python benchmarks/gpu_timing.py serve --workspace DIR --device cuda --model cnn [--seconds 15]
    python benchmarks/gpu_timing.py table --workspace DIR

`predict`: the workspace's test-split titles (at most `--titles`), one per line in a file, through
`meli predict --model models/<model> --device D --input FILE --output FILE` as its own process;
the figures are the command's own titles/s (its log line: reading, classifying and writing, the
model's loading aside), the process's wall time and its peak resident memory.

`serve`: `meli serve --model models/<model> --device D` on 127.0.0.1 at a free port; from its start
to its first `/health` 200 is the cold start; then, for `--seconds`, `--connections` client
threads each post requests of `--request-titles` test titles one after another on a kept-alive
connection: titles/s answered and the latency of a request (p50, p99). The clients are Python
threads in one process: at a few thousand requests/s they, not the server, are the limit, so the
figure is a floor for what the server can do.

Each writes its figures as JSON under `DIR/timings/`; `table` prints every figure found there and
in the `scale-*.json` files of benchmarks/scale.py as one markdown table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

HOST = "127.0.0.1"  # never anything but loopback


def _timings(workspace: Path) -> Path:
    directory = workspace / "timings"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def read_test_titles(workspace: Path, count: int) -> list[str]:
    test = pq.read_table(workspace / "data/prepared/test.parquet", columns=["title"])
    titles = test.column("title").slice(0, count).to_pylist()
    return [title.replace("\n", " ").replace("\r", " ") for title in titles]


def time_predict(workspace: Path, model: str, device: str, precision: str, count: int) -> dict:
    titles = read_test_titles(workspace, count)
    source = workspace / "timings" / "titles.txt"
    _timings(workspace)
    source.write_text("\n".join(titles) + "\n", encoding="utf-8")
    output = workspace / "timings" / f"predictions-{model}.csv"
    started = time.perf_counter()
    with open(workspace / "timings" / f"predict-{model}.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "meli", "predict", "--model", f"models/{model}", "--device",
             device, "--precision", precision, "--input", str(source), "--output", str(output)],
            cwd=workspace, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    text = (workspace / "timings" / f"predict-{model}.log").read_text(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"meli predict --model models/{model} failed:\n{text[-2000:]}")
    found = re.search(r"predict: (\d+) titles in ([\d.]+)s \((\d+) titles/s\)", text)
    if found is None:
        raise SystemExit(f"meli predict --model models/{model}: no speed in its log:\n{text}")
    output.unlink()
    return {"what": "predict", "model": model, "device": device, "titles": int(found[1]),
            "seconds": float(found[2]), "titles_per_second": float(found[3]), "wall": wall,
            "peak_mb": usage.ru_maxrss / 1024}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _post(connection: http.client.HTTPConnection, body: bytes) -> int:
    connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
    answer = connection.getresponse()
    answer.read()
    return answer.status


def time_serve(workspace: Path, model: str, device: str, precision: str, seconds: float,
               connections: int, request_titles: int) -> dict:
    titles = read_test_titles(workspace, 20_000)
    bodies = [json.dumps({"titles": titles[start:start + request_titles]}).encode()
              for start in range(0, len(titles) - request_titles + 1, request_titles)]
    port = _free_port()
    log = open(_timings(workspace) / f"serve-{model}.log", "w")  # noqa: SIM115 (kept open)
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "meli", "serve", "--model", f"models/{model}", "--device", device,
         "--precision", precision, "--host", HOST, "--port", str(port)],
        cwd=workspace, stdout=log, stderr=log, start_new_session=False)
    try:
        cold_start = _wait_healthy(server, port, started)
        latencies: list[list[float]] = [[] for _ in range(connections)]
        failures = [0] * connections
        deadline = time.perf_counter() + seconds

        def client(number: int) -> None:
            connection = http.client.HTTPConnection(HOST, port, timeout=60)
            index = number
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                status = _post(connection, bodies[index % len(bodies)])
                latencies[number].append(time.perf_counter() - sent)
                failures[number] += status != 200
                index += connections
            connection.close()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
        load_started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        load_seconds = time.perf_counter() - load_started
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    every = np.array([value for part in latencies for value in part])
    if sum(failures):
        raise SystemExit(f"meli serve --model models/{model}: {sum(failures)} of {len(every)} "
                         f"requests failed (see {log.name})")
    return {"what": "serve", "model": model, "device": device, "cold_start": cold_start,
            "requests": len(every), "request_titles": request_titles,
            "connections": connections,
            "titles_per_second": len(every) * request_titles / load_seconds,
            "p50_ms": float(np.percentile(every, 50) * 1000),
            "p99_ms": float(np.percentile(every, 99) * 1000)}


def _wait_healthy(server: subprocess.Popen, port: int, started: float) -> float:
    """Seconds from the server's start to its first /health 200."""
    while time.perf_counter() - started < 300:
        if server.poll() is not None:
            raise SystemExit(f"meli serve ended before it was ready (exit {server.returncode})")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("meli serve: not ready after 300 s")


def table(workspace: Path) -> str:
    """Every figure of the run: the stages (benchmarks/scale.py's JSON files), then predict and
    serve (this script's)."""
    lines = ["| step | time | speed | peak memory | note |", "| --- | --- | --- | --- | --- |"]
    for path in sorted(workspace.glob("scale-*.json"), key=lambda p: p.stat().st_mtime):
        for stage in json.loads(path.read_text()):
            speed = (f"{stage['rows_per_second']:,.0f} titles/s" if stage["rows_per_second"]
                     else "")
            note = ""
            if stage["stage"].startswith("train@"):
                model = stage["stage"].split("@")[1]
                summary = workspace / "results/train" / model / "metrics.json"
                if summary.exists():
                    best = json.loads(summary.read_text()).get("best", {})
                    note = (f"validation balanced accuracy "
                            f"{best.get('validation_balanced_accuracy', float('nan')):.4f}")
            lines.append(f"| {stage['stage']} | {stage['seconds']:,.0f} s | {speed} | "
                         f"{stage['peak_mb'] / 1024:.1f} GB | {note} |")
    timings = workspace / "timings"
    found = timings.glob("*.json") if timings.is_dir() else []
    for path in sorted(found, key=lambda p: p.stat().st_mtime):
        figures = json.loads(path.read_text())
        if figures["what"] == "predict":
            lines.append(f"| meli predict models/{figures['model']} --device {figures['device']}"
                         f" | {figures['seconds']:,.1f} s ({figures['wall']:,.1f} s in all) | "
                         f"{figures['titles_per_second']:,.0f} titles/s | "
                         f"{figures['peak_mb'] / 1024:.1f} GB | {figures['titles']:,} titles |")
        else:
            lines.append(f"| meli serve models/{figures['model']} --device {figures['device']}"
                         f" | ready in {figures['cold_start']:,.1f} s | "
                         f"{figures['titles_per_second']:,.0f} titles/s | | "
                         f"{figures['connections']} connections, {figures['request_titles']} "
                         f"titles a request: p50 {figures['p50_ms']:,.0f} ms, p99 "
                         f"{figures['p99_ms']:,.0f} ms |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("predict", "serve", "table"))
    parser.add_argument("--workspace", type=Path, required=True,
                        help="a workspace of benchmarks/scale.py, its models trained")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--device", default="cuda", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--titles", type=int, default=1_000_000,
                        help="predict: test titles to classify, at most")
    parser.add_argument("--seconds", type=float, default=15.0, help="serve: seconds of load")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--request-titles", type=int, default=64)
    args = parser.parse_args()
    if args.what == "table":
        print(table(args.workspace))
        return
    if args.what == "predict":
        figures = time_predict(args.workspace, args.model, args.device, args.precision,
                               args.titles)
    else:
        figures = time_serve(args.workspace, args.model, args.device, args.precision,
                             args.seconds, args.connections, args.request_titles)
    (_timings(args.workspace) / f"{args.what}-{args.model}.json").write_text(
        json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
