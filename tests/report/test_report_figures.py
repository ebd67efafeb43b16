"""The report's figures say what the log says: WebSocket ages, the field a symbol mismatched, unknown counts as
unknown, gaps to the second; and its command line never waits silently nor turns Ctrl-C into SAFE TO SWITCH."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from volspike_funding.report.text import render
from volspike_funding.store.comparison_log import FUNDING, MARK, ComparisonLog

from ..conftest import ROOT, wait_until
from .test_report import START, Capture, generate, old_format, report_of


def test_ws_ages_in_window_lines_reach_both_fields_and_the_text() -> None:
    lines = generate(hours=25)  # every record 0.7 s old
    result = report_of(lines)
    for name in (FUNDING, MARK):
        age = result["fields"][name]["wsAgeSeconds"]
        assert age["max"] == pytest.approx(0.7) and age["median"] == pytest.approx(0.7, rel=0.07), (name, age)
    row = next(line for line in render(result).splitlines() if line.startswith("markPrice (all)"))
    p50, p99 = map(float, row.split()[-3:-1])  # ws age p50, p99: within the log buckets' ~6 %
    assert p50 == pytest.approx(0.7, rel=0.07) and p99 == pytest.approx(0.7, rel=0.07), row
    # lines written before maxWsAge was logged: the top bucket stands in, never 0
    older = [line.replace(',"maxWsAge":0.7', "") for line in lines]
    assert older != lines
    assert report_of(older)["fields"][MARK]["wsAgeSeconds"]["p99"] == pytest.approx(0.7, rel=0.07)


def _per_comparison_lines() -> list[str]:
    """Funding rates within their absolute tolerance but 5 % apart (relative), mark prices off by 0.2 %."""
    clock = {"t": START}
    logger = logging.getLogger("figures.per_comparison")
    logger.propagate, handler = False, Capture()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    log = ComparisonLog("volume_alerts", funding_abs_tolerance=1e-5, price_rel_tolerance=1e-3, logger=logger,
                        clock=lambda: clock["t"])
    out = []
    for n in range(20):
        clock["t"] = START + n * 300
        done = [log.compare("BTCUSDT", FUNDING, 1e-4, 1.05e-4, 0.5), log.compare("BTCUSDT", MARK, 100.0, 100.2, 0.5)]
        out += [old_format(c, "volume_alerts") for c in done]
    return out


def test_worst_symbols_name_the_field_that_mismatched() -> None:
    result = report_of(_per_comparison_lines())
    worst = result["worstSymbols"][0]
    assert worst["symbol"] == "BTCUSDT" and worst["mismatches"] == 20 and worst["comparisons"] == 40
    assert worst["worstField"] == "markPrice" and worst["mismatchesByField"] == {"markPrice": 20}
    assert worst["worstRelDiff"] == pytest.approx(0.002)  # the mark price's, not the funding rate's 0.05
    table = render(result).split("Worst symbols")[1].split("VERDICT")[0]
    assert "markPrice 20" in table and "fundingRate" not in table


def test_a_symbol_count_the_window_lines_do_not_carry_is_unknown_not_zero() -> None:
    result = report_of(generate(hours=2, mark_noise=0.002))
    worst = result["worstSymbols"][0]
    assert worst["comparisons"] is None and worst["mismatches"] > 0 and worst["worstField"] == "markPrice"
    table = render(result).split("Worst symbols")[1].splitlines()
    row = next(line for line in table if line.startswith(worst["symbol"]))
    assert row.split()[1] == "-", row


@pytest.mark.parametrize("old", [False, True])
def test_a_three_minute_twenty_stop_is_a_gap_of_three_point_four_minutes(old: bool) -> None:
    """The OI poller's 5 s loop stops from 01:00:00 to 01:03:20: the last scan before at 00:59:55, the next at
    01:03:20 (205 s). Counted in whole minutes it showed as 2 or 3, depending on where the minutes fell."""
    earlier: list[str] = []
    lines = generate(hours=2, every_min=5 / 60, consumer="oi_poller", skip_hours=(1.0, 1.0 + 200 / 3600),
                     old=earlier)
    result = report_of(earlier if old else lines)
    assert result["coverage"]["largestGapMinutes"] == pytest.approx(205 / 60, abs=0.05), result["coverage"]
    assert result["coverage"]["largestGapFrom"].startswith("2026-11-20T00:59:55")


def test_window_lines_end_at_their_last_scan_so_a_stop_shows(tmp_path: Path) -> None:
    """The window line of the scans before a stop is written when the consumer resumes; it must end at its own
    last scan, not at the resumed scan's time."""
    lines = generate(hours=2, every_min=5 / 60, consumer="oi_poller", skip_hours=(1.0, 1.5))
    windows = [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("FUNDING_COMPARE_WINDOW")]
    assert not [w for w in windows if w["since"] < START + 3600 < w["ts"]]  # no window spans the stop


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "validate_funding_comparison.py"), *args], input=stdin,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "VOLSPIKE_ENV_FILE": os.devnull})


def test_no_log_argument_is_a_usage_error_and_help_states_the_exit_codes() -> None:
    proc = run_cli(stdin="\n".join(generate()))  # it used to read stdin silently
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert "'-' to read standard input" in proc.stderr
    assert run_cli("-", stdin="\n".join(generate())).returncode == 0
    usage = " ".join(run_cli("--help").stdout.split())
    for code in ("0 SAFE TO SWITCH", "1 REVIEW NEEDED", "2 INSUFFICIENT DATA", "130 interrupted"):
        assert code in usage


def _blocked_on_a_pipe(pid: int) -> bool:
    """Whether ``pid`` sleeps in read(2) on a pipe, from /proc (``anon_pipe_read``, ``pipe_read``, ``pipe_wait``)."""
    try:
        return "pipe" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def test_ctrl_c_exits_130_never_0(tmp_path: Path) -> None:
    """A real process reading a pipe that stays open, interrupted as a terminal's Ctrl-C does."""
    probe = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:  # can this kernel tell that a process waits on a pipe?
        wait_until(lambda: _blocked_on_a_pipe(probe.pid), 5)
    except AssertionError:
        pytest.skip("/proc/PID/wchan does not show a pipe wait here")
    finally:
        probe.kill()
        probe.wait()
    proc = subprocess.Popen([sys.executable, str(ROOT / "validate_funding_comparison.py"), "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "VOLSPIKE_ENV_FILE": os.devnull})
    try:
        assert proc.stdin is not None
        proc.stdin.write("\n".join(generate(hours=1)) + "\n")
        proc.stdin.flush()
        wait_until(lambda: _blocked_on_a_pipe(proc.pid), 30)  # the lines before were taken
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, (proc.returncode, err)
    assert out == "" and "interrupted" in err and "Traceback" not in err


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    """``validate_funding_comparison.py LOG | head``: the pipe closes before the report is written."""
    log = tmp_path / "day.log"
    log.write_text("\n".join(generate()) + "\n")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte
    proc = subprocess.run([sys.executable, str(ROOT / "validate_funding_comparison.py"), str(log)], stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=60,
                          env={**os.environ, "VOLSPIKE_ENV_FILE": os.devnull})
    os.close(write)
    # the start-up line naming the env file (issue 18) is the only thing on stderr
    lines = proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr and proc.returncode == 0
    assert len(lines) == 1 and "env file: none" in lines[0], proc.stderr
