"""Time as the outside world reads it: the backend's and Telegram's ISO 8601 UTC form."""

from __future__ import annotations

from datetime import datetime, timezone


def iso_z(moment: datetime) -> str:
    """``2026-11-24T12:00:05Z`` (milliseconds only when there are any), the form the VolSpike backend validates."""
    text = moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return text.removesuffix(".000") + "Z"
