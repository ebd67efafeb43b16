"""The store boundary as an interface: what a daemon writes through and what an API reads through, and the one
place that chooses the backend (the state file, or Redis with ``FUNDING_STORE_URL``).

Both backends implement both protocols, and the daemon and the API know only these: no ``isinstance`` on a
backend, no attribute that means a path for one and a URL for the other. A failed write raises ``OSError`` (a
full or read-only disk) or :class:`~volspike_funding.core.errors.StoreUnavailable` (the shared store refused or
is unreachable); both mean "keep the data in memory and try again", which is :data:`WRITE_FAILURES`. Losing the
file's lock (:class:`~volspike_funding.core.errors.StateLockedError`) is neither: it is fatal.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, Protocol

from volspike_funding.core.errors import StoreUnavailable
from volspike_funding.core.settings import Settings
from volspike_funding.store.marketfile import MarketSnapshot
from volspike_funding.store.view import View

log = logging.getLogger("funding.store")

#: What a writer raises when this write failed and a later one may succeed.
WRITE_FAILURES: tuple[type[BaseException], ...] = (OSError, StoreUnavailable)


class StateWriterLike(Protocol):
    """A daemon's writer of the state document."""

    @property
    def location(self) -> str:
        """Where it writes, for logs and status lines: a path, or a store URL without its password."""
        ...

    def write(self, document: dict[str, Any]) -> int:
        """Store ``document`` (the state file's format); the number of bytes or records written."""
        ...

    def write_reference(self, document: bytes, listed: Iterable[str] | None = None) -> None:
        """Share the reference data with readers that cannot read this host's reference file."""
        ...

    def close(self) -> None:
        ...


class StateReaderLike(Protocol):
    """An API's view of the stored state, refreshed in the background."""

    @property
    def location(self) -> str:
        ...

    @property
    def view(self) -> View:
        """The newest view; replaced whole, so a request that holds one sees one consistent state."""
        ...

    #: Called on the reader's own thread after each change of :attr:`view`.
    listeners: list[Callable[[], None]]

    def start(self) -> "StateReaderLike":
        ...

    def stop(self) -> None:
        ...

    def refresh(self) -> bool:
        ...


def open_writer(settings: Settings) -> StateWriterLike:
    """The daemon's writer: the state file (one writer, locked), or the shared store (any number of daemons)."""
    from volspike_funding.store.statefile import StateWriter

    if not settings.store_url:
        return StateWriter(settings.state_file)
    from volspike_funding.store.redis_store import RedisStateWriter

    writer = RedisStateWriter(settings.store_url, max_future_ms=int(settings.max_event_skew_s * 1000))
    log.info("store: %s as daemon %s (other daemons may write too: the newest event time wins)", writer.location,
             writer.daemon_id)
    return writer


def open_cache(settings: Settings, poll_s: float = 0.5) -> StateReaderLike:
    """The API's view: of the state file, or of the shared store (the same interface)."""
    if settings.store_url:
        from volspike_funding.store.redis_store import RedisStateCache

        return RedisStateCache(settings.store_url, poll_s=max(poll_s, 0.05))
    from volspike_funding.store.view import StateCache

    return StateCache(settings.state_file, poll_s=poll_s, reference_path=settings.reference_path)


class MarketWriterLike(Protocol):
    """The market feed's writer of its document (:mod:`.marketfile`'s format)."""

    location: str

    def write(self, document: dict[str, Any]) -> int:
        ...


class MarketReaderLike(Protocol):
    """An API's copy of the market document."""

    def get(self) -> "MarketSnapshot":
        ...

    def stop(self) -> None:
        ...


def open_market_writer(settings: Settings, clock: Callable[[], float] = time.time) -> MarketWriterLike:
    """The market file beside the state file, or the shared store (with ``FUNDING_STORE_URL``; ``clock``: the one
    the documents' times are read from, whose offset from the store's the store measures)."""
    if settings.store_url:
        from volspike_funding.store.redis_market import RedisMarketWriter

        return RedisMarketWriter(settings.store_url, clock)
    from volspike_funding.store.marketfile import MarketFileWriter, market_path

    return MarketFileWriter(market_path(settings.state_file, settings.market_file))


def open_market_cache(settings: Settings) -> MarketReaderLike | None:
    """The API's copy of the market document (``None`` while FUNDING_MARKET_ENABLED is off)."""
    if not settings.market_enabled:
        return None
    if settings.store_url:
        from volspike_funding.store.redis_market import RedisMarketCache

        return RedisMarketCache(settings.store_url)
    from volspike_funding.store.marketfile import MarketCache, market_path

    return MarketCache(market_path(settings.state_file, settings.market_file))
