"""REST backfill of the candles the stream did not give us, within a weight budget per minute, on its own thread.

At start every symbol lacks its history, after a gap (a reconnect, a failed rotation) the hours of the gap are
missing, and an hour without trades never gets a final message: each such symbol is asked once for
``GET /fapi/v1/klines?symbol=&interval=1h&limit=n`` (weight 1 below 100 rows, Binance's documentation). The budget
(``FUNDING_KLINE_BACKFILL_WEIGHT_PER_MIN``, 200 by default) spreads a start over minutes: 600 symbols take three,
never more than a few hundred weight in one minute, next to the OI poller's ~2,000. A 429/418 pauses the thread
for as long as Binance asks (the REST client's pause, capped by the client: up to 3 days for a 418), the rest stays
queued, and the market file says until when and why (``pausedUntil``, ``pausedBy``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from volspike_funding.binance.market_wire import Candle, candle_from_rest
from volspike_funding.binance.rest import BinanceRest
from volspike_funding.core.errors import FrameError, IpBanned, RateLimited, RestError

log = logging.getLogger("funding.market")

#: Rows asked for at most: the kept window (26 closed hours) and the open one. Weight 1 (< 100 rows).
MAX_ROWS = 27


def weight_of(limit: int) -> int:
    """Binance's weight of ``klines`` by ``limit``: [1,100) 1, [100,500) 2, [500,1000] 5, above 10."""
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


class Backfill:
    """Jobs ``(symbol, limit)`` in, ``on_result(symbol, candles, limit, error)`` out (called on this thread)."""

    def __init__(self, rest: BinanceRest, on_result: Callable[[str, list[Candle], int, str | None], None], *,
                 weight_per_min: float, clock: Callable[[], float] = time.time) -> None:
        self._rest = rest
        self._on_result = on_result
        self._budget = weight_per_min
        self._clock = clock
        self._jobs: "queue.Queue[tuple[str, int] | None]" = queue.Queue()
        self.pending: set[str] = set()
        self._lock = threading.Lock()
        self._minute = -1
        self.weight_this_minute = 0
        self.total_weight = 0
        self.last_error: str | None = None
        #: Until when (this clock) Binance told us to ask nothing, and with which answer ("418", "429").
        self.paused_until: float | None = None
        self.paused_by: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kline-backfill", daemon=True)

    def start(self) -> "Backfill":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._jobs.put(None)
        self._thread.join(5)

    def ask(self, symbol: str, limit: int) -> bool:
        """Queue ``symbol`` unless it is queued already; ``False`` then."""
        with self._lock:
            if symbol in self.pending:
                return False
            self.pending.add(symbol)
        self._jobs.put((symbol, max(2, min(limit, MAX_ROWS))))
        return True

    def pause(self, now: float) -> dict[str, float | str | None]:
        """The market file's ``pausedUntil`` and ``pausedBy``: ``None`` unless a pause Binance asked for runs."""
        until = self.paused_until
        if until is None or until <= now:
            return {"pausedUntil": None, "pausedBy": None}
        return {"pausedUntil": until, "pausedBy": self.paused_by}

    def _spend(self, weight: int) -> None:
        """Wait (interruptibly) until ``weight`` fits in this minute's budget."""
        while not self._stop.is_set():
            now = self._clock()
            minute = int(now // 60)
            if minute != self._minute:
                self._minute, self.weight_this_minute = minute, 0
            if self.weight_this_minute + weight <= self._budget:
                self.weight_this_minute += weight
                self.total_weight += weight
                return
            self._stop.wait(min(60.0 - now % 60 + 0.01, 1.0))

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self._jobs.get()
            if job is None:
                return
            symbol, limit = job
            self._spend(weight_of(limit))
            if self._stop.is_set():
                return
            candles: list[Candle] = []
            error: str | None = None
            try:
                now_ms = int(self._clock() * 1000)
                candles = [candle_from_rest(symbol, row, now_ms)
                           for row in self._rest.klines(symbol, "1h", limit)]
            except RateLimited as exc:
                error = f"klines {symbol}: {exc}"
                # The whole pause, not a part of it: the client would refuse the next job's call, sending nothing,
                # but its weight would be counted against the budget, and its symbol reported failed, once per part.
                # Said before the wait, which may last hours: the market file shows why nothing is asked meanwhile.
                pause = max(exc.retry_after or 60.0, 1.0)
                self.last_error = error
                self.paused_until, self.paused_by = self._clock() + pause, "418" if isinstance(exc, IpBanned) else "429"
                self._stop.wait(pause)
            except (RestError, FrameError) as exc:
                error = f"klines {symbol}: {exc}"
            self.last_error = error or self.last_error
            with self._lock:
                self.pending.discard(symbol)
            self._on_result(symbol, candles, limit, error)
