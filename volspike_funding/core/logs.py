"""Logging for every process: the journal format, secrets redacted from every record, and a rate-limited log for
recurring problems (the journal is where operators read the evidence; a flood loses it)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, Iterable

from volspike_funding.core.settings import masked


class RedactSecrets(logging.Filter):
    """Replace every secret (tokens, API keys) in a record's final text, exception included, whoever logs it:
    urllib3 at DEBUG logs request lines, and Telegram's URL carries the bot token (``/bot<TOKEN>/sendMessage``)."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, masked(secret))
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = self._redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        return True


def setup_logging(level: str, secrets: Iterable[str | None] = ()) -> None:
    """Log to stderr (the journal) at ``level``; ``secrets`` never appear, at any level, from any logger."""
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets(secrets))


class RateLimitedLog:
    """Log a recurring problem at most once per ``interval`` seconds per kind, with how often it happened."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger, self._interval, self._clock = logger, interval, clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str) -> bool:
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        self._last[kind] = now
        extra = self._suppressed.pop(kind, 0)
        suffix = f" ({extra} more since the last report)" if extra else ""
        self._logger.warning("%s: %s%s", kind, message, suffix)
        return True
