"""`POST /explain` of `meli serve`: the figures `meli explain --json` gives, batched, every bad
body a 4xx naming the field, and the page's highlighted words in a real headless browser."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient
from test_serve import (  # noqa: F401 (bundles is a fixture)
    TITLES,
    _browser,
    bundles,
    client_for,
    meli_serve,
    metric,
)

from meli.bundles.explain import explain
from meli.bundles.load import load_classifier
from meli.params import LinearParams
from meli.serve.app import create_app
from meli.serve.explain import MAX_TITLES, ExplainJob, explain_batch
from meli.serve.model import ModelSource


@pytest.fixture(scope="module")
def client(bundles):  # noqa: F811
    with client_for(bundles["mlp"]) as client:
        yield client


@pytest.fixture(scope="module")
def linear_bundle(pipeline, tmp_path_factory) -> Path:
    from meli.stages.linear import train_linear

    root = tmp_path_factory.mktemp("serve-linear")
    train_linear(LinearParams(), pipeline.prepared, root / "linear", root / "live")
    return root / "linear"


def assert_same_explanations(answered: list[dict], expected: list[dict]) -> None:
    assert len(answered) == len(expected)
    for got, want in zip(answered, expected, strict=True):
        assert {key: got[key] for key in ("title", "category", "method", "strongest_for",
                                          "strongest_against")} == {
            key: want[key] for key in ("title", "category", "method", "strongest_for",
                                       "strongest_against")}
        assert [w["word"] for w in got["words"]] == [w["word"] for w in want["words"]]
        assert [w["normalized"] for w in got["words"]] == [w["normalized"] for w in want["words"]]
        assert [w["contribution"] for w in got["words"]] == pytest.approx(
            [w["contribution"] for w in want["words"]], abs=1e-5)
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-6)


def test_explain_answers_what_meli_explain_gives(client, bundles):  # noqa: F811
    classifier = load_classifier(bundles["mlp"])
    answer = client.post("/explain", json={"titles": TITLES})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == "mlp" and body["method"] == "occlusion"
    assert_same_explanations(body["explanations"],
                             [e.as_dict() for e in explain(classifier, TITLES)])
    # The category is each title's most probable, the one /predict puts first.
    predicted = client.post("/predict", json={"titles": TITLES, "k": 1}).json()["predictions"]
    assert [e["category"] for e in body["explanations"]] == [
        p["categories"][0]["category"] for p in predicted]
    # A named category is explained for every title; a /predict body is accepted as it is.
    other = classifier.labels[1]
    named = client.post("/explain", json={"titles": TITLES, "category": other, "k": 3}).json()
    assert {e["category"] for e in named["explanations"]} == {other}
    assert_same_explanations(named["explanations"],
                             [e.as_dict() for e in explain(classifier, TITLES, category=other)])


def test_the_linear_model_is_decomposed_exactly_or_occluded_on_request(linear_bundle):
    with client_for(linear_bundle) as linear:
        exact = linear.post("/explain", json={"titles": TITLES}).json()
        occluded = linear.post("/explain", json={"titles": TITLES,
                                                 "method": "occlusion"}).json()
    assert exact["method"] == "decomposition" and occluded["method"] == "occlusion"
    for entry in exact["explanations"]:
        words = sum(word["contribution"] for word in entry["words"])
        assert entry["intercept"] + words == pytest.approx(entry["score"], abs=1e-4)
    assert_same_explanations(occluded["explanations"], [
        e.as_dict() for e in explain(load_classifier(linear_bundle), TITLES,
                                     method="occlusion")])


def test_requests_that_arrive_together_are_explained_as_one_batch(bundles):  # noqa: F811
    with client_for(bundles["mlp"], batch_wait_ms=100) as batching:
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(
                lambda i: batching.post("/explain", json={"titles": [TITLES[i % 4]] * (1 + i % 3)}),
                range(12)))
        assert all(answer.status_code == 200 for answer in answers)
        for i, answer in enumerate(answers):  # each request gets its own titles back
            assert [e["title"] for e in answer.json()["explanations"]] == [TITLES[i % 4]] * (
                1 + i % 3)
        assert metric(batching, "meli_requests_total", endpoint="explain", status="200") == 12
        # /explain's batches are its own: /predict's batcher saw none of them.
        assert metric(batching, "meli_batch_requests_count") == 0


def test_a_batch_answers_each_request_alone(bundles):  # noqa: F811
    """A request whose category the batch's model does not know (it was reloaded since the
    request was read) gets its 422; the others of its batch their explanations."""
    model = ModelSource(directory=bundles["mlp"], device="cpu").load()
    label = model.labels[2]
    jobs = [ExplainJob(TITLES[:2], None, None), ExplainJob(TITLES[:1], "NOT_A_CATEGORY", None),
            ExplainJob(TITLES[2:], label, "occlusion"),
            ExplainJob(TITLES[:1], None, "decomposition")]
    answers = explain_batch(model, jobs)
    assert [status for status, _ in answers] == [200, 422, 200, 422]
    first, unknown, named, exact = (json.loads(body) for _, body in answers)
    assert [e["title"] for e in first["explanations"]] == TITLES[:2]
    assert "category" in unknown["error"] and "NOT_A_CATEGORY" in unknown["error"]
    assert {e["category"] for e in named["explanations"]} == {label}
    assert exact["error"].startswith("method:")
    assert np.isfinite([w["contribution"] for e in first["explanations"]
                        for w in e["words"]]).all()


BAD_BODIES = [
    # (what is sent, expected status, a word the error must contain)
    (b'{"titles": ["a"', 400, "JSON"),
    (b"", 400, "body"),
    (b'\xff\xfe{"titles": ["zapatillas"]}', 400, "UTF-8"),
    (b'["zapatillas"]', 422, "body"),
    (b"{}", 422, "titles"),
    (b'{"title": ["zapatillas"]}', 422, "title"),
    (b'{"titles": "zapatillas"}', 422, "titles"),
    (b'{"titles": []}', 422, "titles"),
    (b'{"titles": ["ok", 42]}', 422, "titles[1]"),
    (b'{"titles": ["   "]}', 422, "titles[0]"),
    (json.dumps({"titles": ["zapatilla " * 1_001]}).encode(), 422, "titles[0]"),
    (json.dumps({"titles": ["ok " * 65]}).encode(), 422, "titles[0]"),
    (json.dumps({"titles": ["ok"] * (MAX_TITLES + 1)}).encode(), 422, "titles"),
    (b'{"titles": ["ok"], "category": 3}', 422, "category"),
    (b'{"titles": ["ok"], "category": "NOT_A_CATEGORY"}', 422, "category"),
    (b'{"titles": ["ok"], "method": "lime"}', 422, "method"),
    (b'{"titles": ["ok"], "method": "decomposition"}', 422, "method"),  # an MLP
    (b'{"titles": ["ok"], "k": 0}', 422, "k"),
    (json.dumps({"titles": ["a b c " * 10] * 1000}).encode() * 20, 413, "body"),
]


@pytest.mark.parametrize("body, status, field", BAD_BODIES,
                         ids=[f"{i}-{s}-{f}" for i, (_, s, f) in enumerate(BAD_BODIES)])
def test_bad_bodies_are_a_4xx_json_error_naming_the_field(client, body, status, field):
    answer = client.post("/explain", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert field in answer.json()["error"]
    assert client.post("/explain", json={"titles": TITLES[:1]}).status_code == 200


def test_explain_waits_for_the_model_and_is_listed_among_the_endpoints(client):
    with TestClient(create_app(None)) as loading:
        answer = loading.post("/explain", json={"titles": ["zapatillas"]})
        assert answer.status_code == 503 and "model" in answer.json()["error"]
    assert "/explain" in client.get("/nowhere").json()["error"]
    assert client.get("/explain").status_code == 405


@pytest.mark.slow
@pytest.mark.skipif(_browser() is None, reason="no chromium and chromedriver installed "
                                               "(apt-get install chromium chromium-driver)")
def test_the_page_highlights_the_words_for_and_against_in_a_real_browser(
        bundles, tmp_path):  # noqa: F811
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, chromedriver = _browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    titles = TITLES[:3]
    with meli_serve(tmp_path, "--model", str(bundles["mlp"])) as server:
        expected = httpx.post(server.url + "/explain", json={"titles": titles},
                              timeout=30).json()["explanations"]
        browser = webdriver.Chrome(service=Service(chromedriver), options=options)
        try:
            browser.get(server.url + "/")
            wait = WebDriverWait(browser, 30)
            wait.until(lambda b: b.find_elements(By.CLASS_NAME, "model-version"))
            browser.find_element(By.ID, "titles").send_keys("\n".join(titles))
            browser.find_element(By.ID, "classify").click()
            wait.until(lambda b: len(b.find_elements(By.CLASS_NAME, "why")) == len(titles))
            blocks = browser.find_elements(By.CLASS_NAME, "prediction")
            for block, title, explanation in zip(blocks, titles, expected, strict=True):
                # The title reads as typed, each word a highlight of its own.
                assert block.find_element(By.CLASS_NAME, "title").text.startswith(title)
                words = block.find_elements(By.CLASS_NAME, "word")
                assert [w.text for w in words] == [e["word"] for e in explanation["words"]]
                for word, entry in zip(words, explanation["words"], strict=True):
                    classes = word.get_attribute("class").split()
                    side = ("toward" if entry["contribution"] > 0 else
                            "away" if entry["contribution"] < 0 else None)
                    assert (side in classes) if side else classes == ["word"]
                    assert float(word.get_attribute("data-contribution")) == pytest.approx(
                        entry["contribution"], abs=1e-9)
                    if side:  # drawn by the browser: green toward, red away
                        color = word.value_of_css_property("background-color")
                        red, green = (int(part) for part in
                                      color.split("(")[1].split(",")[:2])
                        assert (green > red) if side == "toward" else (red > green), color
                # The strongest word for the category has the deepest highlight.
                strengths = [float(browser.execute_script(
                    "return arguments[0].style.getPropertyValue('--strength')", w))
                    for w in words]
                if explanation["strongest_for"] is not None:
                    strongest = [e["word"] for e in explanation["words"]].index(
                        explanation["strongest_for"])
                    assert strengths[strongest] == max(
                        s for s, e in zip(strengths, explanation["words"], strict=True)
                        if e["contribution"] > 0)
                why = block.find_element(By.CLASS_NAME, "why")
                assert why.get_attribute("data-method") == "occlusion"
                assert explanation["category"] in why.text and "occlusion" in why.text
            if os.environ.get("MELI_SCREENSHOT"):  # to look at the page: a PNG of it
                browser.save_screenshot(os.environ["MELI_SCREENSHOT"])
        finally:
            browser.quit()
