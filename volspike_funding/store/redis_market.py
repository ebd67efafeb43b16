"""The market feed's document in the shared store (``FUNDING_STORE_URL``): the daemons' writer, the APIs' reader.

One key holds the market file's document (:mod:`.marketfile`'s format, the same JSON) and one the feed time it
carries (``lastFrameAt`` in ms): a write replaces them only when its feed time is not older than the stored one's,
so of several daemons the freshest feed is what every API serves, and a daemon that stopped receiving loses to one
that did within a second (:data:`~.redis_layout.NEWER_MARKET`). The mark-price records are untouched: their
1 s writes stay the size they are. An API reads the key on a thread of its own, at most every
``READ_EVERY_S``, and swaps in the parsed snapshot: a slow or unreachable store never blocks a request, and the
snapshot it serves keeps its true age (the routes answer 503 once it is stale).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from volspike_funding.core.errors import StoreUnavailable
from volspike_funding.store import marketfile
from volspike_funding.store.marketfile import MarketSnapshot
from volspike_funding.store.redis_layout import MARKET, MARKET_AT, NEWER_MARKET
from volspike_funding.store.redis_store import _client, describe

log = logging.getLogger("funding.store")

READ_EVERY_S = 0.5


class RedisMarketWriter:
    """The market feed's writer into the shared store (``write`` as :func:`.marketfile.write`)."""

    def __init__(self, url: str) -> None:
        self.location = describe(url)
        self._redis = _client(url)
        self._script = self._redis.register_script(NEWER_MARKET)

    def write(self, document: dict[str, Any]) -> int:
        import redis

        data = marketfile.encode(document)
        at = int((document.get("lastFrameAt") or 0) * 1000)
        try:
            self._script(keys=[MARKET, MARKET_AT], args=[at, data])
        except redis.RedisError as exc:
            raise StoreUnavailable(f"shared store {self.location}: {type(exc).__name__}: {exc}") from None
        return len(data)


class RedisMarketCache:
    """An API's copy of the market document in the shared store (``get`` as :class:`.marketfile.MarketCache`)."""

    def __init__(self, url: str, read_every_s: float = READ_EVERY_S) -> None:
        self.location = describe(url)
        self._url, self._every = url, read_every_s
        self._snapshot = MarketSnapshot(error=f"not read from the shared store {self.location} yet")
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

        client = _client(self._url)
        while not self._stop.is_set():
            try:
                raw = client.get(MARKET)
            except redis.RedisError as exc:
                if self._snapshot.error is not None:  # nothing read yet: say why; else the last one ages honestly
                    self._snapshot = MarketSnapshot(error=f"shared store {self.location}: {type(exc).__name__}")
            else:
                self._snapshot = self._parse(raw)
            self._stop.wait(self._every)

    def _parse(self, raw: bytes | None) -> MarketSnapshot:
        if raw is None:
            return MarketSnapshot(error=f"no market data in the shared store {self.location} (FUNDING_MARKET_ENABLED "
                                        f"off in every daemon, or none has written yet)")
        return marketfile.decode(raw, f"the shared store's market data ({self.location})")
