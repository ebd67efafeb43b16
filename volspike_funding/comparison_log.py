"""The comparison log: one line per WebSocket-vs-REST comparison, one summary line per scan. Writer and reader.

Lines go through :mod:`logging`, so they land in journald with the consumer's unit; each is a fixed marker and
one JSON object, greppable inside any prefix (``journalctl``'s ``date host unit[pid]:``, the logging format)::

    FUNDING_COMPARE {"ts": 1795478400.12, "time": "2026-11-24T00:00:00.120Z", "consumer": "volume_alerts",
                     "symbol": "BTCUSDT", "field": "fundingRate", "rest": -0.0001, "ws": -0.0001, "absDiff": 0.0,
                     "relDiff": 0.0, "wsAge": 0.8, "match": true, "tolerance": 1e-05, "toleranceKind": "abs"}
    FUNDING_COMPARE_SUMMARY {"ts": ..., "consumer": ..., "mode": "validate", "comparisons": 1400,
                             "matches": 1398, "worst": {"symbol": ..., "field": ..., "absDiff": ..., "relDiff": ...},
                             "wsAvailable": true, "restAvailable": true, "wsMissing": 0, "wsStale": 0,
                             "restFallbacks": 0}

Tolerances: funding rates match within an absolute difference (``FUNDING_RATE_ABS_TOLERANCE``, default 1e-5),
mark prices within a relative one (``MARK_PRICE_REL_TOLERANCE``, default 0.1 %). ``relDiff`` is
``|ws - rest| / |rest|`` and ``null`` when REST says 0. The reader also understands the original deployment's
``Funding mismatch for SYM: REST=x, WS=y, diff=z%`` and ``Mark price mismatch for ...`` lines.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Union

import orjson

MARKER = "FUNDING_COMPARE "
SUMMARY_MARKER = "FUNDING_COMPARE_SUMMARY "
FUNDING, MARK = "fundingRate", "markPrice"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_LEGACY = re.compile(rf"(Funding|Mark price) mismatch for (\S+?):\s*REST=({_NUMBER}),\s*WS=({_NUMBER}),"
                     rf"\s*diff=({_NUMBER})%")


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Comparison:
    ts: float
    consumer: str
    symbol: str
    field: str
    rest: float
    ws: float
    abs_diff: float
    rel_diff: float | None
    ws_age: float | None
    match: bool


@dataclass(frozen=True)
class ScanSummary:
    ts: float
    consumer: str
    mode: str
    comparisons: int
    matches: int
    ws_available: bool
    rest_available: bool
    ws_missing: int = 0
    ws_stale: int = 0
    rest_fallbacks: int = 0
    worst: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class LegacyMismatch:
    """A line of the original deployment: only mismatches were logged, and without a time of their own."""

    field: str
    symbol: str
    rest: float
    ws: float
    diff_pct: float


Record = Union[Comparison, ScanSummary, LegacyMismatch]


class ComparisonLog:
    def __init__(self, consumer: str, *, funding_abs_tolerance: float, price_rel_tolerance: float,
                 logger: logging.Logger | None = None, clock: Callable[[], float] = time.time) -> None:
        self.consumer = consumer
        self._tolerance = {FUNDING: (funding_abs_tolerance, "abs"), MARK: (price_rel_tolerance, "rel")}
        self._log = logger or logging.getLogger("funding.compare")
        self._clock = clock

    def compare(self, symbol: str, field_name: str, rest: float, ws: float, ws_age: float | None) -> Comparison:
        abs_diff = abs(ws - rest)
        rel_diff = abs_diff / abs(rest) if rest else None
        tolerance, kind = self._tolerance[field_name]
        if kind == "abs":
            match = abs_diff <= tolerance
        else:
            match = abs_diff == 0 or (rel_diff is not None and rel_diff <= tolerance)
        ts = self._clock()
        record = Comparison(ts, self.consumer, symbol, field_name, rest, ws, abs_diff, rel_diff, ws_age, match)
        self._log.info("%s%s", MARKER, json.dumps({
            "ts": round(ts, 3), "time": iso_utc(ts), "consumer": self.consumer, "symbol": symbol,
            "field": field_name, "rest": rest, "ws": ws, "absDiff": abs_diff, "relDiff": rel_diff,
            "wsAge": None if ws_age is None else round(ws_age, 3), "match": match, "tolerance": tolerance,
            "toleranceKind": kind}, ensure_ascii=False))
        return record

    def summary(self, mode: str, comparisons: list[Comparison], *, ws_available: bool, rest_available: bool,
                ws_missing: int = 0, ws_stale: int = 0, rest_fallbacks: int = 0) -> ScanSummary:
        mismatches = [c for c in comparisons if not c.match] or comparisons
        worst_c = max(mismatches, key=lambda c: c.rel_diff if c.rel_diff is not None else c.abs_diff, default=None)
        worst = None if worst_c is None else {"symbol": worst_c.symbol, "field": worst_c.field,
                                              "absDiff": worst_c.abs_diff, "relDiff": worst_c.rel_diff}
        ts = self._clock()
        summary = ScanSummary(ts, self.consumer, mode, len(comparisons), sum(c.match for c in comparisons),
                              ws_available, rest_available, ws_missing, ws_stale, rest_fallbacks, worst)
        self._log.info("%s%s", SUMMARY_MARKER, json.dumps({
            "ts": round(ts, 3), "time": iso_utc(ts), "consumer": self.consumer, "mode": mode,
            "comparisons": summary.comparisons, "matches": summary.matches, "worst": worst,
            "wsAvailable": ws_available, "restAvailable": rest_available, "wsMissing": ws_missing,
            "wsStale": ws_stale, "restFallbacks": rest_fallbacks}, ensure_ascii=False))
        return summary


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def _optional(value: Any) -> float | None:
    return None if value is None else _number(value)


def parse_line(line: str) -> Record | None:
    """The record a log line carries, or ``None`` for lines of no interest; raises ``ValueError`` for a line that
    carries a marker but no valid record (the caller counts those as unparseable)."""
    try:
        return _parse(line)
    except (KeyError, TypeError, AttributeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"malformed comparison line: {exc!r}") from None


def _parse(line: str) -> Record | None:
    index = line.find(SUMMARY_MARKER)
    if index >= 0:
        d = orjson.loads(line[index + len(SUMMARY_MARKER):])
        return ScanSummary(_number(d["ts"]), str(d["consumer"]), str(d.get("mode", "")), int(d["comparisons"]),
                           int(d["matches"]), bool(d["wsAvailable"]), bool(d["restAvailable"]),
                           int(d.get("wsMissing", 0)), int(d.get("wsStale", 0)), int(d.get("restFallbacks", 0)),
                           d.get("worst"))
    index = line.find(MARKER)
    if index >= 0:
        d = orjson.loads(line[index + len(MARKER):])
        if d["field"] not in (FUNDING, MARK):
            raise ValueError(f"unknown field {d['field']!r}")
        return Comparison(_number(d["ts"]), str(d["consumer"]), str(d["symbol"]), d["field"], _number(d["rest"]),
                          _number(d["ws"]), _number(d["absDiff"]), _optional(d.get("relDiff")),
                          _optional(d.get("wsAge")), bool(d["match"]))
    legacy = _LEGACY.search(line)
    if legacy:
        kind, symbol, rest, ws, diff = legacy.groups()
        return LegacyMismatch(FUNDING if kind == "Funding" else MARK, symbol, float(rest), float(ws), float(diff))
    return None
