"""The one retry policy: how long a server may make us wait (``Retry-After``) and how we back off on our own.

Every caller (the Binance REST client, the WebSocket reconnects, the reference fetcher, the Redis writer, the alert
sinks) uses these two, so a bound proven here holds everywhere. Neither ever answers ``inf`` or ``nan``: one 429
with ``Retry-After: inf`` once paused every REST call of a process for ever.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Callable

#: No server makes any caller wait longer than this: Binance's longest IP ban (they scale from 2 minutes to 3 days).
LONGEST_WAIT_S = 3 * 86_400.0
#: Longer header values are not parsed (an HTTP-date is 29 characters).
_MAX_LEN = 100
#: A decimal number, as Binance and the fakes write it (``30``, ``1.5``, ``1e+06``); not ``inf``, ``nan``, ``1_0``.
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def parse_retry_after(raw: str | int | float | None, cap: float, *, now: Callable[[], float] = time.time,
                      clamp: bool = True) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds (a header string, or Telegram's JSON number) or
    an HTTP-date (a date already past is 0). ``None`` for absent, unparsable, negative, ``nan`` or ``inf`` values.

    A value beyond ``cap`` is ``cap`` (``clamp``), or ``None`` when ``clamp`` is false, for a caller that gives up
    rather than wait that long. A number too long for a float (all digits) counts as beyond the cap."""
    if not math.isfinite(cap) or cap < 0:
        raise ValueError(f"cap must be finite and >= 0, not {cap!r}")
    if raw is None or isinstance(raw, bool):  # JSON true is an int to Python, not a delay
        return None
    if isinstance(raw, int):
        value, huge = (float(raw) if abs(raw) < 2 ** 1023 else math.inf if raw > 0 else -math.inf), True
    elif isinstance(raw, float):
        value, huge = raw, False
    elif isinstance(raw, str) and len(raw) <= _MAX_LEN:
        text = raw.strip()
        if _NUMBER.fullmatch(text):
            # float() turns 400 digits into inf: that is a huge delay, not an unusable one
            value, huge = float(text), True
        else:
            until = _http_date(text)
            if until is None:
                return None
            value, huge = max(0.0, until - now()), False
    else:
        return None
    if math.isnan(value) or value < 0 or (math.isinf(value) and not huge):
        return None
    if value > cap:
        return cap if clamp else None
    return value


def _http_date(text: str) -> float | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime) as a Unix time; HTTP-dates are always UTC."""
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        return parsed.timestamp() if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc).timestamp()
    except (OverflowError, OSError, ValueError):
        return None


@dataclass
class Backoff:
    """Capped exponential backoff: the ceiling for the n-th consecutive failure is ``min(cap, base × factor^(n-1))``
    and the delay is drawn from ``[(1 - jitter) × ceiling, ceiling]``: ``jitter`` 1 is full jitter, 0 none.

    Stateless use (``delay(n)``, ``ceiling(n)``) is thread-safe; ``next()`` / ``reset()`` count failures for a
    caller that keeps no count of its own."""

    base: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0
    rng: Callable[[], float] = field(default=random.random, repr=False)
    failures: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.base <= self.cap and math.isfinite(self.cap)):
            raise ValueError(f"backoff needs 0 <= base <= cap < inf, not base={self.base!r} cap={self.cap!r}")
        if not (self.factor >= 1 and math.isfinite(self.factor)) or not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff needs factor >= 1 and 0 <= jitter <= 1, not {self.factor!r}, {self.jitter!r}")

    def ceiling(self, failures: int | None = None) -> float:
        """The longest delay after ``failures`` consecutive failures (default: the count ``next()`` keeps)."""
        n = self.failures if failures is None else failures
        if self.base == 0:
            return 0.0
        try:
            grown = self.base * self.factor ** max(n - 1, 0)
        except OverflowError:  # after ~1000 doublings: long past the cap
            return self.cap
        return min(self.cap, grown)

    def delay(self, failures: int | None = None) -> float:
        """A jittered delay after ``failures`` consecutive failures."""
        ceiling = self.ceiling(failures)
        return ceiling * ((1.0 - self.jitter) + self.jitter * min(max(self.rng(), 0.0), 1.0))

    def next(self) -> float:
        """Count one more failure and return the delay before the next try."""
        self.failures += 1
        return self.delay()

    def reset(self) -> None:
        """A success: the next failure starts from ``base`` again."""
        self.failures = 0
