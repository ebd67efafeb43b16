"""Reference data in the daemon: kept across restarts for no weight, isolated from the stream when REST fails,
and driving listings: a new symbol is subscribed on the open connection, a delisted one is dropped
once two exchangeInfo answers agree."""

from __future__ import annotations

import time
from typing import Callable, Iterator

import pytest

from volspike_funding.store import reference
from volspike_funding.fake.market import Contract, Market
from volspike_funding.fake.rest_server import FakeBinanceRest
from volspike_funding.fake.ws_server import FakeBinanceWS
from volspike_funding.core.settings import Settings

from ..conftest import DaemonThread, scaled, scaled_s, wait_until


@pytest.fixture
def market() -> Market:
    return Market(60)


@pytest.fixture
def fakes(market: Market) -> Iterator[tuple[FakeBinanceWS, FakeBinanceRest]]:
    with FakeBinanceWS(market, cadence_s=scaled(0.05)) as ws, FakeBinanceRest(market) as rest:
        yield ws, rest


@pytest.fixture
def ref_settings(make_settings: Callable[..., Settings], fakes: tuple[FakeBinanceWS, FakeBinanceRest]
                 ) -> Callable[..., Settings]:
    ws, rest = fakes

    def make(**env: str) -> Settings:
        return make_settings(FUNDING_REFERENCE_ENABLED="true", BINANCE_WS_URL=ws.url, BINANCE_REST_URL=rest.url,
                             **env)
    return make


def test_reference_survives_a_restart_without_spending_weight(run_daemon: Callable[[Settings], DaemonThread],
                                                              ref_settings: Callable[..., Settings],
                                                              fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    _, rest = fakes
    settings = ref_settings()
    d = run_daemon(settings)
    wait_until(lambda: settings.reference_path.exists() and "TSLAUSDT" in d.doc()["funding_state"])
    assert rest.total_weight == 11  # exchangeInfo 1 + fundingInfo 0 + premiumIndex 10
    d.stop()
    saved = reference.read(settings.reference_path)
    assert saved.known and saved.funding_info is not None and saved.interest_rates["BTCUSDT"] == "0.00010000"
    d2 = run_daemon(settings)
    wait_until(lambda: "TSLAUSDT" in d2.doc()["funding_state"] and d2.doc()["counters"]["updates"] > 100)
    assert rest.total_weight == 11  # nothing was due: a daemon restarting in a loop costs no weight


def test_rest_failures_never_touch_the_stream(run_daemon: Callable[[Settings], DaemonThread],
                                              ref_settings: Callable[..., Settings],
                                              fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    _, rest = fakes
    rest.fail("/fapi/v1/exchangeInfo", 500, count=100)
    d = run_daemon(ref_settings())
    wait_until(lambda: d.doc()["reference"].get("lastError"))
    updates = d.doc()["counters"]["updates"]
    wait_until(lambda: d.doc()["counters"]["updates"] > updates + 600)  # the stream flows on
    doc = d.doc()
    assert len(doc["funding_state"]) == 60 and doc["connection_status"]["connected"]
    assert "HTTP 500" in doc["reference"]["lastError"] and doc["reference"]["symbols"] == 0


def test_new_listing_is_stored_after_an_early_refresh(run_daemon: Callable[[Settings], DaemonThread],
                                                      ref_settings: Callable[..., Settings], market: Market,
                                                      fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    ws, rest = fakes
    d = run_daemon(ref_settings(FUNDING_NO_DATA_TIMEOUT_S=scaled_s(5)))  # as above: no stall is tested here
    wait_until(lambda: d.doc()["reference"].get("symbols"))
    market.list_new("NEWCOINUSDT", 2.5)  # on the stream before our 15-minute copy of exchangeInfo has it
    wait_until(lambda: "NEWCOINUSDT" in d.doc()["funding_state"])
    assert d.doc()["counters"]["unlisted"] > 0 and rest.counts["/fapi/v1/exchangeInfo"] == 2
    assert ws.stats["connections"] == 1


def test_a_listing_exchange_info_shows_late_is_served_soon_after_it_does(
        run_daemon: Callable[[Settings], DaemonThread], ref_settings: Callable[..., Settings], market: Market,
        fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    """Issue 23.9: the stream shows a listing before exchangeInfo does; the one early refresh it prompted came too
    soon, and the next waited 10 minutes (served after up to 9.7 min)."""
    _, rest = fakes
    # Early refreshes after 1/30 of the interval (2 s here), doubling; the regular one is a minute away.
    d = run_daemon(ref_settings(FUNDING_REFERENCE_REFRESH_S=scaled_s(60), FUNDING_NO_DATA_TIMEOUT_S=scaled_s(5)))
    wait_until(lambda: d.doc()["reference"].get("symbols"))
    rest.hidden.add("NEWCOINUSDT")
    market.list_new("NEWCOINUSDT", 2.5)
    wait_until(lambda: rest.counts["/fapi/v1/exchangeInfo"] >= 3, 20)  # at once, and again 2 s later
    assert "NEWCOINUSDT" not in d.doc()["funding_state"]
    rest.hidden.clear()  # exchangeInfo lists it now
    wait_until(lambda: "NEWCOINUSDT" in d.doc()["funding_state"], 30)  # well before the regular refresh
    asked = rest.counts["/fapi/v1/exchangeInfo"]
    time.sleep(scaled(3))
    assert rest.counts["/fapi/v1/exchangeInfo"] == asked <= 6  # the streak ended with the answer that listed it


def test_stream_only_listing_is_subscribed_on_the_open_connection(run_daemon: Callable[[Settings], DaemonThread],
                                                                  ref_settings: Callable[..., Settings],
                                                                  market: Market,
                                                                  fakes: tuple[FakeBinanceWS, FakeBinanceRest]
                                                                  ) -> None:
    ws, _ = fakes
    # A watchdog that a busy machine cannot trip: this is about the open connection, not about stalls.
    d = run_daemon(ref_settings(FUNDING_REFERENCE_REFRESH_S=scaled_s(0.5), FUNDING_NO_DATA_TIMEOUT_S=scaled_s(5)))
    wait_until(lambda: "TSLAUSDT" in d.doc()["funding_state"])
    market.list_new("MSFTUSDT", 480.0, stream_only=True)
    wait_until(lambda: "MSFTUSDT" in d.doc()["funding_state"])
    assert ws.stats["connections"] == 1 and ws.stats["subscribe_messages"] >= 2  # a SUBSCRIBE, no reconnect
    assert any("msftusdt@markprice@1s" in s for s in ws.streams.values())


def test_delisted_symbol_is_dropped_at_once_and_unsubscribed(run_daemon: Callable[[Settings], DaemonThread],
                                                             ref_settings: Callable[..., Settings],
                                                             market: Market,
                                                             fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    ws, _ = fakes
    d = run_daemon(ref_settings(FUNDING_REFERENCE_REFRESH_S=scaled_s(0.5)))
    wait_until(lambda: "NVDAUSDT" in d.doc()["funding_state"] and "SOLUSDT" in d.doc()["funding_state"])
    market.delist("SOLUSDT")
    market.delist("NVDAUSDT")
    wait_until(lambda: not {"SOLUSDT", "NVDAUSDT"} & set(d.doc()["funding_state"]))
    wait_until(lambda: not any("nvdausdt@markprice@1s" in s for s in ws.streams.values()))
    assert d.doc()["counters"]["dropped_symbols"] >= 2


def test_a_premium_index_without_interest_rates_is_not_fetched_in_a_loop() -> None:
    """The hourly weight-10 call must stay hourly whatever it returns."""
    from volspike_funding.binance.rest import BinanceRest
    from volspike_funding.store.reference import ReferenceData
    from volspike_funding.feed.reference_fetch import ReferenceFetcher

    with FakeBinanceRest(Market(30)) as rest:
        rest.market.contracts.clear()  # premiumIndex answers [] (and exchangeInfo still lists the others)
        rest.market.stream_only.clear()
        rest.extra_symbols.append(rest.market.exchange_symbol(Contract("XUSDT", 1.0, 0.0, 1.0)))
        results: list[ReferenceData] = []
        fetcher = ReferenceFetcher(BinanceRest(rest.url, retries=0), ReferenceData(),
                                   lambda data, error: results.append(data), refresh_s=900, interest_refresh_s=3600)
        fetcher.start()
        wait_until(lambda: results)
        time.sleep(scaled(0.5))  # time enough for a loop to show
        fetcher.stop()
        assert rest.counts["/fapi/v1/premiumIndex"] == 1 and results[-1].interest_rates_at is not None


def test_a_429_with_retry_after_inf_does_not_stop_reference_refreshes_for_ever() -> None:
    """It did: the client paused until ``inf`` and the fetcher's next try was at ``inf``, so the daemon's
    reference data never refreshed again. Now the pause is the default minute, and the next try after it works."""
    from volspike_funding.binance.rest import DEFAULT_PAUSE_S, BinanceRest
    from volspike_funding.store.reference import ReferenceData
    from volspike_funding.feed.reference_fetch import ReferenceFetcher

    now = [time.time()]
    with FakeBinanceRest(Market(30)) as rest:
        rest.fail("/fapi/v1/exchangeInfo", 429, headers={"Retry-After": "inf"})
        results: list[tuple[ReferenceData, str | None]] = []
        fetcher = ReferenceFetcher(BinanceRest(rest.url, retries=0, clock=lambda: now[0]), ReferenceData(),
                                   lambda data, error: results.append((data, error)), refresh_s=900,
                                   interest_refresh_s=3600, clock=lambda: now[0])
        fetcher.start()
        try:
            wait_until(lambda: results)
            assert "HTTP 429" in (results[0][1] or "") and results[0][0].exchange_info_at is None
            now[0] += DEFAULT_PAUSE_S + 1
            fetcher.request_refresh("the pause is over")  # wakes the thread instead of a real minute's wait
            wait_until(lambda: results[-1][0].exchange_info_at is not None and results[-1][1] is None)
        finally:
            fetcher.stop()
        assert rest.counts["/fapi/v1/exchangeInfo"] == 2
