"""The table of every setting of every component: its variable, CLI flag, default, parser, meaning and readers.

The single source of truth: :mod:`.settings` loads values from it, the CLI flags are generated from it, and the
documentation's settings table is generated from it (``python -m volspike_funding.core.settings``) and checked against
it by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from volspike_funding.core import value_parsers as v


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    env: str
    field: str
    default: str
    parse: Callable[[str], Any]
    help: str
    used_by: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


DAEMON, API, CONSUMER, ALERTS, OI, REPORT = "daemon", "api", "consumers", "alerts", "oi", "report"
NOTIFY = "notify"

SETTINGS: tuple[Setting, ...] = (
    Setting("BINANCE_WS_URL", "ws_url", "wss://fstream.binance.com/market/stream?streams=!markPrice@arr@1s",
            v.url("ws", "wss"), "Binance mark-price stream (combined-stream URL).", (DAEMON,)),
    Setting("FUNDING_STATE_FILE", "state_file", ".funding_state.json", v.path,
            "Shared state file written by the daemon and read by the API; relative paths resolve against the "
            "working directory.", (DAEMON, API)),
    Setting("FUNDING_STORE_URL", "store_url", "", v.store_url,
            "Empty: the state file (one host). redis://[:password@]host:port/db or rediss:// (TLS; a private CA "
            "with ?ssl_ca_certs=/path/ca.pem): Redis or Valkey as the shared store, for several daemons (no "
            "leader) and API instances on other hosts.",
            (DAEMON, API), secret=True),
    Setting("FUNDING_STALE_AFTER_S", "stale_after_s", "60", v.number(0, strict=True),
            "A symbol older than this is stale: the API answers 503 for it and the daemon stops petting the "
            "systemd watchdog when all data is this old.", (DAEMON, API)),
    Setting("FUNDING_NO_DATA_TIMEOUT_S", "no_data_timeout_s", "10", v.number(0, strict=True),
            "No-data watchdog: a connection that delivers no mark-price frame for this long is dropped and "
            "replaced.", (DAEMON,)),
    Setting("FUNDING_CONNECT_TIMEOUT_S", "connect_timeout_s", "10", v.number(0, strict=True),
            "Timeout of the TCP + TLS + WebSocket handshake.", (DAEMON,)),
    Setting("FUNDING_BACKOFF_INITIAL_S", "backoff_initial_s", "1", v.number(0, strict=True),
            "First reconnect delay cap; doubles per consecutive failure (full jitter).", (DAEMON,)),
    Setting("FUNDING_BACKOFF_MAX_S", "backoff_max_s", "60", v.number(0, strict=True),
            "Largest reconnect delay cap.", (DAEMON,)),
    Setting("FUNDING_ROTATE_AFTER_S", "rotate_after_s", "82800", v.number(0),
            "Open a replacement connection after this long (Binance cuts at 24 h); 0 disables rotation.",
            (DAEMON,)),
    Setting("FUNDING_HEARTBEAT_S", "heartbeat_s", "5", v.number(0, strict=True),
            "The daemon rewrites the state file at least this often, so readers can tell a dead daemon from "
            "a quiet feed.", (DAEMON,)),
    Setting("FUNDING_DROP_AFTER_S", "drop_after_s", "21600", v.number(0, strict=True),
            "Symbols unseen for this long (delisted) are dropped from the state; with reference data, symbols "
            "exchangeInfo no longer lists are dropped once two answers agree (within a minute).", (DAEMON,)),
    Setting("FUNDING_MAX_EVENT_SKEW_S", "max_event_skew_s", "300", v.number(0, strict=True),
            "An update whose Binance event time is further than this from the local clock is malformed "
            "(counted, logged, not stored); also bounds what a restart restores.", (DAEMON,)),
    Setting("FUNDING_CLOCK_SKEW_WARN_S", "clock_skew_warn_s", "5", v.number(0, strict=True),
            "Health turns unhealthy when Binance's event times and this host's clock differ by more than this "
            "(median of recent frames, network latency included).", (API,)),
    Setting("FUNDING_MAX_STALE_SHARE", "max_stale_share", "0.25", v.number(0),
            "Health turns unhealthy when more than this fraction of the stored symbols is stale.", (API,)),
    Setting("FUNDING_CONSUMER_STATUS_DIR", "consumer_status_dir", "", v.optional_path,
            "Directory of the consumers' status files (REST 429/418, deliveries), exported at /metrics; empty: "
            "none. The units set it to the consumers' state directory.", (API,)),
    Setting("FUNDING_REFERENCE_ENABLED", "reference_enabled", "true", v.boolean,
            "Keep Binance's reference data (exchangeInfo, fundingInfo, interestRate) over REST, on a thread of "
            "its own; off: no listing checks, no per-symbol streams, no /fapi/v1/exchangeInfo.", (DAEMON,)),
    Setting("FUNDING_REFERENCE_FILE", "reference_file", "", v.optional_path,
            "Reference data file; empty: .funding_reference.json beside FUNDING_STATE_FILE.", (DAEMON, API)),
    Setting("FUNDING_REFERENCE_REFRESH_S", "reference_refresh_s", "900", v.number(0, strict=True),
            "How often exchangeInfo (weight 1) and fundingInfo (weight 0) are fetched.", (DAEMON,)),
    Setting("FUNDING_INTEREST_REFRESH_S", "interest_refresh_s", "3600", v.number(0, strict=True),
            "How often one bulk premiumIndex (weight 10) is fetched for interestRate, which the stream lacks.",
            (DAEMON,)),
    Setting("FUNDING_MARKET_ENABLED", "market_enabled", "false", v.boolean,
            "Keep 1 h klines of every trading USDT perpetual and the 24 h tickers on a second connection, in a "
            "child process of the daemon (about an eighth of a core, ~140 MB), in FUNDING_MARKET_FILE, served at "
            "/fapi/v1/klines and /fapi/v1/ticker/24hr. Off by default until the candles are validated against REST "
            "(issue 21); the API answers those routes only when it is on.", (DAEMON, API)),
    Setting("FUNDING_MARKET_WS_URL", "market_ws_url", "wss://fstream.binance.com/market/stream?streams=!ticker@arr",
            v.url("ws", "wss"), "The market feed's combined-stream URL; !ticker@arr (every second) is its no-data "
            "watchdog's signal, the kline streams are added by SUBSCRIBE.", (DAEMON,)),
    Setting("FUNDING_MARKET_FILE", "market_file", "", v.optional_path,
            "Klines and tickers file; empty: .funding_market.json beside FUNDING_STATE_FILE.", (DAEMON, API)),
    Setting("FUNDING_KLINE_BACKFILL_WEIGHT_PER_MIN", "kline_backfill_weight_per_min", "200", v.number(1),
            "REST weight per minute the market feed may spend on candles the stream lacks (history at start, "
            "gaps, hours without a final message): 600 symbols take three minutes.", (DAEMON,)),
    Setting("FUNDING_API_HOST", "api_host", "127.0.0.1", v.host,
            "Address the HTTP API binds; anything but loopback also needs FUNDING_API_ALLOW_REMOTE.", (API,)),
    Setting("FUNDING_API_PORT", "api_port", "8888", v.port, "Port of the HTTP API.", (API,)),
    Setting("FUNDING_API_ALLOW_REMOTE", "api_allow_remote", "false", v.boolean,
            "Explicit opt-in to bind a non-loopback address.", (API,)),
    Setting("FUNDING_API_HEADER_TIMEOUT_S", "api_header_timeout_s", "5", v.number(0, strict=True),
            "A connection must send a complete request head within this long of opening (or of its previous "
            "response), or it is closed: idle and slowloris clients cannot pile up.", (API,)),
    Setting("FUNDING_API_MAX_CONNECTIONS", "api_max_connections", "4096", v.count(1),
            "Open connections at most (also capped by the descriptor limit); beyond, a new connection gets an "
            "immediate 503.", (API,)),
    Setting("FUNDING_API_WRITE_TIMEOUT_S", "api_write_timeout_s", "10", v.number(0, strict=True),
            "An answer the client does not read (its buffer stays above the high-water mark) for this long is "
            "dropped with its connection: a slow or stuck reader cannot hold the API's memory.", (API,)),
    Setting("FUNDING_API_MAX_BUFFERED_MB", "api_max_buffered_mb", "64", v.number(0, strict=True),
            "Unread answers held for slow clients, all connections together (and as much again for the local "
            "WebSocket's subscribers); beyond, the connection whose answer tipped it over is dropped (RSS stays "
            "flat however many clients stop reading).", (API,)),
    Setting("FUNDING_WS_ENABLED", "ws_enabled", "true", v.boolean,
            "The local Binance-compatible WebSocket on the API's port (/market/stream, /market/ws/<stream>); "
            "false: upgrade requests are answered as plain HTTP.", (API,)),
    Setting("FUNDING_WS_MAX_CONNECTIONS", "ws_max_connections", "2048", v.count(1),
            "Local WebSocket connections at most (within FUNDING_API_MAX_CONNECTIONS); beyond, a handshake gets "
            "503 with Retry-After.", (API,)),
    Setting("FUNDING_WS_MAX_BUFFER_KB", "ws_max_buffer_kb", "1024", v.number(1),
            "Bytes a local WebSocket subscriber may leave unread (about six all-market frames); beyond, it is "
            "dropped, so a stuck subscriber never delays the others or holds the API's memory.", (API,)),
    Setting("FUNDING_LOG_LEVEL", "log_level", "INFO", v.log_level, "DEBUG, INFO, WARNING or ERROR.",
            (DAEMON, API, CONSUMER, ALERTS, NOTIFY)),
    # -- consumers: where funding rates and mark prices come from -------------------------------------------
    Setting("WS_FUNDING_ENABLED", "ws_funding_enabled", "true", v.boolean,
            "The kill switch: false always means REST only, the local service is never asked, whatever "
            "FUNDING_SOURCE_MODE says (logged at start); true: FUNDING_SOURCE_MODE decides.", (CONSUMER,)),
    Setting("WS_FUNDING_API_URL", "ws_funding_api_url", "http://localhost:8888/funding", v.url("http", "https"),
            "Base URL of the local funding API (its /batch is asked once per scan).", (CONSUMER,)),
    Setting("FUNDING_SOURCE_MODE", "funding_source_mode", "auto", v.mode,
            "validate (local + REST, compared), ws (local; REST only for what it lacks) or rest; auto = validate. "
            "Ignored (rest) while WS_FUNDING_ENABLED=false.", (CONSUMER,)),
    Setting("FUNDING_REST_FALLBACK", "funding_rest_fallback", "true", v.boolean,
            "In ws mode, fetch what the local service lacks (down, stale, missing) from REST: one premiumIndex call "
            "per lacking symbol (weight 1), or one bulk call (weight 10) when 10 or more lack.",
            (CONSUMER,)),
    Setting("WS_FUNDING_TIMEOUT_S", "ws_funding_timeout_s", "0.8", v.number(0, strict=True),
            "Timeout of the local API call (no retries): a dead service costs a scan at most this.", (CONSUMER,)),
    Setting("WS_FUNDING_BREAKER_S", "ws_funding_breaker_s", "30", v.number(0),
            "After a failed local API call, skip the local service for this long (circuit breaker).", (CONSUMER,)),
    Setting("FUNDING_RATE_ABS_TOLERANCE", "funding_rate_abs_tolerance", "0.00001", v.number(0),
            "Comparison verdict: funding rates match when they differ by at most this (absolute).", (CONSUMER,)),
    Setting("MARK_PRICE_REL_TOLERANCE", "mark_price_rel_tolerance", "0.001", v.number(0),
            "Comparison verdict: mark prices match when they differ by at most this fraction.", (CONSUMER,)),
    Setting("KLINE_REL_TOLERANCE", "kline_rel_tolerance", "1e-6", v.number(0),
            "Comparison verdict (validate mode, market feed on): a closed 1 h candle's close and quote volume match "
            "REST's when they differ by at most this fraction (both are final: any difference is a defect).",
            (CONSUMER,)),
    Setting("BINANCE_REST_URL", "binance_rest_url", "https://fapi.binance.com", v.url("http", "https"),
            "Binance USD-M REST base URL.", (CONSUMER, DAEMON)),
    Setting("BINANCE_REST_TIMEOUT_S", "binance_rest_timeout_s", "10", v.number(0, strict=True),
            "Timeout of one Binance REST request.", (CONSUMER, DAEMON)),
    Setting("BINANCE_REST_RETRIES", "binance_rest_retries", "3", v.count(0),
            "Retries of a GET after a 5xx, timeout or connection error (never after other 4xx).", (CONSUMER,)),
    # -- hourly volume alerts ---------------------------------------------------------------------------------
    Setting("VOLUME_MULTIPLE", "volume_multiple", "3", v.number(0, strict=True),
            "Spike when this hour's quote volume is at least this multiple of the previous hour's.", (ALERTS,)),
    Setting("MIN_QUOTE_VOL", "min_quote_vol", "3000000", v.number(0),
            "...and at least this much quote volume (USDT).", (ALERTS,)),
    Setting("KLINES_CONCURRENCY", "klines_concurrency", "8", v.count(1),
            "Parallel klines requests per scan (all through the shared rate-limited client).", (ALERTS,)),
    Setting("VOLUME_ALERT_STATE_FILE", "volume_alert_state_file", ".volume_alert_state.json", v.path,
            "Sent alerts per (symbol, candle hour), persisted atomically so a restart never re-sends.", (ALERTS,)),
    Setting("TELEGRAM_API_URL", "telegram_api_url", "https://api.telegram.org", v.url("http", "https"),
            "Telegram Bot API base URL.", (ALERTS, NOTIFY)),
    Setting("TELEGRAM_TOKEN", "telegram_token", "", v.text, "Telegram bot token; empty disables Telegram.",
            (ALERTS, NOTIFY), secret=True),
    Setting("TELEGRAM_CHAT_ID", "telegram_chat_id", "", v.text,
            "Telegram chat to post to (the legacy name CHAT_ID is read too).", (ALERTS,), aliases=("CHAT_ID",)),
    Setting("VOLSPIKE_API_URL", "volspike_api_url", "", v.optional_url("http", "https"),
            "PROD VolSpike backend; empty disables it.", (ALERTS, OI)),
    Setting("VOLSPIKE_API_KEY", "volspike_api_key", "", v.text, "PROD backend key (X-API-Key).", (ALERTS, OI),
            secret=True),
    Setting("VOLSPIKE_API_URL_DEV", "volspike_api_url_dev", "", v.optional_url("http", "https"),
            "DEV VolSpike backend; empty disables it.", (ALERTS, OI)),
    Setting("VOLSPIKE_API_KEY_DEV", "volspike_api_key_dev", "", v.text, "DEV backend key (X-API-Key).", (ALERTS, OI),
            secret=True),
    Setting("VOLSPIKE_POST_TIMEOUT_S", "volspike_post_timeout_s", "10", v.number(0, strict=True),
            "Read timeout of an alert POST to a backend (volume and OI alerts); a POST that timed out is never "
            "sent again (it may have been stored).", (ALERTS, OI)),
    Setting("TELEGRAM_TIMEOUT_S", "telegram_timeout_s", "10", v.number(0, strict=True),
            "Read timeout of a Telegram sendMessage; a message that timed out is never sent again.",
            (ALERTS, NOTIFY)),
    # -- oi_realtime_poller.py ---------------------------------------------------------------------------------
    Setting("OI_MAX_REQ_PER_MIN", "oi_max_req_per_min", "2000", v.number(0, strict=True),
            "openInterest requests per minute at most; sets the loop interval with the universe size.", (OI,)),
    Setting("OI_MIN_INTERVAL_SEC", "oi_min_interval_sec", "5", v.number(0, strict=True),
            "Shortest loop interval (start to start).", (OI,)),
    Setting("OI_MAX_INTERVAL_SEC", "oi_max_interval_sec", "20", v.number(0, strict=True),
            "Longest loop interval, unless the request budget needs more (logged).", (OI,)),
    Setting("OI_FETCH_CONCURRENCY", "oi_fetch_concurrency", "20", v.count(1),
            "Parallel openInterest requests (through the shared rate-limited client). At a droplet's 250 ms per "
            "call, 8 took 13 s for 341 symbols against an 11 s interval; 20 takes 5.5 s (bench/bench_oi_latency).",
            (OI,)),
    Setting("OI_UNIVERSE_REFRESH_S", "oi_universe_refresh_s", "300", v.number(0, strict=True),
            "How often the liquid universe is refreshed.", (OI,)),
    Setting("OI_UNIVERSE_PUBLISH_S", "oi_universe_publish_s", "300", v.number(0),
            "How often the poller computes the liquid universe (exchangeInfo + ticker/24hr, weight 41) and "
            "publishes it to the backends (PROD, and DEV when configured); never an empty one nor one under half "
            "of the last. 0: another job publishes it.", (OI,)),
    Setting("OI_UNIVERSE_PUBLISH_DEV", "oi_universe_publish_dev", "false", v.boolean,
            "Publish the liquid universe to DEV too (the update deletes every symbol not in it, so DEV's own table "
            "is replaced); off, only PROD's is written, as the original job did.", (OI,)),
    Setting("OI_LIQUID_ENTER_QUOTE_24H", "oi_liquid_enter_quote_24h", "4000000", v.number(0),
            "Locally computed universe: a symbol enters at this 24 h quote volume (USDT)...", (OI,)),
    Setting("OI_LIQUID_EXIT_QUOTE_24H", "oi_liquid_exit_quote_24h", "2000000", v.number(0),
            "...and stays while at least this (hysteresis).", (OI,)),
    Setting("OI_SPIKE_THRESHOLD_PCT_5MIN", "oi_spike_threshold_pct_5min", "0.03", v.number(0, strict=True),
            "OI change over 5 min that alerts (fraction).", (OI,)),
    Setting("OI_SPIKE_THRESHOLD_PCT_15MIN", "oi_spike_threshold_pct_15min", "0.07", v.number(0, strict=True),
            "OI change over 15 min that alerts (fraction).", (OI,)),
    Setting("OI_SPIKE_THRESHOLD_PCT_60MIN", "oi_spike_threshold_pct_60min", "0.12", v.number(0, strict=True),
            "OI change over 1 hour that alerts (fraction).", (OI,)),
    # The original's lookbacks (seconds, same defaults), so an operator's old env file means what it meant.
    Setting("OI_LOOKBACK_WINDOW_5MIN", "oi_lookback_window_5min", "300", v.number(0, strict=True),
            "Seconds back the 5 min timeframe compares with (baseline within +-clamp(lookback/10, 30, 120) s).",
            (OI,)),
    Setting("OI_LOOKBACK_WINDOW_15MIN", "oi_lookback_window_15min", "900", v.number(0, strict=True),
            "Seconds back the 15 min timeframe compares with.", (OI,)),
    Setting("OI_LOOKBACK_WINDOW_60MIN", "oi_lookback_window_60min", "3600", v.number(0, strict=True),
            "Seconds back the 1 hour timeframe compares with; the sample history kept covers the longest "
            "lookback.", (OI,)),
    Setting("OI_ALERT_COOLDOWN_5MIN", "oi_alert_cooldown_5min", "600", v.number(0),
            "Seconds before a symbol alerts again on the 5 min timeframe.", (OI,)),
    Setting("OI_ALERT_COOLDOWN_15MIN", "oi_alert_cooldown_15min", "900", v.number(0),
            "Seconds before a symbol alerts again on the 15 min timeframe.", (OI,)),
    Setting("OI_ALERT_COOLDOWN_60MIN", "oi_alert_cooldown_60min", "3600", v.number(0),
            "Seconds before a symbol alerts again on the 1 hour timeframe.", (OI,)),
    Setting("OI_MIN_DELTA_CONTRACTS", "oi_min_delta_contracts", "5000", v.number(0),
            "Smallest absolute OI change (contracts) that may alert.", (OI,)),
    Setting("OI_EXCLUDED_SYMBOLS", "oi_excluded_symbols", "USDCUSDT", v.symbols,
            "Comma-separated symbols polled and posted like any other but never alerted on (as the original: a "
            "stablecoin's open interest swings are noise).", (OI,)),
    Setting("OI_STATE_FILE", "oi_state_file", ".oi_alert_state.json", v.path,
            "Alert cooldowns and edge states per backend, persisted atomically across restarts.", (OI,)),
    Setting("OI_POST_QUEUE_MAX", "oi_post_queue_max", "50", v.count(1),
            "Pending POSTs kept per backend while it is slow (each backend has its own queue and thread); the "
            "oldest is dropped (logged, never sent, so retried later) beyond this.", (OI,)),
    Setting("OI_BATCH_TIMEOUT_S", "oi_batch_timeout_s", "60", v.number(0, strict=True),
            "Read timeout of one OI sample batch POST (the original raised it to 60 s after real 10 s timeouts); "
            "a POST that timed out is never sent again.", (OI,)),
    # -- validate_funding_comparison.py: when is it SAFE TO SWITCH ----------------------------------------------
    Setting("REPORT_MIN_HOURS", "report_min_hours", "24", v.number(0),
            "Coverage needed between the first and the last comparison.", (REPORT,)),
    Setting("REPORT_MAX_GAP_MINUTES", "report_max_gap_minutes", "60", v.number(0),
            "Longest stretch without comparison lines that still counts as continuous coverage.", (REPORT,)),
    Setting("REPORT_MIN_COMPARISONS", "report_min_comparisons", "1000", v.count(1),
            "Comparisons needed (both fields together).", (REPORT,)),
    Setting("REPORT_MIN_MATCH_RATE_PCT", "report_min_match_rate_pct", "99", v.number(0),
            "Lowest acceptable match rate of each field, in percent.", (REPORT,)),
    Setting("REPORT_MAX_P99_REL_FUNDING", "report_max_p99_rel_funding", "0.01", v.number(0),
            "Largest acceptable p99 relative difference of funding rates.", (REPORT,)),
    Setting("REPORT_MAX_P99_REL_MARK", "report_max_p99_rel_mark", "0.001", v.number(0),
            "Largest acceptable p99 relative difference of mark prices.", (REPORT,)),
    Setting("REPORT_MAX_P99_REL_KLINE", "report_max_p99_rel_kline", "1e-6", v.number(0),
            "Largest acceptable p99 relative difference of closed 1 h candles' close and quote volume (judged only "
            "when the logs hold candle comparisons).", (REPORT,)),
    Setting("REPORT_MAX_WS_UNAVAILABLE_PCT", "report_max_ws_unavailable_pct", "1", v.number(0),
            "Largest acceptable share of scans in which the local API was unavailable, in percent.", (REPORT,)),
    # -- funding_health_notifier.py: Telegram when /funding/health stays unhealthy (opt-in) ----------------------
    Setting("HEALTH_NOTIFY_CHAT_ID", "health_notify_chat_id", "", v.text,
            "Telegram chat for health messages (with TELEGRAM_TOKEN); the notifier refuses to start without it.",
            (NOTIFY,)),
    Setting("HEALTH_NOTIFY_URL", "health_notify_url", "http://127.0.0.1:8888/funding/health",
            v.url("http", "https"), "The health endpoint the notifier polls; no answer counts as unhealthy.",
            (NOTIFY,)),
    Setting("HEALTH_NOTIFY_AFTER_S", "health_notify_after_s", "300", v.number(0),
            "Unhealthy for this long (without a healthy answer) before the one message saying so; the "
            "message that it is healthy again follows its first healthy answer.", (NOTIFY,)),
    Setting("HEALTH_NOTIFY_INTERVAL_S", "health_notify_interval_s", "30", v.number(0, strict=True),
            "Seconds between two polls of the health endpoint (each waits at most 10 s for its answer).",
            (NOTIFY,)),
    Setting("HEALTH_NOTIFY_STATE_FILE", "health_notify_state_file", ".health_notify_state.json", v.path,
            "What was announced last, kept atomically so a restart never repeats a message.", (NOTIFY,)),
)


def settings_for(component: str) -> list[Setting]:
    return [s for s in SETTINGS if component in s.used_by]


def markdown_table() -> str:
    """The documentation's settings table, generated from :data:`SETTINGS`."""
    rows = ["| Variable | CLI flag | Default | Read by | Meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        note = " Secret: never logged." if s.secret else ""
        rows.append(f"| `{s.env}` | `{s.flag}` | `{s.default}` | {', '.join(s.used_by)} | {s.help}{note} |")
    return "\n".join(rows)
