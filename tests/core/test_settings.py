"""The settings table: precedence, validation (one line, exit 2) and documentation coverage."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from volspike_funding.core.errors import SettingsError
from volspike_funding.core.settings import SETTINGS, Settings, load_settings

from ..conftest import ROOT

SCRIPTS = ["binance_funding_ws_daemon.py", "funding_api_server.py", "hourly_volume_alert_dual_env.py",
           "oi_realtime_poller.py", "validate_funding_comparison.py", "funding_health_notifier.py"]


def test_every_field_has_exactly_one_row() -> None:
    assert sorted(s.field for s in SETTINGS) == sorted(f.name for f in dataclasses.fields(Settings))
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)


def test_defaults(tmp_path: Path) -> None:
    s = load_settings({"VOLSPIKE_ENV_FILE": str(tmp_path / "none")})
    assert s.ws_url == "wss://fstream.binance.com/market/stream?streams=!markPrice@arr@1s"
    assert s.state_file == Path.cwd() / ".funding_state.json"
    assert s.api_host == "127.0.0.1" and s.api_port == 8888 and s.api_allow_remote is False


def test_precedence_cli_over_env_over_file_over_default(tmp_path: Path) -> None:
    env_file = tmp_path / "volspike.env"
    env_file.write_text("FUNDING_STALE_AFTER_S=11\nFUNDING_HEARTBEAT_S=3\n# comment\nexport FUNDING_API_PORT=9001\n")
    env = {"VOLSPIKE_ENV_FILE": str(env_file), "FUNDING_HEARTBEAT_S": "4"}
    s = load_settings(env, overrides={"api_port": "9002"})
    assert (s.stale_after_s, s.heartbeat_s, s.api_port) == (11.0, 4.0, 9002)
    assert load_settings(env).api_port == 9001


def test_relative_state_file_resolves_against_the_working_directory(tmp_path: Path) -> None:
    s = load_settings({"VOLSPIKE_ENV_FILE": str(tmp_path / "none"), "FUNDING_STATE_FILE": "x/state.json"})
    assert s.state_file == Path.cwd() / "x" / "state.json"


@pytest.mark.parametrize("env, needle", [
    ({"FUNDING_STALE_AFTER_S": "abc"}, "FUNDING_STALE_AFTER_S: 'abc' is not a number"),
    ({"FUNDING_STALE_AFTER_S": "-1"}, "FUNDING_STALE_AFTER_S"),
    ({"FUNDING_STALE_AFTER_S": "nan"}, "FUNDING_STALE_AFTER_S"),
    ({"FUNDING_NO_DATA_TIMEOUT_S": "0"}, "FUNDING_NO_DATA_TIMEOUT_S"),
    ({"BINANCE_WS_URL": "http://fstream.binance.com/x"}, "BINANCE_WS_URL"),
    ({"FUNDING_API_PORT": "70000"}, "FUNDING_API_PORT"),
    ({"FUNDING_API_ALLOW_REMOTE": "maybe"}, "FUNDING_API_ALLOW_REMOTE"),
    ({"FUNDING_BACKOFF_INITIAL_S": "9", "FUNDING_BACKOFF_MAX_S": "2"}, "FUNDING_BACKOFF_INITIAL_S"),
    ({"BINANCE_WS_URL": "wss://fstream.binance.com:44x/market/stream"}, "BINANCE_WS_URL: .* has a port"),
    ({"FUNDING_STORE_URL": "redis://:pw-123456@127.0.0.1:notaport/0"}, "FUNDING_STORE_URL: the port"),
    ({"FUNDING_STORE_URL": "redis://127.0.0.1:6379/cache"}, "FUNDING_STORE_URL: the database 'cache'"),
    ({"FUNDING_STORE_URL": "redis://127.0.0.1:6379/0?db=x"}, "FUNDING_STORE_URL: Invalid value for 'db'"),
    ({"FUNDING_STORE_URL": "https://:pw-123456@redis.internal/0"}, "FUNDING_STORE_URL: not a redis"),
])
def test_bad_values_name_the_setting(tmp_path: Path, env: dict, needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        load_settings({"VOLSPIKE_ENV_FILE": str(tmp_path / "none"), **env})


@pytest.mark.parametrize("url", ["redis://:pw-123456@127.0.0.1:99999/0", "http://:pw-123456@redis.internal/0",
                                 "redis://:pw-123456@127.0.0.1:6379/0?socket_timeout=pw-123456"])
def test_a_bad_store_url_never_repeats_its_password(tmp_path: Path, url: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"VOLSPIKE_ENV_FILE": str(tmp_path / "none"), "FUNDING_STORE_URL": url})
    assert "pw-123456" not in str(raised.value) and str(raised.value).startswith("FUNDING_STORE_URL: ")


def test_a_store_url_with_tls_options_is_accepted(tmp_path: Path) -> None:
    url = "rediss://:pw-123456@10.0.0.5:6380/2?ssl_ca_certs=/etc/ssl/redis-ca.pem"
    assert load_settings({"VOLSPIKE_ENV_FILE": str(tmp_path / "none"), "FUNDING_STORE_URL": url}).store_url == url


#: Per entry point: a numeric setting it reads (env name and flag).
READS = {"binance_funding_ws_daemon.py": ("FUNDING_STALE_AFTER_S", "--stale-after-s"),
         "funding_api_server.py": ("FUNDING_STALE_AFTER_S", "--stale-after-s"),
         "hourly_volume_alert_dual_env.py": ("VOLUME_MULTIPLE", "--volume-multiple"),
         "oi_realtime_poller.py": ("OI_MAX_REQ_PER_MIN", "--oi-max-req-per-min"),
         "validate_funding_comparison.py": ("REPORT_MIN_HOURS", "--report-min-hours"),
         "funding_health_notifier.py": ("HEALTH_NOTIFY_AFTER_S", "--health-notify-after-s")}


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("how", ["env", "flag", "env file"])
def test_bad_value_at_start_up_is_one_line_and_exit_2(tmp_path: Path, script: str, how: str) -> None:
    name, flag = READS[script]
    env_file = tmp_path / "volspike.env"
    env_file.write_text(f"{name}=soon\n" if how == "env file" else "")
    full_env = {**os.environ, "VOLSPIKE_ENV_FILE": str(env_file), **({name: "soon"} if how == "env" else {})}
    args = [flag, "-5"] if how == "flag" else []
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], env=full_env, capture_output=True,
                          text=True, timeout=30, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert (flag if how == "flag" else name) in proc.stderr
    assert not (tmp_path / ".funding_state.json").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_0_and_lists_its_flags(script: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0 and READS[script][1] in proc.stdout and "--env-file" in proc.stdout


def test_every_setting_is_documented_with_its_default() -> None:
    docs = (ROOT / "DEPLOYMENT.md").read_text(encoding="utf-8")
    for s in SETTINGS:
        row = f"| `{s.env}` | `{s.flag}` | `{s.default}` |"
        assert row in docs, f"DEPLOYMENT.md settings table lacks {s.env} (regenerate: python -m volspike_funding.core.settings)"


def test_a_bad_consumer_setting_does_not_stop_the_daemon(tmp_path: Path) -> None:
    env = {"VOLSPIKE_ENV_FILE": str(tmp_path / "none"), "VOLUME_MULTIPLE": "lots"}
    assert load_settings(env, components=("daemon",)).volume_multiple == 3.0
    with pytest.raises(SettingsError, match="VOLUME_MULTIPLE"):
        load_settings(env, components=("alerts",))


def test_legacy_alias_and_auto_mode(tmp_path: Path) -> None:
    base = {"VOLSPIKE_ENV_FILE": str(tmp_path / "none")}
    assert load_settings({**base, "CHAT_ID": "42"}).telegram_chat_id == "42"
    assert load_settings({**base, "CHAT_ID": "42", "TELEGRAM_CHAT_ID": "7"}).telegram_chat_id == "7"
    assert load_settings(base).funding_mode == "validate"
    assert load_settings({**base, "WS_FUNDING_ENABLED": "false"}).funding_mode == "rest"
    assert load_settings({**base, "FUNDING_SOURCE_MODE": "ws"}).funding_mode == "ws"
    with pytest.raises(SettingsError, match="FUNDING_SOURCE_MODE"):
        load_settings({**base, "FUNDING_SOURCE_MODE": "both"})
