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
        """Merge a window line's sparse histogram (``{"z": zeros, "b": {index: count}}``)."""
        self.add_count(0.0, int(hist.get("z", 0)))
        for index, count in (hist.get("b") or {}).items():
            self.add_count(bucket_value(int(index)), int(count))
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

    def add_window(self, f: dict[str, Any], ws_age: dict[str, Any] | None, bucket_value: Any) -> None:
        """One field of a window line: counts, matches and the distributions of the differences."""
        self.comparisons += int(f["n"])
        self.matches += int(f["m"])
        self.abs_diff.add_sparse(f["abs"], f.get("maxAbs"), bucket_value)
        self.rel_diff.add_sparse(f["rel"], f.get("maxRel"), bucket_value)
        if ws_age:
            self.ws_age.add_sparse(ws_age, None, bucket_value)

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
    comparisons: int = 0
    mismatches: int = 0
    worst_rel_diff: float = 0.0
    worst_field: str = ""


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
    """Which minutes have data: the time covered and its largest gap, in memory bounded by the span."""

    def __init__(self) -> None:
        self._minutes: set[int] = set()
        self.first: float | None = None
        self.last: float | None = None

    def add(self, ts: float) -> None:
        self._minutes.add(int(ts // 60))
        self.first = ts if self.first is None else min(self.first, ts)
        self.last = ts if self.last is None else max(self.last, ts)

    @property
    def hours(self) -> float:
        return 0.0 if self.first is None or self.last is None else (self.last - self.first) / 3600

    def gaps(self, longer_than_s: float) -> list[tuple[float, float]]:
        """``(start, seconds)`` of every stretch without data longer than ``longer_than_s`` (minute resolution)."""
        minutes = sorted(self._minutes)
        return [((before + 1) * 60.0, (after - before - 1) * 60.0) for before, after in zip(minutes, minutes[1:])
                if (after - before - 1) * 60.0 > longer_than_s]

    def largest_gap(self) -> tuple[float, float | None]:
        """Seconds of the longest stretch without data and where it started (minute resolution)."""
        minutes = sorted(self._minutes)
        best, start = 0.0, None
        for before, after in zip(minutes, minutes[1:]):
            gap = (after - before - 1) * 60.0
            if gap > best:
                best, start = gap, (before + 1) * 60.0
        return best, start
