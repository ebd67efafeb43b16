"""``/metrics``: Prometheus text exposition of the daemon's state (read at scrape time) and the API's requests;
the ASGI middlewares around every route (request counting, ``HEAD``).

Each app gets its own registry, so nothing global happens at import and tests can run several servers.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from volspike_funding.api.service_status import HealthLimits, ServiceStatus
from volspike_funding.api.stream_hub import StreamHub
from volspike_funding.store import consumer_status
from volspike_funding.store.backend import StateReaderLike

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class StateCollector:
    """Gauges and counters of the service's status at every scrape (the same :class:`ServiceStatus` that answers
    ``/funding/health``), and the consumers' status files."""

    def __init__(self, cache: StateReaderLike, limits: HealthLimits) -> None:
        self._cache, self._limits = cache, limits

    def collect(self) -> Iterator[Metric]:
        status = ServiceStatus.of(self._cache.view, time.time(), self._limits)
        view, daemon, snap = status.view, status.daemon, status.view.snapshot
        gauges = {
            "funding_healthy": ("1 when /funding/health answers healthy (its reasons say why not)",
                                int(status.healthy)),
            "funding_symbols": ("Symbols in the state file", len(view.symbols)),
            "funding_stale_symbols": ("Symbols older than FUNDING_STALE_AFTER_S", status.stale),
            "funding_daemon_alive": ("1 when the daemon's heartbeat is fresh", int(status.alive)),
            "funding_daemon_connected": ("1 when the daemon is alive and connected to Binance",
                                         int(status.connected)),
            "funding_state_readable": ("0 while the state file cannot be read or parsed", int(view.error is None)),
            "funding_invalid_records": ("Malformed state-file records, not served", snap.invalid if snap else 0),
            "funding_per_symbol_streams": ("Listed symbols subscribed one by one (not in the all-market stream), "
                                           "as Binance acknowledged", daemon.per_symbol_streams),
            "funding_subscriptions_failing": ("Per-symbol streams Binance refused or left unanswered, asked for "
                                              "again after a backoff", daemon.held_streams if status.alive else 0),
            "funding_streams_left_out": ("Listed symbols needing a stream beyond what one connection carries "
                                         "(not served)", daemon.left_out_streams if status.alive else 0),
            "funding_reference_refresh_failing": ("1 while the reference data refresh fails",
                                                  int(daemon.reference_error is not None)),
            "funding_reference_unconfirmed_drops": ("Symbols the last exchangeInfo no longer lists, kept until a "
                                                    "second answer agrees", daemon.unconfirmed_drops),
            "funding_subscriptions_paused": ("1 while per-symbol subscriptions are paused (Binance closed "
                                             "connections in answer to them)",
                                             int(status.alive and daemon.subscriptions_paused is not None)),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        if status.clock_skew_ms is not None:
            yield GaugeMetricFamily("funding_clock_skew_seconds", "Binance event time minus local receive time "
                                    "(median of recent frames)", value=status.clock_skew_ms / 1000)
        ref = view.reference
        if ref is not None:
            ages = GaugeMetricFamily("funding_reference_age_seconds", "Age of each part of the reference data",
                                     labels=["part"])
            for part, age in ref.ages(status.now).items():
                if age is not None:
                    ages.add_metric([part], age)
            yield ages
        if status.newest_age is not None and status.oldest_age is not None:  # no data: no sample, not a number
            yield GaugeMetricFamily("funding_newest_data_age_seconds", "Age of the newest symbol update",
                                    value=status.newest_age)
            yield GaugeMetricFamily("funding_oldest_data_age_seconds", "Age of the oldest symbol update",
                                    value=status.oldest_age)
        totals = {
            "funding_daemon_reconnects": ("Reconnects since the daemon started", daemon.reconnect_attempts),
            "funding_daemon_messages": ("Frames received since the daemon started", daemon.messages_received),
            "funding_state_read_errors": ("State file reads that failed", view.read_errors),
            "funding_daemon_unlisted_updates": ("Stream updates for symbols exchangeInfo does not list (not stored)",
                                                daemon.unlisted),
            "funding_daemon_future_overridden": ("Stored event times from the future overridden by true updates",
                                                 daemon.future_overridden),
        }
        for name, (doc, value) in totals.items():
            yield CounterMetricFamily(name, doc, value=value)
        for name, doc, counts in (
                ("funding_daemon_malformed", "Malformed frames and items by kind", daemon.malformed),
                ("funding_daemon_other_product_rows", "Rows of other products on the stream (e.g. COIN-M), counted "
                 "and not stored", daemon.other_kinds)):
            family = CounterMetricFamily(name, doc, labels=["kind"])
            for kind, count in sorted(counts.items()):
                family.add_metric([kind], count)
            yield family
        yield from self._consumer_metrics(status.now)

    def _consumer_metrics(self, now: float) -> Iterator[Metric]:
        folder = self._limits.consumer_status_dir
        statuses = consumer_status.read_all(folder) if folder is not None else []
        rest = CounterMetricFamily("funding_consumer_rest_responses", "Binance REST answers of the consumers that "
                                   "paused every call: 429 (rate limited) and 418 (IP banned)",
                                   labels=["consumer", "status"])
        deliveries = CounterMetricFamily("funding_consumer_deliveries", "POSTs to backends and Telegram by "
                                         "outcome (accepted, rejected, uncertain: may have arrived; dropped: "
                                         "never sent)", labels=["consumer", "outcome"])
        age = GaugeMetricFamily("funding_consumer_status_age_seconds", "Seconds since a consumer last reported "
                                "(after every scan or loop)", labels=["consumer"])
        for st in statuses:
            rest.add_metric([st["consumer"], "429"], st["rest"]["rateLimited"])
            rest.add_metric([st["consumer"], "418"], st["rest"]["banned"])
            for outcome, n in st["deliveries"].items():
                deliveries.add_metric([st["consumer"], outcome], n)
            if st["updatedAt"] is not None:
                age.add_metric([st["consumer"]], max(0.0, now - st["updatedAt"]))
        yield from (rest, deliveries, age)


class StreamCollector:
    """The local WebSocket's connections and what happened to them."""

    def __init__(self, hub: StreamHub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        hub, counts = self._hub, self._hub.counters
        yield GaugeMetricFamily("funding_ws_connections", "Open local WebSocket connections",
                                value=len(hub.sockets))
        yield GaugeMetricFamily("funding_ws_streams", "Distinct streams local subscribers hold", value=len(hub.index))
        yield GaugeMetricFamily("funding_ws_stale", "1 while local WebSocket connections are refused and closed "
                                "because the data is stale", value=int(hub.stale_reason is not None))
        yield CounterMetricFamily("funding_ws_frames_delivered", "Frames written to local subscribers",
                                  value=counts.delivered)
        yield CounterMetricFamily("funding_ws_frames_compressed", "Of them, written compressed to subscribers that "
                                  "negotiated permessage-deflate (one compression per frame, shared)",
                                  value=counts.compressed)
        yield GaugeMetricFamily("funding_ws_deflate_connections", "Open local WebSocket connections that take "
                                "compressed frames", value=hub.deflaters)
        closed = CounterMetricFamily("funding_ws_closed", "Local WebSocket connections closed by the service, by "
                                     "reason (slow: unread bytes beyond FUNDING_WS_MAX_BUFFER_KB; stale; limits: "
                                     "Binance's message and stream limits)", labels=["reason"])
        for reason, value in (("slow", counts.dropped_slow), ("stale", counts.closed_stale),
                              ("limits", counts.closed_limits)):
            closed.add_metric([reason], value)
        yield closed
        refused = CounterMetricFamily("funding_ws_refused", "Local WebSocket handshakes refused with 503, by reason",
                                      labels=["reason"])
        refused.add_metric(["stale"], counts.refused_stale)
        refused.add_metric(["full"], counts.refused_full)
        yield refused


def build_registry(cache: StateReaderLike, limits: HealthLimits,
                   hub: StreamHub | None = None) -> tuple[CollectorRegistry, Counter]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(cache, limits))
    if hub is not None:
        registry.register(StreamCollector(hub))
    requests = Counter("funding_api_requests", "API requests by route template and status",
                       ["route", "status"], registry=registry)
    return registry, requests


class RequestCounter:
    """Pure ASGI middleware counting responses by route *template* (bounded labels, whatever the paths)."""

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        self.app, self.counter = app, counter

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = False

        def count(status: int) -> None:
            nonlocal counted
            counted = True
            self.counter.labels(getattr(scope.get("route"), "path", "unmatched"), str(status)).inc()

        async def send_and_count(message: Message) -> None:
            if message["type"] == "http.response.start":
                count(message["status"])  # before the client can see the response
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        finally:
            if not counted:
                count(500)


class HeadAsGet:
    """``HEAD`` answers exactly like ``GET`` (status, headers, ``content-length``) without the body (RFC 9110)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_without_body)
