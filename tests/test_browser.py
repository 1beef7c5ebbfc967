"""What users see in a browser, checked in a real headless Chromium (tests/browser.py installs it
with apt when missing): the MLflow UI over a 2-row x 2-seed tiny ablation (the training-runs table
with the child runs grouped by row and the metric columns; the parent's report), and the demo page
(moments on the timeline of a test video; a bad upload's one-line error). Screenshots (PNG) go to
runs/screenshots/ (VDI_SCREENSHOTS overrides); the README's come from here."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from app_helpers import VIDEO_SECONDS, tiny_world
from browser import chrome, free_port, screenshot, stop, wait_for, wait_for_http, which_mlflow
from helpers import write_toy_dataset
from test_sweeps import fixed, sweep

PROJECT = Path(__file__).resolve().parents[1]
ROWS = ["Baseline", "L^vc + L^sd"]

pytestmark = pytest.mark.integration


def body_text(driver) -> str:
    return driver.find_element("tag name", "body").text


def text_with(text: str, part: str) -> str | None:
    return text if part in text else None


@pytest.fixture(scope="module")
def ablation_store(tmp_path_factory):
    """runs of `lambda_sweep.py --ablation --rows Baseline "L^vc + L^sd" --seeds 2` on the tiny preset."""
    storage = tmp_path_factory.mktemp("ablation_store")
    shards = write_toy_dataset(storage / "shards", 24, per_shard=12, seed=31)
    arguments = ["--name", "review", "--ablation", "--rows", *ROWS, "--seeds", "2", "--max-concurrent", "2"]
    result = sweep(
        [*arguments, "--num-cpus", "2", *fixed(shards)],
        storage,
        timeout=1500,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return storage


def test_mlflow_ui_reviews_an_ablation(ablation_store):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{ablation_store / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("review")
    parent_id = (ablation_store / "review" / "parent_run_id").read_text().strip()
    names = {run.data.tags["mlflow.runName"] for run in client.search_runs([experiment.experiment_id])}
    assert names == {"review", *(f"{row} / seed {seed}" for row in ROWS for seed in (0, 1))}
    port = free_port()
    server = subprocess.Popen(
        [
            *which_mlflow(sys.executable),
            "server",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    driver = None
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", server)
        driver = chrome(width=2300, height=760)  # wide enough for every metric column
        runs_url = (
            f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs"
            "?viewStateShareKey=vdi-review&workflowType=machine_learning"
        )
        driver.get(runs_url)
        # the training runs: every child under its row's group, with the best-epoch metric columns
        wait_for(driver, lambda d: "Baseline / seed 1" in body_text(d), what="the child runs")
        text = wait_for(driver, lambda d: text_with(body_text(d), "best/test/R1_iou0.5"), what="columns")
        for row in ROWS:
            assert f"{row} / seed 0" in text and f"{row} / seed 1" in text
        assert "Group: Baseline" in text and "Group by: ablation_row" in text
        assert "best/test/gain_R1_iou0.5" in text and "best/test/mIoU" in text
        assert "GenAI" in text and "Traces" in text  # the page chrome, i.e. this is the real UI
        assert "toy/train" in text  # each run's dataset input
        screenshot(driver, "mlflow_runs.png")
        # the parent's report: its Markdown table rendered among the run's artifacts
        driver.get(
            f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs/{parent_id}/artifacts/report.md"
        )
        report = wait_for(driver, lambda d: text_with(body_text(d), "Sweep report: review"), what="the report")
        assert "Δ R1@0.5 vs Baseline [95% CI]" in report and "L^vc + L^sd" in report
        assert "| Method |" not in report  # rendered as a table, not shown as Markdown source
        screenshot(driver, "mlflow_report.png")
    finally:
        if driver is not None:
            driver.quit()
        stop(server)


def test_demo_page_answers_a_sentence_and_names_a_bad_upload(tmp_path):
    from selenium.webdriver.common.by import By

    checkpoint = tiny_world(tmp_path)
    port = free_port()
    log = open(tmp_path / "app.log", "w")  # noqa: SIM115 (the server writes it until it is stopped)
    app = subprocess.Popen(
        [sys.executable, "-m", "vdi.app", "--checkpoint", str(checkpoint), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=PROJECT,
        start_new_session=True,
    )
    driver = None
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", app)
        driver = chrome(width=1400, height=1000)
        driver.get(f"http://127.0.0.1:{port}/")
        wait_for(driver, lambda d: d.find_element(By.ID, "vdi-find"), what="the page")
        driver.find_element(By.CSS_SELECTOR, "#vdi-find").click()
        bars = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".vdi-bar"), what="the moments")
        duration = VIDEO_SECONDS["test_0000"]  # the first test video is chosen by default
        spans = [(float(b.get_attribute("data-start")), float(b.get_attribute("data-end"))) for b in bars]
        assert len(spans) == 2 * 3  # its two annotated sentences, three moments each
        assert all(0.0 <= start < end <= duration + 1e-6 for start, end in spans)
        assert "Qs: the red circle" in body_text(driver).replace("\n", " ")
        # clicking a moment seeks the video to its start
        best = max(bars, key=lambda b: float(b.get_attribute("data-start")))
        driver.execute_script("arguments[0].click();", best)
        start = float(best.get_attribute("data-start"))
        position = wait_for(
            driver,
            lambda d: d.execute_script("const v = document.querySelector('#vdi-answer video'); return v.currentTime;"),
            what="the video's seek",
        )
        assert position >= start - 0.05
        screenshot(driver, "app_moments.png")
        # an undecodable upload: the page says so in one line
        bad = tmp_path / "holiday.mp4"
        bad.write_bytes(b"not a video at all " * 200)
        driver.find_element(By.CSS_SELECTOR, "#vdi-upload input[type=file]").send_keys(str(bad))
        wait_for(driver, lambda d: "holiday" in body_text(d), what="the uploaded file")
        time.sleep(1.0)
        driver.find_element(By.CSS_SELECTOR, "#vdi-find").click()
        error = wait_for(
            driver,
            lambda d: text_with(d.find_element(By.ID, "vdi-error").text, "cannot be decoded"),
            what="the upload's error",
        )
        assert error.startswith("Error: holiday.mp4 cannot be decoded as a video") and "\n" not in error.strip()
        assert "Traceback" not in body_text(driver)
        screenshot(driver, "app_error.png")
    finally:
        if driver is not None:
            driver.quit()
        stop(app)
        log.close()
