"""The market routes over a market file written by hand: a closed hour is answered only with its final candle."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from volspike_funding.api.server import ServerThread
from volspike_funding.core.settings import Settings
from volspike_funding.store import marketfile

from ..conftest import scaled, within_one_hour

HOUR_MS = 3_600_000


def row(open_ms: int, close: str) -> list[Any]:
    return [open_ms, "100.0", "101.0", "99.0", close, "10.000", open_ms + HOUR_MS - 1, "1000.0000", 10, "5.000",
            "500.0000", "0"]


def document(final: list[bool]) -> dict[str, Any]:
    now = time.time()
    open_ms = int(now * 1000) // HOUR_MS * HOUR_MS
    rows = [row(open_ms - 2 * HOUR_MS, "100.5"), row(open_ms - HOUR_MS, "100.7"), row(open_ms, "100.9")]
    return {"writtenAt": now, "connected": True, "lastFrameAt": now, "reason": None, "interval": "1h",
            "klines": {"BTCUSDT": {"since": now - 3 * 3600, "rows": rows, "final": final, "receivedAt": now}},
            "tickers": {}, "backfill": {"pending": 0}, "counters": {}}


def get(url: str) -> tuple[int, Any, Any]:
    try:
        with urllib.request.urlopen(url, timeout=scaled(5)) as answer:
            return answer.status, answer.headers, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def just_closed(make_settings: Callable[..., Settings], budget_s: float) -> tuple[Settings, Path]:
    """Settings of an API with the market feed on, and its market file holding BTCUSDT's hour that just closed
    without its ``"x":true`` yet (``budget_s``: how long the test may take inside one wall-clock hour)."""
    within_one_hour(budget_s)
    # Fresh for as long as the test may take: the file is written before the API starts (a loaded host's start).
    settings = make_settings(FUNDING_MARKET_ENABLED="true", FUNDING_STALE_AFTER_S="600")
    path = marketfile.market_path(settings.state_file, settings.market_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    marketfile.write(path, document([True, False, False]))
    return settings, path


def test_a_closed_hour_without_its_final_message_is_try_again_not_a_candle(
        make_settings: Callable[..., Settings]) -> None:
    settings, path = just_closed(make_settings, 10)
    with ServerThread(settings) as api:
        klines = api.url + "/fapi/v1/klines?symbol=BTCUSDT&interval=1h"
        status, headers, body = get(klines + "&limit=2")
        assert status == 503 and body["code"] == -1001 and "not final yet" in body["msg"]
        assert headers["Retry-After"] == "1"
        status, _, body = get(klines + "&limit=1")  # the open hour alone is what it is
        assert status == 200 and body[0][4] == "100.9"
        time.sleep(0.01)  # a new mtime for the reader's stat
        marketfile.write(path, document([True, True, False]))
        status, _, body = get(klines + "&limit=3")
        assert status == 200 and [r[4] for r in body] == ["100.5", "100.7", "100.9"]


def test_market_health_says_why_and_never_decides_funding(make_settings: Callable[..., Settings]) -> None:
    """Off: 404 with the reason. Fresh: 200, its data age in the header. Stopped (no frame for longer than the
    stale threshold): 503 with the reason, and in /funding/health only a warning — the funding status is the
    mark prices' own."""
    with ServerThread(make_settings()) as api:
        status, _, body = get(api.url + "/market/health")
        assert status == 404 and "FUNDING_MARKET_ENABLED" in body["detail"]["reason"]
        assert get(api.url + "/funding/health")[2]["market"] is None
    settings = make_settings(FUNDING_MARKET_ENABLED="true", FUNDING_STALE_AFTER_S="600")
    path = marketfile.market_path(settings.state_file, settings.market_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    marketfile.write(path, document([True, True, False]))
    with ServerThread(settings) as api:
        status, headers, body = get(api.url + "/market/health")
        assert status == 200 and body["status"] == "healthy" and body["klineSymbols"] == 1
        assert float(headers["X-Data-Age-Seconds"]) == body["dataAgeSeconds"]
        stopped = document([True, True, False]) | {"lastFrameAt": time.time() - 3600, "connected": False,
                                                   "reason": "daemon stopping"}
        marketfile.write(path, stopped)  # a new file (the reader's identity includes the inode)
        status, _, body = get(api.url + "/market/health")
        assert status == 503 and body["status"] == "unhealthy" and "daemon stopping" in body["reasons"][0]
        _, _, funding = get(api.url + "/funding/health")
        assert funding["market"]["status"] == "unhealthy"
        assert any(w.startswith("market feed: Klines and tickers stale") for w in funding["warnings"])
