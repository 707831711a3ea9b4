"""Remote storage round trips: nobody retrains what someone already trained.

One repository runs the pipeline once (the module's `origin`); every test copies it, pushes its
data and models to a remote served on 127.0.0.1 (a directory, S3 on moto, plain HTTP, HTTP with
basic auth), and checks what a teammate sees after `git clone` + `dvc pull`: the same bytes,
`dvc status` clean, `dvc repro` running nothing and `meli predict` answering exactly as in the
origin. Each test works on its own copy of the origin, so the tests may run in any order.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from dvc_repo import copy_repo, dvc, environment, run

pytestmark = pytest.mark.slow

TITLES = ("Zapatillas Nike Air Max Talle 42", "Tênis Adidas Superstar Branco",
          "Funda Silicona iPhone 11")
WEIGHTS = Path("models/cnn/weights.pt")
CACHE = Path(".dvc/cache/files/md5")


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def predict(repo: Path) -> str:
    return run(repo, sys.executable, "-m", "meli", "predict", "--model", "models/cnn",
               *TITLES).stdout


def artifacts(repo: Path) -> dict[str, str]:
    """{path: sha256} of every file under data/ and models/: what DVC versions."""
    return {str(path.relative_to(repo)): hashlib.sha256(path.read_bytes()).hexdigest()
            for top in ("data", "models") for path in sorted((repo / top).rglob("*"))
            if path.is_file() and path.name != ".gitignore"}


def object_name(md5: str) -> str:
    """Where DVC keeps an object under files/md5/ of a cache or remote: `ab/cdef...`."""
    return f"{md5[:2]}/{md5[2:]}"


def locked_md5(repo: Path, output_path: str) -> str:
    """The hash dvc.lock records for an output (`<md5>.dir` for a directory)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(out["md5"] for stage in lock["stages"].values()
                for out in stage.get("outs", []) if out["path"] == output_path)


def dir_listing(repo: Path, output_path: str) -> dict[str, str]:
    """{file: md5} inside a directory output, as recorded in dvc.lock and the local cache."""
    digest = locked_md5(repo, output_path)
    listing = json.loads((repo / CACHE / object_name(digest)).read_text())
    return {entry["relpath"]: entry["md5"] for entry in listing}


def pushed_objects(repo: Path) -> set[str]:
    """Names of the objects `dvc push` must upload for the committed dvc.lock.

    Those are the cached outputs and the files inside cached directories. Outputs declared
    `cache: false` (metrics, plots) are committed to git instead; DVC's run cache still keeps a
    copy of them in .dvc/cache, but `dvc push` without --run-cache does not upload them, so the
    local cache holds more objects than the remote needs.
    """
    tracked = set(run(repo, "git", "ls-files").stdout.splitlines())
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    names = set()
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            path = out["path"]
            if path in tracked or any(name.startswith(f"{path}/") for name in tracked):
                continue
            names.add(object_name(out["md5"]))
            if out["md5"].endswith(".dir"):
                listing = json.loads((repo / CACHE / object_name(out["md5"])).read_text())
                names |= {object_name(entry["md5"]) for entry in listing}
    return names


def commit(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", message)


def clone(source: Path | str, target: Path) -> Path:
    run(target.parent, "git", "clone", "-q", str(source), str(target))
    return target


@dataclass(frozen=True)
class Origin:
    path: Path
    prediction: str  # `meli predict` output for TITLES
    artifacts: dict[str, str]


@pytest.fixture(scope="module")
def origin(small_repo, tmp_path_factory) -> Origin:
    repo = copy_repo(small_repo, tmp_path_factory.mktemp("remote") / "origin")
    commit(repo, "reproduce the pipeline")
    return Origin(repo, predict(repo), artifacts(repo))


@pytest.fixture
def upstream(origin, tmp_path) -> Path:
    """This test's own copy of the origin (history, workspace, DVC cache), free to change."""
    copy = tmp_path / "upstream"
    shutil.copytree(origin.path, copy, symlinks=True)
    return copy


@pytest.fixture(autouse=True)
def no_proxy_for_loopback(monkeypatch):
    # The servers below live on 127.0.0.1: never send their requests through a proxy.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def assert_same_as_origin(repo: Path, origin: Origin) -> None:
    """What a teammate must see after pulling: nothing stale, nothing to rerun, same answers."""
    status = dvc(repo, "status")
    assert "up to date" in status.stdout, output(status)
    again = dvc(repo, "repro")
    assert "Running stage" not in again.stdout, output(again)
    assert artifacts(repo) == origin.artifacts
    assert (repo / WEIGHTS).read_bytes() == (origin.path / WEIGHTS).read_bytes()
    assert predict(repo) == origin.prediction


# --- servers on 127.0.0.1 -------------------------------------------------------------------


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # no line on stderr per request
        pass


class BasicAuthHandler(QuietHandler):
    """Serves files only to requests carrying `server.authorization` (401 otherwise)."""

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == self.server.authorization:
            return True
        self.send_response(401, "Unauthorized")
        self.send_header("WWW-Authenticate", 'Basic realm="dvc remote"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_GET(self) -> None:
        if self._authorized():
            super().do_GET()

    def do_HEAD(self) -> None:
        if self._authorized():
            super().do_HEAD()


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """serve(directory, handler=QuietHandler, **attributes) -> base URL of a read-only server."""
    servers = []

    def start(directory: Path, handler: type = QuietHandler, **attributes: Any) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0),
                                     functools.partial(handler, directory=str(directory)))
        for name, value in attributes.items():
            setattr(server, name, value)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        host, port = server.server_address[:2]
        return f"http://{host}:{port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class S3Server:
    endpoint: str
    client: Any
    upload_delay: float = 0.0  # seconds each PUT waits: makes an interruptible push

    def bucket(self, name: str) -> str:
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                       Prefix=prefix)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """moto's S3 server in a thread on a free loopback port; each test makes its own bucket."""
    pytest.importorskip("dvc_s3")  # DVC's s3:// support, a separate package
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.ERROR)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    state = S3Server(endpoint, client)
    # Slow uploads down on request, so that a push can be killed halfway (see
    # test_interrupted_push_resumes). ThreadedMotoServer has no hook for it: wrap its WSGI app.
    app = server._server.app

    def throttled(environ, start_response):
        if state.upload_delay and environ["REQUEST_METHOD"] == "PUT":
            time.sleep(state.upload_delay)
        return app(environ, start_response)

    server._server.app = throttled
    try:
        yield state
    finally:
        server.stop()
        werkzeug_log.setLevel(level)


# --- the tests ------------------------------------------------------------------------------


def test_directory_remote_round_trip(origin, upstream, tmp_path):
    store = tmp_path / "store"
    dvc(upstream, "remote", "add", "-d", "store", str(store))
    commit(upstream, "share data and models through a directory remote")
    pushed = dvc(upstream, "push")
    assert re.search(r"\d+ files? pushed", pushed.stdout), output(pushed)

    teammate = clone(upstream, tmp_path / "clone")
    assert not (teammate / WEIGHTS).exists()
    pulled = dvc(teammate, "pull")
    assert "models/cnn" in pulled.stdout, output(pulled)
    assert_same_as_origin(teammate, origin)


def test_s3_remote_keeps_the_secret_out_of_git(origin, upstream, tmp_path, s3, monkeypatch):
    # Credentials come only from .dvc/config.local here, never from the environment.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    secret = "meli-s3-secret-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]
    bucket = s3.bucket("meli-shared")
    dvc(upstream, "remote", "add", "-d", "s3", f"s3://{bucket}/meli")
    dvc(upstream, "remote", "modify", "s3", "endpointurl", s3.endpoint)
    dvc(upstream, "remote", "modify", "--local", "s3", "access_key_id", "testing")
    dvc(upstream, "remote", "modify", "--local", "s3", "secret_access_key", secret)
    commit(upstream, "share data and models through S3")

    config = (upstream / ".dvc/config").read_text()
    assert s3.endpoint in config and secret not in config
    assert secret in (upstream / ".dvc/config.local").read_text()
    run(upstream, "git", "check-ignore", "-q", ".dvc/config.local")  # ignored, never committed
    found = run(upstream, "git", "grep", "-F", secret, "HEAD", check=False)
    assert found.returncode == 1, output(found)  # 1: no tracked file holds it
    history = run(upstream, "git", "log", "-p", "--all").stdout
    assert secret not in history

    pushed = dvc(upstream, "push", "-v")  # verbose: the debug log must not leak it either
    assert re.search(r"\d+ files? pushed", pushed.stdout), output(pushed)
    assert secret not in output(pushed)
    assert s3.keys(bucket, "meli/files/md5/")

    teammate = clone(upstream, tmp_path / "clone")
    assert (teammate / ".dvc/config").read_text() == config
    assert not (teammate / ".dvc/config.local").exists()
    dvc(teammate, "remote", "modify", "--local", "s3", "access_key_id", "testing")
    dvc(teammate, "remote", "modify", "--local", "s3", "secret_access_key", secret)
    pulled = dvc(teammate, "pull", "-v")
    assert secret not in output(pulled)
    assert run(teammate, "git", "status", "--porcelain").stdout == ""
    assert_same_as_origin(teammate, origin)


def test_interrupted_push_resumes(upstream, tmp_path, s3, monkeypatch):
    """A push killed halfway leaves a partial remote; the next push uploads just the rest.

    Making the interruption certain: the S3 server holds every PUT for 0.2 s, and the push is
    SIGKILLed as soon as the first object shows up in the bucket (listed every 10 ms). The PUTs
    the server already holds still complete (about a dozen of the 31 objects here), but the
    `.dir` listings, which DVC sends after their files, never arrive. Should the push still
    finish first (a very slow machine starting the poll late), the test removes objects itself,
    the way an interruption leaves them: DVC uploads a directory's `.dir` listing only after
    every file in it, and trusts a `.dir` present on the remote to mean its files are there
    (deleting files of a directory whose listing survives goes unnoticed by `dvc push` and
    `dvc status -c`), so the simulation removes every listing and half of the files.
    """
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bucket = s3.bucket("meli-interrupted")
    prefix = "meli/files/md5/"
    dvc(upstream, "remote", "add", "-d", "s3", f"s3://{bucket}/meli")
    dvc(upstream, "remote", "modify", "s3", "endpointurl", s3.endpoint)
    commit(upstream, "share data and models through S3")
    expected = pushed_objects(upstream)
    local = {str(path.relative_to(upstream / CACHE))
             for path in (upstream / CACHE).rglob("*") if path.is_file()}
    assert expected <= local

    log = tmp_path / "interrupted-push.log"
    s3.upload_delay = 0.2
    try:
        with log.open("w") as sink:
            push = subprocess.Popen([sys.executable, "-m", "dvc", "push", "-j", "2"],
                                    cwd=upstream, env=environment(), stdout=sink,
                                    stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 120
            while push.poll() is None and not s3.keys(bucket, prefix):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.01)
            finished_first = push.poll() is not None
            push.send_signal(signal.SIGKILL)
            push.wait(timeout=30)
        # A PUT the server already holds completes after the kill: wait for the bucket to settle.
        partial = s3.keys(bucket, prefix)
        while True:
            time.sleep(0.5)
            settled, partial = partial, s3.keys(bucket, prefix)
            if partial == settled:
                break
    finally:
        s3.upload_delay = 0.0
    if finished_first or {key.removeprefix(prefix) for key in partial} == expected:
        files = sorted(key for key in partial if not key.endswith(".dir"))
        for key in [key for key in partial if key.endswith(".dir")] + files[::2]:
            s3.client.delete_object(Bucket=bucket, Key=key)
        partial = s3.keys(bucket, prefix)
    partial_names = {key.removeprefix(prefix) for key in partial}
    assert partial_names and partial_names < expected, log.read_text()

    status = dvc(upstream, "status", "-c")
    assert "in sync" not in status.stdout and "new:" in status.stdout, output(status)

    resumed = dvc(upstream, "push")
    missing = len(expected - partial_names)
    assert f"{missing} file{'s' if missing > 1 else ''} pushed" in resumed.stdout, output(resumed)
    remote = {key.removeprefix(prefix) for key in s3.keys(bucket, prefix)}
    assert remote == expected
    assert remote <= local  # the same relative names as the local cache's objects
    status = dvc(upstream, "status", "-c")
    assert "Cache and remote 's3' are in sync" in status.stdout, output(status)


def write_jsonl_gz(path: Path, rows: int, seed: int) -> bytes:
    """The course's JSON-lines format, from the synthetic generator; returns the file's bytes."""
    from meli.data import sample

    splits = ["train"] * 8 + ["validation", "test"]
    records = sample.generate(rows, seed).to_pylist()
    lines = [json.dumps(record | {"split": splits[i % len(splits)]}, ensure_ascii=False)
             for i, record in enumerate(records)]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0))
    return path.read_bytes()


def test_http_remote_is_read_only_and_serves_sources(origin, upstream, tmp_path, serve):
    store = tmp_path / "store"
    dvc(upstream, "remote", "add", "-d", "store", str(store))
    dvc(upstream, "push")

    teammate = clone(upstream, tmp_path / "clone")
    web = serve(store)
    dvc(teammate, "remote", "add", "-d", "web", web)
    pulled = dvc(teammate, "pull")
    assert "models/cnn" in pulled.stdout, output(pulled)
    assert_same_as_origin(teammate, origin)

    # data.source over http: the teammate reruns ingest and prepare on a file a server offers.
    www = tmp_path / "www"
    www.mkdir()
    rows = 400
    served = write_jsonl_gz(www / "titles.jsonl.gz", rows, seed=11)
    url = f"{serve(www)}/titles.jsonl.gz"
    ran = dvc(teammate, "exp", "run", "-S", f"data.source={url}", "prepare")
    assert "Running stage 'ingest'" in ran.stdout, output(ran)
    source = json.loads((teammate / "data/raw/source.json").read_text())
    assert source["source"] == url
    assert source["sha256"] == hashlib.sha256(served).hexdigest()
    assert source["rows_read"] == rows
    data = json.loads((teammate / "metrics/data.json").read_text())
    assert data["rows_read"] == rows

    # Those new outputs cannot go back: a plain file server takes no uploads.
    refused = dvc(teammate, "push", "-r", "web", check=False)
    assert refused.returncode != 0, output(refused)
    assert "failed to push" in refused.stderr, output(refused)


def test_wrong_password_fails_without_showing_it(origin, upstream, tmp_path, serve):
    store = tmp_path / "store"
    dvc(upstream, "remote", "add", "-d", "store", str(store))
    dvc(upstream, "push")
    user, password, wrong = "meli", "right-horse-battery", "wrong-staple-1234"
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    url = serve(store, BasicAuthHandler, authorization=f"Basic {token}")

    teammate = clone(upstream, tmp_path / "clone")
    dvc(teammate, "remote", "add", "web-auth", url)
    dvc(teammate, "remote", "modify", "web-auth", "auth", "basic")
    dvc(teammate, "remote", "modify", "web-auth", "user", user)
    dvc(teammate, "remote", "modify", "--local", "web-auth", "password", wrong)
    assert wrong not in (teammate / ".dvc/config").read_text()

    failed = dvc(teammate, "pull", "-r", "web-auth", check=False)
    assert failed.returncode != 0, output(failed)
    # DVC 3.67 reads the 401 answers as "not on the remote": it names no HTTP status, warns
    # that the cache files exist "neither locally nor on remote", then fails the checkout.
    assert re.search(r"401|unauthori[sz]ed|failed to pull", output(failed), re.I), output(failed)
    assert wrong not in output(failed) and password not in output(failed)
    assert not (teammate / WEIGHTS).exists()

    dvc(teammate, "remote", "modify", "--local", "web-auth", "password", password)
    pulled = dvc(teammate, "pull", "-r", "web-auth")
    assert password not in output(pulled)
    assert (teammate / WEIGHTS).read_bytes() == (origin.path / WEIGHTS).read_bytes()
    assert predict(teammate) == origin.prediction


def test_corrupted_remote_object_is_caught_with_verify(upstream, tmp_path):
    """With `verify = true` DVC rehashes what it downloads; without it, corruption gets in.

    DVC 3.67 on a corrupted download: it logs "corrupted cache file" at debug level only,
    drops the object from the cache and fails the checkout of the output
    ("ERROR: failed to pull data from the cloud - Checkout failed for following targets:
    models/cnn"). It also removes the stale models/cnn from the workspace: the good copy of
    commit A is not left in place, but it stays in the local cache.
    """
    store = tmp_path / "store"
    dvc(upstream, "remote", "add", "-d", "store", str(store))
    commit(upstream, "share data and models through a directory remote")
    dvc(upstream, "push")
    teammate = clone(upstream, tmp_path / "clone")
    dvc(teammate, "remote", "modify", "--local", "store", "verify", "true")
    dvc(teammate, "pull")
    good = (teammate / WEIGHTS).read_bytes()
    assert good == (upstream / WEIGHTS).read_bytes()

    # Commit B: a wider CNN, pushed; then its weights rot on the remote (same size).
    params = yaml.safe_load((upstream / "params.yaml").read_text())
    params["cnn"]["filters"] = 24
    (upstream / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    retrained = dvc(upstream, "repro")
    assert "Running stage 'train@cnn'" in retrained.stdout, output(retrained)
    commit(upstream, "cnn with 24 filters")
    dvc(upstream, "push")
    b_weights = (upstream / WEIGHTS).read_bytes()
    name = object_name(dir_listing(upstream, "models/cnn")["weights.pt"])
    rotten = store / "files/md5" / name
    assert rotten.read_bytes() == b_weights
    rotten.chmod(0o644)  # DVC makes remote objects read-only
    garbage = (b"corrupted " * (len(b_weights) // 10 + 1))[:len(b_weights)]
    rotten.write_bytes(garbage)

    run(teammate, "git", "pull", "-q", "--ff-only")
    # `meli pull` fetches, hashes what arrived and checks out only if all is intact: the
    # workspace keeps commit A's good copy.
    safe = run(teammate, sys.executable, "-m", "meli", "pull", check=False)
    assert safe.returncode == 1, output(safe)
    assert "workspace left unchanged: not fetched (absent from the remote, or refused as " \
        "corrupted): models/cnn/weights.pt" in safe.stderr, output(safe)
    assert len(safe.stderr.strip().splitlines()) == 1, output(safe)
    assert (teammate / WEIGHTS).read_bytes() == good
    failed = dvc(teammate, "pull", check=False)
    assert failed.returncode != 0, output(failed)
    assert "models/cnn" in failed.stderr, output(failed)
    weights = teammate / WEIGHTS
    assert not weights.exists() or weights.read_bytes() == good  # never the garbage
    assert not (teammate / CACHE / name).exists()  # not kept: the next pull tries again
    run(teammate, "git", "checkout", "-q", "HEAD~1")
    dvc(teammate, "checkout", "models/cnn")
    assert weights.read_bytes() == good  # A's copy was never touched in the cache
    run(teammate, "git", "checkout", "-q", "main")

    # The same pull without verify: exit 0, garbage in the workspace, and DVC calls it clean.
    careless = clone(upstream, tmp_path / "careless")
    checked = run(careless, sys.executable, "-m", "meli", "pull", check=False)
    assert checked.returncode == 1, output(checked)  # meli pull hashes without verify too
    assert "corrupted in remote storage: models/cnn/weights.pt" in checked.stderr
    assert not (careless / WEIGHTS).exists()
    dvc(careless, "pull")
    assert (careless / WEIGHTS).read_bytes() == garbage
    assert "up to date" in dvc(careless, "status").stdout

    # The cure: delete the bad object and push again. Deleting it alone is not enough: DVC takes
    # a directory's listing (its .dir object) on the remote to mean every file in it is there,
    # so the listing of every output that holds the object must go too: models/cnn's, and the
    # ensemble's, which keeps a copy of the CNN bundle.
    rotten.unlink()
    unnoticed = dvc(upstream, "push")
    assert "Everything is up to date" in unnoticed.stdout, output(unnoticed)
    for holder in ("models/cnn", "models/ensemble"):
        (store / "files/md5" / object_name(locked_md5(upstream, holder))).unlink()
    repaired = dvc(upstream, "push")
    assert "3 files pushed" in repaired.stdout, output(repaired)
    dvc(teammate, "pull")
    assert weights.read_bytes() == b_weights


def wait_for_queue(repo: Path, timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = dvc(repo, "queue", "status").stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        assert time.monotonic() < deadline, f"queue still busy after {timeout_s} s:\n{status}"
        time.sleep(4)  # each `dvc queue status` costs a second of CPU that training wants


def test_experiment_push_and_pull(upstream, tmp_path):
    store = tmp_path / "store"
    dvc(upstream, "remote", "add", "-d", "store", str(store))
    commit(upstream, "share data and models through a directory remote")
    dvc(upstream, "push")
    remote_git = tmp_path / "remote.git"
    run(tmp_path, "git", "clone", "-q", "--bare", str(upstream), str(remote_git))
    run(upstream, "git", "remote", "add", "gitremote", str(remote_git))

    dvc(upstream, "exp", "run", "--queue", "-n", "cnn-wide", "-S", "cnn.filters=48",
        "train@cnn", "evaluate@cnn", "ensemble", "evaluate@ensemble")
    try:
        dvc(upstream, "queue", "start", "-j", "1")
        status = wait_for_queue(upstream)
    finally:
        dvc(upstream, "queue", "stop", "--kill", check=False)
    assert re.search(r"cnn-wide\s.*Success", status), \
        status + dvc(upstream, "queue", "logs", "cnn-wide", check=False).stdout

    pushed = dvc(upstream, "exp", "push", "gitremote", "cnn-wide")
    assert "Pushed experiment cnn-wide" in pushed.stdout, output(pushed)
    refs = run(remote_git, "git", "for-each-ref", "refs/exps").stdout
    assert refs.rstrip().endswith("/cnn-wide"), refs

    teammate = clone(remote_git, tmp_path / "clone")
    pulled = dvc(teammate, "exp", "pull", "origin", "cnn-wide")
    assert "Pulled experiment" in pulled.stdout, output(pulled)
    dvc(teammate, "exp", "apply", "cnn-wide")
    dvc(teammate, "pull")
    config = json.loads((teammate / "models/cnn/config.json").read_text())
    assert config["model"]["filters"] == 48
    assert "up to date" in dvc(teammate, "status").stdout
    lines = predict(teammate).splitlines()
    labels = json.loads((teammate / "models/cnn/labels.json").read_text())
    assert lines[0] == TITLES[0]
    assert lines[1].split()[-1] in labels
