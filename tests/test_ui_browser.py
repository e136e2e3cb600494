"""The review web app in a real headless Chromium, against a real uvicorn server on a loopback port.

Needs Debian's `chromium` and `chromium-driver` (or TASKFIT_CHROMIUM / TASKFIT_CHROMEDRIVER pointing at them);
screenshots go to $PYTEST_ARTIFACTS, else tests/artifacts.
"""

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from taskfit.study import run_study
from taskfit.ui.app import create_app

CHROMIUM = os.environ.get("TASKFIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = (
    os.environ.get("TASKFIT_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
)
ARTIFACTS = Path(os.environ.get("PYTEST_ARTIFACTS") or Path(__file__).parent / "artifacts")

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
    reason=f"headless browser tests need {CHROMIUM} and {CHROMEDRIVER} "
    "(apt-get install chromium chromium-driver)",
)


@pytest.fixture
def server(make_task, workspace):
    """uvicorn over a store holding the two-strategy scripted study; yields (base url, {strategy: run})."""
    _, table = run_study(make_task(), workspace=workspace)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(
        uvicorn.Config(create_app(workspace), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", {r.strategy: r.run_id for r in table}
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _shot(driver, name: str) -> None:
    """Save the whole page, not just the viewport (Chrome DevTools' captureBeyondViewport)."""
    import base64

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    w, h = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": w, "height": min(h, 6000), "scale": 1},
        },
    )
    (ARTIFACTS / f"ui-{name}.png").write_bytes(base64.b64decode(shot["data"]))


def _submit_and_wait(driver, button) -> None:
    """Click a form button and wait until the page it redirects to has loaded."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    html = driver.find_element("tag name", "html")
    button.click()

    def old_page_gone(_d) -> bool:
        # mid-navigation Chromium may answer "node does not belong to the document" instead of raising
        # StaleElementReference: both mean the old page is gone
        try:
            html.is_enabled()
            return False
        except WebDriverException:
            return True

    WebDriverWait(driver, 15).until(old_page_gone)
    WebDriverWait(driver, 15).until(lambda d: d.execute_script("return document.readyState") == "complete")


def _count(driver, name: str) -> int:
    return int(driver.find_element("id", f"count-{name}").text)


def test_review_pairwise_and_export_in_chromium(server, browser, workspace):
    base, runs = server
    zs, fs = runs["zero_shot"], runs["few_shot_balanced"]
    by = "css selector"

    # the runs list links to both runs
    browser.get(base + "/")
    links = {a.text: a for a in browser.find_elements(by, "a.run-link")}
    assert set(links) == {zs, fs}
    _shot(browser, "runs")

    # open a run and review three answers: the counts follow each click
    links[zs].click()
    assert browser.find_element("tag name", "h1").text.startswith(f"Run {zs}: zero_shot")
    assert (_count(browser, "correct"), _count(browser, "incorrect"), _count(browser, "unreviewed")) == (
        0,
        0,
        8,
    )
    expected = {"correct": 0, "incorrect": 0}
    for example, verdict in [("r0", "correct"), ("r1", "incorrect"), ("r2", "correct")]:
        row = browser.find_element(by, f'tr[data-example="{example}"]')
        _submit_and_wait(browser, row.find_element(by, f'button[value="{verdict}"]'))
        expected[verdict] += 1
        assert _count(browser, "correct") == expected["correct"]
        assert _count(browser, "incorrect") == expected["incorrect"]
        assert _count(browser, "unreviewed") == 8 - sum(expected.values())
        row = browser.find_element(by, f'tr[data-example="{example}"]')
        assert row.find_element(by, ".pill").text == verdict
    assert "0.667 [" in browser.find_element("id", "human-accuracy").text
    _shot(browser, "run")

    # the trace of one example
    browser.find_element(by, 'tr[data-example="r0"] a').click()
    assert "call 1: score (score)" in browser.find_element("tag name", "main").text
    _shot(browser, "example")

    # the runs list now shows three reviewed answers for that run
    browser.get(base + "/")
    row = browser.find_element(by, f'a.run-link[href="/runs/{zs}"]').find_element("xpath", "./ancestor::tr")
    assert row.find_elements("tag name", "td")[8].text == "3"

    # pairwise: open the diff from the run page, prefer B on the first example whose answers differ
    browser.get(f"{base}/runs/{zs}")
    browser.find_element(by, f'a.diff-link[href="/diff?a={zs}&b={fs}"]').click()
    first = browser.find_element(by, "tr.differ")
    example = first.get_attribute("data-example")
    answer_b = first.find_elements("tag name", "td")[4].find_element("tag name", "a").text
    answer_a = first.find_elements("tag name", "td")[3].find_element("tag name", "a").text
    assert browser.find_element("id", "wins-b").text == "0"
    _submit_and_wait(browser, first.find_element(by, 'button[value="b"]'))
    assert browser.find_element("id", "wins-b").text == "1"
    chosen = browser.find_element(by, f'tr[data-example="{example}"] button.chosen')
    assert chosen.get_attribute("value") == "b"
    _shot(browser, "diff")

    # the review queue: the CI chart for the labelled run, unreviewed items first
    browser.get(base + "/queue")
    assert browser.find_elements("id", "ci-chart")
    assert "after 3" in browser.find_element("id", "ci-narrowing").text
    _shot(browser, "queue")

    # export: the preference pair just chosen, as JSONL
    browser.get(f"{base}/diff?a={zs}&b={fs}")
    browser.find_element("id", "export").click()
    records = [json.loads(line) for line in browser.find_element("tag name", "pre").text.splitlines()]
    pairwise = [r for r in records if r["source"] == "pairwise"]
    assert len(pairwise) == 1
    assert (pairwise[0]["example_id"], pairwise[0]["chosen"], pairwise[0]["rejected"]) == (
        example,
        answer_b,
        answer_a,
    )
    inputs = {
        p.example_id: p.inputs["text"] for p in workspace.runs.predictions(zs, with_trace=False)
    }
    assert (
        pairwise[0]["prompt"] == f"Classify the review.\n\nReview: {inputs[example]}\n\n"
        "Answer with exactly one of: negative, positive."
    )

    # the leaderboard shows the human column next to the metric
    browser.get(base + "/leaderboard")
    assert "0.667 [" in browser.find_element("id", "leaderboard").text
    _shot(browser, "leaderboard")
