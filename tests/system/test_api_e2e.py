"""End to end: fake exchange -> real daemon -> state file -> real API under uvicorn; and a fuzz of the API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from volspike_funding.api.server import ServerThread
from volspike_funding.fake.market import DELIVERY_SYMBOL

from ..conftest import ROOT, wait_until


def test_daemon_to_api_end_to_end_across_faults_and_a_restart(fake_ws, make_settings, run_daemon) -> None:
    settings = make_settings(BINANCE_WS_URL=fake_ws.url, FUNDING_STALE_AFTER_S="3")
    settings.state_file.parent.mkdir(parents=True)
    with ServerThread(settings) as api:
        get = lambda path, **kw: requests.get(api.url + path, timeout=5, **kw)  # noqa: E731
        assert get("/funding/health").status_code == 503  # up before the daemon, honest about it
        daemon = run_daemon(settings)
        wait_until(lambda: get("/funding/health").status_code == 200)
        fake_ws.market.set_mark("ETHUSDT", 4321.5)
        wait_until(lambda: get("/funding/ETHUSDT").json()["markPrice"] == 4321.5)
        assert get(f"/funding/{DELIVERY_SYMBOL}").json()["fundingRate"] is None
        assert get("/funding/batch").json()["found"] == 700
        # A silent feed: the watchdog reconnects, health tells why in the meantime.
        fake_ws.stalled = True
        wait_until(lambda: any("disconnected" in r or "old" in r for r in get("/funding/health").json()["reasons"]))
        fake_ws.stalled = False
        wait_until(lambda: get("/funding/health").status_code == 200)
        # The daemon restarts: the API keeps answering throughout, with honest ages.
        daemon.stop()
        wait_until(lambda: (h := get("/funding/health")).status_code == 503 and h.json()["reasons"][0] == "daemon stopped")
        assert get("/funding/BTCUSDT").status_code in (200, 503)  # still answering, fresh until 3 s have passed
        wait_until(lambda: get("/funding/BTCUSDT").status_code == 503, 10)  # then stale, never silently old
        assert get("/funding/BTCUSDT").json()["detail"]["error"] == "Data stale"
        run_daemon(settings)
        wait_until(lambda: get("/funding/health").status_code == 200)
        metrics = get("/metrics").text
        assert "funding_daemon_connected 1.0" in metrics and "funding_symbols 700.0" in metrics


PRINTABLE = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory):
    from volspike_funding.core.settings import load_settings
    from ..api.test_api import put_state, record

    tmp = tmp_path_factory.mktemp("fuzz")
    settings = load_settings({"VOLSPIKE_ENV_FILE": str(tmp / "none"), "FUNDING_STATE_FILE": str(tmp / "s.json")})
    put_state(settings.state_file, {"BTCUSDT": record("BTCUSDT", 0), "OLDUSDT": record("OLDUSDT", 500)})
    with ServerThread(settings) as api:
        yield api


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from(["/funding/", "/funding/batch?symbols=", "/fapi/v1/premiumIndex?symbol=",
                               "/funding/health?", "/", "/metrics?", "/funding/batch?", "/fapi/v1/"]),
       tail=PRINTABLE, raw=st.booleans())
def test_fuzzed_paths_never_500_or_leak_a_traceback(fuzz_api, prefix: str, tail: str, raw: bool) -> None:
    suffix = tail if raw else quote(tail, safe="")
    url = fuzz_api.url + prefix + "".join(c for c in suffix if c not in "#\r\n" and ord(c) > 32)
    try:
        r = requests.get(url, timeout=5)
    except (requests.exceptions.InvalidURL, UnicodeError, ValueError):
        return  # the client refused to send it
    assert r.status_code < 500 or r.status_code == 503, (url, r.status_code, r.text[:200])
    assert "Traceback" not in r.text
    if r.status_code >= 400 and prefix.startswith("/funding/health"):
        assert r.json()["reasons"]  # unhealthy says why
    elif r.status_code >= 400 and not prefix.startswith("/fapi"):
        assert isinstance(r.json()["detail"]["error"], str)


def test_non_loopback_bind_needs_explicit_opt_in(tmp_path: Path) -> None:
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "FUNDING_API_HOST": "0.0.0.0",
           "FUNDING_STATE_FILE": str(tmp_path / "s.json")}
    proc = subprocess.run([sys.executable, str(ROOT / "funding_api_server.py")], env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and "FUNDING_API_ALLOW_REMOTE" in proc.stderr and proc.stderr.count("\n") == 1


def test_opted_in_remote_bind_is_allowed_with_a_warning(make_settings, caplog) -> None:
    from volspike_funding.api.server import check_bind, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    check_bind(make_settings(FUNDING_API_HOST="0.0.0.0", FUNDING_API_ALLOW_REMOTE="true"))
    assert "reachable from other machines" in caplog.text


def test_the_offline_demo_shows_real_data_flowing(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "volspike_funding.demo", "--seconds", "4", "--api-port", str(port)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "VOLSPIKE_ENV_FILE": os.devnull})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "demo: 700 symbols; BTCUSDT mark=" in proc.stdout and "connected=True" in proc.stdout
