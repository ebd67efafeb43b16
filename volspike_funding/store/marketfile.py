"""The market file (``.funding_market.json``): the daemon's 1 h candles and 24 h tickers, and their reader.

One owner for the format, writer and reader. It is a file of its own so that the mark-price state file, written
every second and read on every request, stays the size it is. Shape (``schemaVersion`` 1)::

    {"schemaVersion": 1, "writtenAt": 1790000000.5, "connected": true, "lastFrameAt": 1790000000.1,
     "reason": null, "interval": "1h",
     "klines": {"BTCUSDT": {"since": 1789990000.0, "rows": [[<Binance's twelve fields>], ...],
                            "final": [true, ..., false], "receivedAt": 1790000000.0, "firstOpen": null}},
     "tickers": {"BTCUSDT": {<Binance's ticker/24hr fields>, "E": 1790000000000}},
     "backfill": {"pending": 0, "weightThisMinute": 0, "totalWeight": 0, "lastError": null,
                  "pausedUntil": null, "pausedBy": null}, "counters": {...}}

``lastFrameAt`` is when the last ``!ticker@arr`` frame arrived (Binance sends it every second: the connection's
heartbeat). ``since`` is when the symbol's kline stream was acknowledged (``null``: not subscribed), ``rows`` are
oldest first, and ``final`` says of each row whether it can no longer change. ``firstOpen`` is the symbol's first hour
on Binance when it was listed within the kept window (REST answered fewer rows than asked), else ``null``.
``pausedUntil``: while Binance's 429 or 418 (``pausedBy``) holds the backfill, when it may ask again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from volspike_funding.core.persist import atomic_replace

SCHEMA_VERSION = 1


def market_path(state_file: Path, explicit: Path | None) -> Path:
    return explicit or state_file.with_name(".funding_market.json")


def encode(document: dict[str, Any]) -> bytes:
    """The document as stored, in the file or the shared store."""
    return orjson.dumps({"schemaVersion": SCHEMA_VERSION, **document})


def decode(raw: bytes, where: str) -> MarketSnapshot:
    """A stored document, or a snapshot saying why ``where`` holds none."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return MarketSnapshot(error=f"{where} is not JSON")
    if not isinstance(document, dict) or document.get("schemaVersion") != SCHEMA_VERSION:
        return MarketSnapshot(error=f"{where} is not a market file of schema version {SCHEMA_VERSION}")
    return MarketSnapshot(document)


def write(path: Path, document: dict[str, Any]) -> int:
    """Atomically replace the market file; returns its size."""
    data = encode(document)
    atomic_replace(path, data)
    return len(data)


class MarketFileWriter:
    """The market feed's writer of this file (the shared store's is :class:`.redis_market.RedisMarketWriter`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)

    def write(self, document: dict[str, Any]) -> int:
        return write(self.path, document)


@dataclass(frozen=True)
class MarketSnapshot:
    """What a reader holds of the market file; ``error`` says why it is empty. ``shift``: what to add to the
    document's times (its writer's clock) for the reader's clock; 0 for the file, which only a daemon on this host
    writes; measured through the store's clock for the shared store's, whose writer may be on any host."""

    document: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    shift: float = 0.0

    @property
    def klines(self) -> dict[str, Any]:
        value = self.document.get("klines")
        return value if isinstance(value, dict) else {}

    @property
    def tickers(self) -> dict[str, Any]:
        value = self.document.get("tickers")
        return value if isinstance(value, dict) else {}

    @property
    def backfill(self) -> dict[str, Any]:
        value = self.document.get("backfill")
        return value if isinstance(value, dict) else {}

    def number(self, key: str, part: dict[str, Any] | None = None) -> float | None:
        """The document's (or its ``part``'s) number ``key``; ``None`` for anything else."""
        value = (self.document if part is None else part).get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def feed_age(self, now: float) -> float | None:
        """Seconds since the last ``!ticker@arr`` frame (``None``: never one): how stale the whole feed is."""
        at = self.local("lastFrameAt")
        return None if at is None else max(0.0, now - at)

    def local(self, key: str) -> float | None:
        """The document's time ``key`` in the reader's clock."""
        at = self.number(key)
        return None if at is None else at + self.shift

    @property
    def connected(self) -> bool:
        return self.document.get("connected") is True

    def problem(self, now: float, stale_after_s: float) -> str | None:
        """Why klines and tickers cannot be served now, or ``None``: the one rule of the REST routes and the
        local WebSocket's streams."""
        age = self.feed_age(now)
        if self.error is not None or age is None:
            return f"Klines and tickers are not available yet ({self.error or 'no frame yet'})"
        if age > stale_after_s or not self.connected:
            return f"Klines and tickers stale ({age:.0f} s: {self.document.get('reason') or 'no frame'})"
        return None


def read(path: Path) -> MarketSnapshot:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return MarketSnapshot(error=f"{path} does not exist (FUNDING_MARKET_ENABLED off, or the daemon has not "
                                    f"written it yet)")
    except OSError as exc:
        return MarketSnapshot(error=f"cannot read {path}: {exc.strerror or exc}")
    return decode(raw, str(path))


class MarketCache:
    """The reader's copy, re-read when the file was replaced (one ``stat`` per call: the file changes every
    second at most, requests may come far more often)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity: tuple[int, int, int] | None = None
        self._snapshot = MarketSnapshot(error="not read yet")

    def stop(self) -> None:
        """Nothing runs in the background (the shared store's reader has a thread to stop)."""

    def get(self) -> MarketSnapshot:
        try:
            st = os.stat(self.path)
            identity: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            identity = None
        if identity is None or identity != self._identity:
            self._snapshot = read(self.path)
            self._identity = identity if self._snapshot.error is None else None
        return self._snapshot
