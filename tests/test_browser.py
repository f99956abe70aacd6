"""The pages in a real headless Chromium, against a real server of two models: the molecule grid
at /, its model selector, its downloads, and the API documentation at /docs; and against a server
of a conditional model beside an unconditional one, the sliders of the conditions.

Needs Debian's `chromium` and `chromium-driver` (scripts/install-test-deps.sh installs them).
Screenshots are written to test-artifacts/.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rdkit import Chem
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from molgan.config import load_config
from tests.api_support import ServerProcess, write_template_checkpoint
from tests.conftest import DEBUG_CONFIG
from tests.test_api_conditions import conditional_template

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
def server(api_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``debug`` (the default: it comes first) and ``branch``, a second model with evaluation
    figures beside it."""
    branch = write_template_checkpoint(
        load_config(DEBUG_CONFIG), tmp_path_factory.mktemp("browser") / "branch.safetensors", seed=5
    )
    branch.with_name("branch.eval.json").write_text(json.dumps({"validity": 0.5, "fcd": 12.25}))
    env = {"MOLGAN_MAX_MOLECULES": "64", "MOLGAN_MODELS": f"{api_checkpoint},{branch}"}
    with ServerProcess(None, env=env) as running:
        yield running


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    """Where the browser saves downloaded files."""
    path = tmp_path / "downloads"
    path.mkdir()
    return path


@pytest.fixture
def browser(tmp_path: Path, downloads: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False,
    })
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


def grid_smiles(driver: webdriver.Chrome) -> list[str | None]:
    """The SMILES of the cards in the grid, in order."""
    return [c.get_attribute("data-smiles") for c in driver.find_elements(By.CSS_SELECTOR, "#grid .card")]


def open_page(browser: webdriver.Chrome, url: str) -> None:
    """Open the page and wait for the grid it shows without being asked: 24 molecules."""
    browser.get(url + "/")
    WebDriverWait(browser, 30).until(lambda d: drawings_loaded(d, 24))


def test_page_shows_molecules_as_soon_as_it_opens(server: ServerProcess, browser: webdriver.Chrome) -> None:
    open_page(browser, server.url)  # no click
    assert browser.find_element(By.ID, "figures").text.startswith("debug · step 0")
    status = browser.find_element(By.ID, "status").text
    assert "24 molecules" in status
    seed = int(browser.find_element(By.ID, "grid").get_attribute("data-seed"))
    assert f"seed {seed}" in status
    shown = grid_smiles(browser)
    # The page asked with its form's defaults; the same request with that seed gives the same grid.
    expected = httpx.post(server.url + "/v1/generate", timeout=30, json={
        "n": 24, "seed": seed, "valid_only": True, "unique": False, "properties": True,
    }).json()["molecules"]
    assert shown == [m["smiles"] for m in expected]
    assert browser.find_element(By.ID, "download-csv").is_enabled()
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "browser-index-opened.png"))


def test_page_generates_molecules_and_draws_them(server: ServerProcess, browser: webdriver.Chrome) -> None:
    wait = WebDriverWait(browser, 30)
    open_page(browser, server.url)
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


def test_model_selector_shows_the_chosen_models_figures_and_molecules(
    server: ServerProcess, browser: webdriver.Chrome
) -> None:
    open_page(browser, server.url)
    selector = Select(browser.find_element(By.ID, "model"))
    assert [o.text for o in selector.options] == ["debug", "branch"]
    assert selector.first_selected_option.text == "debug"  # the server's default
    debug_grid = grid_smiles(browser)
    seed = browser.find_element(By.ID, "seed")
    seed.send_keys("5")

    selector.select_by_visible_text("branch")  # a new grid without a click
    figures = browser.find_element(By.ID, "figures")
    WebDriverWait(browser, 30).until(lambda d: figures.text.startswith("branch"))
    assert "validity 50.0%" in figures.text and "FCD 12.25" in figures.text
    assert "up to 9 atoms" in figures.text
    WebDriverWait(browser, 30).until(lambda d: "seed 5" in d.find_element(By.ID, "status").text)
    WebDriverWait(browser, 30).until(lambda d: drawings_loaded(d, 24))
    shown = grid_smiles(browser)
    expected = httpx.post(server.url + "/v1/generate", timeout=30, json={
        "model": "branch", "n": 24, "seed": 5, "valid_only": True, "unique": False, "properties": True,
    }).json()["molecules"]
    assert shown == [m["smiles"] for m in expected]
    assert shown != debug_grid
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "browser-index-model.png"))

    selector.select_by_visible_text("debug")  # and back: the debug model has no figures
    WebDriverWait(browser, 30).until(lambda d: figures.text.startswith("debug"))
    assert "validity" not in figures.text


def downloaded(folder: Path, name: str) -> str:
    """The text of ``folder/name`` once the browser has finished writing it."""
    deadline = time.monotonic() + 30
    path = folder / name
    while time.monotonic() < deadline:
        if path.is_file() and not list(folder.glob("*.crdownload")):
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{name} not downloaded; the folder has {sorted(folder.iterdir())}")


def test_page_downloads_the_shown_molecules_as_csv_and_sdf(
    server: ServerProcess, browser: webdriver.Chrome, downloads: Path
) -> None:
    # At temperature 1 some graphs do not sanitize: a seed whose 24 samples mix both, so that the
    # files must tell them apart (a random seed may draw none valid).
    seed = next(s for s in range(100) if 0 < sum(m["valid"] for m in httpx.post(
        server.url + "/v1/generate", timeout=30,
        json={"n": 24, "seed": s, "temperature": 1.0, "valid_only": False},
    ).json()["molecules"]) < 24)
    open_page(browser, server.url)
    browser.find_element(By.ID, "temperature").send_keys("1.0")
    browser.find_element(By.ID, "seed").send_keys(str(seed))
    browser.find_element(By.ID, "valid_only").click()
    browser.find_element(By.ID, "generate").click()
    asked = f"seed {seed} · temperature 1"
    WebDriverWait(browser, 30).until(lambda d: asked in d.find_element(By.ID, "status").text)
    cards = browser.find_elements(By.CSS_SELECTOR, "#grid .card")
    shown = [c.get_attribute("data-smiles") for c in cards if c.get_attribute("data-smiles")]
    valid = [c.get_attribute("data-smiles") for c in cards
             if c.find_elements(By.CSS_SELECTOR, ".badge.valid")]
    assert 0 < len(valid) < len(shown)

    browser.find_element(By.ID, "download-csv").click()
    rows = list(csv.DictReader(io.StringIO(downloaded(downloads, "molecules.csv"))))
    assert [r["smiles"] for r in rows] == shown
    assert [r["smiles"] for r in rows if r["valid"] == "True"] == valid

    browser.find_element(By.ID, "download-sdf").click()
    sdf = downloaded(downloads, "molecules.sdf")
    molecules = list(Chem.ForwardSDMolSupplier(io.BytesIO(sdf.encode())))
    assert [m.GetProp("_Name") for m in molecules] == valid
    assert all(m.GetNumConformers() == 1 and not m.GetConformer().Is3D() for m in molecules)
    assert "error" not in browser.find_element(By.ID, "status").get_attribute("class")


def test_docs_list_the_operations_from_local_files(server: ServerProcess, browser: webdriver.Chrome) -> None:
    browser.get(server.url + "/docs")
    WebDriverWait(browser, 30).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")) >= 7
    )
    # Swagger UI puts zero-width spaces into long paths so that they can wrap.
    operations = browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    paths = {e.text.replace("\u200b", "") for e in operations}
    assert paths == {"/v1/generate", "/v1/export", "/v1/depict", "/v1/model", "/v1/models", "/health",
                     "/ready", "/metrics"}
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name);")
    assert any(url.endswith("/docs-assets/swagger-ui-bundle.js") for url in loaded)
    assert all(url.startswith(server.url + "/") for url in loaded), loaded  # nothing from elsewhere
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "browser-docs.png"))


def test_page_reports_errors_from_the_api(server: ServerProcess, browser: webdriver.Chrome) -> None:
    open_page(browser, server.url)
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


@pytest.fixture(scope="module")
def conditional_server(
    api_checkpoint: Path, conditional_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``cond`` (the default: it comes first), conditioned on logP and QED, and ``debug``."""
    cond = conditional_template(tmp_path_factory.mktemp("browser-conditional") / "cond.safetensors",
                                conditional_run / "last.safetensors")
    env = {"MOLGAN_MAX_MOLECULES": "64", "MOLGAN_MODELS": f"{cond},{api_checkpoint}"}
    with ServerProcess(None, env=env) as running:
        yield running


def slider_values(driver: webdriver.Chrome) -> dict[str, float]:
    """The targets the page sends: the ticked sliders' values, by property."""
    return {
        row.get_attribute("data-name"): float(row.find_element(By.CSS_SELECTOR, "input[type=range]")
                                              .get_attribute("value"))
        for row in driver.find_elements(By.CSS_SELECTOR, "#conditions .condition")
        if row.find_element(By.CSS_SELECTOR, "input[type=checkbox]").is_selected()
    }


def test_conditional_model_has_a_slider_per_condition(
    conditional_server: ServerProcess, browser: webdriver.Chrome
) -> None:
    url = conditional_server.url
    conditions = httpx.get(url + "/v1/models", timeout=30).json()["models"][0]["conditions"]
    open_page(browser, url)  # the first grid already asks for the medians
    assert "conditioned on logP and QED" in browser.find_element(By.ID, "figures").text
    assert browser.find_element(By.ID, "conditions").is_displayed()
    sliders = browser.find_elements(By.CSS_SELECTOR, "#conditions input[type=range]")
    assert [s.get_attribute("id") for s in sliders] == ["target-logp", "target-qed"]
    for slider, c in zip(sliders, conditions, strict=True):
        low, high = float(slider.get_attribute("min")), float(slider.get_attribute("max"))
        assert c["low"] <= low < float(slider.get_attribute("value")) < high <= c["high"]
        assert float(slider.get_attribute("value")) == pytest.approx(c["percentiles"]["50"], abs=0.005)
    targets = slider_values(browser)
    assert list(targets) == ["logp", "qed"]
    seed = int(browser.find_element(By.ID, "grid").get_attribute("data-seed"))
    expected = httpx.post(url + "/v1/generate", timeout=30, json={
        "n": 24, "seed": seed, "valid_only": True, "unique": False, "properties": True, "targets": targets,
    }).json()["molecules"]
    assert grid_smiles(browser) == [m["smiles"] for m in expected]
    first = browser.find_element(By.CSS_SELECTOR, "#grid .card .achieved")
    assert first.text == f"logP {expected[0]['logp']:.2f} · QED {expected[0]['qed']:.2f}"

    # QED left to the model, logP moved up by twenty steps of 0.01.
    browser.find_element(By.ID, "target-qed-set").click()
    assert browser.find_element(By.ID, "target-qed-value").text == "any"
    assert not browser.find_element(By.ID, "target-qed").is_enabled()
    logp = browser.find_element(By.ID, "target-logp")
    before = float(logp.get_attribute("value"))
    logp.send_keys(Keys.ARROW_RIGHT * 20)
    targets = slider_values(browser)
    assert list(targets) == ["logp"] and targets["logp"] == pytest.approx(before + 0.2)
    assert browser.find_element(By.ID, "target-logp-value").text == f"{targets['logp']:.2f}"
    for field, value in (("n", "12"), ("seed", "9")):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.ID, "generate").click()
    grid = browser.find_element(By.ID, "grid")
    WebDriverWait(browser, 30).until(lambda d: grid.get_attribute("data-seed") == "9")
    WebDriverWait(browser, 30).until(lambda d: drawings_loaded(d, 12))
    assert f"targets logP {targets['logp']:g}" in browser.find_element(By.ID, "status").text
    expected = httpx.post(url + "/v1/generate", timeout=30, json={
        "model": "cond", "n": 12, "seed": 9, "valid_only": True, "unique": False, "properties": True,
        "targets": targets,
    }).json()["molecules"]
    assert grid_smiles(browser) == [m["smiles"] for m in expected]
    achieved = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#grid .card .achieved")]
    assert achieved == [f"logP {m['logp']:.2f} · QED {m['qed']:.2f}" for m in expected]
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "browser-index-conditions.png"))

    # An unconditional model: no sliders, no targets, no achieved values.
    Select(browser.find_element(By.ID, "model")).select_by_visible_text("debug")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "figures").text.startswith("debug"))
    assert not browser.find_element(By.ID, "conditions").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#conditions input[type=range]") == []
    WebDriverWait(browser, 30).until(lambda d: drawings_loaded(d, 12))
    expected = httpx.post(url + "/v1/generate", timeout=30, json={
        "model": "debug", "n": 12, "seed": 9, "valid_only": True, "unique": False, "properties": True,
    }).json()["molecules"]
    WebDriverWait(browser, 30).until(lambda d: grid_smiles(d) == [m["smiles"] for m in expected])
    assert browser.find_elements(By.CSS_SELECTOR, "#grid .card .achieved") == []
    assert "targets" not in browser.find_element(By.ID, "status").text
