"""Every entry point: ``--help`` states its exit codes, our own errors are one line and an exit code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from volspike_funding.core.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, run
from volspike_funding.core.errors import FundingError, SettingsError

from ..conftest import ROOT

SCRIPTS = ["binance_funding_ws_daemon.py", "funding_api_server.py", "hourly_volume_alert_dual_env.py",
           "oi_realtime_poller.py", "validate_funding_comparison.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_states_the_exit_codes(script):
    out = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split()).lower()
    assert "exit codes: 0" in text
    assert " 1 " in text and " 2 " in text


def _raise(exc: BaseException):
    def body() -> int:
        raise exc
    return body


def test_run_turns_our_errors_into_one_line_and_a_code(capsys):
    assert run("prog", lambda: 7) == 7
    assert run("prog", _raise(SettingsError("FUNDING_API_PORT: 'x' is not a number"))) == EXIT_USAGE
    assert capsys.readouterr().err == "prog: error: FUNDING_API_PORT: 'x' is not a number\n"
    assert run("prog", _raise(FundingError("state file unwritable"))) == EXIT_FAILURE
    assert capsys.readouterr().err == "prog: error: state file unwritable\n"
    assert run("prog", _raise(KeyboardInterrupt())) == EXIT_OK


def test_the_startup_heap_is_frozen_and_what_comes_later_is_still_collected():
    """In a process of its own: a frozen heap is never collected, which a test process must not inherit."""
    code = ("import gc, weakref\n"
            "import volspike_funding.api.server\n"
            "from volspike_funding.core.cli import freeze_startup_heap\n"
            "freeze_startup_heap()\n"
            "assert gc.get_freeze_count() > 10000, gc.get_freeze_count()\n"
            "class Node: pass\n"
            "a = Node(); a.self = a; gone = weakref.ref(a); del a\n"
            "gc.collect()\n"
            "assert gone() is None, 'a cycle made after the freeze is collected'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
