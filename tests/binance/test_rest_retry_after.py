"""The REST client against the loopback fake Binance: whatever a 429/418 says in ``Retry-After``, the pause ends.

One ``Retry-After: inf`` used to pause every REST call of the process for ever. The client's clock is injected, so
"after the pause" is a step of that clock, not a wait."""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Iterator

import pytest

from volspike_funding.binance.rest import DEFAULT_PAUSE_S, MAX_418_PAUSE_S, MAX_429_PAUSE_S, BinanceRest
from volspike_funding.core.errors import IpBanned, RateLimited, Unavailable
from volspike_funding.fake.rest_server import FakeBinanceRest

from ..conftest import wait_until

START = 1_800_000_000.0  # the client's injected clock (2027-01-15); fixed, so the test ids are too
PATH = "/fapi/v1/exchangeInfo"

CASES = [
    # (status, Retry-After header or None, expected pause in seconds)
    (429, "inf", DEFAULT_PAUSE_S),
    (429, "nan", DEFAULT_PAUSE_S),
    (429, "-5", DEFAULT_PAUSE_S),
    (429, "later", DEFAULT_PAUSE_S),
    (429, None, DEFAULT_PAUSE_S),
    (429, "30", 30.0),
    (429, "1e12", MAX_429_PAUSE_S),
    (429, formatdate(START + 120, usegmt=True), 120.0),
    (418, "inf", DEFAULT_PAUSE_S),
    (418, "300", 300.0),
    (418, "1e12", MAX_418_PAUSE_S),
]


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rest() -> Iterator[FakeBinanceRest]:
    with FakeBinanceRest() as fake:
        yield fake


@pytest.mark.parametrize("status, header, pause", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_pause_ends_and_the_next_call_after_it_works(rest: FakeBinanceRest, status: int, header: str | None,
                                                          pause: float) -> None:
    clock = Clock()
    client = BinanceRest(rest.url, retries=0, clock=clock, sleep=lambda s: None)
    rest.fail(PATH, status, headers={"Retry-After": header} if header is not None else {})
    kind = IpBanned if status == 418 else RateLimited
    with pytest.raises(kind) as info:
        client.exchange_info()
    assert info.value.retry_after == pytest.approx(pause, abs=1.0)  # an HTTP-date has whole seconds
    sent = rest.counts[PATH]
    clock.now = START + pause - 2
    with pytest.raises(kind):
        client.exchange_info()  # still paused: nothing goes out
    assert rest.counts[PATH] == sent
    clock.now = START + pause + 2
    assert client.exchange_info()["symbols"]  # the pause is over, for this path and every other
    assert rest.counts[PATH] == sent + 1


def test_an_unusable_retry_after_is_named_in_the_log(rest: FakeBinanceRest, caplog: pytest.LogCaptureFixture) -> None:
    client = BinanceRest(rest.url, retries=0, clock=Clock(), sleep=lambda s: None)
    rest.fail(PATH, 429, headers={"Retry-After": "inf"})
    with pytest.raises(RateLimited):
        client.exchange_info()
    assert "paused for 60 s (unusable Retry-After 'inf' ignored)" in caplog.text


def test_a_small_cap_bounds_any_pause(rest: FakeBinanceRest) -> None:
    """The caps are the client's to set: the next call after the cap works on the real clock too."""
    client = BinanceRest(rest.url, retries=0, max_429_pause_s=0.05)
    rest.fail(PATH, 429, headers={"Retry-After": "inf"})
    with pytest.raises(RateLimited) as info:
        client.exchange_info()
    assert info.value.retry_after == 0.05

    def works() -> bool:
        try:
            return bool(client.exchange_info()["symbols"])
        except RateLimited:  # still paused: nothing was sent
            return False
    wait_until(works, 5)
    assert rest.counts[PATH] == 2


def test_an_answer_past_the_size_bound_is_not_read_nor_retried(rest: FakeBinanceRest) -> None:
    """Issue 23.9: a 5 MB exchangeInfo was accepted whole (+14 MB the daemon never gave back)."""
    body = {"symbols": [{"symbol": f"S{i:06d}USDT", "filters": ["x" * 100]} for i in range(40_000)]}  # ~5 MB
    rest.fail(PATH, 200, count=5, body=body)
    client = BinanceRest(rest.url, retries=2, sleep=lambda s: None)
    with pytest.raises(Unavailable, match=r"^/fapi/v1/exchangeInfo answered more than 4 MB; not read$"):
        client.exchange_info()
    assert rest.counts[PATH] == 1  # the same answer again would only cost the same again
    assert client.get("/fapi/v1/fundingInfo", weight=0)  # the client goes on, on a fresh connection
