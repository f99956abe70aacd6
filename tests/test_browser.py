"""The page at / in a real headless Chromium, against a real server: controls in, drawings out.

Needs Debian's `chromium` and `chromium-driver` (scripts/install-test-deps.sh installs them).
A screenshot is written to test-artifacts/.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.api_support import ServerProcess

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.skipif(
        not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
        reason="chromium and chromedriver are not installed (run scripts/install-test-deps.sh)",
    ),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def server(api_checkpoint: Path) -> Iterator[ServerProcess]:
    with ServerProcess(api_checkpoint, env={"MOLGAN_MAX_MOLECULES": "64"}) as running:
        yield running


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
             "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'profile'}")
    for flag in flags:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def drawings_loaded(driver: webdriver.Chrome, count: int) -> bool:
    """``count`` cards, and every drawing among them fully loaded as an image."""
    return bool(driver.execute_script(
        """
        const cards = document.querySelectorAll('#grid .card');
        const images = document.querySelectorAll('#grid .card img');
        return cards.length === arguments[0] && images.length > 0 &&
               [...images].every((img) => img.complete && img.naturalWidth > 0);
        """,
        count,
    ))


def test_page_generates_molecules_and_draws_them(server: ServerProcess, browser: webdriver.Chrome) -> None:
    wait = WebDriverWait(browser, 30)
    browser.get(server.url + "/")
    wait.until(lambda d: "step" in d.find_element(By.ID, "model").text)
    assert browser.find_element(By.ID, "n").get_attribute("max") == "64"  # the server's limit

    for field, value in (("n", "12"), ("seed", "7")):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: drawings_loaded(d, 12))

    status = browser.find_element(By.ID, "status").text
    assert "12 molecules" in status and "seed 7" in status
    cards = browser.find_elements(By.CSS_SELECTOR, "#grid .card")
    shown = [c.get_attribute("data-smiles") for c in cards]
    # The same request through the API: the page shows exactly these molecules, in order.
    expected = httpx.post(server.url + "/v1/generate", timeout=30, json={
        "n": 12, "seed": 7, "valid_only": True, "unique": False, "properties": True,
    }).json()["molecules"]
    assert shown == [m["smiles"] for m in expected]
    first = cards[0]
    assert first.find_element(By.CSS_SELECTOR, ".smiles").text == expected[0]["smiles"]
    assert f"{expected[0]['qed']:.3f}" in first.find_element(By.CSS_SELECTOR, "dl.props").text
    image = first.find_element(By.TAG_NAME, "img")
    assert "v1/depict" in image.get_attribute("src")
    assert image.get_attribute("alt") == expected[0]["smiles"]

    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "browser-index.png"))

    # A temperature samples instead of taking the most likely graphs; new molecules replace the old.
    browser.find_element(By.ID, "temperature").send_keys("0.7")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: "temperature 0.7" in d.find_element(By.ID, "status").text)
    wait.until(lambda d: drawings_loaded(d, 12))
    assert "seed 7" in browser.find_element(By.ID, "status").text
    assert browser.save_screenshot(str(ARTIFACTS / "browser-index-temperature.png"))


def test_page_reports_errors_from_the_api(server: ServerProcess, browser: webdriver.Chrome) -> None:
    browser.get(server.url + "/")
    n = browser.find_element(By.ID, "n")
    browser.execute_script("arguments[0].removeAttribute('max')", n)  # past the browser's own check
    n.clear()
    n.send_keys("65")
    browser.find_element(By.ID, "generate").click()
    WebDriverWait(browser, 30).until(
        lambda d: "error" in d.find_element(By.ID, "status").get_attribute("class")
    )
    status = browser.find_element(By.ID, "status").text
    assert "422" in status and "n:" in status and "64" in status
