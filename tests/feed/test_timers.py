"""The daemon's timed decisions without sockets: the pure watchdog/reconnect/rotation rules, then the real daemon
driven event by event with a fake clock (its connections are never started: the test plays what they would
report), so hours of daemon time pass in milliseconds."""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Callable, Iterator

import orjson
import pytest

from volspike_funding.core.settings import Settings
from volspike_funding.fake.clock import FakeClock
from volspike_funding.fake.market import Market
from volspike_funding.feed.connection import CLOSED, FRAME, OPEN, REFERENCE, Connection, Event
from volspike_funding.feed.daemon import Daemon
from volspike_funding.feed.timers import reconnect_due, rotation_due, silent_for, watchdog_expired
from volspike_funding.store.reference import ReferenceData


@dataclass
class Link:
    opened: float | None = None
    last_data: float | None = None
    last_all_market: float | None = None


def test_the_watchdog_counts_from_the_open_then_from_the_signal_it_listens_to() -> None:
    assert silent_for(Link(), 99.0, all_market=True) is None  # connecting: the connect timeout's business
    assert not watchdog_expired(Link(), 1e9, 10, all_market=True)
    opened = Link(opened=100.0)
    assert not watchdog_expired(opened, 110.0, 10, all_market=True)
    assert watchdog_expired(opened, 110.001, 10, all_market=True)
    # Per-symbol frames keep flowing while the all-market stream is silent: that is still a stall.
    per_symbol_only = Link(opened=100.0, last_data=119.0, last_all_market=105.0)
    assert watchdog_expired(per_symbol_only, 115.5, 10, all_market=True)
    assert not watchdog_expired(per_symbol_only, 115.5, 10, all_market=False)


def test_reconnect_and_rotation_are_due_only_when_every_condition_holds() -> None:
    assert not reconnect_due(None, 1e9) and not reconnect_due(5.0, 4.9) and reconnect_due(5.0, 5.0)
    day = 82_800.0
    old = Link(opened=0.0, last_data=day)
    assert rotation_due(old, day, day, replacing=False, retry_at=0.0)
    assert not rotation_due(old, day - 0.001, day, replacing=False, retry_at=0.0)
    assert not rotation_due(old, day, day, replacing=True, retry_at=0.0)  # one replacement at a time
    assert not rotation_due(old, day, day, replacing=False, retry_at=day + 10)  # after a failed replacement
    assert not rotation_due(Link(opened=0.0), day, day, replacing=False, retry_at=0.0)  # never carried data
    assert not rotation_due(old, day, 0, replacing=False, retry_at=0.0)  # disabled
    assert not rotation_due(None, day, day, replacing=False, retry_at=0.0)


# -- the daemon on a fake clock ---------------------------------------------------------------------------------

class Driven:
    """A real daemon whose connections are made but never started, and whose clocks move only when told."""

    def __init__(self, settings: Settings, market: Market) -> None:
        self.clock = FakeClock()
        self.market = market
        self.made: list[Connection] = []
        self.daemon = Daemon(settings, rng=lambda: 0.5, clock=self.clock.time, monotonic=self.clock.monotonic,
                             connect=self._connect)
        self.daemon.open()

    def _connect(self) -> Connection:
        conn = Connection("ws://127.0.0.1:9/unused", queue.Queue(), connect_timeout=1, idle_timeout=1,
                          clock=self.clock.time, monotonic=self.clock.monotonic)
        self.made.append(conn)
        return conn

    def play(self, kind: str, conn: Connection | None = None, **fields: object) -> None:
        self.daemon.step(Event(conn or self.made[-1], kind, self.clock.time(), **fields))  # type: ignore[arg-type]

    def frame(self, conn: Connection | None = None) -> None:
        self.play(FRAME, conn, data=self.market.frame(int(self.clock.time() * 1000)).encode())

    def run_for(self, seconds: float, *, frames: bool, every: float = 1.0) -> None:
        """Let ``seconds`` pass in steps of ``every``, with an all-market frame at each step or none at all."""
        end = self.clock.mono + seconds
        while self.clock.mono < end - 1e-9:
            self.clock.advance(every)
            if frames:
                self.frame()
            else:
                self.daemon.step(None)


@pytest.fixture
def driven(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Driven]]:
    made: list[Driven] = []

    def make(market: Market | None = None, **env: str) -> Driven:
        settings = make_settings(BINANCE_WS_URL="wss://fstream.binance.com/market/stream?streams=!markPrice@arr@1s",
                                 **env)
        d = Driven(settings, market or Market(30))
        made.append(d)
        return d

    yield make
    for d in made:
        d.daemon.close()


def test_the_watchdog_cuts_a_silent_connection_and_backs_off_before_the_next(driven: Callable[..., Driven]) -> None:
    d = driven(FUNDING_NO_DATA_TIMEOUT_S="10", FUNDING_BACKOFF_INITIAL_S="1", FUNDING_BACKOFF_MAX_S="8")
    d.daemon.step(None)  # reconnect_at starts due: the first connection is made at once
    assert len(d.made) == 1
    d.play(OPEN)
    d.frame()
    first = d.made[0]
    d.run_for(10, frames=False, every=0.5)
    assert not first.aborting  # exactly the timeout: not yet
    d.run_for(0.5, frames=False)
    assert first.aborting
    d.play(CLOSED, first, reason="no mark-price data for 10 s (watchdog)")
    assert d.daemon.active is None and d.daemon.store.connection["connected"] is False
    d.run_for(0.25, frames=False, every=0.25)  # full jitter at 0.5: 0.5 s of a 1 s cap
    assert len(d.made) == 1
    d.run_for(0.25, frames=False, every=0.25)
    assert len(d.made) == 2 and d.daemon.active is d.made[1]


def test_rotation_opens_the_replacement_after_23_hours_and_switches_at_its_first_frame(
        driven: Callable[..., Driven]) -> None:
    d = driven(FUNDING_NO_DATA_TIMEOUT_S="100000", FUNDING_ROTATE_AFTER_S="82800")
    d.daemon.step(None)
    d.play(OPEN)
    d.frame()
    old = d.made[0]
    d.run_for(82_799, frames=False, every=82_799)
    assert len(d.made) == 1
    d.run_for(1, frames=False)
    assert len(d.made) == 2 and d.daemon.candidate is d.made[1] and not old.aborting
    d.play(OPEN)
    assert d.daemon.active is old  # open is not enough: the switch waits for data
    d.frame()
    assert d.daemon.active is d.made[1] and old.aborting and d.daemon.store.connection["rotations"] == 1


def _reference(market: Market) -> ReferenceData:
    symbols = [market.exchange_symbol(c) for c in market.listed().values()]
    return ReferenceData(exchange_info=orjson.dumps({"symbols": symbols}), exchange_info_at=0.0)


def test_a_stall_of_the_all_market_stream_subscribes_nothing_more(driven: Callable[..., Driven]) -> None:
    """Issue 19: a stall longer than 30 s once put every symbol on a per-symbol stream (then took 606 off)."""
    market = Market(120)
    d = driven(market, FUNDING_NO_DATA_TIMEOUT_S="1000")  # the watchdog is tested above; here only the plan
    d.daemon.step(None)
    d.play(REFERENCE, conn=None, payload=_reference(market))
    d.play(OPEN)
    d.run_for(10, frames=True)
    conn = d.made[0]
    stream_only = set(market.stream_only) | set(market.silent)
    assert conn.subs.symbols == stream_only
    sizes = set()
    for _ in range(80):  # 40 s without a frame, the loop ticking every 0.5 s
        d.run_for(0.5, frames=False, every=0.5)
        sizes.add(len(conn.subs.symbols))
    d.run_for(10, frames=True)
    assert sizes == {len(stream_only)} and conn.subs.symbols == stream_only
