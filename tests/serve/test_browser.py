"""The ``medclip serve`` page in a real browser: Debian's ``chromium`` + ``chromium-driver`` driven by Selenium.

The driver is the Debian binary, named explicitly (``Service(CHROMEDRIVER)``, ``SE_OFFLINE=true``), so Selenium
Manager never downloads a browser. Where chromium or chromedriver is missing (``.ci/run`` installs both), the
module skips with the reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path(os.environ.get("MEDCLIP_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("MEDCLIP_CHROMEDRIVER", "/usr/bin/chromedriver"))
WAIT_S = 45.0


def _missing_reason() -> str | None:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            return f"{binary} is absent: apt-get install chromium chromium-driver (.ci/run does) for the browser tests"
    return None


if _missing_reason():
    pytest.skip(_missing_reason(), allow_module_level=True)
pytest.importorskip("selenium", reason="selenium is a dev dependency: pip install -e '.[dev]'")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CARDS = "#results article.card[data-case-id]"
IMAGES_LOADED = """
const imgs = [...document.querySelectorAll(arguments[0] + ' img.thumb')];
return imgs.length > 0 && imgs.every((img) => img.complete && img.naturalWidth > 0);
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless chromium for the module (a fresh profile in a temp dir)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")  # Selenium Manager: never reach the network
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--window-size=1280,1400",
            f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        ):
            options.add_argument(arg)
        log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
        service = Service(str(CHROMEDRIVER), log_output=str(log))
        try:
            driver = webdriver.Chrome(options=options, service=service)
        except Exception as exc:  # a broken install: say why, with the driver's log
            text = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
            pytest.fail(f"chromium did not start: {exc}\n{text}", pytrace=False)
        driver.set_page_load_timeout(WAIT_S)
        yield driver
        driver.quit()
        shutil.rmtree(log.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def plain(live_servers):
    return live_servers.plain


@pytest.fixture(scope="module")
def guarded(live_servers):
    return live_servers.guarded


def wait(browser, condition, what: str, timeout: float = WAIT_S):
    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.1).until(lambda d: condition(d))
    except TimeoutException:
        shown = browser.execute_script(
            "return {status: document.getElementById('status')?.textContent, "
            "error: document.getElementById('error')?.textContent, url: location.href, "
            "cards: document.querySelectorAll(arguments[0]).length}",
            CARDS,
        )
        pytest.fail(f"the page did not show {what} within {timeout:.0f} s (page state: {shown})", pytrace=False)


def open_page(browser, server, path: str = "/"):
    browser.delete_all_cookies()
    browser.get(server.url(path))


def wait_ready(browser):
    wait(browser, lambda d: d.execute_script("return document.body.dataset.ready") == "1", "the loaded page")


def card_ids(browser) -> list[str]:
    return [c.get_attribute("data-case-id") for c in browser.find_elements(By.CSS_SELECTOR, CARDS)]


def wait_title(browser, starts: str):
    def shown(d):
        title = d.find_element(By.ID, "results-title")
        return title.is_displayed() and title.text.startswith(starts)

    wait(browser, shown, f"results titled {starts!r}")


def wait_images(browser):
    """Every card's thumbnail decoded (scrolled into view one by one: the page loads them lazily)."""
    for img in browser.find_elements(By.CSS_SELECTOR, f"{CARDS} img.thumb"):
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
    wait(browser, lambda d: d.execute_script(IMAGES_LOADED, CARDS), "every card's image")
    browser.execute_script("window.scrollTo(0, 0)")


def search(browser, q: str, k: str | None = None, label: str | None = None):
    box = browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys(q)
    if k is not None:
        Select(browser.find_element(By.ID, "k")).select_by_visible_text(k)
    if label is not None:
        Select(browser.find_element(By.ID, "label")).select_by_value(label)
    browser.find_element(By.ID, "search-button").click()
    wait_title(browser, "Cases for")


def api(server, path: str, **params) -> dict:
    answer = httpx.get(server.url(path), params=params, headers=server.headers(), timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_search_shows_k_cards_with_images(browser, plain):
    open_page(browser, plain)
    wait_ready(browser)
    assert card_ids(browser) == []
    search(browser, "moderate right pleural effusion", k="5")
    cards = browser.find_elements(By.CSS_SELECTOR, CARDS)
    assert len(cards) == 5
    assert all(card.find_element(By.CSS_SELECTOR, "img.thumb").get_attribute("src") for card in cards)
    wait_images(browser)
    assert "q=moderate+right+pleural+effusion" in browser.current_url and "k=5" in browser.current_url
    expected = api(plain, "/api/search", q="moderate right pleural effusion", k=5)["results"]
    assert card_ids(browser) == [r["study_id"] for r in expected]


def test_label_filter(browser, plain):
    open_page(browser, plain)
    wait_ready(browser)
    search(browser, "chest radiograph", k="5", label="pneumothorax")
    cards = browser.find_elements(By.CSS_SELECTOR, CARDS)
    assert cards
    for card in cards:
        chips = [chip.text for chip in card.find_elements(By.CSS_SELECTOR, ".labels span")]
        assert "pneumothorax" in chips, chips


def test_deep_link_and_more_like_this(browser, plain):
    open_page(browser, plain, "/?q=small+left+pneumothorax&k=10")
    wait_title(browser, "Cases for")
    expected = api(plain, "/api/search", q="small left pneumothorax", k=10)["results"]
    assert len(expected) == 10
    assert card_ids(browser) == [r["study_id"] for r in expected]
    assert browser.find_element(By.ID, "q").get_attribute("value") == "small left pneumothorax"
    assert Select(browser.find_element(By.ID, "k")).first_selected_option.text == "10"

    first = browser.find_element(By.CSS_SELECTOR, CARDS)
    case = first.get_attribute("data-case-id")
    first.find_element(By.CSS_SELECTOR, "button.more").click()
    wait_title(browser, "Cases like")
    ids = card_ids(browser)
    assert ids and case not in ids
    assert ids == [r["study_id"] for r in api(plain, f"/api/similar/{case}", k=10)["results"]]
    assert "similar=" in browser.current_url and "q=" not in browser.current_url
    assert httpx.URL(browser.current_url).params["similar"] == case

    browser.back()  # history: the description's results again
    wait_title(browser, "Cases for")
    assert card_ids(browser) == [r["study_id"] for r in expected]


def test_upload_screens_a_study(browser, plain, tiny_archive):
    dicom = next(iter(sorted(tiny_archive.rglob("*.dcm")))).resolve()
    findings = api(plain, "/api/info")["findings"]
    open_page(browser, plain)
    wait_ready(browser)
    assert not browser.find_element(By.ID, "screening-section").is_displayed()
    browser.find_element(By.ID, "upload").send_keys(str(dicom))
    browser.find_element(By.ID, "upload-button").click()
    wait_title(browser, "Cases like the uploaded study")
    assert browser.find_element(By.ID, "screening-section").is_displayed()
    rows = browser.find_elements(By.CSS_SELECTOR, "#screening-section #screening tbody tr[data-finding]")
    assert sorted(row.get_attribute("data-finding") for row in rows) == sorted(findings)
    assert len(card_ids(browser)) == 10  # the k menu's default
    wait_images(browser)
    assert browser.find_element(By.ID, "error").text == ""
    maps = "#screening tbody td.where img.heat"  # the top findings' heat maps, inline data: URLs
    assert len(browser.find_elements(By.CSS_SELECTOR, maps)) == min(3, len(findings))
    loaded = "return [...document.querySelectorAll(arguments[0])].every((i) => i.complete && i.naturalWidth > 0)"
    wait(browser, lambda d: d.execute_script(loaded, maps), "the screening heat maps")
    assert not browser.find_elements(By.CSS_SELECTOR, f"{CARDS} button.where:not([hidden])")  # no phrase to map


def test_where_shows_the_heat_map(browser, plain):
    open_page(browser, plain, "/?q=left+pleural+effusion&k=5")
    wait_title(browser, "Cases for")
    first = browser.find_element(By.CSS_SELECTOR, CARDS)
    thumb, heat = first.find_element(By.CSS_SELECTOR, "img.thumb"), first.find_element(By.CSS_SELECTOR, "img.heat")
    assert not heat.is_displayed()
    first.find_element(By.CSS_SELECTOR, "button.where").click()
    loaded = "const i = arguments[0]; return i.complete && i.naturalWidth > 0 && !i.hidden"
    wait(browser, lambda d: d.execute_script(loaded, heat), "the heat map overlay")
    assert "/api/heatmap/" in heat.get_attribute("src") and "q=left%20pleural%20effusion" in heat.get_attribute("src")
    assert heat.is_displayed() and not thumb.is_displayed()
    heat.click()  # the image toggles back too
    assert thumb.is_displayed() and not heat.is_displayed()


def test_token_login(browser, guarded):
    open_page(browser, guarded)
    wait(browser, lambda d: d.find_element(By.ID, "login").is_displayed(), "the token form")
    assert not browser.find_element(By.ID, "app").is_displayed()
    assert card_ids(browser) == []
    assert browser.execute_script("return document.body.dataset.ready") is None

    token = browser.find_element(By.ID, "token")
    token.send_keys("wrong-" + guarded.token)
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait(browser, lambda d: d.find_element(By.ID, "login-error").text.strip() != "", "the wrong-token error")
    assert "wrong token" in browser.find_element(By.ID, "login-error").text
    assert not browser.find_element(By.ID, "app").is_displayed() and card_ids(browser) == []

    token.send_keys(guarded.token)
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait_ready(browser)
    assert not browser.find_element(By.ID, "login").is_displayed()
    search(browser, "large left pneumothorax", k="5")
    assert len(card_ids(browser)) == 5
    wait_images(browser)  # the thumbnails come through the session cookie too
    assert guarded.token not in browser.current_url
