"""The daemon's status in the state document, written and read here: connection, counters, clock, reference
status, heartbeat, and (from the shared store) the daemons and the store's refusal.

Readers never pick these keys out of the document themselves: :attr:`.statefile.StateSnapshot.status` is a
:class:`DaemonStatus`, typed and checked once, so ``/funding/health``, ``/metrics`` and the demo cannot disagree
about what a key means or what its absence means. A value of the wrong type reads as unknown (``None``, or 0 for a
counter), never as a made-up truth: a hand-edited ``"connected": "false"`` is not "connected".

The status part of the document, as the daemon writes it (:func:`.statefile.build_document`)::

    "connection_status": {"connected": true, "last_connected_time": 1791382990.1, "last_disconnected_time": null,
                          "reconnect_attempts": 0, "messages_received": 42, "last_message_time": 1791382993.0,
                          "url": "wss://fstream.binance.com/market/stream?streams=!markPrice@arr@1s",
                          "last_error": null, "rotations": 0},
    "counters": {"frames": 42, "updates": 29400, "unlisted": 0, "future_overridden": 0,
                 "malformed": {"bad_json": 1}, "other_kinds": {"coin_m": 30}},
    "heartbeat_at": 1791382993.2, "heartbeat_interval_s": 5, "started_at": 1791382980.0, "stopped_at": null,
    "clock": {"skewMs": -12.0, "samples": 60}, "reference": {"lastError": null, "perSymbolStreams": 2,
                                                                  "unconfirmedDrops": 0, "unconfirmedDropExamples": []},
    "streams": {"perSymbolStreamsWanted": 2, "subscriptionsPaused": null, "subscriptionsPausedForS": null,
                "subscriptionsFailing": null, "heldStreams": 0, "leftOutStreams": 0, "leftOutExamples": []}

(``reference.perSymbolStreams`` counts the streams Binance acknowledged; ``heldStreams`` those it refused or left
unanswered, asked for again after a backoff; ``leftOutStreams`` the symbols beyond what one connection carries.)

and what the shared store adds when it merges daemons (:func:`.redis_store.snapshot_document`)::

    "daemons": [{"id": "host-1234", "alive": true, "connected": true}], "invalidDaemonStatuses": 0,
    "storeError": null
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


def new_connection_status(url: str) -> dict[str, Any]:
    """The daemon's ``connection_status`` before its first connection."""
    return {"connected": False, "last_connected_time": None, "last_disconnected_time": None,
            "reconnect_attempts": 0, "messages_received": 0, "last_message_time": None, "url": url,
            "last_error": None, "rotations": 0}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _names(value: Any) -> tuple[str, ...]:
    return tuple(x for x in value if isinstance(x, str))[:10] if isinstance(value, list) else ()


def _counts(value: Any) -> dict[str, int]:
    return {str(k): _count(v) for k, v in _object(value).items()}


@dataclass(frozen=True)
class DaemonStatus:
    """What the state document says about the daemon(s) that wrote it."""

    connected: bool = False
    #: ``None``: never connected since it started (nothing to be "disconnected" from yet).
    last_connected_time: float | None = None
    last_error: str | None = None
    messages_received: int = 0
    reconnect_attempts: int = 0
    started_at: float | None = None
    stopped: bool = False
    heartbeat_at: float | None = None
    heartbeat_interval_s: float = 5.0
    #: Binance's event time minus our receive time, median of recent frames; ``None``: not measured.
    clock_skew_ms: float | None = None
    reference_error: str | None = None
    per_symbol_streams: int = 0
    #: Symbols the last exchangeInfo no longer lists, kept until a second answer agrees, and a few of them.
    unconfirmed_drops: int = 0
    unconfirmed_examples: tuple[str, ...] = ()
    #: Why per-symbol subscriptions are paused (Binance closed connections in answer to them); ``None``: not.
    subscriptions_paused: str | None = None
    #: Why some SUBSCRIBEs were refused or never answered, and how many streams wait to be asked for again.
    subscriptions_failing: str | None = None
    held_streams: int = 0
    #: Listed symbols needing a stream beyond one connection's 1,024 (not served), and the first few.
    left_out_streams: int = 0
    left_out_examples: tuple[str, ...] = ()
    unlisted: int = 0
    future_overridden: int = 0
    malformed: dict[str, int] = field(default_factory=dict)
    other_kinds: dict[str, int] = field(default_factory=dict)
    #: The shared store only: why it refuses the daemons' writes, the daemons it holds, the records it ignored.
    store_error: str | None = None
    daemons: tuple[tuple[bool, bool], ...] | None = None
    invalid_daemon_statuses: int = 0

    @classmethod
    def of(cls, document: Mapping[str, Any]) -> "DaemonStatus":
        connection, counters = _object(document.get("connection_status")), _object(document.get("counters"))
        reference, clock = _object(document.get("reference")), _object(document.get("clock"))
        streams = _object(document.get("streams"))
        raw_daemons = document.get("daemons")
        daemons = None if not isinstance(raw_daemons, list) else tuple(
            (d.get("alive") is True, d.get("connected") is True) for d in raw_daemons if isinstance(d, dict))
        interval = _number(document.get("heartbeat_interval_s"))
        return cls(
            connected=connection.get("connected") is True,
            last_connected_time=_number(connection.get("last_connected_time")),
            last_error=_text(connection.get("last_error")),
            messages_received=_count(connection.get("messages_received")),
            reconnect_attempts=_count(connection.get("reconnect_attempts")),
            started_at=_number(document.get("started_at")),
            stopped=document.get("stopped_at") is not None,
            # Schema 1 files had only updated_at, written with every heartbeat.
            heartbeat_at=_number(document.get("heartbeat_at")) or _number(document.get("updated_at")),
            heartbeat_interval_s=interval if interval is not None and interval > 0 else 5.0,
            clock_skew_ms=_number(clock.get("skewMs")),
            reference_error=_text(reference.get("lastError")),
            per_symbol_streams=_count(reference.get("perSymbolStreams")),
            subscriptions_paused=_text(streams.get("subscriptionsPaused")),
            subscriptions_failing=_text(streams.get("subscriptionsFailing")),
            held_streams=_count(streams.get("heldStreams")),
            left_out_streams=_count(streams.get("leftOutStreams")),
            left_out_examples=_names(streams.get("leftOutExamples")),
            unconfirmed_drops=_count(reference.get("unconfirmedDrops")),
            unconfirmed_examples=_names(reference.get("unconfirmedDropExamples")),
            unlisted=_count(counters.get("unlisted")),
            future_overridden=_count(counters.get("future_overridden")),
            malformed=_counts(counters.get("malformed")),
            other_kinds=_counts(counters.get("other_kinds")),
            store_error=_text(document.get("storeError")),
            daemons=daemons,
            invalid_daemon_statuses=_count(document.get("invalidDaemonStatuses")),
        )

    def heartbeat_age(self, now: float) -> float | None:
        return None if self.heartbeat_at is None else max(0.0, now - self.heartbeat_at)

    def alive(self, now: float) -> bool:
        """The daemon has not stopped cleanly and its heartbeat is within three intervals (at least 15 s)."""
        age = self.heartbeat_age(now)
        return not self.stopped and age is not None and age <= max(3 * self.heartbeat_interval_s, 15.0)
