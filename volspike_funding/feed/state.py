"""The daemon's in-memory state: every symbol's latest update, the connection status and the counters.

Only the daemon's main loop touches a :class:`FundingStore`, so it needs no lock. Its document form is built by
:mod:`.statefile`, which owns the file format.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from pathlib import Path
from typing import Any, Collection, Iterable

from volspike_funding.store import reference
from volspike_funding.store import daemon_status, records, statefile
from volspike_funding.core.errors import StateUnreadable
from volspike_funding.store.reference import ReferenceData
from volspike_funding.binance.wire import MarkPrice, ParsedFrame

log = logging.getLogger("funding.daemon")


class ClockSkew:
    """Binance's event time minus our receive time, as the median of the last frames: one frame stamped in the
    future (or a slow one) cannot move it. Network latency is included (tens to hundreds of ms).

    Every all-market frame is a sample, even one whose items were all rejected: a host whose NTP broke (10 minutes
    off) once rejected every item as ``implausible_time`` for ever, because the skew was measured only from the
    items it accepted. :attr:`offset_ms` is what the frame check adds to our clock once ``MIN_SAMPLES`` agree."""

    MIN_SAMPLES = 3

    def __init__(self, size: int = 31) -> None:
        self._samples: deque[int] = deque(maxlen=size)
        self.skew_ms = 0

    @property
    def offset_ms(self) -> int:
        """Our clock to Binance's: 0 until ``MIN_SAMPLES`` frames were measured (one frame is not a clock)."""
        return self.skew_ms if len(self._samples) >= self.MIN_SAMPLES else 0

    def add(self, event_ms: int, received_ms: int) -> None:
        self._samples.append(event_ms - received_ms)
        self.skew_ms = int(statistics.median(self._samples))

    def status(self) -> dict[str, Any]:
        return {"skewMs": self.skew_ms if self._samples else None, "samples": len(self._samples)}


#: A listing naming fewer than this share of the symbols the stream carries is not believed: the stream is
#: evidence too, and a truncated exchangeInfo must not unlist 600 symbols for 15 minutes.
LISTING_SHARE = 0.5
#: Symbols the stream must carry before it can contradict a listing.
MIN_EVIDENCE = 20


class FundingStore:
    def __init__(self, url: str, *, started_at: float, heartbeat_s: float) -> None:
        self.symbols: dict[str, dict[str, Any]] = {}
        self.connection: dict[str, Any] = daemon_status.new_connection_status(url)
        self.counters: dict[str, Any] = {"frames": 0, "updates": 0, "ignored": 0, "out_of_order": 0,
                                         "future_overridden": 0, "dropped_symbols": 0, "unlisted": 0,
                                         "malformed": {}, "other_kinds": {}}
        #: Binance's reference data once known: only symbols it lists are stored.
        self.reference: ReferenceData | None = None
        #: A few symbols the stream sent that the reference data does not list (for the early-refresh request).
        self.unlisted_seen: set[str] = set()
        self.started_at = started_at
        self.heartbeat_s = heartbeat_s
        #: Receive time of the newest stored update, or ``None`` before the first one.
        self.newest_update: float | None = None
        #: Why the last reference refresh failed (``None``: it did not), and when it last failed.
        self.reference_error: str | None = None
        self.reference_error_at: float | None = None

    def restore(self, snapshot: statefile.StateSnapshot, now: float, max_event_ms: int) -> tuple[int, int]:
        """Carry over a previous run's symbols with their true ages, so a restart never blanks the API. Records go
        through the reader's checks, and an event time beyond ``max_event_ms`` (a poisoned future frame) is not
        restored. Returns (kept, rejected)."""
        rejected = 0
        for name, record in snapshot.raw.items():
            if statefile.record_problem(name, record, now) is None and record["eventTime"] <= max_event_ms:
                self.symbols[name] = records.own_record(record)
            else:
                rejected += 1
        return len(self.symbols), rejected

    def restore_previous(self, reference_path: Path, state_file: Path | None, max_event_skew_s: float, *,
                         now: float) -> None:
        """At start: the reference data, then (from the state file) the symbols, with the reader's checks;
        ``now`` is the daemon's wall clock."""
        try:
            self.set_reference(reference.read(reference_path))
        except StateUnreadable as exc:
            if exc.reason != "missing":
                log.warning("previous reference data not reused: %s", exc)
        if state_file is None:
            return
        try:
            previous = statefile.read_state(state_file)
        except StateUnreadable as exc:
            if exc.reason != "missing":
                log.warning("previous state not reused: %s", exc)
            return
        kept, rejected = self.restore(previous, now, int((now + max_event_skew_s) * 1000))
        if self.reference is not None:
            self.set_reference(self.reference)  # drop what the listing no longer has
        if kept:
            log.info("restored %d symbols from the previous run (they keep their true age)", len(self.symbols))
        if rejected:
            log.warning("%d records of the previous state were not restored (malformed, or times in the future)",
                        rejected)

    def apply(self, updates: Iterable[MarkPrice], received_at: float, future_after_ms: int | None = None) -> int:
        """Store updates. An update older (by Binance event time) than the stored one is skipped — unless the
        stored one is later than ``future_after_ms`` (Binance's clock now, plus slack): a time from the future
        must never block true updates. Symbols the reference data does not list are counted, not stored."""
        listed = self.reference.symbols if self.reference is not None and self.reference.known else None
        applied, stale, overridden, unlisted = records.refresh(self.symbols, updates, received_at, future_after_ms,
                                                               listed, self.unlisted_seen)
        counters = self.counters
        counters["updates"] += applied
        counters["out_of_order"] += stale
        counters["future_overridden"] += overridden
        counters["unlisted"] += unlisted
        if applied:
            self.newest_update = received_at
        return applied

    def set_reference(self, reference: ReferenceData) -> list[str]:
        """Use new reference data; stored symbols it does not list (delisted, or never USDⓈ-M) are dropped now
        rather than after FUNDING_DROP_AFTER_S (the fetcher keeps what one answer alone dropped: two must agree)."""
        self.reference = reference
        self.unlisted_seen.clear()
        log.info("reference data: %d symbols listed (%d trading), %d with adjusted funding terms, %d interest rates",
                 len(reference.symbols), len(reference.trading), len(reference.funding_info or ()),
                 len(reference.interest_rates))
        if not reference.known:
            return []
        gone = [name for name in self.symbols if name not in reference.symbols]
        for name in gone:
            del self.symbols[name]
        if gone:
            self.counters["dropped_symbols"] += len(gone)
            log.info("dropped %d symbols that exchangeInfo does not list: %s", len(gone), ", ".join(gone[:20]))
        return gone

    @staticmethod
    def listing_doubt(data: ReferenceData, carried: Collection[str]) -> str | None:
        """Why ``data``'s exchangeInfo is not believed, given the symbols the stream carries; ``None``: believed."""
        if not data.known or len(carried) < MIN_EVIDENCE:
            return None
        listed = sum(1 for symbol in carried if symbol in data.symbols)
        if listed >= LISTING_SHARE * len(carried):
            return None
        return f"exchangeInfo lists {listed} of the {len(carried)} symbols the stream carries; not believed"

    # -- what the loop learns about its connection and frames ------------------------------------------
    @property
    def connected(self) -> bool:
        return bool(self.connection["connected"])

    def note_connected(self, at: float, *, rotated: bool = False) -> None:
        self.connection["rotations"] += rotated
        self.connection.update(connected=True, last_connected_time=at)

    def note_disconnected(self, at: float, reason: str, *, reconnecting: bool = False) -> None:
        status = self.connection
        if status["connected"]:
            status["last_disconnected_time"] = at
        status.update(connected=False, last_error=reason)
        status["reconnect_attempts"] += reconnecting

    def note_frame(self, at: float) -> None:
        self.counters["frames"] += 1
        self.connection["messages_received"] += 1
        self.connection["last_message_time"] = at

    def note_parsed(self, parsed: ParsedFrame) -> None:
        """Count what a frame carried besides usable updates (its updates are counted by :meth:`apply`)."""
        self.counters["ignored"] += parsed.ignored
        other = self.counters["other_kinds"]
        for kind, n in parsed.other_kinds.items():
            other[kind] = other.get(kind, 0) + n
        for kind, _ in parsed.defects:
            self.count_malformed(kind)

    def count_malformed(self, kind: str, n: int = 1) -> None:
        malformed = self.counters["malformed"]
        malformed[kind] = malformed.get(kind, 0) + n

    def count_write_error(self) -> None:
        self.counters["write_errors"] = self.counters.get("write_errors", 0) + 1

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

    def note_reference_result(self, error: str | None, at: float) -> None:
        self.reference_error = error
        if error:
            self.reference_error_at = at

    def document(self, now: float, *, stopped: bool = False, clock: dict[str, Any] | None = None,
                 streams: dict[str, Any] | None = None, unconfirmed: Collection[str] = ()) -> dict[str, Any]:
        """``streams``: the per-symbol streams' status (:meth:`.streams.StreamManager.status`); ``unconfirmed``:
        symbols the last exchangeInfo no longer lists, kept until a second answer agrees."""
        ref, streams = self.reference, dict(streams or {})
        reference = {"lastError": self.reference_error, "lastErrorAt": self.reference_error_at,
                     "symbols": len(ref.symbols) if ref is not None else 0,
                     "perSymbolStreams": streams.pop("perSymbolStreams", 0),
                     "unconfirmedDrops": len(unconfirmed), "unconfirmedDropExamples": sorted(unconfirmed)[:10]}
        return statefile.build_document(self.symbols, self.connection, self.counters, now=now,
                                        heartbeat_s=self.heartbeat_s, started_at=self.started_at,
                                        stopped=stopped, clock=clock, reference=reference, streams=streams)
