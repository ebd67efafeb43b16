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

from ..conftest import ROOT, wait_until

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


def test_ws_funding_enabled_false_is_a_kill_switch_whatever_the_mode(tmp_path: Path) -> None:
    base = {"VOLSPIKE_ENV_FILE": os.devnull, "WS_FUNDING_ENABLED": "false"}
    for mode in ("ws", "validate", "rest", "auto"):
        assert load_settings({**base, "FUNDING_SOURCE_MODE": mode}).funding_mode == "rest"
    assert load_settings({**base, "WS_FUNDING_ENABLED": "true", "FUNDING_SOURCE_MODE": "ws"}).funding_mode == "ws"


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_env_file_named_explicitly_must_exist(tmp_path: Path, script: str, how: str) -> None:
    """A typo in --env-file / VOLSPIKE_ENV_FILE would leave every key, token and switch unset without a word."""
    missing = tmp_path / "volspike.evn"
    env = {**os.environ, "VOLSPIKE_ENV_FILE": str(missing)} if how == "env" else {**os.environ}
    if how == "flag":
        env.pop("VOLSPIKE_ENV_FILE", None)
    args = ["--env-file", str(missing)] if how == "flag" else []
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], env=env, capture_output=True, text=True,
                          timeout=30, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"env file {missing} does not exist" in proc.stderr
    assert ("--env-file" if how == "flag" else "VOLSPIKE_ENV_FILE") in proc.stderr


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_line(script: str, env: dict[str, str], tmp_path: Path) -> str:
    """Start a long-running program with every peer unreachable, return its env-file start line, stop it."""
    log = tmp_path / f"{script}.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, str(ROOT / script)], env=env, stderr=sink, stdout=sink,
                                cwd=tmp_path, stdin=subprocess.DEVNULL)
    try:
        line = wait_until(lambda: next((x for x in log.read_text().splitlines() if "env file:" in x), None), 20)
    finally:
        proc.terminate()
        proc.wait(15)
    return line


@pytest.mark.skipif(Path("/home/trader/.volspike.env").exists(), reason="this machine has /home/trader/.volspike.env")
def test_every_program_logs_which_env_file_it_loaded(tmp_path: Path) -> None:
    """The original scripts' places, in their order (/home/trader/.volspike.env, then ~/.volspike.env); the path
    only, never the contents; or that there was none."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUNDING_", "BINANCE_", "VOLSPIKE_", "WS_"))}
    env.update(HOME=str(home), BINANCE_WS_URL="ws://127.0.0.1:9/market/stream", BINANCE_REST_URL="http://127.0.0.1:9",
               FUNDING_STATE_FILE=str(tmp_path / "s.json"), FUNDING_REFERENCE_ENABLED="false",
               FUNDING_API_PORT=str(free_port()), BINANCE_REST_RETRIES="0", OI_UNIVERSE_PUBLISH_S="0",
               VOLUME_ALERT_STATE_FILE=str(tmp_path / "a.json"), OI_STATE_FILE=str(tmp_path / "o.json"))
    services = SCRIPTS[:4]
    for script in services:
        assert "env file: none found (/home/trader/.volspike.env, ~/.volspike.env)" in _start_line(script, env, tmp_path)
    (home / ".volspike.env").write_text("TELEGRAM_TOKEN=123456:secret-token-value\n")
    for script in services:
        line = _start_line(script, env, tmp_path)
        assert f"env file: loaded {home / '.volspike.env'} (default location)" in line and "secret" not in line
    named = tmp_path / "named.env"
    named.write_text("")
    line = _start_line(SCRIPTS[0], {**env, "VOLSPIKE_ENV_FILE": str(named)}, tmp_path)
    assert f"env file: loaded {named} (--env-file/VOLSPIKE_ENV_FILE)" in line
