"""The daemon's handle on the market feed's child process: a child that dies is started again and given the universe
again; one that stops reading its pipe is replaced instead of blocking the mark-price loop. The children are real
processes (spawn) running the small targets below in place of the feed."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable

import orjson

from volspike_funding.core.settings import Settings
from volspike_funding.feed.market_process import MarketProcess
from volspike_funding.store.reference import ReferenceData

from ..conftest import scaled, wait_until


def record_once(settings: Settings, pipe: Any) -> None:
    """Write the first universe it is given beside the state file, then exit (a crash, to the daemon)."""
    message = pipe.recv()
    out = settings.state_file.parent / f"child-{time.monotonic_ns()}.json"
    out.write_text(json.dumps(message[1]))


def never_read(settings: Settings, pipe: Any) -> None:
    time.sleep(60)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reference(symbols: list[str]) -> ReferenceData:
    info = {"symbols": [{"symbol": s, "status": "TRADING", "contractType": "PERPETUAL", "quoteAsset": "USDT"}
                        for s in symbols]}
    return ReferenceData(exchange_info=orjson.dumps(info), exchange_info_at=time.time())


def test_a_child_that_dies_is_started_again_with_the_universe(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(FUNDING_MARKET_ENABLED="true")
    settings.state_file.parent.mkdir(parents=True)
    clock = Clock()
    handle = MarketProcess(settings, monotonic=clock, target=record_once).start()
    try:
        handle.follow(reference(["BTCUSDT", "ETHUSDT"]))
        outputs = lambda: sorted(settings.state_file.parent.glob("child-*.json"))  # noqa: E731
        wait_until(lambda: len(outputs()) == 1 and not handle.alive, 20)
        handle.check()  # it exited: a restart is due after the first backoff (1 s)
        assert handle.restarts == 0
        clock.now += 1.0
        handle.check()
        assert handle.restarts == 1
        wait_until(lambda: len(outputs()) == 2, 20)
        assert [json.loads(p.read_text()) for p in outputs()] == [["BTCUSDT", "ETHUSDT"]] * 2
    finally:
        handle.stop()


def test_a_child_that_stops_reading_is_replaced_not_waited_for(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(FUNDING_MARKET_ENABLED="true")
    clock = Clock()
    handle = MarketProcess(settings, monotonic=clock, target=never_read).start()
    try:
        def flood() -> None:
            for n in range(2000):  # ~20 KB each: the pipe fills within a few dozen
                handle.follow(reference([f"S{n}X{i:04d}USDT" for i in range(1000)]))
                if not handle.alive:
                    return

        # On a thread, so that a send that blocks (the defect) fails the test instead of hanging it.
        loop = threading.Thread(target=flood, daemon=True)
        loop.start()
        loop.join(scaled(60))
        assert not loop.is_alive(), "the daemon's loop was blocked by a child that does not read"
        wait_until(lambda: not handle.alive, 10)
        clock.now += 1.0
        handle.check()
        clock.now += 1.0
        handle.check()
        assert handle.restarts == 1 and handle.alive
    finally:
        handle.stop()
