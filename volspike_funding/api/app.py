"""The FastAPI application: routes over :class:`~volspike_funding.store.backend.StateReaderLike`, one error shape
everywhere.

Handlers never touch the file system: the cache's watcher thread does. Bodies are serialised with orjson.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from volspike_funding.api.market_routes import market_health, market_router
from volspike_funding.store.backend import MarketReaderLike
from volspike_funding.api.binance_routes import ROUTES as BINANCE_ROUTES, binance_router, not_served
from volspike_funding.api.metrics import HeadAsGet, RequestCounter, build_registry
from volspike_funding.api.models import (ERRORS, MAX_BATCH_CHARS, MAX_BATCH_SYMBOLS, SYMBOL_LIST_PATTERN,
                                         SYMBOL_PATTERN, BatchResponse, Health, SymbolFunding, api_error,
                                         check_symbol, symbol_answer)
from volspike_funding.api.service_status import HealthLimits, ServiceStatus
from volspike_funding.api.status_page import PAGE, wants_html
from volspike_funding.api.stream_hub import StreamHub
from volspike_funding.binance.wire import symbol_problem
from volspike_funding.core.version import __version__
from volspike_funding.store.backend import StateReaderLike
from volspike_funding.store.view import View

log = logging.getLogger("funding.api")

ENDPOINTS = ["/funding/{symbol}", "/funding/batch?symbols=A,B,C", "/funding/health", "/market/health", *BINANCE_ROUTES, "/metrics",
             "/docs", "/openapi.json", "ws: /market/stream?streams=a/b", "ws: /market/ws/<stream>"]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def create_app(cache: StateReaderLike, stale_after_s: float, limits: HealthLimits | None = None,
               market: MarketReaderLike | None = None, hub: StreamHub | None = None) -> FastAPI:
    """``market``: the market file's reader (klines, tickers); ``None``: those routes answer that they are off.
    ``hub``: the local WebSocket's (its upgrades never reach the app; a plain GET of its paths is told so)."""
    limits = limits or HealthLimits(stale_after_s)
    app = FastAPI(title="VolSpike funding API", version=__version__,
                  description="Binance USD-M funding rates and mark prices from the local WebSocket daemon.")
    registry, requests_total = build_registry(cache, limits, hub)
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
        now = time.time()
        status = ServiceStatus.of(cache.view, now, limits)
        body = status.health_body()
        if market is not None:  # the klines feed's troubles are news here, not a reason to leave funding
            body["market"] = part = market_health(market.get(), now, stale_after_s)
            body["warnings"] += [f"market feed: {w}" for w in part["reasons"] + part["warnings"]]
        else:
            body["market"] = None
        return json_response(body, 200 if status.healthy else 503)

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

    @app.get("/market/stream", include_in_schema=False)
    @app.get("/market/ws/{stream:path}", include_in_schema=False)
    async def stream_endpoint() -> Response:
        """Reached only without a WebSocket upgrade (or with the local WebSocket off)."""
        if hub is None:
            raise api_error(404, "WebSocket off", reason="the local WebSocket is disabled (FUNDING_WS_ENABLED=false)")
        raise api_error(426, "Upgrade Required", reason="a WebSocket endpoint: connect with a WebSocket client "
                        "(ws://host:port/market/stream?streams=!markPrice@arr@1s)")

    app.include_router(market_router(market, stale_after_s))  # before the catch-all of binance_router
    app.include_router(binance_router(cache, stale_after_s))

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
