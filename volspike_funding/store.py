"""The daemon's in-memory state: every symbol's latest update, the connection status and the counters.

Only the daemon's main loop touches a :class:`FundingStore`, so it needs no lock. Its document form is built by
:mod:`.statefile`, which owns the file format.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from . import statefile
from .wire import MarkPrice

log = logging.getLogger(__name__)


class FundingStore:
    def __init__(self, url: str, *, started_at: float, heartbeat_s: float) -> None:
        self.symbols: dict[str, dict[str, Any]] = {}
        self.connection: dict[str, Any] = statefile.new_connection_status(url)
        self.counters: dict[str, Any] = {"frames": 0, "updates": 0, "ignored": 0, "out_of_order": 0,
                                         "dropped_symbols": 0, "malformed": {}}
        self.started_at = started_at
        self.heartbeat_s = heartbeat_s
        #: Receive time of the newest stored update, or ``None`` before the first one.
        self.newest_update: float | None = None

    def restore(self, snapshot: statefile.StateSnapshot) -> int:
        """Carry over a previous run's symbols with their true ages, so a restart never blanks the API."""
        for name, record in snapshot.symbols.items():
            if isinstance(record.get("updatedAt"), (int, float)) and isinstance(record.get("eventTime"), int):
                self.symbols[name] = record
        return len(self.symbols)

    def apply(self, updates: Iterable[MarkPrice], received_at: float) -> int:
        """Store updates; an update older than what is stored (by Binance event time) is skipped, not applied."""
        symbols = self.symbols
        record = statefile.symbol_record
        applied = stale = 0
        for update in updates:
            old = symbols.get(update.symbol)
            if old is not None and old["eventTime"] > update.event_time:
                stale += 1
                continue
            symbols[update.symbol] = record(update, received_at)
            applied += 1
        self.counters["updates"] += applied
        self.counters["out_of_order"] += stale
        if applied:
            self.newest_update = received_at
        return applied

    def count_malformed(self, kind: str, n: int = 1) -> None:
        malformed = self.counters["malformed"]
        malformed[kind] = malformed.get(kind, 0) + n

    def drop_unseen(self, now: float, max_age: float) -> list[str]:
        """Forget symbols not updated for ``max_age`` seconds (delisted contracts)."""
        gone = [name for name, rec in self.symbols.items() if now - rec["updatedAt"] > max_age]
        for name in gone:
            del self.symbols[name]
        if gone:
            self.counters["dropped_symbols"] += len(gone)
            log.info("dropped %d symbols unseen for over %.0f s: %s", len(gone), max_age, ", ".join(gone[:20]))
        return gone

    def data_age(self, now: float) -> float | None:
        return None if self.newest_update is None else max(0.0, now - self.newest_update)

    def document(self, now: float, *, stopped: bool = False) -> dict[str, Any]:
        return statefile.build_document(self.symbols, self.connection, self.counters, now=now,
                                        heartbeat_s=self.heartbeat_s, started_at=self.started_at,
                                        stopped=stopped)
