"""End to end in headless Chromium: ``sarbridge serve`` in a subprocess, the page driven by Selenium.

Marked ``ui`` (not part of ``make test``; ``make test-ui`` runs it). Without Debian's chromium and
chromium-driver the tests skip, unless ``SARBRIDGE_UI_REQUIRED`` is set (``make test-ui`` sets it),
in which case they fail.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytestmark = pytest.mark.ui

CHROMIUM = os.environ.get("SARBRIDGE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SARBRIDGE_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT_S = 60


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() and os.access(p, os.X_OK))]
    if importlib.util.find_spec("selenium") is None:
        missing.append("the selenium package")
    if missing:
        reason = f"{', '.join(missing)} not available; run 'make setup-ui' (Debian chromium + chromium-driver)"
        if os.environ.get("SARBRIDGE_UI_REQUIRED"):
            pytest.fail(f"SARBRIDGE_UI_REQUIRED is set but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def browser_available() -> None:
    """Skip (or fail) before the indexes are built when the browser is missing."""
    _require_browser()


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1400",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    # an explicit driver path: Selenium Manager never downloads anything
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(WAIT_S)
    try:
        yield drv
    finally:
        drv.quit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(index: Path, log: Path, *extra: str) -> Iterator[str]:
    """Run ``sarbridge serve`` on a free port until the test module ends; yields its URL."""
    port = _free_port()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "sarbridge.app.cli", "serve", "--index", str(index), "--port",
                                 str(port), "--device", "cpu", *extra], stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sarbridge serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"sarbridge serve did not answer within {WAIT_S} s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        assert f"at {url}" in log.read_text()  # the command prints its URL
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def reid_url(reid_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(reid_index, tmp_path_factory.mktemp("serve_log") / "reid.log", "--top-k", "4")


@pytest.fixture(scope="module")
def geo_url(geo_setup: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(geo_setup[1], tmp_path_factory.mktemp("serve_log") / "geo.log", "--top-k", "5")


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition, message=f"timed out waiting for {what}")


def _submit(driver, path: Path, modality: str | None = None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    file_input = driver.find_element(By.ID, "file")
    file_input.clear()
    file_input.send_keys(str(path))
    if modality is not None:
        Select(driver.find_element(By.ID, "modality")).select_by_value(modality)
    driver.find_element(By.ID, "submit").click()


def _results_for(driver, name: str, count: int) -> list:
    """Wait until the page shows the results of query ``name`` with ``count`` loaded thumbnails."""
    from selenium.webdriver.common.by import By

    def ready(d):
        if d.find_element(By.ID, "query-name").text.split(" (")[0] != name:
            return False
        figs = d.find_elements(By.CSS_SELECTOR, "#matches figure.match")
        loaded = d.execute_script(
            "return [...document.querySelectorAll('#matches img')].filter(i => i.complete && i.naturalWidth > 0).length")
        shown = d.find_element(By.ID, "results").is_displayed()
        return figs if shown and len(figs) == count and loaded == count else False

    return _wait(driver, ready, f"{count} matches of {name}")


def _error_text(driver) -> str:
    from selenium.webdriver.common.by import By

    def shown(d):
        e = d.find_element(By.ID, "error")
        return e.text if e.is_displayed() and e.text else False

    return _wait(driver, shown, "the error message")


def test_reid_page_search_errors_and_recovery(driver, reid_url: str, reid_index: Path, tmp_path: Path) -> None:
    import json

    from selenium.webdriver.common.by import By

    items = json.loads((reid_index / "metadata.json").read_text())
    sar = next(Path(m["path"]) for m in items if m["modality"] == "sar")
    driver.get(reid_url)
    assert "Re-ID gallery index" in driver.find_element(By.ID, "meta").text
    assert driver.find_element(By.ID, "k").get_attribute("value") == "4"

    _submit(driver, sar, "sar")
    figs = _results_for(driver, sar.name, 4)
    scores = [f.find_element(By.CSS_SELECTOR, ".score").text for f in figs]
    assert all(s.startswith("cosine ") for s in scores)  # re-ID: cosine of the centred embeddings
    values = [float(s.split()[1]) for s in scores]
    assert values == sorted(values, reverse=True) and values[0] == pytest.approx(1.0, abs=1e-3)
    assert sar.name in figs[0].text  # the chip itself is the first match
    preview = driver.find_element(By.ID, "query-preview")
    assert preview.get_attribute("src").startswith("data:image/png") and preview.get_property("naturalWidth") > 0
    assert not driver.find_element(By.ID, "error").is_displayed()
    driver.save_screenshot(str(tmp_path / "reid.png"))

    # a text file renamed .tif: the server's message is shown, nothing else changes
    fake = tmp_path / "notes.tif"
    fake.write_text("not an image\n" * 20)
    _submit(driver, fake)
    msg = _error_text(driver)
    assert "'notes.tif' is not an image" in msg and "fix:" in msg
    assert not driver.find_element(By.ID, "results").is_displayed()  # the old results are not left standing
    # a 5-band chip: refused with the band rule
    five = tmp_path / "five.tif"
    tifffile.imwrite(five, np.ones((20, 20, 5), np.uint8), photometric="minisblack", planarconfig="contig")
    _submit(driver, five, "optical")
    _wait(driver, lambda d: "5 bands" in d.find_element(By.ID, "error").text, "the band-count message")
    driver.save_screenshot(str(tmp_path / "reid_error.png"))

    # a good upload afterwards works and clears the message
    opt = next(Path(m["path"]) for m in items if m["modality"] == "optical")
    _submit(driver, opt, "optical")
    figs = _results_for(driver, opt.name, 4)
    assert not driver.find_element(By.ID, "error").is_displayed()
    assert opt.name in figs[0].text


def test_geo_page_draws_marker_and_error_circle(driver, geo_url: str, geo_setup: tuple[Path, Path], crop_sar,
                                                tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    scene, _ = geo_setup
    query = crop_sar(scene, tmp_path / "patch.tif", 96, 32)
    driver.get(geo_url)
    assert "Geo map index" in driver.find_element(By.ID, "meta").text
    modality = driver.find_element(By.ID, "modality")
    assert not modality.is_enabled() and modality.get_attribute("value") == "sar"
    _submit(driver, query)
    figs = _results_for(driver, "patch.tif", 5)
    assert all(f.find_element(By.CSS_SELECTOR, ".score").text.startswith("score ") for f in figs)
    _wait(driver, lambda d: d.execute_script("const m = document.getElementById('map');"
                                             "return m.complete && m.naturalWidth === 192;"), "the map image")
    circle = driver.find_element(By.ID, "error-circle")
    text = driver.find_element(By.ID, "estimate").text
    if "registered in the map" in text:  # validation chose registration: one map pixel (0.5 m = 1 px)
        assert float(circle.get_attribute("r")) == pytest.approx(1.0)
    else:  # the retrieval radius: >= half a 16 m patch = 8 m = 16 px of 0.5 m
        assert float(circle.get_attribute("r")) >= 16.0
    cx, cy = float(circle.get_attribute("cx")), float(circle.get_attribute("cy"))
    assert 0 <= cx <= 192 and 0 <= cy <= 192
    assert len(driver.find_elements(By.CSS_SELECTOR, "#marker line")) == 2
    assert len(driver.find_elements(By.CSS_SELECTOR, "#overlay circle.candidate")) == 5
    assert circle.is_displayed() and circle.size["width"] > 0  # rendered on the page, not just in the DOM
    text = driver.find_element(By.ID, "estimate").text
    assert "error radius" in text and "lon " in text and "from the query's own georeference" in text
    driver.save_screenshot(str(tmp_path / "geo.png"))
    shutil.copy(tmp_path / "geo.png", tmp_path / "geo_copy.png")
    assert (tmp_path / "geo_copy.png").stat().st_size > 10_000
