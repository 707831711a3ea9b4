"""`meli serve`: every endpoint, the same numbers as `meli predict`, batching, every bad input
answered 4xx with a JSON error, reload (POST and SIGHUP) under load without a failed or mixed
response, a registry version, and the page in a real headless browser."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from ports import free_port
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from meli.bundles.load import load_classifier
from meli.bundles.predict import prediction_table
from meli.serve.app import Settings, create_app
from meli.serve.model import ModelSource, bundle_hash

TITLES = ["Zapatillas Nike Air Max Talle 42", "Funda Silicona iPhone 11",
          "Celular Samsung Galaxy A10 32gb", "qwertyuiop asdfgh"]


# ---- bundles: two versions with the same categories ---------------------------------------

@pytest.fixture(scope="module")
def bundles(tmp_path_factory, mlp_bundle, fasttext_bundle) -> dict[str, Path]:
    """Copies of the small pipeline's MLP and fastText bundles: two versions to serve."""
    root = tmp_path_factory.mktemp("serve-bundles")
    copies = {name: root / name for name in ("mlp", "fasttext")}
    shutil.copytree(mlp_bundle, copies["mlp"])
    shutil.copytree(fasttext_bundle, copies["fasttext"])
    return copies


def version_of(directory: Path) -> str:
    return bundle_hash(directory)[:12]


@contextmanager
def client_for(directory: Path, **settings) -> Iterator[TestClient]:
    source = ModelSource(directory=directory, device="cpu")
    app = create_app(source.load(), source, Settings(**settings))
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def client(bundles) -> Iterator[TestClient]:
    with client_for(bundles["mlp"]) as client:
        yield client


def metric(client: TestClient, sample_name: str, **labels: str) -> float:
    """A sample of /metrics (0 where absent)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            wanted = all(sample.labels.get(key) == value for key, value in labels.items())
            if sample.name == sample_name and wanted:
                return sample.value
    return 0.0


# ---- /predict ---------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 3])
def test_predict_gives_the_numbers_meli_predict_gives(client, bundles, k):
    answer = client.post("/predict", json={"titles": TITLES, "k": k})
    assert answer.status_code == 200
    body = answer.json()
    assert body["version"] == version_of(bundles["mlp"])
    assert body["model"] == "mlp"
    # What `meli predict --input` writes for the same titles (its CSV columns, as text).
    import pyarrow as pa

    table = prediction_table(load_classifier(bundles["mlp"]), pa.array(TITLES), k).to_pylist()
    assert len(body["predictions"]) == len(TITLES)
    for row, prediction in zip(table, body["predictions"], strict=True):
        categories = prediction["categories"]
        assert len(categories) == k
        for rank, entry in enumerate(categories, start=1):
            suffix = "" if rank == 1 else f"_{rank}"
            assert entry["category"] == row[f"category{suffix}"]
            assert f"{entry['probability']:.6f}" == row[f"probability{suffix}"]
        assert prediction["known_words"] == row["known_words"]
    assert body["predictions"][-1]["known_words"] == 0  # no word of it is known


def test_predict_serves_an_ensemble_as_meli_predict_does(pipeline, bundles, tmp_path,
                                                         monkeypatch):
    from meli.params import EnsembleParams
    from meli.stages.ensemble import build_ensemble

    monkeypatch.chdir(pipeline.root)  # the members are read from models/<name>
    build_ensemble(EnsembleParams(members=["mlp", "fasttext"]), pipeline.root / "data/prepared",
                   tmp_path / "ensemble", tmp_path / "metrics.json")
    classifier = load_classifier(tmp_path / "ensemble")
    indices, probabilities, known = classifier.top_k(TITLES, 2)
    with client_for(tmp_path / "ensemble") as ensemble:
        body = ensemble.post("/predict", json={"titles": TITLES, "k": 2}).json()
        described = ensemble.get("/model").json()
    assert described["architecture"] == "ensemble"
    for row, prediction in enumerate(body["predictions"]):
        assert [c["category"] for c in prediction["categories"]] == [
            classifier.labels[i] for i in indices[row]]
        assert [c["probability"] for c in prediction["categories"]] == pytest.approx(
            probabilities[row].tolist(), abs=1e-6)
        assert prediction["known_words"] == known[row]


@pytest.mark.parametrize("class_conditional", [False, True])
def test_sets_and_abstain_are_those_meli_predict_writes(client, bundles, class_conditional):
    import pyarrow as pa

    from meli.bundles.answers import Knobs
    from meli.bundles.calibration import load_calibration

    knobs = Knobs(coverage=0.9, min_confidence=0.8, class_conditional=class_conditional)
    answer = client.post("/predict", json={"titles": TITLES, "k": 1, "coverage": 0.9,
                                           "min_confidence": 0.8,
                                           "class_conditional": class_conditional})
    assert answer.status_code == 200, answer.text
    classifier = load_classifier(bundles["mlp"])
    table = prediction_table(classifier, pa.array(TITLES), 1, knobs,
                             load_calibration(classifier)).to_pylist()
    for row, prediction in zip(table, answer.json()["predictions"], strict=True):
        assert prediction["set"] == (row["set"].split("|") if row["set"] else [])
        assert len(prediction["set"]) == row["set_size"]
        assert prediction["abstain"] == (row["abstain"] == "true")
        assert prediction["categories"][0]["category"] == row["category"]
    # Without the knobs, no such fields: the answers of before.
    plain = client.post("/predict", json={"titles": TITLES}).json()["predictions"]
    assert all(set(prediction) == {"categories", "known_words"} for prediction in plain)


def test_requests_with_different_knobs_in_one_batch_each_get_their_own(bundles):
    bodies = [{"titles": TITLES[:2], "k": 1},
              {"titles": TITLES, "k": 2, "coverage": 0.95},
              {"titles": TITLES[1:], "k": 3, "coverage": 0.8, "class_conditional": True,
               "min_confidence": 0.5}]
    with client_for(bundles["mlp"]) as alone:
        expected = [alone.post("/predict", json=body).json() for body in bodies]
    with client_for(bundles["mlp"], batch_wait_ms=200) as batching, \
            ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda body: batching.post("/predict", json=body).json(),
                                bodies * 4))
        assert metric(batching, "meli_batch_requests_count") < len(answers)
    assert answers == expected * 4


def test_model_shows_the_calibration_figures(client, bundles):
    described = client.get("/model").json()
    calibration = json.loads((bundles["mlp"] / "calibration.json").read_text())
    assert described["calibration"] == calibration
    assert calibration["split"] == "validation" and calibration["titles"] > 0
    assert 0 <= calibration["expected_calibration_error"] <= 1 and calibration["bins"] == 15
    assert set(calibration["risk_coverage"]["accuracy_at_coverage"]) >= {"at_90"}


def test_a_bundle_without_calibration_answers_all_but_sets(bundles, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(bundles["mlp"], old)
    for path in old.glob("calibration*"):
        path.unlink()
    with client_for(old) as served:
        assert served.get("/model").json()["calibration"] is None
        answer = served.post("/predict", json={"titles": TITLES, "coverage": 0.9})
        assert answer.status_code == 422
        assert answer.json()["error"].startswith("coverage: the model old carries no calibration")
        answer = served.post("/predict", json={"titles": TITLES, "min_confidence": 0.9})
        assert answer.status_code == 200
        assert all("abstain" in p for p in answer.json()["predictions"])


def test_requests_that_arrive_together_are_scored_as_one_batch(bundles):
    # A long wait makes coalescing certain: 24 requests sent at once fill a few batches.
    with client_for(bundles["mlp"], batch_wait_ms=100) as batching:
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(
                lambda i: batching.post("/predict", json={"titles": [TITLES[i % 3]] * (1 + i % 4)}),
                range(24)))
        assert all(answer.status_code == 200 for answer in answers)
        for i, answer in enumerate(answers):  # each request gets its own titles back
            assert len(answer.json()["predictions"]) == 1 + i % 4
        batches = metric(batching, "meli_batch_requests_count")
        assert metric(batching, "meli_batch_requests_sum") == 24
        assert batches < 24 / 2, f"{batches} batches for 24 requests sent together"
        assert metric(batching, "meli_titles_total") == sum(1 + i % 4 for i in range(24))


def test_a_batch_never_exceeds_its_title_limit_but_a_large_request_is_scored_whole(bundles):
    with client_for(bundles["mlp"], max_batch_titles=8, batch_wait_ms=50) as small:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(
                lambda n: small.post("/predict", json={"titles": TITLES[:1] * n}),
                [3, 3, 3, 3, 20, 1]))
        assert [len(a.json()["predictions"]) for a in answers] == [3, 3, 3, 3, 20, 1]
        families = {f.name: f for f in text_string_to_metric_families(small.get("/metrics").text)}
        buckets = {s.labels["le"]: s.value for s in families["meli_batch_titles"].samples
                   if s.name.endswith("_bucket")}
        # Every batch but the lone 20-title request holds at most 8 titles.
        assert buckets["+Inf"] - buckets["8.0"] == 1


# ---- bad input ----------------------------------------------------------------------------------

BAD_INPUTS = [
    # (what is sent, expected status, a word the error must contain)
    (b'{"titles": ["a"', 400, "JSON"),
    (b"", 400, "body"),
    (b'\xff\xfe{"titles": ["zapatillas"]}', 400, "UTF-8"),
    ('{"titles": ["Camisa \udcff"]}'.encode("utf-8", "surrogatepass"), 400, "body"),
    (b'{"titles": ["\\ud800"]}', 400, "body"),  # a lone surrogate escaped in JSON
    (b'["zapatillas"]', 422, "body"),
    (b'"zapatillas"', 422, "body"),
    (b"{}", 422, "titles"),
    (b'{"title": ["zapatillas"]}', 422, "title"),
    (b'{"titles": null}', 422, "titles"),
    (b'{"titles": "zapatillas"}', 422, "titles"),
    (b'{"titles": {"0": "zapatillas"}}', 422, "titles"),
    (b'{"titles": []}', 422, "titles"),
    (b'{"titles": ["ok", 42]}', 422, "titles[1]"),
    (b'{"titles": ["ok", null]}', 422, "titles[1]"),
    (b'{"titles": [["nested"]]}', 422, "titles[0]"),
    (b'{"titles": ["   "]}', 422, "titles[0]"),
    (json.dumps({"titles": ["zapatilla " * 1_001]}).encode(), 422, "titles[0]"),
    (json.dumps({"titles": ["x"] * 1025}).encode(), 422, "titles"),
    (b'{"titles": ["ok"], "k": "3"}', 422, "k"),
    (b'{"titles": ["ok"], "k": 0}', 422, "k"),
    (b'{"titles": ["ok"], "k": 101}', 422, "k"),
    (b'{"titles": ["ok"], "k": 2.5}', 422, "k"),
    (b'{"titles": ["ok"], "k": true}', 422, "k"),
    (b'{"titles": ["ok"], "k": 1e400}', 400, "JSON"),
    (b'{"titles": ["ok"], "coverage": 1.5}', 422, "coverage"),
    (b'{"titles": ["ok"], "coverage": 0}', 422, "coverage"),
    (b'{"titles": ["ok"], "coverage": "0.9"}', 422, "coverage"),
    (b'{"titles": ["ok"], "coverage": true}', 422, "coverage"),
    (b'{"titles": ["ok"], "coverage": 0.99999}', 422, "coverage"),
    (b'{"titles": ["ok"], "min_confidence": 1.5}', 422, "min_confidence"),
    (b'{"titles": ["ok"], "min_confidence": -0.1}', 422, "min_confidence"),
    (b'{"titles": ["ok"], "min_confidence": [0.9]}', 422, "min_confidence"),
    (b'{"titles": ["ok"], "class_conditional": true}', 422, "class_conditional"),
    (b'{"titles": ["ok"], "coverage": 0.9, "class_conditional": 1}', 422, "class_conditional"),
    (json.dumps({"titles": ["a b c " * 10] * 1000}).encode() * 20, 413, "body"),
]


@pytest.mark.parametrize("body, status, field", BAD_INPUTS,
                         ids=[f"{i}-{s}-{f}" for i, (_, s, f) in enumerate(BAD_INPUTS)])
def test_bad_input_is_a_4xx_json_error_naming_the_field(client, body, status, field):
    answer = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert field in answer.json()["error"]
    assert client.post("/predict", json={"titles": TITLES[:1]}).status_code == 200


def test_a_chunked_body_over_the_limit_is_refused_as_it_streams(bundles):
    with client_for(bundles["mlp"]) as small:
        def chunks() -> Iterator[bytes]:
            yield b'{"titles": ['
            for _ in range(2_000):
                yield b'"' + b"x" * 1_000 + b'",'
            yield b'"x"]}'

        answer = small.post("/predict", content=chunks())
        assert answer.status_code == 413
        assert "body" in answer.json()["error"]
        assert metric(small, "meli_request_errors_total", endpoint="predict", status="413") == 1


def test_unknown_paths_and_methods_are_json_errors(client):
    for answer, status in ((client.get("/nothing"), 404), (client.get("/predict"), 405),
                           (client.delete("/health"), 405)):
        assert answer.status_code == status
        assert answer.json()["error"]


# ---- /health, /model, /metrics, / ---------------------------------------------------------------

def test_health_is_ready_only_with_a_model(client, bundles):
    assert client.get("/health").json() == {"status": "ready", "model": "mlp",
                                            "version": version_of(bundles["mlp"])}
    with TestClient(create_app(None)) as loading:
        answer = loading.get("/health")
        assert (answer.status_code, answer.json()["status"]) == (503, "loading")
        answer = loading.post("/predict", json={"titles": ["zapatillas"]})
        assert answer.status_code == 503 and "model" in answer.json()["error"]


def test_model_describes_the_bundle(client, bundles):
    described = client.get("/model").json()
    config = json.loads((bundles["mlp"] / "config.json").read_text())
    assert described["name"] == "mlp"
    assert described["version"] == version_of(bundles["mlp"])
    assert described["sha256"] == bundle_hash(bundles["mlp"])
    assert described["architecture"] == "mlp"
    assert described["params"]["model"] == config["model"]
    assert described["validation"]["validation_balanced_accuracy"] == config[
        "validation_balanced_accuracy"]
    assert described["categories"] == len(json.loads((bundles["mlp"] / "labels.json").read_text()))
    assert described["serving"]["max_titles"] == 1024


def test_metrics_count_requests_errors_latency_and_batches(bundles):
    with client_for(bundles["mlp"]) as fresh:
        for _ in range(3):
            assert fresh.post("/predict", json={"titles": TITLES}).status_code == 200
        assert fresh.post("/predict", json={"titles": []}).status_code == 422
        answer = fresh.get("/metrics")
        assert answer.headers["content-type"].startswith("text/plain; version=")
        assert metric(fresh, "meli_requests_total", endpoint="predict", status="200") == 3
        assert metric(fresh, "meli_request_errors_total", endpoint="predict", status="422") == 1
        assert metric(fresh, "meli_request_duration_seconds_count", endpoint="predict") == 4
        assert metric(fresh, "meli_batch_titles_sum") == 3 * len(TITLES)
        assert metric(fresh, "meli_titles_total") == 3 * len(TITLES)
        assert metric(fresh, "meli_model_info", name="mlp",
                      version=version_of(bundles["mlp"])) == 1


def test_the_page_is_served(client):
    answer = client.get("/")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert 'id="classify"' in answer.text and 'fetch("predict"' in answer.text


# ---- reload (in process) -------------------------------------------------------------------------

def test_reload_swaps_to_a_new_version_and_a_failed_one_keeps_the_old(bundles, tmp_path):
    with client_for(bundles["mlp"]) as reloading:
        old, new = version_of(bundles["mlp"]), version_of(bundles["fasttext"])
        answer = reloading.post("/reload", json={"model": str(bundles["fasttext"])})
        assert answer.status_code == 200, answer.text
        assert answer.json()["previous"] == old and answer.json()["version"] == new
        assert reloading.post("/predict", json={"titles": TITLES}).json()["version"] == new
        assert reloading.get("/model").json()["architecture"] == "fasttext"

        broken = tmp_path / "broken"
        shutil.copytree(bundles["mlp"], broken)
        (broken / "weights.pt").write_bytes(b"not weights")
        for body, field in (({"model": str(broken)}, "weights.pt"),
                            ({"model": str(tmp_path / "none")}, "none"),
                            ({"stage": "prod"}, "stage"), ({"model": 3}, "model"),
                            (["x"], "body")):
            answer = reloading.post("/reload", json=body)
            assert answer.status_code == 422, answer.text
            assert field in answer.json()["error"]
        assert reloading.post("/reload", content=b"{").status_code == 400
        assert reloading.get("/health").json()["version"] == new
        assert reloading.post("/predict", json={"titles": TITLES}).json()["version"] == new
        assert metric(reloading, "meli_reloads_total", outcome="failed") == 2
        assert metric(reloading, "meli_reloads_total", outcome="done") == 1
        # A reload without a body reads the same source again.
        assert reloading.post("/reload").json()["version"] == new


# ---- a real server -------------------------------------------------------------------------------

@dataclass
class Running:
    url: str
    process: subprocess.Popen
    log: Path

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)


@contextmanager
def meli_serve(tmp_path: Path, *arguments: str) -> Iterator[Running]:
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "meli", "serve", *arguments, "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    running = Running(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"meli serve ended: {log.read_text()}"
            try:
                if running.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"never ready: {log.read_text()}"
            time.sleep(0.1)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def reference(directory: Path, titles: list[str], k: int) -> tuple[list, np.ndarray]:
    """(categories, probabilities) of each title, scored by that bundle alone."""
    classifier = load_classifier(directory)
    indices, probabilities, _ = classifier.top_k(titles, k)
    return [[classifier.labels[i] for i in row] for row in indices], probabilities


@pytest.mark.slow
def test_reload_under_load_fails_no_request_and_mixes_no_versions(bundles, tmp_path):
    versions = {version_of(path): path for path in bundles.values()}
    expected = {version: reference(path, TITLES, 3) for version, path in versions.items()}
    with meli_serve(tmp_path, "--model", str(bundles["mlp"])) as server:
        stop = threading.Event()
        answers: list[tuple[int, dict | str]] = []

        def load() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                for _ in range(5_000):  # bounded: a few seconds of traffic at most
                    if stop.is_set():
                        break
                    answer = http.post("/predict", json={"titles": TITLES, "k": 3})
                    answers.append((answer.status_code, answer.json() if answer.status_code
                                    == 200 else answer.text))

        clients = [threading.Thread(target=load) for _ in range(4)]
        for thread in clients:
            thread.start()
        reloads = []
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for target in ("fasttext", "mlp", "fasttext", "mlp"):
                time.sleep(0.3)
                reloads.append(http.post("/reload", json={"model": str(bundles[target])}))
            time.sleep(0.3)
        stop.set()
        for thread in clients:
            thread.join(60)
        metrics = server.get("/metrics").text

    assert [r.status_code for r in reloads] == [200] * 4, [r.text for r in reloads]
    assert answers and all(status == 200 for status, _ in answers), [
        a for a in answers if a[0] != 200][:3]
    seen = {body["version"] for _, body in answers}
    assert seen == set(versions), "both versions answered during the run"
    for _, body in answers:
        categories, probabilities = expected[body["version"]]
        for row, prediction in enumerate(body["predictions"]):
            # Every title of a response scored by the version the response names.
            assert [c["category"] for c in prediction["categories"]] == categories[row]
            assert [c["probability"] for c in prediction["categories"]] == pytest.approx(
                probabilities[row].tolist(), abs=1e-3)
    assert 'meli_reloads_total{outcome="done"} 4.0' in metrics


@pytest.mark.slow
def test_sighup_reloads_the_bundle_directory_in_place(bundles, tmp_path):
    served = tmp_path / "served"
    shutil.copytree(bundles["mlp"], served)
    with meli_serve(tmp_path, "--model", str(served)) as server:
        assert server.get("/health").json()["version"] == version_of(bundles["mlp"])
        staged = tmp_path / "staged"
        shutil.copytree(bundles["fasttext"], staged)
        served.rename(tmp_path / "old")
        staged.rename(served)  # the new version replaces the directory at once
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while server.get("/health").json()["version"] != version_of(bundles["fasttext"]):
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.1)
        answer = httpx.post(server.url + "/predict", json={"titles": TITLES[:1]})
        assert answer.json()["version"] == version_of(bundles["fasttext"])
    assert "reloaded" in server.log.read_text()


@pytest.mark.slow
def test_a_model_that_fails_to_load_stops_start_up_with_one_line(bundles, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundles["mlp"], broken)
    (broken / "weights.pt").write_bytes(b"")
    for bundle, named in ((broken, "weights.pt"), (tmp_path / "missing", "missing")):
        done = subprocess.run([sys.executable, "-m", "meli", "serve", "--model", str(bundle),
                               "--port", str(free_port())], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("meli serve: error:"), done.stderr
        assert named in lines[0]


@pytest.mark.slow
def test_a_taken_port_stops_start_up_with_one_line(bundles):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "meli", "serve", "--model",
                               str(bundles["mlp"]), "--port", str(port)], capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"meli serve: error: 127.0.0.1:{port}: cannot listen there: Address already in use"]


# ---- the page in a browser -----------------------------------------------------------------------

def _browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@pytest.mark.slow
@pytest.mark.skipif(_browser() is None, reason="no chromium and chromedriver installed "
                                               "(apt-get install chromium chromium-driver)")
def test_the_page_shows_categories_as_bars_and_sets_in_a_real_browser(bundles, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    chromium, chromedriver = _browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    version = version_of(bundles["mlp"])
    with meli_serve(tmp_path, "--model", str(bundles["mlp"])) as server:
        expected = httpx.post(server.url + "/predict",
                              json={"titles": TITLES[:2], "k": 2}).json()["predictions"]
        browser = webdriver.Chrome(service=Service(chromedriver), options=options)
        try:
            browser.get(server.url + "/")
            wait = WebDriverWait(browser, 30)
            wait.until(lambda b: b.find_elements(By.CLASS_NAME, "model-version"))
            assert browser.find_element(By.CLASS_NAME, "model-name").text == "mlp"
            assert browser.find_element(By.CLASS_NAME, "model-version").text == version
            browser.find_element(By.ID, "titles").send_keys("\n".join(TITLES[:2]))
            Select(browser.find_element(By.ID, "k")).select_by_visible_text("2")
            browser.find_element(By.ID, "classify").click()
            wait.until(lambda b: len(b.find_elements(By.CLASS_NAME, "prediction")) == 2)
            blocks = browser.find_elements(By.CLASS_NAME, "prediction")
            for block, title, prediction in zip(blocks, TITLES[:2], expected, strict=True):
                assert block.find_element(By.CLASS_NAME, "title").text.startswith(title)
                rows = block.find_elements(By.CLASS_NAME, "row")
                assert len(rows) == 2
                for row, entry in zip(rows, prediction["categories"], strict=True):
                    assert row.find_element(By.CLASS_NAME, "category").text == entry["category"]
                    assert row.find_element(By.CLASS_NAME, "probability").text == (
                        f"{entry['probability'] * 100:.1f}%")
                    bar = row.find_element(By.CLASS_NAME, "bar")
                    track = row.find_element(By.CLASS_NAME, "track")
                    # The bar is as long as the probability, drawn by the browser.
                    assert bar.size["width"] == pytest.approx(
                        track.size["width"] * entry["probability"], abs=2)
            # The bundle's calibration figures, and with its knobs a set of several categories
            # for a title it hesitates on, and a word that it is unsure.
            calibration = httpx.get(server.url + "/model").json()["calibration"]
            assert f"On {calibration['titles']:,} validation titles" in browser.find_element(
                By.ID, "trust").text
            hesitant = TITLES[3]  # no word of it is known: the probabilities are flat
            expected = httpx.post(server.url + "/predict", json={
                "titles": [hesitant], "k": 1, "coverage": 0.99, "min_confidence": 0.9,
            }).json()["predictions"][0]
            assert len(expected["set"]) > 1 and expected["abstain"]
            browser.execute_script("document.getElementById('titles').value = arguments[0]",
                                   hesitant)
            Select(browser.find_element(By.ID, "k")).select_by_visible_text("1")
            Select(browser.find_element(By.ID, "coverage")).select_by_visible_text("99%")
            Select(browser.find_element(By.ID, "min-confidence")).select_by_visible_text("90%")
            previous = browser.find_element(By.CLASS_NAME, "prediction")
            browser.find_element(By.ID, "classify").click()
            # The first results go (they may show sets of their own), the new one comes.
            wait.until(expected_conditions.staleness_of(previous))
            wait.until(lambda b: b.find_elements(By.CLASS_NAME, "set"))
            shown_set = browser.find_element(By.CLASS_NAME, "set")
            assert shown_set.text.startswith("99% sure it is one of:")
            assert [member.text for member in shown_set.find_elements(
                By.CLASS_NAME, "member")] == expected["set"]
            assert browser.find_element(By.CLASS_NAME, "unsure").text.startswith("Unsure: its "
                                                                                "top category")
            if os.environ.get("MELI_SCREENSHOT"):  # to look at the page: a PNG of it
                browser.save_screenshot(os.environ["MELI_SCREENSHOT"])
            # A bad request shows its error instead of results.
            browser.execute_script("document.getElementById('titles').value = arguments[0]",
                                   "x" * 10_001)
            browser.find_element(By.ID, "classify").click()
            wait.until(lambda b: b.find_element(By.ID, "error").text)
            assert "titles[0]" in browser.find_element(By.ID, "error").text
        finally:
            browser.quit()


# ---- a registry version -------------------------------------------------------------------------

@dataclass
class Registry:
    work: Path  # the clone where versions are registered and assigned
    origin: Path  # the bare repository users fetch from


def git(repo: Path, *arguments: str) -> None:
    from dvc_repo import run

    run(repo, "git", *arguments)


@pytest.fixture(scope="module")
def registry(bundles, tmp_path_factory) -> Registry:
    """A Git + DVC repository whose artifact `classifier` has versions v1.0.0 (the MLP, stage
    prod) and v2.0.0 (the fastText bundle), pushed to a bare origin and a local DVC remote."""
    import gto.api
    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("registry")
    work, origin = root / "work", root / "origin.git"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    repo = Repo.init(str(work))
    (work / ".dvc" / "config").write_text(
        f"[core]\n    remote = storage\n    analytics = false\n"
        f"['remote \"storage\"']\n    url = {root / 'storage'}\n")
    (work / "dvc.yaml").write_text("artifacts:\n  classifier:\n    path: models/classifier\n"
                                   "    type: model\n")
    for version, bundle in (("v1.0.0", bundles["mlp"]), ("v2.0.0", bundles["fasttext"])):
        shutil.rmtree(work / "models" / "classifier", ignore_errors=True)
        shutil.copytree(bundle, work / "models" / "classifier")
        repo.add(str(work / "models" / "classifier"))
        repo.push()
        git(work, "add", "-A")
        git(work, "commit", "-qm", f"classifier {version}")
        gto.api.register(str(work), "classifier", "HEAD", version=version)
    gto.api.assign(str(work), "classifier", "prod", version="v1.0.0")
    repo.close()
    git(root, "clone", "-q", "--bare", str(work), str(origin))
    git(work, "remote", "add", "origin", str(origin))
    return Registry(work, origin)


@pytest.mark.slow
def test_a_registry_stage_is_served_and_reloads_when_the_stage_moves(registry, bundles):
    import gto.api

    v1, v2 = version_of(bundles["mlp"]), version_of(bundles["fasttext"])
    source = ModelSource(repository=str(registry.origin), artifact="classifier", stage="prod",
                         device="cpu")
    model = source.load()
    fetched = model.classifier.directory
    with TestClient(create_app(model, source)) as served:
        assert served.get("/health").json()["version"] == f"v1.0.0+{v1}"
        described = served.get("/model").json()
        assert described["name"] == "classifier"
        assert described["source"]["stage"] == "prod" and described["source"]["version"] == (
            "v1.0.0")
        body = served.post("/predict", json={"titles": TITLES}).json()
        assert body["version"] == f"v1.0.0+{v1}"

        # A new version assigned to prod, pushed: a reload serves it.
        gto.api.assign(str(registry.work), "classifier", "prod", version="v2.0.0")
        git(registry.work, "push", "-q", "origin", "--tags")
        answer = served.post("/reload")
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == f"v2.0.0+{v2}"
        assert served.post("/predict", json={"titles": TITLES}).json()["version"] == (
            f"v2.0.0+{v2}")
        assert not fetched.exists()  # the old version's files were removed once swapped out

        assert served.post("/reload", json={"rev": "v1.0.0"}).json()["version"] == (
            f"v1.0.0+{v1}")
        for body, field in (({"stage": "staging"}, "staging"), ({"rev": "v9.9.9"}, "v9.9.9"),
                            ({"model": "models/cnn"}, "model")):
            answer = served.post("/reload", json=body)
            assert answer.status_code == 422 and field in answer.json()["error"], answer.text
        assert served.get("/health").json()["version"] == f"v1.0.0+{v1}"


@pytest.mark.slow
def test_an_artifact_that_cannot_be_fetched_stops_start_up_with_one_line(registry):
    done = subprocess.run([sys.executable, "-m", "meli", "serve", "--artifact",
                           str(registry.origin), "classifier", "--stage", "staging",
                           "--port", str(free_port())], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("meli serve: error:"), done.stderr
    assert "classifier" in lines[0] and "staging" in lines[0]
