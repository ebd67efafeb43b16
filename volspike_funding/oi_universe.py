"""Which symbols the OI poller polls: the backend's liquid universe, or one computed locally with hysteresis.

The last good universe is kept when a refresh fails, comes back empty, or collapses to under half its size
(a broken upstream answer is likelier than half the market delisting at once).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from .alert_sinks import Backend
from .binance_rest import BinanceRest, usdt_perpetuals
from .errors import RestError
from .settings import Settings

log = logging.getLogger("oi.universe")
COLLAPSE_RATIO = 0.5


class Universe:
    def __init__(self, settings: Settings, rest: BinanceRest, backend: Backend | None, *,
                 clock: Callable[[], float] = time.monotonic,
                 exchange_info: Callable[[], dict[str, Any]] | None = None) -> None:
        self.settings, self.rest, self.backend, self._clock = settings, rest, backend, clock
        #: Where exchangeInfo comes from: the funding source's (local copy first), or REST.
        self._exchange_info = exchange_info or rest.exchange_info
        self.symbols: list[str] = []
        self.source = "none"
        self._local: set[str] = set()
        self._refreshed = float("-inf")

    def due(self) -> bool:
        return not self.symbols or self._clock() - self._refreshed >= self.settings.oi_universe_refresh_s

    def refresh(self) -> list[str]:
        self._refreshed = self._clock()
        fresh, source = self._from_backend(), "backend"
        if fresh is None:
            fresh, source = self._computed(), "computed locally"
        fresh = sorted(fresh or [])
        if not fresh:
            log.warning("universe refresh gave nothing; keeping %d symbols", len(self.symbols))
        elif self.symbols and len(fresh) < COLLAPSE_RATIO * len(self.symbols):
            log.warning("universe refresh collapsed from %d to %d symbols (%s); keeping the last good one",
                        len(self.symbols), len(fresh), source)
        else:
            if fresh != self.symbols:
                log.info("universe: %d symbols (%s)", len(fresh), source)
            self.symbols, self.source = fresh, source
        return self.symbols

    def _from_backend(self) -> list[str] | None:
        if self.backend is None:
            return None
        body = self.backend.get_json("/api/market/open-interest/liquid-universe", {})
        try:
            symbols = [str(item["symbol"]) for item in body["symbols"]]  # type: ignore[index]
        except (KeyError, TypeError):
            return None
        return symbols or None

    def _computed(self) -> list[str] | None:
        s = self.settings
        try:
            perpetuals = set(usdt_perpetuals(self._exchange_info()))
            volumes = {t["symbol"]: float(t.get("quoteVolume") or 0) for t in self.rest.ticker_24hr_all()}
        except (RestError, KeyError, TypeError, ValueError) as exc:
            log.warning("cannot compute the universe locally: %s", exc)
            return None
        self._local = {sym for sym in perpetuals
                       if volumes.get(sym, 0.0) >= s.oi_liquid_enter_quote_24h
                       or (sym in self._local and volumes.get(sym, 0.0) >= s.oi_liquid_exit_quote_24h)}
        return sorted(self._local)
