"""Issue 23.4, against the fake exchange on loopback: a SUBSCRIBE Binance refuses (an error reply) or never answers
is asked for again with a backoff on the same connection, health and /metrics say so meanwhile, and a stream counts
as subscribed only once Binance acknowledged it."""

from __future__ import annotations

import time
from typing import Callable

import orjson
import pytest

from volspike_funding.api.service_status import HealthLimits, ServiceStatus
from volspike_funding.core.settings import Settings
from volspike_funding.fake.rest_server import FakeBinanceRest
from volspike_funding.fake.ws_server import FakeBinanceWS
from volspike_funding.store import statefile
from volspike_funding.store.daemon_status import DaemonStatus
from volspike_funding.store.view import View

from ..conftest import DaemonThread, scaled, scaled_s, wait_until
from .test_reference import fakes, market, ref_settings  # noqa: F401  (the fixtures)


def status_of(d: DaemonThread) -> ServiceStatus:
    view = View().read(statefile.parse_document(orjson.dumps(d.doc())))
    return ServiceStatus.of(view, time.time(), HealthLimits(stale_after_s=scaled(2)))


@pytest.mark.parametrize("answer, why", [("error", "Binance answered SUBSCRIBE 1 with error 2: 'Invalid request"),
                                         ("none", "no reply to SUBSCRIBE 1 within")])
def test_a_refused_or_unanswered_subscribe_is_retried_and_reported_until_binance_accepts_it(
        answer: str, why: str, run_daemon: Callable[..., DaemonThread], ref_settings: Callable[..., Settings],
        fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    ws, _ = fakes
    ws.subscribe_answer = answer
    d = run_daemon(ref_settings(FUNDING_NO_DATA_TIMEOUT_S=scaled_s(3)))  # replies awaited 3 s, retries from 3 s
    wait_until(lambda: (DaemonStatus.of(d.doc()).subscriptions_failing or "").startswith(why), 30)
    daemon = DaemonStatus.of(d.doc())
    assert daemon.per_symbol_streams == 0 and daemon.held_streams >= 1, daemon  # not counted as subscribed
    status = status_of(d)
    assert status.healthy and any(w.startswith("per-symbol subscriptions failing: " + why) and
                                  "symbols get no data until Binance accepts them" in w for w in status.warnings)
    assert "TSLAUSDT" not in d.doc()["funding_state"]
    ws.subscribe_answer = "result"  # Binance accepts them again: asked for on the same connection
    wait_until(lambda: "TSLAUSDT" in d.doc()["funding_state"], 30)
    wait_until(lambda: DaemonStatus.of(d.doc()).subscriptions_failing is None, 10)
    daemon = DaemonStatus.of(d.doc())
    assert daemon.per_symbol_streams >= 1 and daemon.held_streams == 0
    assert ws.stats["connections"] == 1, ws.stats  # the all-market stream never paid for it
    assert not any("subscriptions failing" in w for w in status_of(d).warnings)

