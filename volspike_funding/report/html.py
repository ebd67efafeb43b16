"""``validate_funding_comparison.py --html FILE``: the go / no-go report as one self-contained HTML file.

It renders :meth:`.funding_report.Report.as_dict` — the same statistics as the text and ``--json`` outputs — and
computes nothing of its own. Charts are drawn by matplotlib into inline SVG (text as paths: no fonts, no scripts,
no styles or images from anywhere), so the file opens offline, e.g. copied off the droplet with ``scp``.
matplotlib is imported only here, so the daemon, the API and the consumers never load it.
"""

from __future__ import annotations

import html
import io
from datetime import datetime, timezone
from typing import Any

from volspike_funding.report.text import mismatched_fields

FIELDS = ("fundingRate", "markPrice")
COLOURS = {"SAFE TO SWITCH": "#1a7f37", "REVIEW NEEDED": "#cf222e", "INSUFFICIENT DATA": "#9a6700"}


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prologue and DOCTYPE: inline SVG needs neither


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def _figure(title: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.fonttype": "path", "svg.hashsalt": "volspike", "font.size": 9})
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.set_title(title, loc="left")
    ax.grid(alpha=0.3)
    return fig, ax


def _shade_gaps(ax: Any, result: dict[str, Any]) -> None:
    for gap in result["gaps"]:
        start = _when(gap["fromTs"])
        ax.axvspan(start, _when(gap["fromTs"] + gap["minutes"] * 60), color="#cf222e", alpha=0.12,
                   label="gap > REPORT_MAX_GAP_MINUTES" if gap is result["gaps"][0] else None)


def match_rate_chart(result: dict[str, Any]) -> str:
    fig, ax = _figure("Match rate per hour (%)")
    rows = result["hourly"]
    for name in FIELDS:
        points = [(_when(r["hourStart"]), 100 * r[f"{name}.m"] / r[f"{name}.n"]) for r in rows if r.get(f"{name}.n")]
        if points:
            ax.plot(*zip(*points), marker=".", label=name)
    ax.axhline(result["thresholds"]["report_min_match_rate_pct"], color="#cf222e", linestyle="--",
               label="REPORT_MIN_MATCH_RATE_PCT")
    _shade_gaps(ax, result)
    ax.legend(loc="lower left")
    return _svg(fig)


def availability_chart(result: dict[str, Any]) -> str:
    fig, ax = _figure("Local API per hour: scans unavailable, stale and missing symbols")
    rows = [r for r in result["hourly"] if r.get("scans")]
    hours = [_when(r["hourStart"]) for r in rows]
    width = 1 / 24 * 0.8
    ax.bar(hours, [r.get("scans", 0) for r in rows], width=width, color="#d0d7de", label="scans")
    ax.bar(hours, [r.get("wsUnavailable", 0) for r in rows], width=width, color="#cf222e", label="API unavailable")
    ax2 = ax.twinx()
    ax2.plot(hours, [r.get("wsStale", 0) for r in rows], color="#9a6700", marker=".", label="stale symbols")
    ax2.plot(hours, [r.get("wsMissing", 0) for r in rows], color="#6639ba", marker=".", label="missing symbols")
    _shade_gaps(ax, result)
    ax.legend(loc="upper left")
    ax2.legend(loc="upper right")
    return _svg(fig)


def distribution_chart(result: dict[str, Any]) -> str:
    fig, ax = _figure("Relative differences WebSocket vs REST (log scale)")
    limits = {"fundingRate": result["thresholds"]["report_max_p99_rel_funding"],
              "markPrice": result["thresholds"]["report_max_p99_rel_mark"]}
    for name, colour in zip(FIELDS, ("#0969da", "#1a7f37")):
        rows = [(v, c) for v, c in result["distributions"][name] if v > 0]
        zeros = sum(c for v, c in result["distributions"][name] if v == 0)
        if rows:
            ax.step(*zip(*rows), where="mid", color=colour, label=f"{name} ({zeros:.0f} exactly equal)")
        p99 = result["fields"][name]["relDiff"]["p99"]
        if p99:
            ax.axvline(p99, color=colour, linestyle=":", label=f"{name} p99 {p99:.3g}")
        ax.axvline(limits[name], color=colour, linestyle="--", label=f"{name} p99 limit {limits[name]:g}")
    ax.set_xscale("log")
    ax.set_xlabel("|ws - rest| / |rest|")
    ax.set_ylabel("comparisons")
    ax.legend(fontsize=7)
    return _svg(fig)


def worst_symbols_chart(result: dict[str, Any]) -> str:
    fig, ax = _figure("Worst symbols: mismatches")
    worst = result["worstSymbols"][:10][::-1]
    ax.barh([w["symbol"] for w in worst], [w["mismatches"] for w in worst], color="#cf222e")
    ax.set_xlabel("mismatches")
    return _svg(fig)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('-' if c is None else str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(result: dict[str, Any]) -> str:
    verdict = result["verdict"]
    checks = _table(["check", "figure", "threshold", "met"],
                    [[c["check"], c["figure"] if not isinstance(c["figure"], float) else f"{c['figure']:.4g}",
                      c["threshold"], "yes" if c["met"] else "NO"] for c in result["checks"]])
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in result["reasons"])
    cov = result["coverage"]
    worst = _table(["symbol", "compared", "mismatches", "worst relative difference", "mismatched fields"],
                   [[w["symbol"], w["comparisons"], w["mismatches"],
                     None if w["worstRelDiff"] is None else f"{w['worstRelDiff']:.3g}", mismatched_fields(w)]
                    for w in result["worstSymbols"]])
    sections = [("Verdict", f"<p class=verdict style='background:{COLOURS.get(verdict, '#6e7781')}'>"
                            f"{html.escape(verdict)}</p><ul>{reasons}</ul>{checks}"),
                ("Match rate per hour", match_rate_chart(result)),
                ("Local API availability and staleness", availability_chart(result)),
                ("Distribution of the differences", distribution_chart(result)),
                ("Worst symbols", worst_symbols_chart(result) + worst)]
    body = "".join(f"<section><h2>{html.escape(title)}</h2>{content}</section>" for title, content in sections)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Funding validation: {html.escape(verdict)}</title>
<style>body{{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;max-width:60rem}}
.verdict{{color:#fff;font-size:1.4rem;font-weight:700;padding:.4rem .8rem;display:inline-block;border-radius:.3rem}}
table{{border-collapse:collapse;margin:.5rem 0}}th,td{{padding:.2rem .7rem;border-bottom:1px solid #d0d7de;
text-align:left}}svg{{max-width:100%;height:auto}}</style></head>
<body><h1>WebSocket vs REST validation</h1>
<p>{html.escape(str(cov['from']))} to {html.escape(str(cov['to']))} ({cov['hours']} h), {result['lines']} lines
read, {result['unparseableLines']} unparseable.</p>
{body}</body></html>
"""
