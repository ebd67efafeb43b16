"""``validate_funding_comparison.py --html FILE``: the go / no-go report as one self-contained HTML file.

It renders :meth:`.funding_report.Report.as_dict` — the same statistics as the text and ``--json`` outputs — and
computes nothing of its own. Charts are drawn by matplotlib into inline SVG (text as paths: no fonts, no scripts,
no styles or images from anywhere), so the file opens offline, e.g. copied off the droplet with ``scp``.
matplotlib is imported only here, so the daemon, the API and the consumers never load it.
"""

from __future__ import annotations

import html
import io
import re
from datetime import datetime, timezone
from typing import Any

from volspike_funding.report.text import mismatched_fields
from volspike_funding.store.comparison_log import FIELDS

COLOURS = {"SAFE TO SWITCH": "#1a7f37", "REVIEW NEEDED": "#cf222e", "INSUFFICIENT DATA": "#9a6700"}


NAMES = {"fundingRate": "funding rate", "markPrice": "mark price", "klineClose": "closed 1 h candle: close",
         "klineQuoteVolume": "closed 1 h candle: quote volume"}
#: Per field of the comparison log (its FIELDS order): the charts' marker and colour.
MARKERS = ("o", "s", "^", "v")
FIELD_COLOURS = ("#0969da", "#1a7f37", "#8250df", "#bc4c00")
#: Fonts with CJK glyphs (Binance lists symbols such as 币安人生USDT), best first; Debian: fonts-noto-cjk,
#: fonts-wqy-microhei, fonts-wqy-zenhei, fonts-droid-fallback.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Micro Hei",
             "WenQuanYi Zen Hei", "Droid Sans Fallback")
_CJK_FILE = re.compile(r"NotoSansCJK|SourceHanSans|wqy-|DroidSansFallback", re.IGNORECASE)
_setup: dict[str, Any] = {}


def _fields(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The fields the report judged (the candles' only when compared), each with its marker and colour."""
    return [(n, m, c) for n, m, c in zip(FIELDS, MARKERS, FIELD_COLOURS) if n in result["fields"]]


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prologue and DOCTYPE: inline SVG needs neither


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def _cjk_font() -> str | None:
    """A font with CJK glyphs, or None. One installed after matplotlib built its font cache is found on disk."""
    from matplotlib import font_manager

    known = {f.name for f in font_manager.fontManager.ttflist}
    for name in CJK_FONTS:
        if name in known:
            return name
    for path in sorted(font_manager.findSystemFonts()):
        if _CJK_FILE.search(path):
            try:
                font_manager.fontManager.addfont(path)
                return str(font_manager.FontProperties(fname=path).get_name())
            except (OSError, RuntimeError, ValueError):
                continue
    return None


def _configure() -> None:
    """matplotlib once: Agg, text as paths (no fonts in the page), UTC dates, and a CJK fallback font if any."""
    if _setup:
        return
    import matplotlib

    matplotlib.use("Agg")
    cjk = _cjk_font()
    matplotlib.rcParams.update({"svg.fonttype": "path", "svg.hashsalt": "volspike", "font.size": 9,
                                "timezone": "UTC",
                                "font.family": ["DejaVu Sans", *([cjk] if cjk else [])]})
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    _setup["cjk"] = cjk
    _setup["glyphs"] = set(FT2Font(font_manager.findfont("DejaVu Sans")).get_charmap())


def label(symbol: str) -> str:
    """A symbol as the charts can draw it: as is with a CJK font; else each missing glyph as '?' (the table
    beside the chart has the name; no box, no warning on the terminal)."""
    _configure()
    if _setup["cjk"]:
        return symbol
    glyphs = _setup["glyphs"]
    return "".join(c if ord(c) in glyphs else "?" for c in symbol)


def _figure(title: str) -> tuple[Any, Any]:
    _configure()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.set_title(title, loc="left")
    ax.grid(alpha=0.3)
    return fig, ax


def _time_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(tz=timezone.utc)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=timezone.utc))
    ax.set_xlabel("hour starting (UTC)")


def _shade_gaps(ax: Any, result: dict[str, Any]) -> None:
    limit = result["thresholds"]["report_max_gap_minutes"]
    for i, gap in enumerate(result["gaps"]):
        ax.axvspan(_when(gap["fromTs"]), _when(gap["fromTs"] + gap["minutes"] * 60), color="#cf222e", alpha=0.12,
                   label=f"no data for more than {limit:g} min" if i == 0 else None)


def _legend(ax: Any, x: float = 1.01) -> None:
    """Beside the plot, never over the points it explains."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(x, 1.0), fontsize=7, frameon=False)


def _none(ax: Any, what: str) -> None:
    """An empty chart says so in words instead of drawing an axis around nothing."""
    ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center", fontsize=11, color="#57606a")
    ax.set_yticks([])


def match_rate_chart(result: dict[str, Any]) -> str:
    fig, ax = _figure("Match rate per hour, WebSocket vs REST")
    rows, threshold = result["hourly"], result["thresholds"]["report_min_match_rate_pct"]
    low = threshold
    for name, marker, _ in _fields(result):
        points = [(_when(r["hourStart"]), 100 * r[f"{name}.m"] / r[f"{name}.n"]) for r in rows if r.get(f"{name}.n")]
        if points:  # one figure per hour: points, no line (a line suggests what happened between them)
            ax.plot(*zip(*points), linestyle="none", marker=marker, markersize=4, label=NAMES[name])
            low = min(low, *(p for _, p in points))
    ax.axhline(threshold, color="#cf222e", linestyle="--",
               label=f"lowest match rate that is SAFE TO SWITCH ({threshold:g} %)")
    # Near 100 % is where the verdict is decided: the axis spans the data and the threshold, not 0..100.
    ax.set_ylim(max(0.0, low - max(0.2, (100 - low) * 0.1)), 100 + max(0.05, (100 - low) * 0.05))
    ax.set_ylabel("match rate (% of comparisons)")
    _shade_gaps(ax, result)
    _time_axis(ax)
    _legend(ax)
    return _svg(fig)


def availability_chart(result: dict[str, Any]) -> str:
    fig, ax = _figure("Local API per hour: scans, scans without it, stale and missing symbols")
    rows = [r for r in result["hourly"] if r.get("scans")]
    hours = [_when(r["hourStart"] + 1800) for r in rows]  # a bar spans its hour
    ax.bar(hours, [r.get("scans", 0) for r in rows], width=1 / 24 * 0.9, color="#d0d7de", label="scans")
    ax.bar(hours, [r.get("wsUnavailable", 0) for r in rows], width=1 / 24 * 0.9, color="#cf222e",
           label="scans with the local API unavailable")
    ax.set_ylabel("scans per hour")
    stale = [r.get("wsStale", 0) for r in rows]
    missing = [r.get("wsMissing", 0) for r in rows]
    if any(stale) or any(missing):
        ax2 = ax.twinx()
        for values, colour, name in ((stale, "#9a6700", "stale"), (missing, "#6639ba", "missing")):
            if any(values):
                ax2.plot(hours, values, linestyle="none", marker="o", markersize=4, color=colour,
                         label=f"{name} symbols")
        ax2.set_ylabel("symbols stale / missing (sum over the hour's scans)")
        ax2.set_ylim(bottom=0)
        ax2.legend(loc="lower left", bbox_to_anchor=(1.08, 0.0), fontsize=7, frameon=False)
    else:
        ax.text(0.99, 0.97, "stale symbols: none; missing symbols: none", transform=ax.transAxes, ha="right",
                va="top", fontsize=8, color="#1a7f37")
    if not rows:
        _none(ax, "no scan summaries")
    _shade_gaps(ax, result)
    _time_axis(ax)
    _legend(ax, 1.08)
    return _svg(fig)


def distribution_chart(result: dict[str, Any]) -> str:
    fig, ax = _figure("Distribution of the relative differences, WebSocket vs REST (both axes log scale)")
    limits = result["p99Limits"]
    drawn = False
    for name, _, colour in _fields(result):
        rows = [(v, c) for v, c in result["distributions"][name] if v > 0]
        zeros = sum(c for v, c in result["distributions"][name] if v == 0)
        if rows:
            ax.plot(*zip(*rows), linestyle="none", marker="o", markersize=3, color=colour,
                    label=f"{NAMES[name]} (besides {zeros:,.0f} exactly equal)")
            drawn = True
        elif zeros:
            ax.plot([], [], linestyle="none", marker="o", color=colour,
                    label=f"{NAMES[name]}: all {zeros:,.0f} exactly equal")
        p99 = result["fields"][name]["relDiff"]["p99"]
        if p99:
            ax.axvline(p99, color=colour, linestyle=":", label=f"{NAMES[name]}: measured p99 ({p99:.3g})")
        ax.axvline(limits[name], color=colour, linestyle="--",
                   label=f"{NAMES[name]}: largest acceptable p99 ({limits[name]:g})")
    ax.set_xscale("log")
    ax.set_xlabel("relative difference |ws - rest| / |rest| (a ratio, no unit; log scale)")
    if drawn:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")  # the tail holds a handful of comparisons beside thousands
        counts = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else "")
        ax.yaxis.set_major_formatter(counts)
        ax.yaxis.set_minor_formatter(counts)
        ax.set_ylabel("comparisons per bin (10 bins a decade)")
    else:
        _none(ax, "no difference: every compared value was exactly equal" if any(
            result["fields"][n]["comparisons"] for n, _, _ in _fields(result)) else "no comparisons")
    _legend(ax)
    return _svg(fig)


def worst_symbols_chart(result: dict[str, Any]) -> str:
    fig, ax = _figure("Worst symbols: mismatches in the report's time span")
    worst = [w for w in result["worstSymbols"][:10] if w["mismatches"]][::-1]
    if worst:
        ax.barh([label(w["symbol"]) for w in worst], [w["mismatches"] for w in worst], color="#cf222e")
        ax.set_xlabel("mismatches (count)")
    else:
        _none(ax, "none: no symbol had a mismatch")
        ax.set_xticks([])
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
