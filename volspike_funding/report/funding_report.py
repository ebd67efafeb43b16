"""``validate_funding_comparison.py``: may the consumers switch to WebSocket-only? An honest go / no-go report.

Reads the consumers' comparison lines (format owned by :mod:`.comparison_log`) from files, ``.gz`` files or stdin:
raw logs, ``journalctl -u ...`` output and ``journalctl -o json``, plus the original deployment's legacy
mismatch lines. Streams in constant memory. Exit codes: 0 SAFE TO SWITCH, 1 REVIEW NEEDED,
2 INSUFFICIENT DATA or bad usage, 130 interrupted (see :data:`EPILOG`).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import sys
from pathlib import Path
from datetime import datetime, timezone
from typing import IO, Any, Iterable, Iterator, Sequence

from volspike_funding.core.cli import build_parser, env_file_line, run, settings_from_args
from volspike_funding.store.comparison_log import (CANDLE_FIELDS, FIELDS, FUNDING, KLINE_CLOSE, KLINE_VOLUME, MARK,
                                                   Comparison, LegacyMismatch, Mismatch, ScanSummary, Window,
                                                   bucket_value, iso_utc, parse_line)
from volspike_funding.report.log_lines import journal_entry, parse_when, prefix_time
from volspike_funding.core.errors import SettingsError
from volspike_funding.report.stats import Availability, Coverage, FieldStats, Hourly, SymbolStats
from volspike_funding.core.settings import REPORT, Settings

SAFE, REVIEW, INSUFFICIENT = "SAFE TO SWITCH", "REVIEW NEEDED", "INSUFFICIENT DATA"
EXIT = {SAFE: 0, REVIEW: 1, INSUFFICIENT: 2}


class Report:
    def __init__(self, settings: Settings, since: float | None = None, until: float | None = None,
                 now: datetime | None = None) -> None:
        self.settings, self.since, self.until = settings, since, until
        self.now = now or datetime.now(timezone.utc)
        self.fields = {name: FieldStats() for name in FIELDS}
        self.by_consumer: dict[tuple[str, str], FieldStats] = {}
        self.symbols: dict[str, SymbolStats] = {}
        self.availability: dict[str, Availability] = {}
        self.coverage = Coverage()
        self.hourly = Hourly()
        self.lines = self.unparseable = self.filtered = self.untimed = 0

    def _in_window(self, ts: float | None) -> bool:
        if ts is None:
            if self.since is not None or self.until is not None:
                self.untimed += 1
                return False
            return True
        inside = (self.since is None or ts >= self.since) and (self.until is None or ts <= self.until)
        self.filtered += not inside
        return inside

    def feed(self, line: str) -> None:
        self.lines += 1
        prefix_ts: float | None = None
        if line.startswith("{"):
            entry = journal_entry(line)
            if entry is not None:
                line, prefix_ts = entry
        try:
            record = parse_line(line)
        except ValueError:
            self.unparseable += 1
            return
        if record is None:
            return
        if isinstance(record, LegacyMismatch):
            ts = prefix_ts if prefix_ts is not None else prefix_time(line, self.now)
            if self._in_window(ts):
                stats = self.fields[record.field]
                stats.legacy_mismatches += 1
                stats.legacy_rel_diff.add(record.diff_pct / 100)
                if ts is not None:
                    self.coverage.add(ts)
        elif isinstance(record, Window):
            if self._in_window(record.ts):
                self.coverage.add(record.since)
                self.coverage.add(record.ts)
                for name, f in record.fields.items():
                    for stats in (self.fields[name],
                                  self.by_consumer.setdefault((record.consumer, name), FieldStats())):
                        # One age per WebSocket record, logged once (with its mark price): it is both fields' age.
                        stats.add_window(f, record.ws_age, bucket_value, record.max_ws_age)
                    self.hourly.add(record.ts, **{f"{name}.n": int(f["n"]), f"{name}.m": int(f["m"])})
                av, a = record.availability, self.availability.setdefault(record.consumer, Availability())
                self.hourly.add(record.ts, scans=record.scans, wsUnavailable=av["wsUnavailable"],
                                wsStale=av["wsStale"], wsMissing=av["wsMissing"])
                a.scans += record.scans
                a.ws_unavailable += av["wsUnavailable"]
                a.rest_unavailable += av["restUnavailable"]
                a.ws_missing_symbols += av["wsMissing"]
                a.ws_stale_symbols += av["wsStale"]
                a.rest_fallbacks += av["restFallbacks"]
        elif isinstance(record, Mismatch):
            if self._in_window(record.ts):
                self.symbols.setdefault(record.symbol, SymbolStats()).add_mismatch(record.field, record.rel_diff)
        elif isinstance(record, ScanSummary):
            if self._in_window(record.ts):
                a = self.availability.setdefault(record.consumer, Availability())
                a.scans += 1
                a.ws_unavailable += not record.ws_available
                a.rest_unavailable += not record.rest_available
                a.ws_missing_symbols += record.ws_missing
                a.ws_stale_symbols += record.ws_stale
                a.rest_fallbacks += record.rest_fallbacks
                self.hourly.add(record.ts, scans=1, wsUnavailable=int(not record.ws_available),
                                wsStale=record.ws_stale, wsMissing=record.ws_missing)
        elif self._in_window(record.ts):
            self._add(record)

    def _add(self, c: Comparison) -> None:
        self.coverage.add(c.ts)
        self.hourly.add(c.ts, **{f"{c.field}.n": 1, f"{c.field}.m": int(c.match)})
        for stats in (self.fields[c.field], self.by_consumer.setdefault((c.consumer, c.field), FieldStats())):
            stats.add(c.match, c.abs_diff, c.rel_diff, c.ws_age)
        sym = self.symbols.setdefault(c.symbol, SymbolStats())
        sym.comparisons += 1
        if not c.match:
            sym.add_mismatch(c.field, c.rel_diff)

    # -- the verdict ---------------------------------------------------------------------------------------------
    def judged(self) -> dict[str, FieldStats]:
        """The fields the verdict judges: funding and mark price always, the candles' only where the logs hold
        candle comparisons (the volume script in validate mode with the market feed on)."""
        return {name: stats for name, stats in self.fields.items() if name not in CANDLE_FIELDS or stats.comparisons}

    def _limits(self) -> dict[str, float]:
        s = self.settings
        return {FUNDING: s.report_max_p99_rel_funding, MARK: s.report_max_p99_rel_mark,
                KLINE_CLOSE: s.report_max_p99_rel_kline, KLINE_VOLUME: s.report_max_p99_rel_kline}

    def verdict(self) -> tuple[str, list[str]]:
        s = self.settings
        review: list[str] = []
        insufficient: list[str] = []
        total = sum(f.comparisons for f in self.fields.values())
        legacy = sum(f.legacy_mismatches for f in self.fields.values())
        if total == 0:
            insufficient.append("no comparison lines found: run the consumers with FUNDING_SOURCE_MODE=validate")
        if legacy:
            insufficient.append(f"{legacy} legacy mismatch lines: they only show mismatches, so their match rate "
                                "is unknown" if total == 0 else
                                f"{legacy} legacy mismatch lines were not counted in the match rates")
        if total and self.coverage.hours < s.report_min_hours:
            insufficient.append(f"covers {self.coverage.hours:.1f} h, {s.report_min_hours:g} h needed")
        gap, _ = self.coverage.largest_gap()
        if total and gap > s.report_max_gap_minutes * 60:
            insufficient.append(f"a {gap / 60:.1f} min gap without data (at most {s.report_max_gap_minutes:g})")
        if 0 < total < s.report_min_comparisons:
            insufficient.append(f"{total} comparisons, {s.report_min_comparisons} needed")
        limits = self._limits()
        for name, stats in self.judged().items():
            if not stats.comparisons:
                if total:
                    insufficient.append(f"no {name} comparisons")
                continue
            rate = 100 * (stats.match_rate or 0.0)
            if rate < s.report_min_match_rate_pct:
                review.append(f"{name} match rate {rate:.2f} % < {s.report_min_match_rate_pct:g} %")
            p99 = stats.rel_diff.quantile(0.99)
            if p99 is not None and p99 > limits[name]:
                review.append(f"{name} p99 relative difference {p99:.3g} > {limits[name]:g}")
        for consumer, a in sorted(self.availability.items()):
            if a.scans and 100 * a.ws_unavailable / a.scans > s.report_max_ws_unavailable_pct:
                review.append(f"{consumer}: local API unavailable in {a.ws_unavailable} of {a.scans} scans")
        if review:
            return REVIEW, review + insufficient
        if insufficient:
            return INSUFFICIENT, insufficient
        return SAFE, [f"{total} comparisons over {self.coverage.hours:.1f} h met every threshold"]

    def checks(self) -> list[dict[str, Any]]:
        """Every threshold of the verdict with its figure: ``{"check", "figure", "threshold", "met"}``."""
        s = self.settings
        rows: list[tuple[str, float | None, str, bool]] = []
        total = sum(f.comparisons for f in self.fields.values())
        gap, _ = self.coverage.largest_gap()
        rows.append(("coverage (h)", round(self.coverage.hours, 2), f">= {s.report_min_hours:g}",
                     self.coverage.hours >= s.report_min_hours))
        rows.append(("largest gap (min)", round(gap / 60, 1), f"<= {s.report_max_gap_minutes:g}",
                     gap <= s.report_max_gap_minutes * 60))
        rows.append(("comparisons", total, f">= {s.report_min_comparisons}", total >= s.report_min_comparisons))
        limits = self._limits()
        for name, stats in self.judged().items():
            rate = None if stats.match_rate is None else round(100 * stats.match_rate, 3)
            rows.append((f"{name} match rate (%)", rate, f">= {s.report_min_match_rate_pct:g}",
                         rate is not None and rate >= s.report_min_match_rate_pct))
            p99 = stats.rel_diff.quantile(0.99)
            rows.append((f"{name} p99 relative difference", p99, f"<= {limits[name]:g}",
                         p99 is not None and p99 <= limits[name]))
        for consumer, a in sorted(self.availability.items()):
            pct = round(100 * a.ws_unavailable / a.scans, 2) if a.scans else None
            rows.append((f"{consumer}: scans with the local API unavailable (%)", pct,
                         f"<= {s.report_max_ws_unavailable_pct:g}",
                         pct is not None and pct <= s.report_max_ws_unavailable_pct))
        return [{"check": c, "figure": f, "threshold": t, "met": m} for c, f, t, m in rows]

    def as_dict(self) -> dict[str, Any]:
        verdict, reasons = self.verdict()
        gap, gap_start = self.coverage.largest_gap()
        worst = sorted(self.symbols.items(), key=lambda kv: (-kv[1].mismatches, -(kv[1].worst_rel_diff or 0.0)))[:10]
        return {
            "verdict": verdict, "exitCode": EXIT[verdict], "reasons": reasons,
            "lines": self.lines, "unparseableLines": self.unparseable, "outsideWindow": self.filtered,
            "untimedExcluded": self.untimed,
            "coverage": {"from": None if self.coverage.first is None else iso_utc(self.coverage.first),
                         "to": None if self.coverage.last is None else iso_utc(self.coverage.last),
                         "hours": round(self.coverage.hours, 3), "largestGapMinutes": round(gap / 60, 1),
                         "largestGapFrom": None if gap_start is None else iso_utc(gap_start)},
            "fields": {name: stats.as_dict() for name, stats in self.judged().items()},
            "consumers": {f"{c}/{f}": stats.as_dict() for (c, f), stats in sorted(self.by_consumer.items())},
            "availability": {c: a.as_dict() for c, a in sorted(self.availability.items())},
            # comparisons: null when only window lines were read (they count no comparisons per symbol)
            "worstSymbols": [{"symbol": name, "comparisons": s.comparisons or None, "mismatches": s.mismatches,
                              "worstRelDiff": s.worst_rel_diff, "worstField": s.worst_field,
                              "mismatchesByField": dict(sorted(s.by_field.items()))}
                             for name, s in worst if s.comparisons or s.mismatches],
            "thresholds": {k: v for k, v in self.settings.__dict__.items() if k.startswith("report_")},
            "p99Limits": {name: limit for name, limit in self._limits().items() if name in self.judged()},
            "checks": self.checks(),
            "hourly": self.hourly.rows(),
            "gaps": [{"from": iso_utc(start), "fromTs": start, "minutes": round(sec / 60, 1)}
                     for start, sec in self.coverage.gaps(self.settings.report_max_gap_minutes * 60)],
            "distributions": {name: stats.rel_diff.distribution() for name, stats in self.judged().items()},
        }


def read_lines(paths: Sequence[str], stdin: IO[str]) -> Iterator[str]:
    for path in paths:
        if path == "-":
            yield from stdin
            continue
        opener = gzip.open if path.endswith(".gz") else open
        try:
            with opener(path, "rt", encoding="utf-8", errors="replace") as stream:
                yield from stream
        except OSError as exc:
            raise SettingsError(f"cannot read {path}: {exc.strerror or exc}") from None


def feed_all(report: Report, lines: Iterable[str]) -> Report:
    for line in lines:
        report.feed(line.rstrip("\n"))
    return report


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it: never 0, which would read as SAFE TO SWITCH
EPILOG = ("Exit codes: 0 SAFE TO SWITCH, 1 REVIEW NEEDED, 2 INSUFFICIENT DATA or bad usage (a bad flag or setting, "
          "an unreadable LOG, no LOG given), 130 interrupted (Ctrl-C). Standard input is read only when LOG is '-': "
          "journalctl -o json ... | validate_funding_comparison.py -. Every flag mirrors an environment variable; "
          "see README.md.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("validate_funding_comparison",
                          "Decide from the consumers' comparison logs whether WebSocket data can replace REST.",
                          REPORT)
    parser.epilog = EPILOG
    parser.add_argument("inputs", nargs="*", metavar="LOG",
                        help="log files (.gz too), journalctl output or journalctl -o json; '-' reads stdin")
    parser.add_argument("--since", help="ignore lines before this ISO time or span (e.g. 24h, 7d)")
    parser.add_argument("--until", help="ignore lines after this ISO time or span")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--html", metavar="FILE", help="also write the report as one self-contained HTML file "
                                                       "(charts inline, opens offline)")

    def body() -> int:
        from volspike_funding.report.text import render

        args = parser.parse_args(argv)
        settings = settings_from_args(args, REPORT)
        if args.html and importlib.util.find_spec("matplotlib") is None:
            # An extra (the droplet's install has it, a bare scripts/run.sh not): say so before reading any input.
            raise SettingsError("--html needs matplotlib, which is not installed: pip install -r "
                                "requirements-report.txt")
        if not args.inputs:  # it used to wait on a terminal's stdin without a word
            raise SettingsError("no LOG given: name the log files, or '-' to read standard input "
                                "(journalctl -o json ... | validate_funding_comparison.py -)")
        now = datetime.now(timezone.utc)
        since = parse_when(args.since, now) if args.since else None
        until = parse_when(args.until, now) if args.until else None
        report = feed_all(Report(settings, since, until, now), read_lines(args.inputs, sys.stdin))
        # Its thresholds may come from the env file: say which (after reading, so an input error stays one line).
        print(f"validate_funding_comparison: {env_file_line(args)}", file=sys.stderr)
        result = report.as_dict()
        if args.html:
            from volspike_funding.report.html import render as render_html

            try:
                Path(args.html).write_text(render_html(result), encoding="utf-8")
            except OSError as exc:
                raise SettingsError(f"--html: cannot write {args.html}: {exc.strerror or exc}") from None
        try:
            print(json.dumps(result, indent=2) if args.json else render(result), flush=True)
        except BrokenPipeError:  # `... | head`: the reader has what it wanted; no traceback, the verdict stands
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return result["exitCode"]

    def interruptible() -> int:
        # core.cli.run maps Ctrl-C to 0: right for a daemon's stop, wrong for a verdict.
        try:
            return body()
        except KeyboardInterrupt:
            print("validate_funding_comparison: interrupted: no verdict", file=sys.stderr)
            return EXIT_INTERRUPTED

    return run("validate_funding_comparison", interruptible)
