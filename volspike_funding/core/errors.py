"""The package's exception tree.

Every error this package raises on purpose derives from :class:`FundingError`, so an entry point can turn
any of them into a one-line message and an exit code without catching unrelated bugs::

    FundingError
    ├── SettingsError        a setting's value is unusable (exit code 2 at start-up)
    ├── StateFileError       the shared state file cannot be written or read
    │   ├── StateLockedError another daemon already owns the state file
    │   ├── StateUnreadable  missing / unreadable / not our format (``reason`` says which)
    │   └── StoreUnavailable the shared store (Redis) refused a write or cannot be reached; try again later
    ├── FrameError           a WebSocket frame or one of its items is malformed (``kind`` names the defect)
    └── RestError            a Binance REST call failed; nothing was retried that should not be
        ├── RateLimited      HTTP 429, or a call refused locally while a 429 pause lasts (``retry_after``)
        │   └── IpBanned     HTTP 418: the IP is banned until ``retry_after`` has passed
        ├── RequestRejected  any other 4xx (never retried): ``status``, Binance ``code`` and ``msg``
        └── Unavailable      5xx, timeouts or connection errors, after the bounded retries
"""

from __future__ import annotations


class FundingError(Exception):
    """Base class of every deliberate error raised by this package."""


class SettingsError(FundingError):
    """A setting (environment variable, env file entry or CLI flag) has an unusable value."""


class StateFileError(FundingError):
    """The shared state (its file, or the shared store) could not be written or read."""


class StateLockedError(StateFileError):
    """Another daemon holds the state file's lock: there must be exactly one writer."""


class StateUnreadable(StateFileError):
    """No usable state: ``reason`` is ``missing``, ``unreadable`` or ``invalid``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class StoreUnavailable(StateFileError):
    """A write to the shared store failed (unreachable, refused, or inside the backoff after a failure): the
    writer keeps its data and the next write tries again, as after a full disk."""


class FrameError(FundingError):
    """A frame or item could not be used; ``kind`` is a short stable label used for counters and logs."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class RestError(FundingError):
    """A Binance REST call failed."""


class RateLimited(RestError):
    """Binance answered 429 (or a 429 pause is still running): no call goes out for ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IpBanned(RateLimited):
    """Binance answered 418: the IP is banned for ``retry_after`` seconds."""


class RequestRejected(RestError):
    """A 4xx other than 429/418; retrying cannot help."""

    def __init__(self, status: int, code: int | None, msg: str) -> None:
        super().__init__(f"HTTP {status}: {msg} (code {code})")
        self.status, self.code, self.msg = status, code, msg


class Unavailable(RestError):
    """5xx, timeout or connection error, still failing after the bounded retries."""
