"""Load benchmark of `meli serve`: wrk drives the server from its own process, on 127.0.0.1.

    python benchmarks/serve.py --model models/cnn                 # prints a markdown table
    python benchmarks/serve.py --model models/cnn --reload-model other/cnn --duration 20
    python benchmarks/serve.py --model models/ensemble --no-reload

Measures, on one server process started here:
- cold start: from starting `meli serve` to its first `/health` 200;
- single-title requests (`--connections`, default 32) and 256-title requests (8 connections):
  requests/s, titles/s, latency p50/p95/p99 (wrk's own measurement), errors (connection errors,
  timeouts and non-2xx answers), and the mean number of requests the server scored per batch
  (from its /metrics);
- the same two loads with a `POST /reload` in the middle of the run, swapping to another
  version (`--reload-model`; by default a copy of the bundle with one config field added: a
  different version by its files, the same cost to load and to run), and how many answers each
  version gave (each answer names its version);
  (`--no-reload` leaves these two out);
- bad input: every kind of malformed request, each must be a 4xx with a JSON error, and the
  server must still answer afterwards;
- the server's peak resident memory (what a replica needs);
- for reference, once the server has stopped: the model alone, in this process, without HTTP,
  on blocks of 2,048 of the same titles with the server's thread count (what batching can at
  best reach on this machine at this moment).

Targets for the ensemble (issue 26): single titles at 32 connections >= 2,000 requests/s with
p99 <= 30 ms and no error, 256-title requests >= 12,000 titles/s.

wrk runs one thread (one core) and the server the other; the titles come from
`../shared/data/meli-es-sample.jsonl.gz` when present (`--titles` names another file), else
made-up ones. Needs `wrk` (Debian: `apt-get install wrk`). Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLE = ROOT.parent / "shared" / "data" / "meli-es-sample.jsonl.gz"
HOST = "127.0.0.1"  # never anything but loopback

# wrk's Lua: rotate request bodies, count answers per status and per version, and print the
# summary (with p95, which `wrk --latency` does not show) as one JSON line.
WRK_SCRIPT = r"""
local bodies = {%(bodies)s}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  versions = {}
  statuses = {}
  counter = math.random(#bodies)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  counter = counter %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[counter])
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local version = body:match('"version":"([^"]*)"')
  if version then versions[version] = (versions[version] or 0) + 1 end
end
function done(summary, latency, requests)
  local versions_all, statuses_all = {}, {}
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("versions")) do versions_all[k] = (versions_all[k] or 0) + v end
    for k, v in pairs(thread:get("statuses")) do
      statuses_all[tostring(k)] = (statuses_all[tostring(k)] or 0) + v
    end
  end
  local function map(t)
    local parts = {}
    for k, v in pairs(t) do table.insert(parts, string.format('"%%s":%%d', k, v)) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%%d,"seconds":%%.3f,"p50":%%d,"p95":%%d,"p99":%%d,"max":%%d,' ..
    '"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d,' ..
    '"versions":%%s,"statuses":%%s}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout,
    map(versions_all), map(statuses_all)))
end
"""

MADE_UP = ["Zapatillas Nike Air Max Talle {}", "Celular Samsung Galaxy A{} 32gb",
           "Funda Silicona iPhone {}", "Remera Adidas Hombre Talle {}", "Cable Hdmi {}m 4k",
           "Mochila Escolar Reforzada {} Litros", "Auriculares Bluetooth Inalambricos X{}",
           "Taladro Percutor {}w Con Maletin", "Juego De Sabanas {} Hilos Queen",
           "Neumatico 175/70 R{} Pirelli"]


def load_titles(path: Path | None, count: int = 2048) -> list[str]:
    source = path or (REAL_SAMPLE if REAL_SAMPLE.exists() else None)
    if source is None:
        rng = random.Random(0)
        return [rng.choice(MADE_UP).format(rng.randint(2, 99)) for _ in range(count)]
    opener = gzip.open if source.suffix == ".gz" else open
    titles = []
    with opener(source, "rt", encoding="utf-8") as lines:
        for line in lines:
            line = line.strip()
            if not line:
                continue
            titles.append(json.loads(line)["title"] if line.startswith("{") else line)
            if len(titles) == count:
                break
    return titles


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def request(url: str, body: bytes | None = None, timeout: float = 60) -> tuple[int, bytes, str]:
    """(status, body, content type) of a GET, or of a POST of `body`."""
    address = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=timeout)
    try:
        # A server may answer (413) before it has read all of a body it refuses.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.request("GET" if body is None else "POST", address.path, body=body,
                               headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        return answer.status, answer.read(), answer.headers.get("content-type", "")
    finally:
        connection.close()


def metric_totals(url: str) -> dict[str, float]:
    text = request(url + "/metrics")[1].decode()
    totals: dict[str, float] = {}
    for name in ("meli_batch_requests_sum", "meli_batch_requests_count", "meli_titles_total"):
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        totals[name] = float(match.group(1)) if match else 0.0
    return totals


@dataclass
class Run:
    name: str
    titles_per_request: int
    result: dict
    per_batch: float
    reload_seconds: float | None = None

    @property
    def errors(self) -> int:
        r = self.result
        return r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]

    def row(self) -> list[str]:
        r = self.result
        rate = r["requests"] / r["seconds"]
        versions = ", ".join(f"{v}: {n:,}" for v, n in sorted(r["versions"].items()))
        notes = f"{self.per_batch:.1f} requests/batch"
        if self.reload_seconds is not None:
            notes += f"; reload took {self.reload_seconds:.2f} s; answers by version: {versions}"
        return [self.name, f"{rate:,.0f}", f"{rate * self.titles_per_request:,.0f}",
                f"{r['p50'] / 1000:.1f}", f"{r['p95'] / 1000:.1f}", f"{r['p99'] / 1000:.1f}",
                f"{self.errors:,} of {r['requests']:,}", notes]


def wrk(url: str, bodies: list[bytes], connections: int, seconds: float,
        workdir: Path, path: str = "/predict") -> subprocess.Popen:
    """wrk POSTing `bodies` in turn to `url` + `path`; `finish` reads its result."""
    script = workdir / f"wrk-{len(bodies)}-{connections}.lua"
    quoted = ",\n".join(f"[==[{body.decode()}]==]" for body in bodies)
    script.write_text(WRK_SCRIPT % {"bodies": quoted}, encoding="utf-8")
    return subprocess.Popen(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout",
                             "10s", "-s", str(script), url + path],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> dict:
    output, _ = process.communicate(timeout=600)
    line = next((line for line in output.splitlines() if line.startswith("WRK_RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk gave no result:\n{output}")
    return json.loads(line.removeprefix("WRK_RESULT "))


def load_run(name: str, url: str, bodies: list[bytes], titles_per_request: int,
             connections: int, seconds: float, workdir: Path,
             reload_to: Path | None = None) -> Run:
    before = metric_totals(url)
    process = wrk(url, bodies, connections, seconds, workdir)
    reload_seconds = None
    if reload_to is not None:
        time.sleep(seconds / 2)
        started = time.perf_counter()
        status, body, _ = request(url + "/reload", json.dumps({"model": str(reload_to)}).encode())
        reload_seconds = time.perf_counter() - started
        if status != 200:
            process.kill()
            raise SystemExit(f"reload failed: {status} {body.decode()}")
    result = finish(process)
    after = metric_totals(url)
    batches = after["meli_batch_requests_count"] - before["meli_batch_requests_count"]
    requests = after["meli_batch_requests_sum"] - before["meli_batch_requests_sum"]
    return Run(name, titles_per_request, result, requests / max(batches, 1), reload_seconds)


def bad_inputs() -> list[tuple[str, bytes]]:
    long_title = json.dumps({"titles": ["zapatilla " * 1_001]}).encode()
    return [
        ("invalid JSON", b'{"titles": ["a"'), ("empty body", b""),
        ("not UTF-8", b'\xff\xfe{"titles": ["zapatillas"]}'),
        ("a lone surrogate", b'{"titles": ["\\ud800"]}'),
        ("not an object", b'["zapatillas"]'), ("titles missing", b"{}"),
        ("misspelled field", b'{"title": ["zapatillas"]}'),
        ("titles null", b'{"titles": null}'), ("titles a string", b'{"titles": "zapatillas"}'),
        ("titles an object", b'{"titles": {"0": "x"}}'), ("empty list", b'{"titles": []}'),
        ("a number among titles", b'{"titles": ["ok", 42]}'),
        ("a null title", b'{"titles": ["ok", null]}'),
        ("a nested list", b'{"titles": [["nested"]]}'), ("a blank title", b'{"titles": ["  "]}'),
        ("an over-long title", long_title),
        ("too many titles", json.dumps({"titles": ["x"] * 1025}).encode()),
        ("k a string", b'{"titles": ["ok"], "k": "3"}'), ("k zero", b'{"titles": ["ok"], "k": 0}'),
        ("k too large", b'{"titles": ["ok"], "k": 101}'),
        ("k fractional", b'{"titles": ["ok"], "k": 2.5}'),
        ("k boolean", b'{"titles": ["ok"], "k": true}'),
        ("k infinite", b'{"titles": ["ok"], "k": 1e400}'),
        ("body over the limit", json.dumps({"titles": ["a b c " * 10] * 1000}).encode() * 20),
    ]


def check_bad_inputs(url: str) -> tuple[int, int, list[str]]:
    answered, failures = 0, []
    cases = bad_inputs()
    for name, body in cases:
        status, content, kind = request(url + "/predict", body)
        try:
            is_json_error = kind == "application/json" and "error" in json.loads(content)
        except ValueError:
            is_json_error = False
        if 400 <= status < 500 and is_json_error:
            answered += 1
        else:
            failures.append(f"{name}: {status} {content[:80]!r}")
    still = request(url + "/predict", json.dumps({"titles": ["Zapatillas Nike"]}).encode())[0]
    if still != 200:
        failures.append(f"the server no longer answers a good request ({still})")
    return answered, len(cases), failures


def model_alone(bundle: Path, titles: list[str], threads: int, seconds: float) -> float:
    """Titles/s of the bundle's own top-3, in blocks of 2,048, with `threads` threads."""
    import torch

    from meli.bundles.load import load_classifier

    torch.set_num_threads(threads)
    classifier = load_classifier(bundle)
    block = (titles * (2048 // max(len(titles), 1) + 1))[:2048]
    classifier.top_k(block, 3)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        classifier.top_k(block, 3)
        done += len(block)
    return done / (time.perf_counter() - started)


def peak_resident_mb(pid: int) -> float:
    """The peak resident memory of a running process (Linux's VmHWM), NaN where unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else float("nan")


def new_version_of(bundle: Path, workdir: Path) -> Path:
    """A copy of the bundle with one config field added: another version by its files."""
    copy = workdir / f"{bundle.name}-v2"
    shutil.copytree(bundle, copy)
    config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    config["benchmark_copy"] = "a second version for the reload benchmark"
    (copy / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return copy


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "cnn")
    parser.add_argument("--reload-model", type=Path,
                        help="the version to reload to mid-run (default: a copy of --model with "
                             "one config field added)")
    parser.add_argument("--titles", type=Path, help="titles to send: JSON lines with a title "
                                                    "field, or one per line (.gz or not)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--connections", type=int, default=32,
                        help="concurrent connections of the single-title runs")
    parser.add_argument("--large-connections", type=int, default=8,
                        help="concurrent connections of the 256-title runs")
    parser.add_argument("--threads", type=int, default=2, help="the server's --threads")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--no-reload", action="store_true",
                        help="leave out the two runs with a reload mid-run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("benchmarks/serve.py needs wrk (Debian: apt-get install wrk)")
    if not (args.model / "config.json").exists():
        raise SystemExit(f"{args.model}: no model bundle (run `dvc repro`)")

    titles = load_titles(args.titles)
    single = [json.dumps({"titles": [title], "k": 3}).encode() for title in titles[:512]]
    large = [json.dumps({"titles": titles[start:start + 256], "k": 3}).encode()
             for start in range(0, len(titles) - 255, 256)]
    with tempfile.TemporaryDirectory(prefix="meli-serve-bench-") as temporary:
        workdir = Path(temporary)
        reload_model = None if args.no_reload else (
            args.reload_model or new_version_of(args.model, workdir))
        port = free_port()
        url = f"http://{HOST}:{port}"
        log = (workdir / "serve.log").open("w")
        started = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-m", "meli", "serve", "--model", str(args.model), "--host", HOST,
             "--port", str(port), "--threads", str(args.threads), "--batch-wait-ms",
             str(args.batch_wait_ms)], stdout=log, stderr=log, env=os.environ.copy())
        try:
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"meli serve ended:\n{(workdir / 'serve.log').read_text()}")
                try:
                    if request(url + "/health", timeout=1)[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.02)
            cold_start = time.perf_counter() - started
            model = json.loads(request(url + "/model")[1])
            finish(wrk(url, single, args.connections, 2, workdir))  # warm-up, not reported
            runs = [
                load_run(f"1 title/request, {args.connections} connections", url, single, 1,
                         args.connections, args.duration, workdir),
                load_run(f"256 titles/request, {args.large_connections} connections", url,
                         large, 256, args.large_connections, args.duration, workdir),
            ]
            if not args.no_reload:
                runs += [
                    load_run(f"1 title/request, {args.connections} connections, reload mid-run",
                             url, single, 1, args.connections, args.duration, workdir,
                             reload_to=reload_model),
                    load_run(f"256 titles/request, {args.large_connections} connections, "
                             f"reload mid-run", url, large, 256, args.large_connections,
                             args.duration, workdir, reload_to=args.model),
                ]
            answered, total, failures = check_bad_inputs(url)
            peak_mb = peak_resident_mb(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()

    print(f"model: {model['name']} version {model['version']} ({model['architecture']}, "
          f"{model['categories']} categories); server --threads {args.threads}, "
          f"--batch-wait-ms {args.batch_wait_ms:g}; wrk -t1; {os.cpu_count()} CPU cores; "
          f"{args.duration:g} s per run\n")
    print(table(["load", "requests/s", "titles/s", "p50 ms", "p95 ms", "p99 ms", "errors",
                 "notes"], [run.row() for run in runs]))
    print()
    print(table(["check", "result"], [
        ["cold start to ready (`/health` 200)", f"{cold_start:.2f} s"],
        ["bad-input requests answered 4xx with a JSON error", f"{answered} of {total}"],
        ["server still serving after them", "no" if failures and "no longer" in failures[-1]
         else "yes"],
        ["server's peak resident memory", f"{peak_mb:,.0f} MB"],
    ]))
    alone = model_alone(args.model, titles, args.threads, min(args.duration, 5))
    print(f"\nFor reference, the model alone (in process, no HTTP, blocks of 2,048 titles, "
          f"{args.threads} thread(s)): {alone:,.0f} titles/s")
    for failure in failures:
        print(f"FAILED: {failure}")
    failed = failures or any(run.errors for run in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
