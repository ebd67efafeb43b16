"""The status page (api/status_page.py) without a browser: who gets it, that it is self-contained, and that every
URL and field its script reads is one the real API serves (the browser test is tests/system/test_status_page.py)."""

from __future__ import annotations

import re
from typing import Callable, Iterator

import pytest
import requests

from volspike_funding.api.server import ServerThread
from volspike_funding.api.status_page import PAGE, wants_html
from volspike_funding.core.settings import Settings

from .test_api import put_state, record

FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
CHROME = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,"
          "application/signed-exchange;v=b3;q=0.7")


@pytest.mark.parametrize("accept, html", [
    (None, False), ("", False), ("*/*", False),  # curl, scripts
    ("application/json", False), ("application/json, text/html", False),  # JSON asked first
    (FIREFOX, True), (CHROME, True), ("text/html", True), ("text/html, application/json", True),
    ("application/xml", False),
])
def test_who_gets_the_page(accept: str | None, html: bool) -> None:
    assert wants_html(accept) is html


@pytest.fixture
def api(make_settings: Callable[..., Settings]) -> Iterator[ServerThread]:
    settings = make_settings()
    put_state(settings.state_file, {"BTCUSDT": record("BTCUSDT", 0), "OLDUSDT": record("OLDUSDT", 500),
                                    "BTCUSDT_261225": record("BTCUSDT_261225", 0, funding=None)})
    with ServerThread(settings, poll_s=0.05) as server:
        yield server


def test_a_browser_gets_the_page_and_curl_gets_json(api: ServerThread) -> None:
    page = requests.get(api.url + "/", headers={"Accept": FIREFOX}, timeout=5)
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text == PAGE
    plain = requests.get(api.url + "/", headers={"Accept": "*/*"}, timeout=5)
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("application/json")
    assert "/funding/health" in plain.json()["endpoints"]


def test_the_page_is_self_contained_with_relative_urls_only() -> None:
    """It must work through ``ssh -L`` and behind a path prefix: nothing external, nothing absolute."""
    assert not re.search(r"""(src|href)\s*=|@import|url\(|https?://|//[a-z]""", PAGE, re.I)
    fetched = re.findall(r"""(?:fetch|getJson)\("([^"]+)\"""", PAGE)
    assert fetched == ["funding/health", "funding/batch"] and not any(u.startswith("/") for u in fetched)


def test_every_url_and_field_the_script_reads_is_served(api: ServerThread) -> None:
    health = requests.get(api.url + "/funding/health", timeout=5).json()
    read = set(re.findall(r"\bh\.([A-Za-z]+)", PAGE))
    assert read == {"status", "reasons", "warnings", "symbolCount", "newestDataAgeSeconds", "websocketConnected",
                    "uptimeSeconds", "reconnectAttempts", "staleSymbols"}
    assert read <= set(health), read - set(health)
    batch = requests.get(api.url + "/funding/batch", timeout=5)
    assert batch.status_code == 200
    rows = {item["symbol"]: item for item in batch.json()["data"]}
    columns = set(re.findall(r"\bi\.([A-Za-z]+)", PAGE)) - {"error"}  # "error" is set on stale rows only
    assert columns == {"symbol", "markPrice", "fundingRate", "nextFundingTime", "ageSeconds", "stale"}
    assert all(columns <= set(rows[s]) for s in ("BTCUSDT", "BTCUSDT_261225"))
    assert "error" in rows["OLDUSDT"] and "error" not in rows["BTCUSDT"]  # the page marks exactly the stale row
    assert rows["BTCUSDT_261225"]["fundingRate"] is None  # shown as "-" by the page, never as 0
