"""The market feed's document in the shared store (``FUNDING_STORE_URL``): the daemons' writer, the APIs' reader.

One key holds the market file's document (:mod:`.marketfile`'s format, the same JSON) and a small hash its stamps
(:data:`~.redis_layout.MARKET_META`): its version, and its feed time (``lastFrameAt``) and its writer's clock
offset, both measured in the store's clock. A write replaces them only when its feed time is not older than the
stored one's, so of several daemons the freshest feed is what every API serves, and a daemon that stopped receiving
loses to one that did within a second (:data:`~.redis_layout.NEWER_MARKET`). The mark-price records are untouched:
their 1 s writes stay the size they are.

An API reads on a thread of its own, at most every ``READ_EVERY_S``, and swaps in the parsed snapshot: a slow or
unreachable store never blocks a request, and the snapshot it serves keeps its true age (the routes answer 503 once
it is stale). Each read is one round trip that carries the ~2.5 MB document only when its version changed
(:data:`~.redis_layout.READ_MARKET`), and the store's clock, so the document's times reach the routes in this
host's clock whatever the daemon host's clock says (as :mod:`.redis_store` does for the records).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable

from volspike_funding.core.errors import StoreUnavailable
from volspike_funding.store import marketfile
from volspike_funding.store.marketfile import MarketSnapshot
from volspike_funding.store.redis_layout import MARKET, MARKET_META, NEWER_MARKET, READ_MARKET, beat_ms, store_now
from volspike_funding.store.redis_store import _client, describe

log = logging.getLogger("funding.store")

READ_EVERY_S = 0.5


class RedisMarketWriter:
    """The market feed's writer into the shared store (``write`` as :func:`.marketfile.write`)."""

    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        """``clock``: the one the documents' times are read from (the market feed's)."""
        self.location = describe(url)
        self._redis, self._clock = _client(url), clock
        self._script = self._redis.register_script(NEWER_MARKET)
        # Unique per process start: a version never repeats, not even after the store restarted empty.
        self.writer_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._sequence = 0

    def write(self, document: dict[str, Any]) -> int:
        import redis

        data = marketfile.encode(document)
        frame = document.get("lastFrameAt")
        self._sequence += 1
        # Sent after the encoding, so the store measures this clock's offset from a reading taken just before it.
        args = [int(self._clock() * 1000), "" if frame is None else int(frame * 1000), self.writer_id,
                f"{self.writer_id}:{self._sequence}", data]
        try:
            self._script(keys=[MARKET, MARKET_META], args=args)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"shared store {self.location}: {type(exc).__name__}: {exc}") from None
        return len(data)


class RedisMarketCache:
    """An API's copy of the market document in the shared store (``get`` as :class:`.marketfile.MarketCache`)."""

    def __init__(self, url: str, read_every_s: float = READ_EVERY_S) -> None:
        self.location = describe(url)
        self._url, self._every = url, read_every_s
        self._snapshot = MarketSnapshot(error=f"not read from the shared store {self.location} yet")
        self._version: bytes | None = None
        #: Round trips to the store, and the documents they carried (the rest found the version unchanged).
        self.reads = self.fetches = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="market-store-reader", daemon=True)
        self._thread.start()

    def get(self) -> MarketSnapshot:
        return self._snapshot

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        import redis

        script = _client(self._url).register_script(READ_MARKET)
        while not self._stop.is_set():
            asked = time.time()  # the store reads its clock as it starts: before a 2.5 MB answer comes back
            try:
                answer = script(keys=[MARKET, MARKET_META], args=[self._version or b""])
            except redis.RedisError as exc:
                if self._snapshot.error is not None:  # nothing read yet: say why; else the last one ages honestly
                    self._snapshot = MarketSnapshot(error=f"shared store {self.location}: {type(exc).__name__}")
            else:
                self._take(answer, asked)
            self._stop.wait(self._every)

    def _take(self, answer: list[Any], now: float) -> None:
        self.reads += 1
        version, skew = answer[2:4]
        snapshot = self._snapshot
        if len(answer) > 4:
            self.fetches += 1
            snapshot = self._parse(answer[4])
            self._version = version if snapshot.error is None else None
        # This host's clock minus the store's, measured now (clocks drift; the document may not change for long),
        # plus the store's minus the writer's, measured at its write: what turns the writer's times into ours.
        offset = now - store_now(answer[:2])
        skew_ms = beat_ms(skew)
        shift = offset + (skew_ms / 1000 if skew_ms is not None else 0.0)
        self._snapshot = dataclasses.replace(snapshot, shift=shift) if snapshot.error is None else snapshot

    def _parse(self, raw: bytes | None) -> MarketSnapshot:
        if raw is None:
            return MarketSnapshot(error=f"no market data in the shared store {self.location} (FUNDING_MARKET_ENABLED "
                                        f"off in every daemon, or none has written yet)")
        return marketfile.decode(raw, f"the shared store's market data ({self.location})")
