"""Hardening round 3 (issue 20), against the fake exchange on loopback: a refused SUBSCRIBE must not cost the
all-market stream, a host clock minutes off must not stop the feed, and one truncated exchangeInfo must not unlist
what the stream carries."""

from __future__ import annotations

import functools
import re
import time
from pathlib import Path
from typing import Any, Callable

import orjson

from volspike_funding.api.service_status import HealthLimits, ServiceStatus
from volspike_funding.core.settings import Settings
from volspike_funding.fake.market import SILENT_SYMBOL, Market
from volspike_funding.fake.rest_server import FakeBinanceRest
from volspike_funding.fake.ws_server import FakeBinanceWS
from volspike_funding.store import reference, statefile
from volspike_funding.store.daemon_status import DaemonStatus
from volspike_funding.store.view import View

from ..conftest import DaemonThread, scaled, scaled_s, wait_until
from .test_reference import fakes, market, ref_settings  # noqa: F401  (the fixtures)

MINUTES_10 = 600.0


def updates(d: DaemonThread) -> int:
    return int(d.doc()["counters"]["updates"])


# -- 1. a refused SUBSCRIBE ----------------------------------------------------------------------------------------

def test_a_refused_subscription_pauses_them_and_keeps_the_all_market_stream(
        run_daemon: Callable[..., DaemonThread], ref_settings: Callable[..., Settings],
        fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    ws, _ = fakes
    ws.close_on_subscribe = True  # Binance's answer to a rate breach: the connection is closed
    d = run_daemon(ref_settings(FUNDING_NO_DATA_TIMEOUT_S=scaled_s(3)))  # a pause of 3 × 3 s; no watchdog trips
    wait_until(lambda: ws.stats["subscribe_closes"] == 1)
    wait_until(lambda: DaemonStatus.of(d.doc()).subscriptions_paused is not None)
    before = updates(d)
    wait_until(lambda: updates(d) > before + 300)  # the all-market stream flows on a fresh connection
    doc = d.doc()
    assert ws.stats["subscribe_closes"] == 1 and ws.stats["connections"] == 2, ws.stats
    assert doc["connection_status"]["connected"] and "TSLAUSDT" not in doc["funding_state"]
    paused = DaemonStatus.of(doc).subscriptions_paused or ""
    assert "closed" in paused and "after a SUBSCRIBE" in paused and f"paused for {3 * scaled(3):.0f} s" in paused
    view = View().read(statefile.parse_document(orjson.dumps(doc)))
    status = ServiceStatus.of(view, time.time(), HealthLimits(stale_after_s=scaled(2)))
    assert any(w.startswith("per-symbol streams paused: ") for w in status.warnings), status.warnings
    ws.close_on_subscribe = False  # the pause ends: the TradFi symbols get their streams on the open connection
    wait_until(lambda: "TSLAUSDT" in d.doc()["funding_state"], 20)
    assert ws.stats["connections"] == 2
    wait_until(lambda: DaemonStatus.of(d.doc()).subscriptions_paused is None, 10)


def test_refusals_back_off_and_never_cost_more_than_one_connection_each(
        run_daemon: Callable[..., DaemonThread], ref_settings: Callable[..., Settings],
        fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    ws, _ = fakes
    ws.close_on_subscribe = True
    d = run_daemon(ref_settings(FUNDING_NO_DATA_TIMEOUT_S=scaled_s(0.5)))  # pauses of 1.5 s, 3 s, 6 s, ...
    wait_until(lambda: ws.stats["subscribe_closes"] >= 3, 30)
    # The exchange's close reaches the daemon, and its pause the state file, a moment after the fake counted it.
    third = f"paused for {4 * 3 * scaled(0.5):.0f} s (refusal 3)"
    wait_until(lambda: third in (DaemonStatus.of(d.doc()).subscriptions_paused or ""), 30)
    # No SUBSCRIBE during a pause: every refusal the daemon counted is one the exchange made, and no more were
    # made (a busy machine may add watchdog reconnects, which refuse nothing).
    time.sleep(scaled(1))
    assert ws.stats["subscribe_closes"] == 3


# -- 2. the host clock ten minutes off ---------------------------------------------------------------------------------

def test_a_host_clock_ten_minutes_off_still_serves_and_health_names_the_clock(
        fake_ws: FakeBinanceWS, make_settings: Callable[..., Settings], run_daemon: Callable[..., DaemonThread],
        tmp_path: Path) -> None:
    for offset in (MINUTES_10, -MINUTES_10):
        settings = make_settings(BINANCE_WS_URL=fake_ws.url,
                                 FUNDING_STATE_FILE=str(tmp_path / f"{offset:+.0f}" / ".funding_state.json"))
        host_clock = functools.partial(lambda off: time.time() + off, offset)
        d = run_daemon(settings, clock=host_clock)
        wait_until(lambda: len(d.doc()["funding_state"]) == 700, 20)
        # The first frames (before three agree on the skew) are judged by the host's clock; none after.
        rejected = d.doc()["counters"]["malformed"].get("implausible_time", 0)
        assert rejected <= 3 * 700, d.doc()["counters"]
        before = updates(d)
        wait_until(lambda: updates(d) > before + 1400)
        assert d.doc()["counters"]["malformed"].get("implausible_time", 0) == rejected
        assert d.doc()["connection_status"]["reconnect_attempts"] == 0
        now = host_clock()
        view = View().read(statefile.parse_document(settings.state_file.read_bytes(), now=now))
        status = ServiceStatus.of(view, now, HealthLimits(stale_after_s=scaled(2)))
        skew = status.health_body()["clockSkewSeconds"]
        assert skew is not None and abs(skew + offset) < 5, skew
        assert len(status.reasons) == 1 and re.fullmatch(
            rf"this host's clock is {'[+]' if offset > 0 else '-'}(599|600)\.\d s off Binance's event times "
            r"\(max 5 s\): check NTP \(timedatectl\)", status.reasons[0]), status.reasons
        d.stop()


def test_with_a_wrong_host_clock_a_poisoned_frame_still_freezes_nothing(
        fake_ws: FakeBinanceWS, make_settings: Callable[..., Settings],
        run_daemon: Callable[..., DaemonThread]) -> None:
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url), clock=lambda: time.time() - MINUTES_10)
    wait_until(lambda: len(d.doc()["funding_state"]) == 700, 20)
    ahead = int(time.time() * 1000) + 3_600_000
    item: dict[str, Any] = {"e": "markPriceUpdate", "E": ahead, "s": "BTCUSDT", "p": "1.23000000", "P": "1.2",
                            "i": "1.2", "r": "0.00010000", "T": ahead + 3_600_000}
    fake_ws.send_garbage(orjson.dumps({"stream": "!markPrice@arr@1s", "data": [item]}).decode())
    wait_until(lambda: d.doc()["counters"]["malformed"].get("implausible_time", 0) >= 1)
    before = updates(d)
    wait_until(lambda: updates(d) > before + 1400)
    assert d.doc()["funding_state"]["BTCUSDT"]["markPrice"] != 1.23


# -- 5. the first exchangeInfo, truncated --------------------------------------------------------------------------

def test_a_truncated_first_exchange_info_unlists_nothing_the_stream_carries(
        run_daemon: Callable[..., DaemonThread], ref_settings: Callable[..., Settings], market: Market,
        fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    ws, rest = fakes
    rest.truncate_exchange_info(10, count=1)  # one short answer, then the whole listing again
    settings = ref_settings()
    d = run_daemon(settings)
    wait_until(lambda: rest.counts["/fapi/v1/exchangeInfo"] >= 2, 20)  # asked again at once
    carried = set(market.listed()) - {SILENT_SYMBOL}  # listed, its market closed: no stream carries it
    wait_until(lambda: set(d.doc()["funding_state"]) == carried, 20)  # the stream-only ones subscribed too
    assert d.doc()["reference"]["symbols"] == len(reference.read(settings.reference_path).symbols) > len(carried)
    assert d.doc()["reference"]["lastError"] is None and rest.counts["/fapi/v1/exchangeInfo"] == 2


def test_the_stream_contradicting_a_listing_that_came_first_wins(
        run_daemon: Callable[..., DaemonThread], ref_settings: Callable[..., Settings], market: Market,
        fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    ws, rest = fakes
    rest.truncate_exchange_info(10, count=100)  # Binance keeps answering short: the stream's symbols stay served
    ws.stalled = True  # the listing arrives before any frame
    d = run_daemon(ref_settings())
    wait_until(lambda: d.doc()["reference"]["symbols"] == 10)
    ws.stalled = False
    wait_until(lambda: len(d.doc()["funding_state"]) >= 50, 20)
    doc = d.doc()
    assert "not believed" in doc["reference"]["lastError"] and doc["reference"]["symbols"] == 0
    assert not reference.read(d.settings.reference_path).known  # the API does not answer "not listed" either


# -- issue 23.3: a partial exchangeInfo -----------------------------------------------------------------------------

def test_a_partial_exchange_info_drops_nothing_until_a_second_answer_agrees(
        run_daemon: Callable[..., DaemonThread], ref_settings: Callable[..., Settings], market: Market,
        fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    ws, rest = fakes
    d = run_daemon(ref_settings(FUNDING_REFERENCE_REFRESH_S=scaled_s(1)))
    carried = set(market.listed()) - {SILENT_SYMBOL}
    wait_until(lambda: set(d.doc()["funding_state"]) == carried)
    listed = d.doc()["reference"]["symbols"]
    rest.truncate_exchange_info(int(0.6 * listed))  # one 60 % answer (over the collapse guard's half)
    wait_until(lambda: DaemonStatus.of(d.doc()).unconfirmed_drops > 0)
    doc = d.doc()
    assert set(doc["funding_state"]) == carried and doc["reference"]["symbols"] == listed  # nothing dropped
    assert len(reference.read(d.settings.reference_path).symbols) == listed  # the API's exchangeInfo neither
    view = View().read(statefile.parse_document(orjson.dumps(doc)))
    status = ServiceStatus.of(view, time.time(), HealthLimits(stale_after_s=scaled(2)))
    assert any(w.startswith("the listing shrank: exchangeInfo no longer lists") for w in status.warnings)
    wait_until(lambda: DaemonStatus.of(d.doc()).unconfirmed_drops == 0)  # the next, full answer: all is well
    assert set(d.doc()["funding_state"]) == carried and d.doc()["reference"]["symbols"] == listed


def test_two_answers_that_agree_do_drop(run_daemon: Callable[..., DaemonThread],
                                        ref_settings: Callable[..., Settings], market: Market,
                                        fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    ws, rest = fakes
    d = run_daemon(ref_settings(FUNDING_REFERENCE_REFRESH_S=scaled_s(1)))
    wait_until(lambda: "SOLUSDT" in d.doc()["funding_state"] and d.doc()["reference"]["symbols"])
    market.delist("SOLUSDT")  # really delisted: every answer from now on lacks it
    wait_until(lambda: DaemonStatus.of(d.doc()).unconfirmed_examples == ("SOLUSDT",))
    wait_until(lambda: "SOLUSDT" not in d.doc()["funding_state"])
    assert DaemonStatus.of(d.doc()).unconfirmed_drops == 0
