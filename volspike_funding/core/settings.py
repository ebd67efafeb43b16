"""Every setting of every component (the table in :mod:`.settings_table`), read from the command line, the
environment and the operator's env file.

Precedence, highest first: command-line flag, real environment variable, the operator's env file (loaded with
python-dotenv), default. The env file is the one named by ``--env-file`` or ``VOLSPIKE_ENV_FILE`` (which must exist:
a start-up error otherwise, see :func:`find_env_file`), else the first of the original scripts' places that exists:
``/home/trader/.volspike.env``, then ``~/.volspike.env``; none at all is fine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from dotenv import dotenv_values

from volspike_funding.core.errors import SettingsError
from volspike_funding.core.settings_table import (ALERTS, API, CONSUMER, DAEMON, NOTIFY, OI, REPORT, SETTINGS, Setting, markdown_table,
                             settings_for)

# The table's names are re-exported: callers import settings from one place.
__all__ = ["ALERTS", "API", "CONSUMER", "DAEMON", "NOTIFY", "OI", "REPORT", "SETTINGS", "Setting", "Settings",
           "ENV_FILE_VAR", "check_env_file", "describe_env_file", "find_env_file", "load_settings", "markdown_table",
           "masked", "read_env_file", "secret_values", "settings_for"]

ENV_FILE_VAR = "VOLSPIKE_ENV_FILE"
#: Where the original scripts looked, in their order: an operator moving over keeps the file where it is.
DEFAULT_ENV_FILES = ("/home/trader/.volspike.env", "~/.volspike.env")


@dataclass(frozen=True)
class Settings:
    """Parsed values of :data:`SETTINGS`; build it with :func:`load_settings`."""

    ws_url: str
    state_file: Path
    store_url: str | None
    stale_after_s: float
    no_data_timeout_s: float
    connect_timeout_s: float
    backoff_initial_s: float
    backoff_max_s: float
    rotate_after_s: float
    heartbeat_s: float
    drop_after_s: float
    max_event_skew_s: float
    clock_skew_warn_s: float
    max_stale_share: float
    consumer_status_dir: Path | None
    reference_enabled: bool
    reference_file: Path | None
    reference_refresh_s: float
    interest_refresh_s: float
    market_enabled: bool
    market_ws_url: str
    market_file: Path | None
    kline_backfill_weight_per_min: float
    api_host: str
    api_port: int
    api_allow_remote: bool
    api_header_timeout_s: float
    api_max_connections: int
    api_write_timeout_s: float
    api_max_buffered_mb: float
    ws_enabled: bool
    ws_max_connections: int
    ws_max_buffer_kb: float
    log_level: str
    ws_funding_enabled: bool
    ws_funding_api_url: str
    funding_source_mode: str | None
    funding_rest_fallback: bool
    ws_funding_timeout_s: float
    ws_funding_breaker_s: float
    funding_rate_abs_tolerance: float
    mark_price_rel_tolerance: float
    kline_rel_tolerance: float
    binance_rest_url: str
    binance_rest_timeout_s: float
    binance_rest_retries: int
    volume_multiple: float
    min_quote_vol: float
    klines_concurrency: int
    volume_alert_state_file: Path
    telegram_api_url: str
    telegram_token: str | None
    telegram_chat_id: str | None
    volspike_api_url: str | None
    volspike_api_key: str | None
    volspike_api_url_dev: str | None
    volspike_api_key_dev: str | None
    volspike_post_timeout_s: float
    telegram_timeout_s: float
    oi_max_req_per_min: float
    oi_min_interval_sec: float
    oi_max_interval_sec: float
    oi_fetch_concurrency: int
    oi_universe_refresh_s: float
    oi_universe_publish_s: float
    oi_universe_publish_dev: bool
    oi_liquid_enter_quote_24h: float
    oi_liquid_exit_quote_24h: float
    oi_spike_threshold_pct_5min: float
    oi_spike_threshold_pct_15min: float
    oi_spike_threshold_pct_60min: float
    oi_lookback_window_5min: float
    oi_lookback_window_15min: float
    oi_lookback_window_60min: float
    oi_alert_cooldown_5min: float
    oi_alert_cooldown_15min: float
    oi_alert_cooldown_60min: float
    oi_min_delta_contracts: float
    oi_excluded_symbols: tuple[str, ...]
    oi_state_file: Path
    oi_post_queue_max: int
    oi_batch_timeout_s: float
    report_min_hours: float
    report_max_gap_minutes: float
    report_min_comparisons: int
    report_min_match_rate_pct: float
    report_max_p99_rel_funding: float
    report_max_p99_rel_mark: float
    report_max_p99_rel_kline: float
    report_max_ws_unavailable_pct: float
    health_notify_chat_id: str | None
    health_notify_url: str
    health_notify_after_s: float
    health_notify_interval_s: float
    health_notify_state_file: Path

    @property
    def reference_path(self) -> Path:
        return self.reference_file or self.state_file.with_name(".funding_reference.json")

    @property
    def funding_mode(self) -> str:
        """The effective FUNDING_SOURCE_MODE (``auto`` resolved)."""
        # WS_FUNDING_ENABLED=false is the operator's kill switch (the original's one flag): it always means REST
        # only, whatever FUNDING_SOURCE_MODE says, so switching back never needs two edits.
        if not self.ws_funding_enabled:
            return "rest"
        if self.funding_source_mode is not None:
            return self.funding_source_mode
        return "validate"


def find_env_file(environ: Mapping[str, str], override: str | None = None) -> tuple[Path | None, bool]:
    """The env file to read (``None``: none found) and whether it was named explicitly (``--env-file`` or
    ``VOLSPIKE_ENV_FILE``); an explicit one is returned even when it does not exist, for the caller to refuse."""
    named = override or environ.get(ENV_FILE_VAR)
    if named:
        return Path(os.path.expanduser(named)), True
    for candidate in DEFAULT_ENV_FILES:
        path = Path(os.path.expanduser(candidate))
        if path.is_file():
            return path, False
    return None, False


def describe_env_file(environ: Mapping[str, str], override: str | None = None) -> str:
    """The start-up line naming the env file a program loaded (its path only, never its contents)."""
    path, explicit = find_env_file(environ, override)
    if path is None:
        return f"env file: none found ({', '.join(DEFAULT_ENV_FILES)}); environment and defaults only"
    if explicit and str(path) == os.devnull:
        return f"env file: none ({ENV_FILE_VAR}={os.devnull}); environment and defaults only"
    how = "--env-file/" + ENV_FILE_VAR if explicit else "default location"
    return f"env file: loaded {path} ({how})" if path.exists() else f"env file: {path} does not exist"


def check_env_file(environ: Mapping[str, str], override: str | None = None) -> None:
    """Refuse to start when the env file named explicitly does not exist: a typo there would otherwise silently
    leave every key, token and switch of the operator's file unset."""
    path, explicit = find_env_file(environ, override)
    if explicit and path is not None and not path.exists():
        source = "--env-file" if override else ENV_FILE_VAR
        raise SettingsError(f"{source}: env file {path} does not exist")


def read_env_file(environ: Mapping[str, str], override: str | None = None) -> dict[str, str]:
    """The operator's env file as a dict; ``{}`` when there is none."""
    path, _ = find_env_file(environ, override)
    if path is None or not path.exists():
        return {}
    try:
        with path.open(encoding="utf-8") as stream:
            values = dotenv_values(stream=stream)
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{ENV_FILE_VAR}: cannot read {path}: {exc}") from None
    return {key: value for key, value in values.items() if value is not None}


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, str | None] | None = None,
                  env_file: str | None = None, components: tuple[str, ...] | None = None) -> Settings:
    """Build :class:`Settings`; ``overrides`` maps field names to raw CLI values (``None`` = not given).

    With ``components``, only the settings those components read must be valid: a typo in a consumer's setting in
    the shared env file must not stop the daemon. The others fall back to their defaults.
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, str] = {**read_env_file(environ, env_file), **environ}
    overrides = overrides or {}
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        cli = overrides.get(setting.field)
        env_name = next((n for n in (setting.env, *setting.aliases) if n in merged), setting.env)
        raw = cli if cli is not None else merged.get(env_name, setting.default)
        source = setting.flag if cli is not None else env_name
        try:
            values[setting.field] = setting.parse(str(raw))
        except ValueError as exc:
            if components is not None and not set(components) & set(setting.used_by):
                values[setting.field] = setting.parse(setting.default)
                continue
            message = str(exc).replace(str(raw), "***") if setting.secret and str(raw).strip() else str(exc)
            raise SettingsError(f"{source}: {message}") from None
    settings = Settings(**values)
    if settings.backoff_initial_s > settings.backoff_max_s:
        raise SettingsError("FUNDING_BACKOFF_INITIAL_S must not exceed FUNDING_BACKOFF_MAX_S")
    return settings


def secret_values(settings: Settings) -> list[str]:
    """Every secret setting's value, and the password inside a URL one, for the log filter that keeps them out of
    the journal."""
    from urllib.parse import urlsplit

    values = [value for s in SETTINGS if s.secret and isinstance(value := getattr(settings, s.field), str) and value]
    return values + [p for value in values if "://" in value and (p := urlsplit(value).password)]


def masked(value: str | None) -> str:
    """How a secret appears in banners and logs."""
    return "(unset)" if not value else f"***{value[-2:]}" if len(value) > 8 else "***"


if __name__ == "__main__":
    print(markdown_table())  # paste between the settings-table markers of DEPLOYMENT.md
