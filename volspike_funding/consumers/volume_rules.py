"""The hourly volume-spike rules, pure: 5-minute slots, which candles to compare, spikes, updates, text.

A scan runs at every 5-minute UTC boundary (the *slot*). At :00 it judges the hour that just closed (the last two
closed candles); at other slots the open candle against the last closed one. Quote volume is kline index 7.
An alert is remembered per (symbol, candle hour) with the minute of the first alert (60 when first seen at the
:00 after the hour closed). Updates are sent without re-checking the thresholds, on purpose: they tell how a
spike that was already announced went on.

- ``HALF_UPDATE`` at :30 for alerts first sent at minute <= 20 of that hour;
- ``FULL_UPDATE`` at the next :00 for the closed hour, unless the first alert came at :55.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from volspike_funding.consumers.state_guard import load_guarded
from volspike_funding.core.persist import save_json
from volspike_funding.core.timefmt import iso_z

SLOT = timedelta(minutes=5)
SPIKE, HALF_UPDATE, FULL_UPDATE = "SPIKE", "HALF_UPDATE", "FULL_UPDATE"
PREFIX = {SPIKE: "", HALF_UPDATE: "HALF-UPDATE: ", FULL_UPDATE: "UPDATE: "}


def slot_of(moment: datetime) -> datetime:
    """The 5-minute UTC boundary at or before ``moment``."""
    moment = moment.astimezone(timezone.utc)
    return moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Candles:
    """The two hourly candles one slot compares."""

    hour: datetime  # open time of the current candle
    prev_volume: float
    curr_volume: float
    open: float
    close: float

    @property
    def ratio(self) -> float:
        return self.curr_volume / self.prev_volume if self.prev_volume > 0 else 0.0

    @property
    def direction(self) -> str:
        return "bullish" if self.close > self.open else "bearish"

    @property
    def price_change(self) -> float | None:
        return self.close / self.open - 1 if self.open > 0 else None


def klines_limit(slot: datetime) -> int:
    return 3 if slot.minute == 0 else 2


def pick_candles(klines: list[list[Any]], slot: datetime) -> Candles | None:
    """At :00 the last two candles closed before the slot; otherwise the candle open at the slot and the one
    before it. ``None`` when Binance did not return them (a new listing)."""
    at = ms(slot)
    rows = sorted((k for k in klines if isinstance(k, list) and len(k) > 7), key=lambda k: k[0])
    if slot.minute == 0:
        pair = [k for k in rows if int(k[6]) < at][-2:]
    else:
        current = [k for k in rows if int(k[0]) <= at <= int(k[6])]
        pair = [k for k in rows if current and int(k[6]) < int(current[0][0])][-1:] + current[:1]
    if len(pair) != 2:
        return None
    prev, curr = pair
    return Candles(datetime.fromtimestamp(int(curr[0]) / 1000, timezone.utc), float(prev[7]), float(curr[7]),
                   float(curr[1]), float(curr[4]))


def is_spike(candles: Candles, multiple: float, min_quote_volume: float) -> bool:
    return candles.ratio >= multiple and candles.curr_volume >= min_quote_volume


def fmt_volume(value: float) -> str:
    for factor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.2f}{suffix}"
    return f"{value:.2f}"


def asset_of(symbol: str) -> str:
    return symbol.removesuffix("USDT")


def alert_text(kind: str, symbol: str, candles: Candles) -> str:
    return (f"{PREFIX[kind]}{asset_of(symbol)} hourly volume {fmt_volume(candles.curr_volume)} "
            f"({candles.ratio:.2f}× prev) — VOLUME SPIKE!")


class AlertBook:
    """Which alerts were sent, persisted atomically after every change so that a restart never re-sends.

    A book that cannot be read or was deleted (:mod:`.state_guard`) may have held this hour's alerts: nothing is
    sent for candle hours up to the one of the start (spikes or updates), normal service from the next hour."""

    KEEP = timedelta(hours=3)

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        raw, suspect = load_guarded(path, "volume_alerts", _valid_book)
        self._entries: dict[str, dict[str, Any]] = raw
        start = datetime.fromtimestamp(clock(), timezone.utc)
        #: With a suspect book: the last candle hour held back.
        self.held_through = start.replace(minute=0, second=0, microsecond=0) if suspect else None

    @staticmethod
    def _key(symbol: str, hour: datetime) -> str:
        return f"{symbol}|{iso_z(hour)}"

    def decide(self, symbol: str, candles: Candles, slot: datetime, spike: bool) -> str | None:
        if self.held_through is not None:
            if candles.hour <= self.held_through:
                return None  # the lost book may have had it: better one missed alert than one sent twice
            self.held_through = None
            save_json(self.path, self._entries)  # the hold is over: a restart from now on is not suspect
        entry = self._entries.get(self._key(symbol, candles.hour))
        if entry is None:
            return SPIKE if spike else None
        if slot.minute == 0 and not entry.get("full") and entry["first"] != 55:
            return FULL_UPDATE
        if slot.minute == 30 and entry["first"] <= 20 and not entry.get("half"):
            return HALF_UPDATE
        return None

    def record(self, symbol: str, candles: Candles, slot: datetime, kind: str) -> None:
        key = self._key(symbol, candles.hour)
        if kind == SPIKE:
            self._entries[key] = {"first": 60 if slot.minute == 0 else slot.minute}
        else:
            self._entries[key]["half" if kind == HALF_UPDATE else "full"] = True
        cutoff = iso_z(slot - self.KEEP)
        self._entries = {k: v for k, v in self._entries.items() if k.split("|", 1)[1] >= cutoff}
        save_json(self.path, self._entries)


def _valid_book(doc: dict[str, Any]) -> bool:
    return all(isinstance(k, str) and "|" in k and isinstance(v, dict) and type(v.get("first")) is int
               for k, v in doc.items())
