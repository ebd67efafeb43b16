"""The FastAPI application: routes over :class:`~volspike_funding.store.backend.StateReaderLike`, one error shape everywhere.

Handlers never touch the file system: the cache's watcher thread does. Bodies are serialised with orjson.
"""

from __future__ import annotations

import logging
import pathlib
import time
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from volspike_funding.core.version import __version__
from volspike_funding.api.binance_routes import ROUTES as BINANCE_ROUTES, binance_router, not_served
from volspike_funding.api.metrics import HeadAsGet, RequestCounter, build_registry
from volspike_funding.api.models import (ERRORS, MAX_BATCH_CHARS, MAX_BATCH_SYMBOLS, SYMBOL_LIST_PATTERN, SYMBOL_PATTERN, BatchResponse, Health,
                         SymbolFunding, api_error, check_symbol, symbol_answer)
from volspike_funding.store.backend import StateReaderLike
from volspike_funding.store.view import View
from volspike_funding.api.status_page import PAGE, wants_html
from volspike_funding.binance.wire import symbol_problem

log = logging.getLogger("funding.api")

ENDPOINTS = ["/funding/{symbol}", "/funding/batch?symbols=A,B,C", "/funding/health", *BINANCE_ROUTES, "/metrics",
             "/docs", "/openapi.json"]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


@dataclass(frozen=True)
class HealthLimits:
    stale_after_s: float
    clock_skew_warn_s: float = 5.0
    max_stale_share: float = 0.25
    #: Where the consumers' status files are (exported at /metrics); ``None``: not exported.
    consumer_status_dir: pathlib.Path | None = None


def health_body(view: View, now: float, limits: HealthLimits) -> dict[str, Any]:
    """Healthy = daemon alive, connected, the newest data younger than the stale threshold, at most
    ``max_stale_share`` of the symbols stale, and this host's clock within ``clock_skew_warn_s`` of Binance's.
    ``warnings`` say what deserves a look but does not make the data wrong (old reference data, bad records)."""
    stale_after = limits.stale_after_s
    snap = view.snapshot
    reasons: list[str] = []
    warnings: list[str] = []
    connection = snap.connection if snap else {}
    alive = bool(snap and snap.daemon_alive(now))
    store_error = snap.document.get("storeError") if snap else None  # the shared store refuses the daemons' writes
    if snap is None:
        reasons.append(f"state unavailable: {view.error.reason if view.error else 'missing'}")
    elif store_error:
        reasons.append(f"{store_error}: the daemons cannot report (their data and status are not stored)")
    elif not alive:
        beat = snap.heartbeat_age(now)
        reasons.append("daemon stopped" if snap.document.get("stopped_at") is not None else
                       f"daemon not running: last heartbeat {'never' if beat is None else f'{beat:.0f} s ago'}")
    elif not connection.get("connected"):
        never = connection.get("last_connected_time") is None  # nothing was ever connected to be "disconnected"
        reasons.append(f"websocket {'not connected' if never else 'disconnected'}: "
                       f"{connection.get('last_error') or 'not connected yet'}")
    newest = now - view.updated_sorted[-1] if view.updated_sorted else None
    oldest = now - view.updated_sorted[0] if view.updated_sorted else None
    if snap is not None and newest is None:
        reasons.append("no data yet")
    elif newest is not None and newest > stale_after:
        reasons.append(f"newest data is {newest:.1f} s old (max {stale_after:g} s)")
    if view.error is not None and snap is not None:
        lasting = f" for {now - view.error_since:.0f} s" if view.error_since is not None else ""
        reasons.append(f"state file {view.error.reason}{lasting}: {view.error}; serving the last good state")
    stale = view.stale_count(now, stale_after)
    share = stale / len(view.symbols) if view.symbols else 0.0
    if share > limits.max_stale_share:
        reasons.append(f"{stale} of {len(view.symbols)} symbols are stale ({share:.0%}, max "
                       f"{limits.max_stale_share:.0%})")
    clock = (snap.document.get("clock") if snap else None) or {}
    skew_ms = clock.get("skewMs") if isinstance(clock.get("skewMs"), (int, float)) else None
    if alive and skew_ms is not None and abs(skew_ms) > limits.clock_skew_warn_s * 1000:
        reasons.append(f"this host's clock is {-skew_ms / 1000:+.1f} s off Binance's event times (max "
                       f"{limits.clock_skew_warn_s:g} s): check NTP (timedatectl)")
    if snap is not None and snap.invalid:
        warnings.append(f"{snap.invalid} malformed records in the state file are not served: "
                        f"{'; '.join(snap.invalid_examples)}")
    if snap is not None and snap.document.get("invalidDaemonStatuses"):
        warnings.append(f"{snap.document['invalidDaemonStatuses']} daemon status records in the store are not a "
                        "daemon's (malformed, forged or expired heartbeat): ignored")
    ref_status = (snap.document.get("reference") if snap else None) or {}
    ref = view.reference
    ref_age = ref.age(now) if ref is not None else None
    if ref_status.get("lastError"):
        warnings.append(f"reference data refresh failing: {ref_status['lastError']}")
    if ref is not None and ref_age is not None and ref_age > 3 * ref.refresh_interval_s:
        warnings.append(f"reference data is {ref_age:.0f} s old (refreshed every {ref.refresh_interval_s:g} s)")
    started = snap.document.get("started_at") if snap else None
    daemons = snap.document.get("daemons") if snap else None  # the shared store: one entry per daemon
    return {
        "status": "unhealthy" if reasons else "healthy",
        "websocketConnected": alive and bool(connection.get("connected")),
        "symbolCount": len(view.symbols),
        "uptimeSeconds": round(now - started, 3) if alive and isinstance(started, (int, float)) else None,
        "lastConnectedTime": connection.get("last_connected_time"),
        "messagesReceived": connection.get("messages_received", 0),
        "reconnectAttempts": connection.get("reconnect_attempts", 0),
        "oldestDataAgeSeconds": None if oldest is None else round(max(0.0, oldest), 3),
        "newestDataAgeSeconds": None if newest is None else round(max(0.0, newest), 3),
        "staleSymbols": stale,
        "staleShare": round(share, 4),
        "staleSymbolNames": view.stale_names(now, stale_after),
        "daemonAlive": alive,
        "stateReadError": None if view.error is None else str(view.error),
        "invalidRecords": snap.invalid if snap else 0,
        "clockSkewSeconds": None if skew_ms is None else round(skew_ms / 1000, 3),
        "referenceDataAgeSeconds": None if ref_age is None else round(ref_age, 3),
        "referenceSymbols": len(ref.symbols) if ref is not None else 0,
        "perSymbolStreams": ref_status.get("perSymbolStreams", 0),
        "daemonsAlive": sum(d["alive"] for d in daemons) if daemons is not None else None,
        "daemonsConnected": sum(d["alive"] and d["connected"] for d in daemons) if daemons is not None else None,
        "reasons": reasons,
        "warnings": warnings,
    }


def create_app(cache: StateReaderLike, stale_after_s: float, limits: HealthLimits | None = None) -> FastAPI:
    limits = limits or HealthLimits(stale_after_s)
    app = FastAPI(title="VolSpike funding API", version=__version__,
                  description="Binance USD-M funding rates and mark prices from the local WebSocket daemon.")
    registry, requests_total = build_registry(cache, stale_after_s, limits.consumer_status_dir)
    app.add_middleware(RequestCounter, counter=requests_total)
    app.add_middleware(HeadAsGet)

    def usable_view() -> View:
        view = cache.view
        snap = view.snapshot
        if snap is None:
            reason = view.error.reason if view.error else "missing"
            raise api_error(503, "State unavailable", reason=reason,
                            message=str(view.error) if view.error else "no state file yet")
        if not snap.raw and not snap.daemon_alive(time.time()):  # raw: checking every record costs ~1 ms
            raise api_error(503, "State unavailable", reason="daemon not running",
                            message="the daemon is not running and no data is stored")
        return view

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, dict) else {"error": str(exc.detail), "path": request.url.path}
        if not isinstance(exc.detail, dict) and exc.status_code in (404, 405):
            # Routing found no path or no method: Binance clients read code/msg (a body without them was a
            # KeyError: 'code' in binance-futures-connector); /fapi/* answers in Binance's shape only.
            body = not_served(request.method, request.url.path)
            if not request.url.path.startswith("/fapi/"):
                body["detail"] = detail
            return json_response(body, exc.status_code, getattr(exc, "headers", None))
        return json_response({"detail": detail}, exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        where = {tuple(p["loc"]) for p in problems}
        if ("path", "symbol") in where:  # the same answer as check_symbol's, whichever rule caught it first
            symbol = request.path_params.get("symbol", "")
            return json_response({"detail": {"error": "Invalid symbol", "reason": symbol_problem(symbol) or
                                             "malformed"}}, 400)
        if ("query", "symbols") in where:
            return json_response({"detail": {"error": "Invalid symbols", "reason": "a comma-separated list of "
                                             "symbols (letters, digits and '_', at most 40 characters each, at most "
                                             f"{MAX_BATCH_CHARS} characters in all)", "problems": problems}}, 400)
        return json_response({"detail": {"error": "Invalid request", "problems": problems}}, 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return json_response({"detail": {"error": "Internal error"}}, 500)

    @app.get("/", summary="Service name, version and endpoints (JSON); a browser gets the live status page",
             responses={200: {"content": {"application/json": {}, "text/html": {}}}})
    async def root(request: Request) -> Response:
        if wants_html(request.headers.get("accept")):
            return Response(PAGE, media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-store", "Content-Security-Policy":
                                     "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"})
        return json_response({"service": "volspike-funding-api", "version": __version__, "endpoints": ENDPOINTS})

    @app.get("/funding/health", response_model=Health, responses={503: {"model": Health}})
    async def health() -> Response:
        body = health_body(cache.view, time.time(), limits)
        return json_response(body, 200 if body["status"] == "healthy" else 503)

    @app.get("/funding/batch", response_model=BatchResponse, responses=ERRORS)
    async def batch(symbols: str | None = Query(None, description=f"comma-separated, at most {MAX_BATCH_SYMBOLS}; "
                                                "all symbols if absent", max_length=MAX_BATCH_CHARS,
                                                pattern=SYMBOL_LIST_PATTERN)) -> Response:
        view, now = usable_view(), time.time()
        if symbols is None:
            names = sorted(view.symbols)
        else:
            names = list(dict.fromkeys(check_symbol(s.strip()) for s in symbols.split(",") if s.strip()))
            if not names:
                raise api_error(400, "Invalid symbols", reason="no symbol given")
            if len(names) > MAX_BATCH_SYMBOLS:
                raise api_error(400, "Too many symbols", count=len(names), max=MAX_BATCH_SYMBOLS)
        data, seen, found = [], set(), 0
        for name in names:
            item, fresh = symbol_answer(view, name, now, stale_after_s)
            if item["symbol"] in seen:  # "btcusdt" and "BTCUSDT" are one symbol
                continue
            seen.add(item["symbol"])
            data.append(item)
            found += fresh
        return json_response({"data": data, "found": found, "missing": len(data) - found, "total": len(data)})

    @app.get("/funding/{symbol}", response_model=SymbolFunding, responses=ERRORS)
    async def funding(symbol: str = Path(pattern=SYMBOL_PATTERN, description="letters, digits and '_', at most "
                                                                    "40 characters; ASCII case-insensitive")
                      ) -> Response:
        check_symbol(symbol)
        body, fresh = symbol_answer(usable_view(), symbol, time.time(), stale_after_s)
        if not fresh:
            raise api_error(404 if body["error"] in ("Symbol not found", "Not trading") else 503, **body)
        return json_response(body)

    app.include_router(binance_router(cache, stale_after_s))

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
