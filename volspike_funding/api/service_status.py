"""The service's status at one instant, derived once from a view: ``/funding/health`` and ``/metrics`` both answer
from a :class:`ServiceStatus`, so a scrape and a health check taken together can never disagree about whether the
daemon is alive, how old the data is or how many symbols are stale (they used to derive each fact twice).
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Any

from volspike_funding.store.daemon_status import DaemonStatus
from volspike_funding.store.view import View


@dataclass(frozen=True)
class HealthLimits:
    stale_after_s: float
    clock_skew_warn_s: float = 5.0
    max_stale_share: float = 0.25
    #: Where the consumers' status files are (exported at /metrics); ``None``: not exported.
    consumer_status_dir: pathlib.Path | None = None


@dataclass(frozen=True)
class ServiceStatus:
    """Healthy = daemon alive, connected, the newest data younger than the stale threshold, at most
    ``max_stale_share`` of the symbols stale, and this host's clock within ``clock_skew_warn_s`` of Binance's.
    ``warnings`` say what deserves a look but does not make the data wrong (old reference data, bad records)."""

    view: View
    now: float
    limits: HealthLimits
    daemon: DaemonStatus
    alive: bool
    newest_age: float | None
    oldest_age: float | None
    stale: int
    reference_age: float | None
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.reasons

    @property
    def connected(self) -> bool:
        return self.alive and self.daemon.connected

    @property
    def stale_share(self) -> float:
        return self.stale / len(self.view.symbols) if self.view.symbols else 0.0

    @property
    def clock_skew_ms(self) -> float | None:
        """Only while the daemon is alive: a dead daemon's last measurement says nothing about now."""
        return self.daemon.clock_skew_ms if self.alive else None

    @classmethod
    def of(cls, view: View, now: float, limits: HealthLimits) -> "ServiceStatus":
        snap = view.snapshot
        daemon = snap.status if snap is not None else DaemonStatus()
        alive = snap is not None and daemon.alive(now)
        updated = view.updated_sorted
        ref = view.reference
        status = cls(view, now, limits, daemon, alive,
                     newest_age=max(0.0, now - updated[-1]) if updated else None,
                     oldest_age=max(0.0, now - updated[0]) if updated else None,
                     stale=view.stale_count(now, limits.stale_after_s),
                     reference_age=ref.age(now) if ref is not None else None)
        status._judge()
        return status

    def _judge(self) -> None:
        view, now, daemon, limits = self.view, self.now, self.daemon, self.limits
        snap, reasons, warnings = view.snapshot, self.reasons, self.warnings
        if snap is None:
            reasons.append(f"state unavailable: {view.error.reason if view.error else 'missing'}")
        elif daemon.store_error:
            reasons.append(f"{daemon.store_error}: the daemons cannot report (their data and status are not stored)")
        elif not self.alive:
            beat = daemon.heartbeat_age(now)
            reasons.append("daemon stopped" if daemon.stopped else
                           f"daemon not running: last heartbeat {'never' if beat is None else f'{beat:.0f} s ago'}")
        elif not daemon.connected:
            never = daemon.last_connected_time is None  # nothing was ever connected to be "disconnected"
            reasons.append(f"websocket {'not connected' if never else 'disconnected'}: "
                           f"{daemon.last_error or 'not connected yet'}")
        if snap is not None and self.newest_age is None:
            reasons.append("no data yet")
        elif self.newest_age is not None and self.newest_age > limits.stale_after_s:
            reasons.append(f"newest data is {self.newest_age:.1f} s old (max {limits.stale_after_s:g} s)")
        if view.error is not None and snap is not None:
            lasting = f" for {now - view.error_since:.0f} s" if view.error_since is not None else ""
            reasons.append(f"state file {view.error.reason}{lasting}: {view.error}; serving the last good state")
        if self.stale_share > limits.max_stale_share:
            reasons.append(f"{self.stale} of {len(view.symbols)} symbols are stale ({self.stale_share:.0%}, max "
                           f"{limits.max_stale_share:.0%})")
        skew = self.clock_skew_ms
        if skew is not None and abs(skew) > limits.clock_skew_warn_s * 1000:
            reasons.append(f"this host's clock is {-skew / 1000:+.1f} s off Binance's event times (max "
                           f"{limits.clock_skew_warn_s:g} s): check NTP (timedatectl)")
        if snap is not None and snap.invalid:
            warnings.append(f"{snap.invalid} malformed records in the state file are not served: "
                            f"{'; '.join(snap.invalid_examples)}")
        if daemon.invalid_daemon_statuses:
            warnings.append(f"{daemon.invalid_daemon_statuses} daemon status records in the store are not a "
                            "daemon's (malformed, forged or expired heartbeat): ignored")
        if daemon.subscriptions_paused and self.alive:
            warnings.append(f"per-symbol streams paused: {daemon.subscriptions_paused}")
        if daemon.subscriptions_failing and self.alive:
            warnings.append(f"per-symbol subscriptions failing: {daemon.subscriptions_failing}; "
                            f"{daemon.held_streams} symbols get no data until Binance accepts them")
        if daemon.left_out_streams and self.alive:
            warnings.append(f"{daemon.left_out_streams} listed symbols are not served: they need a stream of their "
                            f"own and one connection carries 1,023 besides the all-market stream "
                            f"({', '.join(daemon.left_out_examples)})")
        if daemon.unconfirmed_drops and self.alive:
            warnings.append(f"the listing shrank: exchangeInfo no longer lists {daemon.unconfirmed_drops} symbols "
                            f"({', '.join(daemon.unconfirmed_examples)}); they are served until a second answer "
                            "agrees")
        if daemon.reference_error:
            warnings.append(f"reference data refresh failing: {daemon.reference_error}")
        ref = view.reference
        if ref is not None and self.reference_age is not None and self.reference_age > 3 * ref.refresh_interval_s:
            warnings.append(f"reference data is {self.reference_age:.0f} s old (refreshed every "
                            f"{ref.refresh_interval_s:g} s)")

    def health_body(self) -> dict[str, Any]:
        """The ``/funding/health`` answer (:class:`~.models.Health`)."""
        view, daemon, snap, ref = self.view, self.daemon, self.view.snapshot, self.view.reference
        started = daemon.started_at
        skew = self.clock_skew_ms
        daemons = daemon.daemons
        return {
            "status": "healthy" if self.healthy else "unhealthy",
            "websocketConnected": self.connected,
            "symbolCount": len(view.symbols),
            "uptimeSeconds": round(self.now - started, 3) if self.alive and started is not None else None,
            "lastConnectedTime": daemon.last_connected_time,
            "messagesReceived": daemon.messages_received,
            "reconnectAttempts": daemon.reconnect_attempts,
            "oldestDataAgeSeconds": None if self.oldest_age is None else round(self.oldest_age, 3),
            "newestDataAgeSeconds": None if self.newest_age is None else round(self.newest_age, 3),
            "staleSymbols": self.stale,
            "staleShare": round(self.stale_share, 4),
            "staleSymbolNames": view.stale_names(self.now, self.limits.stale_after_s),
            "daemonAlive": self.alive,
            "stateReadError": None if view.error is None else str(view.error),
            "invalidRecords": snap.invalid if snap else 0,
            "clockSkewSeconds": None if skew is None else round(skew / 1000, 3),
            "referenceDataAgeSeconds": None if self.reference_age is None else round(self.reference_age, 3),
            "referenceSymbols": len(ref.symbols) if ref is not None else 0,
            "perSymbolStreams": daemon.per_symbol_streams,
            "daemonsAlive": sum(a for a, _ in daemons) if daemons is not None else None,
            "daemonsConnected": sum(a and c for a, c in daemons) if daemons is not None else None,
            "reasons": self.reasons,
            "warnings": self.warnings,
        }
