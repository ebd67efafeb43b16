"""The comparison log: what the consumers write about WebSocket vs REST, and the report's reader. One owner.

Lines go through :mod:`logging`, so they land in journald with the consumer's unit; each is a fixed marker and
one JSON object, greppable inside any prefix (``journalctl``'s ``date host unit[pid]:``, the logging format).
What is written, bounded so that the 24 h validation survives in the journal (``bench/bench_log_volume.py``: a
line per symbol per field per loop was ~6 GB a day at 600 symbols and a 5 s loop)::

    FUNDING_COMPARE_WINDOW {"ts": 1795478460.1, "time": "...", "consumer": "oi_poller", "mode": "validate",
        "since": 1795478405.0, "scans": 12, "wsUnavailable": 0, "restUnavailable": 0, "wsMissing": 0,
        "wsStale": 0, "restFallbacks": 0, "mismatchesNotLogged": 0,
        "fields": {"fundingRate": {"n": 7200, "m": 7200, "maxAbs": 0.0, "maxRel": 0.0, "rel": {"z": 7200, "b": {}},
                                   "abs": {"z": 7200, "b": {}}},
                   "markPrice": {"n": 7200, "m": 7199, ..., "rel": {"z": 6100, "b": {"161": 880, "162": 219}}}},
        "wsAge": {"z": 0, "b": {"236": 7100, ...}}, "maxWsAge": 1.8}
    FUNDING_MISMATCH {"ts": ..., "consumer": ..., "symbol": "XYZUSDT", "field": "markPrice", "rest": 1.0,
                      "ws": 1.01, "absDiff": 0.01, "relDiff": 0.0099, "wsAge": 0.8}

A window line is written at the end of a scan once a minute has passed since the previous one (so once per scan
for the volume script's 5-minute slots, once a minute for the OI poller's 5 s loop) and when the consumer stops.
Its ``since`` and ``ts`` are the times of its first and last scan, and a scan that comes more than a minute after
the previous one first closes the open window: no pause hides inside a window, so the report measures gaps to the
second. ``maxWsAge`` is the oldest WebSocket record compared in the window (the ages' quantiles need it). Histograms
are sparse log buckets, :data:`BUCKETS_PER_DECADE` a decade from 1e-12 (``z`` counts values under that), so
quantiles are within ~6 %. At most :data:`MISMATCH_LINES_PER_SCAN` mismatch lines are written per scan; the rest
are counted in ``mismatchesNotLogged``.

Tolerances: funding rates match within an absolute difference (``FUNDING_RATE_ABS_TOLERANCE``, default 1e-5),
mark prices within a relative one (``MARK_PRICE_REL_TOLERANCE``, default 0.1 %). The volume script in ``validate``
mode with the market feed also compares each closed 1 h candle both sources hold: ``klineClose`` and
``klineQuoteVolume`` (``KLINE_REL_TOLERANCE``, default 1e-6: a closed candle is final on both sides, so any
difference is a defect); those fields are in a window line only when candles were compared. ``relDiff`` is
``|ws - rest| / |rest|`` and ``null`` when REST says 0. The reader also understands this service's earlier lines
(``FUNDING_COMPARE`` per comparison, ``FUNDING_COMPARE_SUMMARY`` per scan) and the original deployment's
``Funding mismatch for SYM: REST=x, WS=y, diff=z%`` and ``Mark price mismatch for ...`` lines.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Union

import orjson

MARKER = "FUNDING_COMPARE "
SUMMARY_MARKER = "FUNDING_COMPARE_SUMMARY "
WINDOW_MARKER = "FUNDING_COMPARE_WINDOW "
MISMATCH_MARKER = "FUNDING_MISMATCH "
WINDOW_S = 60.0
MISMATCH_LINES_PER_SCAN = 20
BUCKETS_PER_DECADE = 20
FLOOR = 1e-12
FUNDING, MARK = "fundingRate", "markPrice"
#: A closed 1 h candle's close and quote volume, the market feed's against REST (the volume script, issue 21).
KLINE_CLOSE, KLINE_VOLUME = "klineClose", "klineQuoteVolume"
CANDLE_FIELDS = (KLINE_CLOSE, KLINE_VOLUME)
FIELDS = (FUNDING, MARK, *CANDLE_FIELDS)
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


@dataclass(frozen=True)
class Window:
    """A window line: aggregated comparisons per field and availability, over ``scans`` scans."""

    ts: float
    consumer: str
    scans: int
    fields: dict[str, dict[str, Any]]
    ws_age: dict[str, Any]
    availability: dict[str, int]
    #: When the window's first scan ran (the line is written at the end of its last).
    since: float
    #: The oldest WebSocket record compared; ``None`` in lines written before it was logged.
    max_ws_age: float | None = None


@dataclass(frozen=True)
class Mismatch:
    """A mismatch line (the window line counted it already): for the worst-symbols table."""

    ts: float
    consumer: str
    symbol: str
    field: str
    rel_diff: float | None
    abs_diff: float


Record = Union[Comparison, ScanSummary, LegacyMismatch, Window, Mismatch]


def bucket(value: float) -> int | None:
    """The sparse histogram bucket of a non-negative value; ``None`` below :data:`FLOOR` (counted as ``z``)."""
    value = abs(value)
    return None if value < FLOOR else math.floor(math.log10(value / FLOOR) * BUCKETS_PER_DECADE)


def bucket_value(index: int) -> float:
    """The geometric middle of a bucket: what the reader feeds its quantiles."""
    return FLOOR * 10 ** ((index + 0.5) / BUCKETS_PER_DECADE)


class _Hist:
    __slots__ = ("zeros", "buckets")

    def __init__(self) -> None:
        self.zeros = 0
        self.buckets: dict[int, int] = {}

    def add(self, value: float) -> None:
        index = bucket(value)
        if index is None:
            self.zeros += 1
        else:
            self.buckets[index] = self.buckets.get(index, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"z": self.zeros, "b": {str(k): v for k, v in sorted(self.buckets.items())}}


class _FieldWindow:
    def __init__(self) -> None:
        self.n = self.m = 0
        self.max_abs = self.max_rel = 0.0
        self.rel, self.abs = _Hist(), _Hist()

    def add(self, c: Comparison) -> None:
        self.n += 1
        self.m += c.match
        self.abs.add(c.abs_diff)
        self.max_abs = max(self.max_abs, c.abs_diff)
        if c.rel_diff is not None:
            self.rel.add(c.rel_diff)
            self.max_rel = max(self.max_rel, c.rel_diff)

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "m": self.m, "maxAbs": self.max_abs, "maxRel": self.max_rel,
                "rel": self.rel.as_dict(), "abs": self.abs.as_dict()}


class ComparisonLog:
    def __init__(self, consumer: str, *, funding_abs_tolerance: float, price_rel_tolerance: float,
                 kline_rel_tolerance: float = 1e-6, logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.time, window_s: float = WINDOW_S) -> None:
        self.consumer = consumer
        self._tolerance = {FUNDING: (funding_abs_tolerance, "abs"), MARK: (price_rel_tolerance, "rel"),
                           KLINE_CLOSE: (kline_rel_tolerance, "rel"), KLINE_VOLUME: (kline_rel_tolerance, "rel")}
        self._log = logger or logging.getLogger("funding.compare")
        self._clock = clock
        self._window_s = window_s
        self._mode = ""
        self._in_scan = False
        self._reset(float("-inf"))  # the first scan writes its line at once (a --once run, the report's coverage)

    def _reset(self, since: float) -> None:
        self._since = since
        self._first: float | None = None
        self._last: float | None = None
        self._max_ws_age: float | None = None
        self._scans = 0
        self._fields = {name: _FieldWindow() for name in FIELDS}
        self._ws_age = _Hist()
        self._availability = dict.fromkeys(("wsUnavailable", "restUnavailable", "wsMissing", "wsStale",
                                            "restFallbacks", "mismatchesNotLogged"), 0)

    def _scan_started(self) -> None:
        """At a scan's first comparison (or its summary): a pause since the last scan (a stop, a hang) first ends
        the open window at that scan, so the pause shows in the log as a gap instead of hiding inside a window."""
        if self._in_scan:
            return
        self._in_scan = True
        if self._scans and self._last is not None and self._clock() - self._last > self._window_s:
            self.flush()

    def compare(self, symbol: str, field_name: str, rest: float, ws: float, ws_age: float | None) -> Comparison:
        """Judge one pair; it is aggregated, and logged on its own line only if it is a mismatch."""
        abs_diff = abs(ws - rest)
        rel_diff = abs_diff / abs(rest) if rest else None
        tolerance, kind = self._tolerance[field_name]
        if kind == "abs":
            match = abs_diff <= tolerance
        else:
            match = abs_diff == 0 or (rel_diff is not None and rel_diff <= tolerance)
        self._scan_started()
        record = Comparison(self._clock(), self.consumer, symbol, field_name, rest, ws, abs_diff, rel_diff, ws_age,
                            match)
        self._fields[field_name].add(record)
        if ws_age is not None and field_name == MARK:
            self._ws_age.add(ws_age)
            self._max_ws_age = ws_age if self._max_ws_age is None else max(self._max_ws_age, ws_age)
        return record

    def summary(self, mode: str, comparisons: list[Comparison], *, ws_available: bool, rest_available: bool,
                ws_missing: int = 0, ws_stale: int = 0, rest_fallbacks: int = 0) -> None:
        """End of a scan: its mismatch lines (capped), and the window line once a minute has passed."""
        self._scan_started()
        self._in_scan = False
        self._mode = mode
        mismatches = sorted((c for c in comparisons if not c.match), reverse=True,
                            key=lambda c: c.rel_diff if c.rel_diff is not None else c.abs_diff)
        for c in mismatches[:MISMATCH_LINES_PER_SCAN]:
            self._log.info("%s%s", MISMATCH_MARKER, json.dumps({
                "ts": round(c.ts, 3), "time": iso_utc(c.ts), "consumer": self.consumer, "symbol": c.symbol,
                "field": c.field, "rest": c.rest, "ws": c.ws, "absDiff": c.abs_diff, "relDiff": c.rel_diff,
                "wsAge": None if c.ws_age is None else round(c.ws_age, 3)}, ensure_ascii=False))
        a = self._availability
        a["mismatchesNotLogged"] += max(0, len(mismatches) - MISMATCH_LINES_PER_SCAN)
        a["wsUnavailable"] += not ws_available
        a["restUnavailable"] += not rest_available
        a["wsMissing"] += ws_missing
        a["wsStale"] += ws_stale
        a["restFallbacks"] += rest_fallbacks
        self._scans += 1
        self._last = self._clock()
        if self._first is None:
            self._first = self._last
        if self._clock() - self._since >= self._window_s:
            self.flush()

    def flush(self) -> None:
        """Write the window line (if any scan happened) and start a new window; also at the consumer's stop.
        The line's ``ts`` is its last scan's time (a stop long after it claims no coverage it did not have)."""
        now = self._clock()
        if self._scans and self._last is not None:
            now = self._last
            self._log.info("%s%s", WINDOW_MARKER, json.dumps({
                "ts": round(now, 3), "time": iso_utc(now), "consumer": self.consumer, "mode": self._mode,
                "since": round(self._first if self._first is not None else now, 3), "scans": self._scans,
                **self._availability,
                # Candle fields only where candles were compared: the OI poller's lines stay as they were.
                "fields": {name: f.as_dict() for name, f in self._fields.items()
                           if f.n or name not in CANDLE_FIELDS},
                "wsAge": self._ws_age.as_dict(), "maxWsAge": self._max_ws_age},
                ensure_ascii=False, separators=(",", ":")))
        self._reset(now)


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
    index = line.find(WINDOW_MARKER)
    if index >= 0:
        d = orjson.loads(line[index + len(WINDOW_MARKER):])
        fields = {name: d["fields"][name] for name in FIELDS if name in d["fields"]}
        for f in fields.values():
            int(f["n"]), int(f["m"]), dict(f["rel"]["b"]), dict(f["abs"]["b"])  # shape check: KeyError/TypeError
        availability = {k: int(d.get(k, 0)) for k in ("wsUnavailable", "restUnavailable", "wsMissing", "wsStale",
                                                       "restFallbacks", "mismatchesNotLogged")}
        return Window(_number(d["ts"]), str(d["consumer"]), int(d["scans"]), fields, dict(d.get("wsAge") or {}),
                      availability, _number(d.get("since", d["ts"])), _optional(d.get("maxWsAge")))
    index = line.find(MISMATCH_MARKER)
    if index >= 0:
        d = orjson.loads(line[index + len(MISMATCH_MARKER):])
        return Mismatch(_number(d["ts"]), str(d["consumer"]), str(d["symbol"]), str(d["field"]),
                        _optional(d.get("relDiff")), _number(d["absDiff"]))
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
