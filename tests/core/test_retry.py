"""The one retry policy, table-driven with every caller's inputs: what each server may send as ``Retry-After``
and the backoff each caller configures. No value ever comes out infinite, negative or beyond its cap."""

from __future__ import annotations

import math
from typing import Callable

import pytest

from volspike_funding.binance.rest import MAX_418_PAUSE_S, MAX_429_PAUSE_S
from volspike_funding.consumers.sinks import MAX_RETRY_AFTER_S, WAITS
from volspike_funding.core.retry import LONGEST_WAIT_S, Backoff, parse_retry_after

NOW = 1_445_412_470.0  # Wed, 21 Oct 2015 07:27:50 GMT
WS = LONGEST_WAIT_S  # the WebSocket handshake's cap (the daemon then holds it to FUNDING_BACKOFF_MAX_S)

RETRY_AFTER = [
    # (who sends it, raw value, cap, clamp, expected)
    ("REST 429", "30", MAX_429_PAUSE_S, True, 30.0),
    ("REST 429", "0", MAX_429_PAUSE_S, True, 0.0),
    ("REST 429: the bug", "inf", MAX_429_PAUSE_S, True, None),
    ("REST 429", "Infinity", MAX_429_PAUSE_S, True, None),
    ("REST 429", "nan", MAX_429_PAUSE_S, True, None),
    ("REST 429", "-5", MAX_429_PAUSE_S, True, None),
    ("REST 429", "soon", MAX_429_PAUSE_S, True, None),
    ("REST 429", "", MAX_429_PAUSE_S, True, None),
    ("REST 429", "1_0", MAX_429_PAUSE_S, True, None),
    ("REST 429", "0x10", MAX_429_PAUSE_S, True, None),
    ("REST 429: huge", "1e12", MAX_429_PAUSE_S, True, MAX_429_PAUSE_S),
    ("REST 429: 80 digits", "9" * 80, MAX_429_PAUSE_S, True, MAX_429_PAUSE_S),
    ("REST 429: 500 digits", "9" * 500, MAX_429_PAUSE_S, True, None),  # not parsed at all
    ("REST 418", "300", MAX_418_PAUSE_S, True, 300.0),
    ("REST 418: 3 days", "259200", MAX_418_PAUSE_S, True, 259_200.0),
    ("REST 418: a year", "31536000", MAX_418_PAUSE_S, True, MAX_418_PAUSE_S),
    ("REST 418", "inf", MAX_418_PAUSE_S, True, None),
    ("WS handshake", "3600", WS, True, 3600.0),
    ("WS handshake: fake's %g", "1e+05", WS, True, 1e5),
    ("WS handshake: huge", "1e+07", WS, True, WS),
    ("WS handshake", "1.5", WS, True, 1.5),
    ("WS handshake", ".5", WS, True, 0.5),
    ("WS handshake", " 7 ", WS, True, 7.0),
    ("WS handshake", "inf", WS, True, None),
    ("WS handshake", "-5", WS, True, None),
    ("sink 503", "1", MAX_RETRY_AFTER_S, False, 1.0),
    ("sink 503", "30", MAX_RETRY_AFTER_S, False, 30.0),
    ("sink 503: too long, given up", "31", MAX_RETRY_AFTER_S, False, None),
    ("sink 503: too long, given up", "3600", MAX_RETRY_AFTER_S, False, None),
    ("sink 503", "inf", MAX_RETRY_AFTER_S, False, None),
    ("Telegram JSON int", 3, MAX_RETRY_AFTER_S, False, 3.0),
    ("Telegram JSON float", 2.5, MAX_RETRY_AFTER_S, False, 2.5),
    ("Telegram JSON true", True, MAX_RETRY_AFTER_S, False, None),
    ("Telegram JSON inf", math.inf, MAX_RETRY_AFTER_S, False, None),
    ("Telegram JSON nan", math.nan, MAX_RETRY_AFTER_S, False, None),
    ("Telegram JSON negative", -1, MAX_RETRY_AFTER_S, False, None),
    ("Telegram JSON huge", 10 ** 400, MAX_RETRY_AFTER_S, True, MAX_RETRY_AFTER_S),  # too big for a float
    ("absent", None, MAX_429_PAUSE_S, True, None),
    # HTTP-dates (RFC 9110): IMF-fixdate, the obsolete RFC 850 and asctime forms; a past date means now.
    ("HTTP-date", "Wed, 21 Oct 2015 07:28:00 GMT", MAX_429_PAUSE_S, True, 10.0),
    ("HTTP-date past", "Wed, 21 Oct 2015 07:00:00 GMT", MAX_429_PAUSE_S, True, 0.0),
    ("HTTP-date RFC 850", "Wednesday, 21-Oct-15 07:28:00 GMT", MAX_429_PAUSE_S, True, 10.0),
    ("HTTP-date asctime", "Wed Oct 21 07:28:00 2015", MAX_429_PAUSE_S, True, 10.0),
    ("HTTP-date far", "Wed, 21 Oct 2099 07:28:00 GMT", MAX_429_PAUSE_S, True, MAX_429_PAUSE_S),
    ("HTTP-date far, sink", "Wed, 21 Oct 2099 07:28:00 GMT", MAX_RETRY_AFTER_S, False, None),
    ("HTTP-date year 9999", "Fri, 31 Dec 9999 23:59:59 GMT", MAX_429_PAUSE_S, True, MAX_429_PAUSE_S),
    ("HTTP-date garbage", "Wed, 99 Foo 2015 07:28:00 GMT", MAX_429_PAUSE_S, True, None),
]


@pytest.mark.parametrize("who, raw, cap, clamp, expected", RETRY_AFTER, ids=[f"{r[0]}: {str(r[1])[:24]}"
                                                                            for r in RETRY_AFTER])
def test_parse_retry_after(who: str, raw: str | float | None, cap: float, clamp: bool,
                           expected: float | None) -> None:
    got = parse_retry_after(raw, cap, now=lambda: NOW, clamp=clamp)
    assert got == expected
    if got is not None:
        assert math.isfinite(got) and 0 <= got <= cap


@pytest.mark.parametrize("cap", [math.inf, math.nan, -1.0])
def test_the_cap_itself_must_be_a_bound(cap: float) -> None:
    with pytest.raises(ValueError):
        parse_retry_after("5", cap)


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


BACKOFF = [
    # (caller, backoff, consecutive failures, expected delay, expected ceiling)
    ("daemon reconnect", Backoff(1.0, 60.0, jitter=1.0, rng=fixed(1.0)), 1, 1.0, 1.0),
    ("daemon reconnect", Backoff(1.0, 60.0, jitter=1.0, rng=fixed(1.0)), 6, 32.0, 32.0),
    ("daemon reconnect", Backoff(1.0, 60.0, jitter=1.0, rng=fixed(1.0)), 7, 60.0, 60.0),
    ("daemon reconnect: full jitter", Backoff(1.0, 60.0, jitter=1.0, rng=fixed(0.0)), 5, 0.0, 16.0),
    ("daemon reconnect: full jitter", Backoff(1.0, 60.0, jitter=1.0, rng=fixed(0.5)), 5, 8.0, 16.0),
    ("daemon reconnect: no overflow", Backoff(1.0, 60.0, jitter=1.0, rng=fixed(1.0)), 10_000, 60.0, 60.0),
    ("daemon reconnect: 0th", Backoff(1.0, 60.0, jitter=1.0, rng=fixed(1.0)), 0, 1.0, 1.0),
    ("REST retry: half jitter", Backoff(0.5, 5.0, jitter=0.5, rng=fixed(0.0)), 1, 0.25, 0.5),
    ("REST retry: half jitter", Backoff(0.5, 5.0, jitter=0.5, rng=fixed(1.0)), 2, 1.0, 1.0),
    ("REST retry: capped", Backoff(0.5, 5.0, jitter=0.5, rng=fixed(0.0)), 9, 2.5, 5.0),
    ("reference fetch", Backoff(60.0, 900.0), 1, 60.0, 60.0),
    ("reference fetch", Backoff(60.0, 900.0), 4, 480.0, 480.0),
    ("reference fetch", Backoff(60.0, 900.0), 5, 900.0, 900.0),
    ("reference fetch: a year of failures", Backoff(60.0, 900.0), 10 ** 6, 900.0, 900.0),
    ("sinks", WAITS, 1, 1.0, 1.0),
    ("sinks", WAITS, 2, 2.0, 2.0),
    ("a random source out of range is clipped", Backoff(1.0, 8.0, jitter=1.0, rng=fixed(7.0)), 4, 8.0, 8.0),
    ("zero base", Backoff(0.0, 8.0), 10 ** 6, 0.0, 0.0),
    ("factor 3", Backoff(1.0, 100.0, factor=3.0), 4, 27.0, 27.0),
]


@pytest.mark.parametrize("caller, backoff, failures, delay, ceiling", BACKOFF,
                         ids=[f"{b[0]} #{b[2]}" for b in BACKOFF])
def test_backoff(caller: str, backoff: Backoff, failures: int, delay: float, ceiling: float) -> None:
    assert backoff.ceiling(failures) == ceiling
    assert backoff.delay(failures) == delay


def test_counting_backoff_grows_and_resets_like_the_redis_writer_needs() -> None:
    backoff = Backoff(0.5, 10.0)
    assert [backoff.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.failures == 7
    backoff.reset()
    assert backoff.failures == 0 and backoff.next() == 0.5


def test_default_random_source_stays_within_the_jitter_band() -> None:
    backoff = Backoff(1.0, 60.0, jitter=0.5)
    assert all(2.0 <= backoff.delay(3) <= 4.0 for _ in range(1000))


@pytest.mark.parametrize("kwargs", [dict(base=2.0, cap=1.0), dict(base=-1.0, cap=1.0), dict(base=1.0, cap=math.inf),
                                    dict(base=1.0, cap=2.0, factor=0.5), dict(base=1.0, cap=2.0, jitter=1.5),
                                    dict(base=1.0, cap=2.0, factor=math.nan)])
def test_a_backoff_that_could_not_be_bounded_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)
