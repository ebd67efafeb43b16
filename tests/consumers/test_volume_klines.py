"""The volume script's candles from the daemon's market feed: in ws mode the same decisions as REST, at 0 REST
kline weight once the feed is warm, and REST for exactly the symbols the feed cannot answer; the OI universe's
24 h volumes from the local tickers."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest

from volspike_funding.api.server import ServerThread
from volspike_funding.binance.rest import BinanceRest
from volspike_funding.consumers.market_source import LocalMarketClient
from volspike_funding.consumers.volume_alerts import VolumeAlerts
from volspike_funding.consumers.volume_rules import SLOT, slot_of
from volspike_funding.core.settings import Settings, load_settings
from volspike_funding.fake.market import HOUR_MS, Market
from volspike_funding.fake.rest_server import FakeBinanceRest
from volspike_funding.fake.ws_server import FakeBinanceWS
from volspike_funding.feed.daemon import Daemon
from volspike_funding.store import marketfile
from volspike_funding.store.comparison_log import WINDOW_MARKER

from ..conftest import FAST, scaled, scaled_s, wait_until, within_one_hour


class Warm:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.market = Market(30)
        self.ws = FakeBinanceWS(self.market, cadence_s=scaled(0.1)).start()
        self.rest = FakeBinanceRest(self.market).start()
        self.rest.market_candles = True
        self.env = {"VOLSPIKE_ENV_FILE": os.devnull, "BINANCE_WS_URL": self.ws.url,
                    "BINANCE_REST_URL": self.rest.url, "FUNDING_STATE_FILE": str(tmp / "state" / "s.json"),
                    **FAST, "FUNDING_STALE_AFTER_S": "5", "FUNDING_REFERENCE_ENABLED": "true",
                    # No test here stalls the fake: a watchdog of FAST's 0.6 s tripped once under two CPU burners
                    # (the market child runs at niceness 10) and the routes answered 503 while it reconnected.
                    "FUNDING_NO_DATA_TIMEOUT_S": scaled_s(5),
                    "FUNDING_MARKET_ENABLED": "true", "FUNDING_MARKET_WS_URL": self.ws.market_url}
        settings = load_settings(self.env)
        settings.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.daemon = Daemon(settings)
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)
        self.thread.start()
        self.api = ServerThread(settings).__enter__()
        self.market_file = marketfile.market_path(settings.state_file, None)

        def warm() -> bool:
            doc = marketfile.read(self.market_file).document
            klines = doc.get("klines") or {}
            return bool(klines) and doc["backfill"]["pending"] == 0 and all(
                e["since"] is not None and len(e["rows"]) >= 26 and all(e["final"][:-1]) for e in klines.values())
        within_one_hour(20)
        wait_until(warm, 30)

    def settings(self, **env: str) -> Settings:
        own = self.tmp / f"run-{time.monotonic_ns()}"  # a fresh book each time (the state guard watches its dir)
        own.mkdir()
        return load_settings({**self.env, "WS_FUNDING_API_URL": self.api.url + "/funding",
                              "VOLUME_ALERT_STATE_FILE": str(own / "alerts.json"), **env})

    def stop(self) -> None:
        self.daemon.request_stop()
        self.thread.join(10)
        self.api.__exit__()
        self.ws.stop()
        self.rest.stop()


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warm]:
    w = Warm(tmp_path_factory.mktemp("klines"))
    yield w
    w.stop()


def scan(w: Warm, mode: str) -> tuple[list[tuple[str, str]], int]:
    """One dry-run scan in ``mode``; the decisions and the REST klines calls it made."""
    app = VolumeAlerts(w.settings(FUNDING_SOURCE_MODE=mode), rest=BinanceRest(w.rest.url, retries=1),
                       dry_run=True)
    before = w.rest.counts["/fapi/v1/klines"]
    slot = slot_of(datetime.now(timezone.utc))
    if slot.minute == 0:  # the :00 slot judges the two closed hours; these tests plant their spikes in the open one
        slot += SLOT
    alerts = app.scan(slot)
    return sorted((a.symbol, a.kind) for a in alerts), w.rest.counts["/fapi/v1/klines"] - before


def test_ws_mode_decides_like_rest_mode_without_rest_klines(warm: Warm) -> None:
    within_one_hour(25)
    open_hour = int(time.time() * 1000) // HOUR_MS * HOUR_MS
    candles = warm.market.candles
    # A spike in the open hour (ETH), the rest as the fake draws them. (A closed hour is final: changing one now
    # would make REST and the feed disagree, as Binance never does.)
    candles.hour_volume[("ETHUSDT", open_hour)] = 1e13
    local = LocalMarketClient(warm.api.url + "/funding", timeout=2, breaker_s=1)
    with candles.frozen():  # both scans see the same open candles, not ones a second apart
        truth = BinanceRest(warm.rest.url, retries=1)
        wait_until(lambda: (got := local.klines(2)) and all(got.get(s) == truth.klines(s, "1h", 2)
                                                              for s in ("ETHUSDT", "BTCUSDT")), 10)
        rest_decisions, rest_calls = scan(warm, "rest")
        ws_decisions, ws_calls = scan(warm, "ws")
    assert ("ETHUSDT", "SPIKE") in rest_decisions
    assert ws_decisions == rest_decisions and rest_calls > 20 and ws_calls == 0


def test_the_batch_answers_each_symbol_whole_or_not_at_all(warm: Warm) -> None:
    within_one_hour(10)
    client = LocalMarketClient(warm.api.url + "/funding", timeout=2, breaker_s=1)
    answered = client.klines(2)
    assert "BTCUSDT" in answered and len(answered) >= 20
    # A limit the batch cannot answer whole for anyone: nobody is answered (the scan then asks REST for each).
    assert client.klines(27) != {} and client.klines(28) == {}


def test_the_oi_universe_takes_24h_volumes_from_the_local_tickers(warm: Warm) -> None:
    client = LocalMarketClient(warm.api.url + "/funding", timeout=2, breaker_s=1)
    volumes = client.quote_volumes()
    assert volumes is not None and volumes["BTCUSDT"] > 0 and "BTCUSD_PERP" not in volumes
    off = LocalMarketClient("http://127.0.0.1:9/funding", timeout=0.5, breaker_s=30)
    assert off.quote_volumes() is None and off.klines(2) == {}  # a dead service: REST, and the breaker opens
    assert off.calls == 1 and off.quote_volumes() is None and off.calls == 1


def test_validate_mode_decides_on_rest_and_logs_the_closed_candles_compared(
        warm: Warm, caplog: pytest.LogCaptureFixture) -> None:
    within_one_hour(20)
    with caplog.at_level("INFO", logger="funding.compare"):
        rest_decisions, rest_calls = scan(warm, "rest")
        decisions, calls = scan(warm, "validate")
    assert decisions == rest_decisions and calls == rest_calls  # REST decides, one call per symbol as before
    windows = [json.loads(r.getMessage().split(WINDOW_MARKER, 1)[1]) for r in caplog.records
               if WINDOW_MARKER in r.getMessage()]
    assert windows, "a scan writes its window line"
    fields = windows[-1]["fields"]
    # Every kept symbol's previous hour, close and quote volume, equal to REST's to the digit.
    assert fields["klineClose"]["n"] >= 20 and fields["klineClose"]["m"] == fields["klineClose"]["n"]
    assert fields["klineQuoteVolume"]["m"] == fields["klineQuoteVolume"]["n"] == fields["klineClose"]["n"]
