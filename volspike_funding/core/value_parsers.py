"""Parsers of setting values: each takes the raw text and returns the value or raises ``ValueError`` saying why.

The messages end up after the setting's name in a one-line start-up error, e.g.
``FUNDING_STALE_AFTER_S: 'soon' is not a number``.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit


def number(minimum: float, *, strict: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
            raise ValueError(f"{raw!r} must be a finite number {bound}")
        return value
    return parse


def port(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ValueError(f"{raw!r} is not a TCP port (1-65535)")
    return int(raw)


def boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not a boolean (true/false)")


def url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw.strip())
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"{raw!r} is not a {'/'.join(schemes)} URL")
        try:
            parts.port  # a bad port would otherwise surface as a traceback when the URL is first used
        except ValueError:
            raise ValueError(f"{raw!r} has a port that is not a number from 1 to 65535") from None
        return raw.strip()
    return parse


def optional_url(*schemes: str) -> Callable[[str], str | None]:
    required = url(*schemes)
    return lambda raw: required(raw).rstrip("/") if raw.strip() else None


def store_url(raw: str) -> str | None:
    """Empty (the state file), or a Redis URL the client library accepts: ``redis[s]://[:password@]host[:port][/db]``
    with its query options (e.g. ``?ssl_ca_certs=/etc/ssl/redis-ca.pem``). The messages never repeat the value: it
    carries the password."""
    if not raw.strip():
        return None
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("not a redis:// or rediss:// URL with a host (the value is not shown: it may hold a password)")
    try:
        if parts.port == 0:
            raise ValueError
    except ValueError:
        raise ValueError("the port is not a number from 1 to 65535") from None
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"the database {db!r} is not a number (e.g. /0)")
    try:
        from redis.connection import parse_url
    except ImportError:  # the store's own start-up says the library is missing
        return raw.strip()
    try:
        parse_url(raw.strip())  # type: ignore[no-untyped-call]  # redis-py's parser is not annotated
    except ValueError as exc:  # e.g. "Invalid value for 'db' in connection URL."
        raise ValueError(str(exc)) from None
    return raw.strip()


def text(raw: str) -> str | None:
    return raw.strip() or None


def count(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not raw.strip().isdigit() or int(raw) < minimum:
            raise ValueError(f"{raw!r} is not a whole number >= {minimum}")
        return int(raw)
    return parse


def symbols(raw: str) -> tuple[str, ...]:
    return tuple(sorted({s.strip().upper() for s in raw.split(",") if s.strip()}))


def mode(raw: str) -> str | None:
    mode = raw.strip().lower()
    if mode in ("", "auto"):
        return None
    if mode not in ("validate", "ws", "rest"):
        raise ValueError(f"{raw!r} is not one of validate, ws, rest (or auto)")
    return mode


def path(raw: str) -> Path:
    if not raw.strip() or "\0" in raw:
        raise ValueError(f"{raw!r} is not a file path")
    # Resolved once here so every log line and every process names the same absolute file.
    return Path(os.path.abspath(os.path.expanduser(raw.strip())))


def binance_decimal(raw: Any) -> float | None:
    """A Binance decimal string, or ``None`` for ``""``/absent/garbage: unknown is never 0."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def optional_path(raw: str) -> Path | None:
    """A path, or ``None`` for an empty value (the component then derives its own default)."""
    return path(raw) if raw.strip() else None


def host(raw: str) -> str:
    if not raw.strip() or any(c.isspace() for c in raw.strip()):
        raise ValueError(f"{raw!r} is not a host name or address")
    return raw.strip()


def log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"{raw!r} is not one of DEBUG, INFO, WARNING, ERROR")
    return level


def iso_time(raw: str) -> datetime:
    """An ISO 8601 time, ``Z`` allowed; without an offset it is UTC."""
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{raw!r} is not an ISO time (e.g. 2026-11-24T12:00:05Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
