"""The daemon's timed decisions as pure functions: the no-data watchdog, the reconnect timer, the 24 h rotation.

No socket, thread or clock read here: the daemon's loop passes ``now`` (its monotonic clock, in seconds) and what it
knows about each connection, so every decision is unit-tested with made-up times in milliseconds
(``tests/feed/test_timers.py``), the way a Sans-I/O protocol core is.
"""

from __future__ import annotations

from typing import Protocol


class Liveness(Protocol):
    """What the loop records about one connection (monotonic seconds; ``None``: not yet)."""

    opened: float | None
    last_data: float | None
    #: The last all-market frame with data (the watchdog's signal when that is what we subscribe to).
    last_all_market: float | None


def silent_for(link: Liveness, now: float, *, all_market: bool) -> float | None:
    """Seconds without the data the watchdog listens to; ``None`` while the connection is not open yet (the
    connect timeout bounds that phase). With ``all_market``, per-symbol frames do not count: they must not hide an
    all-market stream gone silent."""
    if link.opened is None:
        return None
    since = (link.last_all_market if all_market else link.last_data) or link.opened
    return now - since


def watchdog_expired(link: Liveness, now: float, timeout_s: float, *, all_market: bool) -> bool:
    silent = silent_for(link, now, all_market=all_market)
    return silent is not None and silent > timeout_s


def reconnect_due(reconnect_at: float | None, now: float) -> bool:
    """``reconnect_at`` is ``None`` while a connection is wanted by nobody (one is open, or being replaced)."""
    return reconnect_at is not None and now >= reconnect_at


def rotation_due(active: Liveness | None, now: float, rotate_after_s: float, *, replacing: bool,
                 retry_at: float) -> bool:
    """Open a replacement before Binance's 24 h cut: the active connection has carried data, is old enough, no
    replacement is under way, and the last failed replacement's pause (``retry_at``) is over. ``0`` disables."""
    return bool(rotate_after_s and active is not None and active.last_data is not None and not replacing
                and active.opened is not None and now - active.opened >= rotate_after_s and now >= retry_at)
