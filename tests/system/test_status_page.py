"""The status page at ``/`` in a real headless browser (Debian's chromium, driven by selenium), against the real
daemon and API: it loads with no external asset, shows the live symbol count, filters, and turns red when the
daemon stops. ``curl`` keeps getting JSON."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from volspike_funding.api.server import ServerThread
from volspike_funding.fake.ws_server import FakeBinanceWS
from volspike_funding.core.settings import Settings

from ..conftest import DaemonThread, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

#: The symbols of the rows shown, read in one script (see the first test).
ROW_SYMBOLS = "return [...document.querySelectorAll('#rows tr')].map(r => r.dataset.symbol)"


def test_curl_still_gets_json_and_a_browser_gets_the_page(tmp_path: Path,
                                                           make_settings: Callable[..., Settings]) -> None:
    from ..api.test_api import put_state, record

    settings = make_settings()
    put_state(settings.state_file, {"BTCUSDT": record("BTCUSDT", 0)})
    with ServerThread(settings, poll_s=0.05) as api:
        assert requests.get(api.url + "/", headers={"Accept": "*/*"}, timeout=5).json()["service"]
        page = requests.get(api.url + "/", headers={"Accept": "text/html,application/xhtml+xml"}, timeout=5)
        assert page.headers["content-type"].startswith("text/html")
        assert "http://" not in page.text and "https://" not in page.text and "<script src" not in page.text


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/test.sh installs them as root)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (requirements-dev.txt)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def test_status_page_shows_live_state_filters_and_turns_red(browser: Any, fake_ws: FakeBinanceWS,
                                                            make_settings: Callable[..., Settings],
                                                            run_daemon: Callable[[Settings], DaemonThread]) -> None:
    from selenium.webdriver.common.by import By

    settings = make_settings(BINANCE_WS_URL=fake_ws.url, FUNDING_STALE_AFTER_S="5")
    daemon = run_daemon(settings)
    wait_until(lambda: len(daemon.doc()["funding_state"]) == 700)
    with ServerThread(settings, poll_s=0.05) as api:
        browser.get(api.url + "/")
        text = lambda element_id: browser.find_element(By.ID, element_id).text  # noqa: E731
        wait_until(lambda: text("health") == "healthy", 15)
        live = requests.get(api.url + "/funding/health", timeout=5).json()["symbolCount"]
        assert text("symbols") == str(live) == "700"
        wait_until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#rows tr")) == 700, 10)
        browser.find_element(By.ID, "filter").send_keys("BTC")
        # The rows are read in one script: the page re-renders them every second, and an element found in one
        # call can be gone by the next (StaleElementReferenceException, seen on a loaded machine).
        shown = wait_until(lambda: (rows := browser.execute_script(ROW_SYMBOLS)) and len(rows) < 700 and rows, 10)
        assert 1 <= len(shown) < 10 and all("BTC" in symbol for symbol in shown), shown
        assert browser.find_element(By.ID, "health").get_attribute("class") == "healthy"
        daemon.stop()  # the daemon stops: the page turns red and says why
        wait_until(lambda: browser.find_element(By.ID, "health").get_attribute("class") == "unhealthy", 15)
        assert "daemon stopped" in text("reasons")
        assert browser.execute_script("return performance.getEntriesByType('resource')"
                                      ".every(e => e.name.startsWith(location.origin))")


def test_api_gone_says_since_when_and_ages_keep_counting(browser: Any, make_settings: Callable[..., Settings]) -> None:
    """The API stops answering: the page says so and since when (it showed "TypeError: Failed to fetch"), and the
    ages go on from the last answer (they froze, so stale data looked fresh). Funding rates are percentages."""
    import re

    from selenium.webdriver.common.by import By

    from ..api.test_api import put_state, record

    settings = make_settings(FUNDING_STALE_AFTER_S="600")
    put_state(settings.state_file, {"BTCUSDT": record("BTCUSDT", 1.0), "ETHUSDT": record("ETHUSDT", 1.0,
                                                                                         funding="0.00010000")})
    text = lambda element_id: browser.find_element(By.ID, element_id).text  # noqa: E731
    seconds = lambda raw: float(raw.split()[0])  # noqa: E731
    with ServerThread(settings, poll_s=0.05) as api:
        browser.get(api.url + "/")
        wait_until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#rows tr")) == 2, 15)
        cells = browser.execute_script("return Object.fromEntries([...document.querySelectorAll('#rows tr')]"
                                       ".map(r => [r.dataset.symbol, [...r.cells].map(td => td.innerText)]))")
        assert cells["BTCUSDT"][2] == "-0.0120 %" and cells["ETHUSDT"][2] == "0.0100 %", cells
        first = seconds(text("age"))
        wait_until(lambda: seconds(text("age")) >= first + 1, 10)  # counting between two answers too
    wait_until(lambda: text("health") == "API unreachable", 15)
    assert browser.find_element(By.ID, "health").get_attribute("class") == "unhealthy"
    reasons = text("reasons")
    assert re.search(r"has not answered since \d\d:\d\d:\d\d UTC", reasons), reasons
    assert "from its last answer" in reasons and "TypeError: Failed to fetch" not in reasons
    frozen = seconds(text("age"))
    row_age = lambda: seconds(browser.execute_script(  # noqa: E731  (one script: the rows are re-rendered)
        "return document.querySelectorAll('#rows tr td')[4].innerText"))
    before = row_age()
    wait_until(lambda: seconds(text("age")) >= frozen + 2 and row_age() >= before + 2, 10)
    assert text("connection") == "unknown (API unreachable)"
