"""The HTML report's charts are honest: units on every axis, UTC said, thresholds in words, hourly figures as
points, log scales for the tails, "none" instead of an empty axis, and CJK symbol names drawn (or, without a CJK
font, replaced by '?' without a warning on the terminal)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from ..conftest import ROOT
from . import test_report
from .test_report import generate, report_of

CJK = ["币安人生USDT", "我踏马来了USDT"]


def comments(svg: str) -> list[str]:
    """matplotlib writes every text it draws as paths, preceded by the text itself in a comment."""
    return re.findall(r"<!-- (.*?) -->", svg)


def charts(page: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", page, re.DOTALL)


def cjk_font_installed() -> bool:
    pytest.importorskip("matplotlib")
    from volspike_funding.report import html

    return html._cjk_font() is not None


@pytest.fixture
def day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(test_report, "SYMBOLS", [f"S{i}USDT" for i in range(8)] + CJK)
    lines = generate(hours=25, funding_error_every=400, skip_hours=(5.0, 6.5))
    lines += generate(hours=25, every_min=1, consumer="oi_poller", skip_hours=(5.0, 6.5), funding_error_every=97)
    log = tmp_path / "day.log"
    log.write_text("\n".join(lines) + "\n")
    return log


def test_every_axis_says_its_unit_and_the_charts_say_what_they_mean(tmp_path: Path, day: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, str(ROOT / "validate_funding_comparison.py"), str(day), "--html",
                           str(out)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "VOLSPIKE_ENV_FILE": os.devnull})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    if cjk_font_installed():
        # no "Glyph ... missing from font(s)" warnings: only the start-up line naming the env file
        assert [line for line in proc.stderr.splitlines() if "env file:" not in line] == [], proc.stderr
    match, availability, distribution, worst = charts(out.read_text(encoding="utf-8"))
    texts = {name: comments(svg) for name, svg in
             (("match", match), ("availability", availability), ("distribution", distribution), ("worst", worst))}
    for name in ("match", "availability"):  # time axes: in UTC and saying so
        assert "hour starting (UTC)" in texts[name]
    assert "match rate (% of comparisons)" in texts["match"] and "scans per hour" in texts["availability"]
    assert "mismatches (count)" in texts["worst"]
    assert any("log scale" in t for t in texts["distribution"]) and "comparisons per bin (10 bins a decade)" in \
        texts["distribution"]
    # thresholds in words, not variable names
    assert "lowest match rate that is SAFE TO SWITCH (99 %)" in texts["match"]
    assert "no data for more than 60 min" in texts["match"]
    assert "funding rate: largest acceptable p99 (0.01)" in texts["distribution"]
    assert not [t for ts in texts.values() for t in ts if "REPORT_" in t]
    # no stale or missing symbol: said in words, no axis of -0.04..0.04
    assert "stale symbols: none; missing symbols: none" in texts["availability"]
    assert "\u22120.04" not in texts["availability"] and "-0.04" not in texts["availability"]
    # hourly figures are points: no line joins them (only straight two-point lines: grid, thresholds)
    for group in re.findall(r'<g id="line2d_\d+">(.*?)</g>', match, re.DOTALL):
        for d in re.findall(r'<path d="([^"]*)"', group):
            assert d.count(" L ") <= 1, d[:200]
    if cjk_font_installed():
        assert set(CJK) <= set(texts["worst"])


def test_without_a_cjk_font_names_fall_back_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib import font_manager

    from volspike_funding.report import html

    # the machine without a CJK font: matplotlib's font lists, not our code, are what change
    monkeypatch.setattr(font_manager.fontManager, "ttflist",
                        [f for f in font_manager.fontManager.ttflist if f.name not in html.CJK_FONTS])
    monkeypatch.setattr(font_manager, "findSystemFonts", lambda *a, **k: [])
    monkeypatch.setattr(html, "_setup", {})
    monkeypatch.setitem(__import__("matplotlib").rcParams, "font.family", ["DejaVu Sans"])
    monkeypatch.setattr(test_report, "SYMBOLS", ["BTCUSDT", *CJK])
    result = report_of(generate(hours=2, mark_noise=0.002))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing-glyph warning fails the test
        page = html.render(result)
    assert html.label("币安人生USDT") == "????USDT"
    assert "????USDT" in comments(charts(page)[3]) and "币安人生USDT" in page  # the table keeps the name
