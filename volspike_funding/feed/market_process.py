"""The market feed in a process of its own, so that it never shares the mark-price loop's interpreter lock.

In the daemon's process the market feed's ~2,400 kline messages a second (618 streams at 4 updates a second) held
the lock often enough that each mark-price frame waited for it: freshness p50 12.6 -> 18.8 ms
(``bench/bench_market.py``). In a child of its own the mark-price loop is as fast as with the feed off, and a
defect in the market code cannot take the mark-price feed down with it.

The daemon talks to the child over one pipe: the universe (the listing's trading USDT perpetuals) whenever the
reference data changes, and ``stop``. The child stops by itself when the pipe closes (the daemon is gone), and on
SIGTERM/SIGINT (systemd signals the whole unit). The child is started with ``spawn``: forking a process with
threads running is unsafe. A child that dies is started again after a doubling backoff (1 s to 1 min) and given
the universe again; it writes the market file itself, so readers see its age and reason as before.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import Connection as Pipe
from typing import Any, Callable

from volspike_funding.core.logs import setup_logging
from volspike_funding.core.retry import Backoff
from volspike_funding.core.settings import Settings, secret_values
from volspike_funding.store.reference import ReferenceData

log = logging.getLogger("funding.market")

STOP_WAIT_S = 10.0
#: The child's scheduling niceness, relative to the daemon's.
CHILD_NICENESS = 10
#: A child alive this long is well: its next death waits the shortest time again.
HEALTHY_AFTER_S = 60.0


def child_main(settings: Settings, pipe: Pipe) -> None:
    """The child: the market feed's loop until ``stop``, the pipe closing, or a signal."""
    from volspike_funding.feed.market_feed import MarketFeed  # the feed's imports are the child's, not the daemon's

    setup_logging(settings.log_level, secret_values(settings))
    try:
        # Mark prices first: when both processes want the CPU (a busy hour's ~2,400 kline messages a second on a
        # 2-core droplet), the mark-price loop is served before the candles; raising one's own niceness needs no
        # privilege, so the hardened unit allows it.
        os.nice(CHILD_NICENESS)
    except OSError:
        pass
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    feed = MarketFeed(settings).start()
    try:
        while not stop.is_set():
            try:
                if not pipe.poll(0.5):
                    continue
                message = pipe.recv()
            except (EOFError, OSError):
                log.warning("market feed: the daemon is gone; stopping")
                break
            if message[0] == "stop":
                break
            if message[0] == "universe":
                feed.set_universe(message[1])
    finally:
        feed.stop()


class MarketProcess:
    """The daemon's side: the same face as an in-process feed (``follow``, ``stop``), plus ``check`` on its loop."""

    def __init__(self, settings: Settings, *, monotonic: Callable[[], float],
                 target: Callable[[Settings, Pipe], None] = child_main) -> None:
        self.settings = settings
        self._mono = monotonic
        self._target = target
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._pipe: Pipe | None = None
        self._universe: list[str] | None = None
        self._restart = Backoff(1.0, 60.0)
        self._restart_at: float | None = None
        self.restarts = 0
        self._started_at = 0.0
        self._stopping = False

    @classmethod
    def for_settings(cls, settings: Settings, reference: ReferenceData | None, *,
                     monotonic: Callable[[], float]) -> "MarketProcess | None":
        """The daemon's market feed, started (``None`` while FUNDING_MARKET_ENABLED is off)."""
        if not settings.market_enabled:
            return None
        feed = cls(settings, monotonic=monotonic).start()
        feed.follow(reference)
        return feed

    def start(self) -> "MarketProcess":
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=self._target, args=(self.settings, theirs), name="market-feed",
                                        daemon=True)
        process.start()
        theirs.close()  # only the child holds its end: its death closes the pipe for us, ours for it
        os.set_blocking(ours.fileno(), False)  # a child that stopped reading must never block the mark-price loop
        self._process, self._pipe, self._started_at = process, ours, self._mono()
        log.info("market feed started in process %d", process.pid)
        if self._universe is not None:
            self._send(("universe", self._universe))
        return self

    def follow(self, reference: ReferenceData | None) -> None:
        """Keep the klines of the listing's trading USDT perpetuals (nothing changes while it is unknown)."""
        if reference is not None and reference.known:
            universe = sorted(reference.usdt_perpetuals)
            if universe != self._universe:
                self._universe = universe
                self._send(("universe", universe))

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            if self._pipe is not None:
                self._pipe.send(message)
        except BlockingIOError:
            # The pipe is full: the child stopped reading (hung). Replace it; check() starts the next one.
            log.error("market feed process %d is not reading its pipe; replacing it", self._process.pid)
            self._process.kill()
        except (OSError, ValueError):
            pass  # the child is gone: check() starts another, which is given the universe

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def check(self) -> None:
        """On the daemon's loop: a child that died is started again, after a doubling backoff (reset once a child
        has lived ``HEALTHY_AFTER_S``)."""
        if self._stopping or self._process is None:
            return
        mono = self._mono()
        if self._process.is_alive():
            if mono - self._started_at >= HEALTHY_AFTER_S:
                self._restart.reset()
            return
        if self._restart_at is None:
            delay = self._restart.next()
            self._restart_at = mono + delay
            log.error("market feed process %d exited with code %s; starting another in %.0f s",
                      self._process.pid, self._process.exitcode, delay)
            return
        if mono >= self._restart_at:
            self._restart_at = None
            self.restarts += 1
            if self._pipe is not None:
                self._pipe.close()
            self.start()

    def stop(self) -> None:
        self._stopping = True
        self._send(("stop",))
        process = self._process
        if process is not None:
            process.join(STOP_WAIT_S)
            if process.is_alive():
                log.warning("market feed process %d did not stop in %.0f s; terminating it", process.pid,
                            STOP_WAIT_S)
                process.terminate()
                process.join(2.0)
        if self._pipe is not None:
            self._pipe.close()
