"""Constant-memory statistics for the go / no-go report: log-bucket quantiles, per-field and per-symbol tallies.

Millions of comparison lines stream through here; memory grows with the number of symbols and of minutes
covered, never with the number of lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class LogHistogram:
    """Quantiles of non-negative values within ~1 % relative error: 230 buckets per decade from 1e-12 up."""

    PER_DECADE = 230
    FLOOR = 1e-12

    def __init__(self) -> None:
        self.count = 0
        self.zeros = 0
        self.maximum = 0.0
        self._buckets: dict[int, int] = {}

    def add(self, value: float) -> None:
        value = abs(value)
        self.count += 1
        self.maximum = max(self.maximum, value)
        if value < self.FLOOR:
            self.zeros += 1
            return
        index = math.floor(math.log10(value / self.FLOOR) * self.PER_DECADE)
        self._buckets[index] = self._buckets.get(index, 0) + 1

    def add_count(self, value: float, count: int) -> None:
        """``count`` values of ``value`` at once (a window line's bucket); the maximum is the caller's to set."""
        if count <= 0:
            return
        self.count += count
        if value < self.FLOOR:
            self.zeros += count
            return
        index = math.floor(math.log10(value / self.FLOOR) * self.PER_DECADE)
        self._buckets[index] = self._buckets.get(index, 0) + count

    def add_sparse(self, hist: dict[str, Any], maximum: float | None, bucket_value: Any) -> None:
        """Merge a window line's sparse histogram (``{"z": zeros, "b": {index: count}}``). Without the line's
        maximum the top bucket's middle stands in: quantiles are capped by the maximum, so a missing one left
        every quantile at 0."""
        self.add_count(0.0, int(hist.get("z", 0)))
        top: float | None = None
        for index, count in (hist.get("b") or {}).items():
            value = bucket_value(int(index))
            self.add_count(value, int(count))
            if int(count) > 0:
                top = value if top is None else max(top, value)
        if maximum is None:
            maximum = top
        if maximum is not None:
            self.maximum = max(self.maximum, float(maximum))

    def quantile(self, q: float) -> float | None:
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        if rank <= self.zeros:
            return 0.0
        seen = self.zeros
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                midpoint = self.FLOOR * 10 ** ((index + 0.5) / self.PER_DECADE)
                return min(midpoint, self.maximum)
        return self.maximum

    def distribution(self, per_decade: int = 10) -> list[list[float]]:
        """``[[value, count], ...]`` coarsened to ``per_decade`` bins a decade (for a chart), zeros first."""
        out: dict[int, int] = {}
        for index, count in self._buckets.items():
            coarse = index * per_decade // self.PER_DECADE
            out[coarse] = out.get(coarse, 0) + count
        rows = [[0.0, float(self.zeros)]] if self.zeros else []
        return rows + [[self.FLOOR * 10 ** ((k + 0.5) / per_decade), float(c)] for k, c in sorted(out.items())]

    def summary(self) -> dict[str, float | None]:
        return {"median": self.quantile(0.5), "p99": self.quantile(0.99),
                "max": self.maximum if self.count else None}


@dataclass
class FieldStats:
    """Comparisons of one field (funding rate or mark price), overall or for one consumer."""

    comparisons: int = 0
    matches: int = 0
    abs_diff: LogHistogram = field(default_factory=LogHistogram)
    rel_diff: LogHistogram = field(default_factory=LogHistogram)
    ws_age: LogHistogram = field(default_factory=LogHistogram)
    legacy_mismatches: int = 0
    legacy_rel_diff: LogHistogram = field(default_factory=LogHistogram)

    def add(self, match: bool, abs_diff: float, rel_diff: float | None, ws_age: float | None) -> None:
        self.comparisons += 1
        self.matches += match
        self.abs_diff.add(abs_diff)
        if rel_diff is not None:
            self.rel_diff.add(rel_diff)
        if ws_age is not None:
            self.ws_age.add(ws_age)

    def add_window(self, f: dict[str, Any], ws_age: dict[str, Any] | None, bucket_value: Any,
                   max_ws_age: float | None = None) -> None:
        """One field of a window line: counts, matches and the distributions of the differences."""
        self.comparisons += int(f["n"])
        self.matches += int(f["m"])
        self.abs_diff.add_sparse(f["abs"], f.get("maxAbs"), bucket_value)
        self.rel_diff.add_sparse(f["rel"], f.get("maxRel"), bucket_value)
        if ws_age:
            self.ws_age.add_sparse(ws_age, max_ws_age, bucket_value)

    @property
    def match_rate(self) -> float | None:
        return self.matches / self.comparisons if self.comparisons else None

    def as_dict(self) -> dict[str, Any]:
        return {"comparisons": self.comparisons, "matches": self.matches, "matchRate": self.match_rate,
                "absDiff": self.abs_diff.summary(), "relDiff": self.rel_diff.summary(),
                "wsAgeSeconds": self.ws_age.summary(), "legacyMismatches": self.legacy_mismatches,
                "legacyRelDiff": self.legacy_rel_diff.summary()}


@dataclass
class SymbolStats:
    """One symbol's mismatches per field. Only mismatches rank it: a funding rate's relative difference is large
    even within its absolute tolerance, so the largest difference overall would name the wrong field."""

    #: Per-comparison lines only; window lines count mismatches per symbol, not comparisons (0: unknown).
    comparisons: int = 0
    mismatches: int = 0
    by_field: dict[str, int] = field(default_factory=dict)
    worst_rel: dict[str, float] = field(default_factory=dict)

    def add_mismatch(self, field_name: str, rel_diff: float | None) -> None:
        self.mismatches += 1
        self.by_field[field_name] = self.by_field.get(field_name, 0) + 1
        if rel_diff is not None and rel_diff > self.worst_rel.get(field_name, -1.0):
            self.worst_rel[field_name] = rel_diff

    @property
    def worst_field(self) -> str | None:
        """The field with the most mismatches (then the larger difference); ``None`` without a mismatch."""
        if not self.by_field:
            return None
        return max(self.by_field, key=lambda f: (self.by_field[f], self.worst_rel.get(f, 0.0)))

    @property
    def worst_rel_diff(self) -> float | None:
        worst = self.worst_field
        return None if worst is None else self.worst_rel.get(worst)


@dataclass
class Availability:
    """From the per-scan summary lines: how often each side was missing, and how often REST filled in."""

    scans: int = 0
    ws_unavailable: int = 0
    rest_unavailable: int = 0
    ws_missing_symbols: int = 0
    ws_stale_symbols: int = 0
    rest_fallbacks: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Hourly:
    """Per UTC hour: comparisons and matches per field, and the scans' availability (bounded by the hours seen)."""

    def __init__(self) -> None:
        self.hours: dict[int, dict[str, int]] = {}

    def _hour(self, ts: float) -> dict[str, int]:
        return self.hours.setdefault(int(ts // 3600), {})

    def add(self, ts: float, **counts: int) -> None:
        hour = self._hour(ts)
        for key, n in counts.items():
            hour[key] = hour.get(key, 0) + n

    def rows(self) -> list[dict[str, Any]]:
        return [{"hourStart": h * 3600.0, **counts} for h, counts in sorted(self.hours.items())]


class Coverage:
    """When data came: the time covered and its gaps to the second, in memory bounded by the span (per minute with
    data, its first and last time; lines need not come in order)."""

    def __init__(self) -> None:
        self._minutes: dict[int, list[float]] = {}
        self.first: float | None = None
        self.last: float | None = None

    def add(self, ts: float) -> None:
        span = self._minutes.get(int(ts // 60))
        if span is None:
            self._minutes[int(ts // 60)] = [ts, ts]
        else:
            span[0], span[1] = min(span[0], ts), max(span[1], ts)
        self.first = ts if self.first is None else min(self.first, ts)
        self.last = ts if self.last is None else max(self.last, ts)

    @property
    def hours(self) -> float:
        return 0.0 if self.first is None or self.last is None else (self.last - self.first) / 3600

    def _stretches(self) -> list[tuple[float, float]]:
        """``(start, seconds)`` between consecutive data times (a pause inside one minute is under a minute)."""
        spans = [self._minutes[m] for m in sorted(self._minutes)]
        return [(before[1], after[0] - before[1]) for before, after in zip(spans, spans[1:])]

    def gaps(self, longer_than_s: float) -> list[tuple[float, float]]:
        """``(start, seconds)`` of every stretch without data longer than ``longer_than_s``."""
        return [(start, sec) for start, sec in self._stretches() if sec > longer_than_s]

    def largest_gap(self) -> tuple[float, float | None]:
        """Seconds of the longest stretch without data and where it started."""
        best, start = 0.0, None
        for begin, sec in self._stretches():
            if sec > best:
                best, start = sec, begin
        return best, start
