"""The go / no-go report as aligned text for a terminal; the JSON form is ``Report.as_dict()`` itself."""

from __future__ import annotations

from typing import Any


def _num(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    if pct:
        return f"{100 * value:.2f}%"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.3g}"


def mismatched_fields(worst: dict[str, Any]) -> str:
    """``markPrice 12, fundingRate 1``: which fields a worst symbol's mismatches were, most first."""
    by_field = worst.get("mismatchesByField") or {}
    return ", ".join(f"{f} {n:,}" for f, n in sorted(by_field.items(), key=lambda kv: -kv[1])) or "-"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def render(result: dict[str, Any]) -> str:
    out = [f"Funding comparison report: {result['lines']:,} lines read, {result['unparseableLines']:,} unparseable, "
           f"{result['outsideWindow']:,} outside --since/--until"
           + (f", {result['untimedExcluded']:,} without a time excluded" if result["untimedExcluded"] else "")]
    cov = result["coverage"]
    if cov["from"]:
        out.append(f"Time covered: {cov['from']} -> {cov['to']} ({cov['hours']:.1f} h); largest gap "
                   f"{cov['largestGapMinutes']:g} min" + (f" from {cov['largestGapFrom']}" if cov["largestGapFrom"]
                                                          else ""))
    header = ["field / consumer", "compared", "matches", "rate", "|diff| p50", "|diff| p99", "|diff| max",
              "rel p50", "rel p99", "rel max", "ws age p50 (s)", "ws age p99 (s)", "legacy mism."]
    rows = []
    for name, stats in [(f"{k} (all)", v) for k, v in result["fields"].items()] + list(result["consumers"].items()):
        a, r, age = stats["absDiff"], stats["relDiff"], stats["wsAgeSeconds"]
        rows.append([name, _num(stats["comparisons"]), _num(stats["matches"]), _num(stats["matchRate"], True),
                     _num(a["median"]), _num(a["p99"]), _num(a["max"]), _num(r["median"]), _num(r["p99"]),
                     _num(r["max"]), _num(age["median"]), _num(age["p99"]), _num(stats["legacyMismatches"])])
    out += [""] + table(header, rows)
    if result["availability"]:
        rows = [[c, _num(a["scans"]), _num(a["ws_unavailable"]), _num(a["rest_unavailable"]),
                 _num(a["ws_missing_symbols"]), _num(a["ws_stale_symbols"]), _num(a["rest_fallbacks"])]
                for c, a in result["availability"].items()]
        out += ["", "Availability per scan:"] + table(
            ["consumer", "scans", "local down", "REST down", "local missing", "local stale", "REST fallbacks"], rows)
    if result["worstSymbols"]:
        rows = [[w["symbol"], _num(w["comparisons"]), _num(w["mismatches"]), _num(w["worstRelDiff"]),
                 mismatched_fields(w)] for w in result["worstSymbols"]]
        out += ["", "Worst symbols (compared '-': window lines count mismatches per symbol, not comparisons):"]
        out += table(["symbol", "compared", "mismatches", "worst rel", "mismatched fields"], rows)
    out += ["", f"VERDICT: {result['verdict']}"] + [f"  - {reason}" for reason in result["reasons"]]
    return "\n".join(out)
