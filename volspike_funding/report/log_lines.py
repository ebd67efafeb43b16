"""The report's input lines: when a log line says it was written (our logging format, ``journalctl -o short-iso``,
classic syslog), ``journalctl -o json`` entries, and ``--since``/``--until`` values. The comparison lines inside
them are :mod:`volspike_funding.store.comparison_log`'s."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

from volspike_funding.core.errors import SettingsError
from volspike_funding.core.value_parsers import iso_time

_ISO_PREFIX = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:[.,](\d+))?(Z|[+-]\d{2}:?\d{2})?")
_SYSLOG_PREFIX = re.compile(r"^([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2})")
_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_when(raw: str, now: datetime) -> float:
    """``--since``/``--until``: an ISO time (UTC when no offset) or a span back from now (``90m``, ``24h``, ``7d``)."""
    relative = _RELATIVE.match(raw.strip())
    if relative:
        amount, unit = float(relative.group(1)), _UNITS[relative.group(2)]
        return (now - timedelta(**{unit: amount})).timestamp()
    try:
        return iso_time(raw).timestamp()
    except ValueError:
        raise SettingsError(f"{raw!r} is neither an ISO time nor a span like 24h") from None


def prefix_time(line: str, now: datetime) -> float | None:
    """The time a log line's prefix gives: our logging format, ``journalctl -o short-iso`` or classic syslog."""
    iso = _ISO_PREFIX.match(line)
    if iso:
        day, clock, fraction, zone = iso.groups()
        text = f"{day}T{clock}{'.' + fraction[:6] if fraction else ''}"
        zone = zone or "+00:00"
        zone = "+00:00" if zone == "Z" else zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"
        return datetime.fromisoformat(text + zone).timestamp()
    syslog = _SYSLOG_PREFIX.match(line)
    if syslog and syslog.group(1) in _MONTHS:
        month, day, hh, mm, ss = _MONTHS[syslog.group(1)], *map(int, syslog.groups()[1:])
        moment = datetime(now.year, month, day, hh, mm, ss, tzinfo=timezone.utc)
        if moment > now + timedelta(days=1):  # journalctl omits the year: a December line read in January
            moment = moment.replace(year=now.year - 1)
        return moment.timestamp()
    return None


def journal_entry(line: str) -> tuple[str, float | None] | None:
    """``journalctl -o json``: the MESSAGE (text or a byte array) and ``__REALTIME_TIMESTAMP``, else ``None``."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or "MESSAGE" not in entry:
        return None
    message = entry["MESSAGE"]
    if isinstance(message, list):
        message = bytes(b & 0xFF for b in message if isinstance(b, int)).decode("utf-8", "replace")
    stamp = entry.get("__REALTIME_TIMESTAMP")
    ts = int(stamp) / 1e6 if isinstance(stamp, str) and stamp.isdigit() else None
    return str(message), ts
