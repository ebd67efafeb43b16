"""The shared state file ``.funding_state.json``: its format, its one writer and its readers.

This module, :mod:`.records` (the daemon's in-memory records) and :mod:`.daemon_status` (its status keys) are
the only places that know the file's keys:
readers ask :class:`StateSnapshot`, never the document. The daemon writes through :class:`StateWriter`; the API
and tools read through :func:`read_state` (the API through its cache, :mod:`.view`). Shape (schema version 2)::

    {"schemaVersion": 2,
     "funding_state": {"BTCUSDT": {"symbol": "BTCUSDT", "markPrice": 11794.15, "indexPrice": 11784.62659091,
                                   "estimatedSettlePrice": 11784.25641265, "fundingRate": 0.00038167,
                                   "nextFundingTime": 1562306400000, "eventTime": 1562305380000,
                                   "updatedAt": 1562305380.123,
                                   "binance": "11794.15000000|11784.62659091|11784.25641265|0.00038167|"
                                              "11794.15000000|1"}},
     "connection_status": {"connected": true, "last_connected_time": ..., "last_disconnected_time": ...,
                           "reconnect_attempts": 0, "messages_received": 42, "last_message_time": ...,
                           "url": "wss://...", "last_error": null, "rotations": 0},
     "counters": {"frames": 42, "updates": 29400, "ignored": 0, "out_of_order": 0, "malformed": {"bad_json": 1}},
     "updated_at": ..., "heartbeat_at": ..., "heartbeat_interval_s": 5, "started_at": ..., "stopped_at": null,
     "daemon_pid": 1234, "clock": {...}, "reference": {...}, "streams": {...}}

(the status keys are :mod:`.daemon_status`'s: its docstring shows them whole)

``binance`` keeps Binance's own fields, ``mark|index|settle|funding|ap|st`` (``p``, ``i``, ``P``, ``r``, ``ap``,
``st``; an empty field was not sent), so a Binance-shaped answer or stream row can be re-emitted losslessly; one
string rather than an object because every reader parses the whole file at 1 Hz, and 2,800 fewer objects halve that
(bench/). Files written before ``ap|st`` were kept have four fields. Use :func:`binance_strings` to read it.
Times ending in ``_at``/``At``/``_time`` are Unix seconds, except Binance's ``eventTime`` and ``nextFundingTime``
(milliseconds, as Binance sends them). Unknown values are ``null``, never ``0``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import orjson

from volspike_funding.core.errors import StateLockedError, StateUnreadable
from volspike_funding.core.persist import TEMP_PREFIX, remove_orphans, replace_through
from volspike_funding.binance.wire import is_valid_symbol
from volspike_funding.store.daemon_status import DaemonStatus
from volspike_funding.store.records import symbol_record  # noqa: F401  (the record's home is records)

#: How far ahead of the reader's clock an ``updatedAt`` may be (same host: only a clock step explains any).
FUTURE_SLACK_S = 5.0

SCHEMA_VERSION = 2
log = logging.getLogger("funding.daemon")


#: premiumIndex's names for the first four; the stream's ``ap`` and ``st`` have no REST name, so these two are ours.
BINANCE_FIELDS = ("markPrice", "indexPrice", "estimatedSettlePrice", "lastFundingRate", "markPriceAverage",
                  "symbolType")


def binance_strings(record: dict[str, Any]) -> dict[str, str]:
    """Binance's original strings of a symbol record by field name (:data:`BINANCE_FIELDS`), ``""`` when not sent
    (``symbolType`` too: it is the decimal text of ``st``). A four-field string of an older file reads as the
    first four, the other two ``""``."""
    raw = record.get("binance")
    parts = raw.split("|") if isinstance(raw, str) else []
    return dict(zip(BINANCE_FIELDS, parts + [""] * (len(BINANCE_FIELDS) - len(parts))))


_INF = float("inf")


def record_problem(key: str, record: Any, now: float) -> str | None:
    """Why a stored record must not be served or restored (the wire parser's rules, plus a sane ``updatedAt``),
    or ``None``. An outsider's edit, a bug or a disk error then costs one symbol, never an answer.
    Flat, like the parser: it runs for every symbol of every snapshot a list route reads (bench/)."""
    if type(record) is not dict:
        return "not an object"
    get = record.get
    if get("symbol") != key or not is_valid_symbol(key):
        return "symbol missing, malformed or not its key"
    mark = get("markPrice")
    if not ((type(mark) is float or type(mark) is int) and 0 < mark < _INF):
        return "markPrice is not a positive number"
    for value in (get("indexPrice"), get("estimatedSettlePrice"), get("fundingRate")):
        if value is not None and not ((type(value) is float or type(value) is int) and -_INF < value < _INF):
            return "a price or rate is not a number"
    updated, event, nxt = get("updatedAt"), get("eventTime"), get("nextFundingTime")
    if not ((type(updated) is float or type(updated) is int) and 0 < updated <= now + FUTURE_SLACK_S):
        return "updatedAt missing or in the future"
    if type(event) is not int or event <= 0:
        return "eventTime missing"
    if nxt is not None and (type(nxt) is not int or nxt <= 0):
        return "nextFundingTime is not a time"
    if type(get("binance", "")) is not str:
        return "binance is not a string"
    return None


def build_document(symbols: dict[str, dict[str, Any]], connection: dict[str, Any], counters: dict[str, Any], *,
                   now: float, heartbeat_s: float, started_at: float, stopped: bool = False,
                   clock: dict[str, Any] | None = None, reference: dict[str, Any] | None = None,
                   streams: dict[str, Any] | None = None) -> dict[str, Any]:
    """``clock``: ``{"skewMs", "samples"}`` (Binance's event time minus our receive time, median of recent
    frames); ``reference``: the reference fetcher's status ``{"lastError", "lastErrorAt", "symbols",
    "perSymbolStreams"}``; ``streams``: ``{"subscriptionsPaused", "subscriptionsPausedForS"}`` (why per-symbol
    subscriptions are paused, while they are)."""
    return {
        "schemaVersion": SCHEMA_VERSION,
        "funding_state": symbols,
        "connection_status": connection,
        "counters": counters,
        "updated_at": now,
        "heartbeat_at": now,
        "heartbeat_interval_s": heartbeat_s,
        "started_at": started_at,
        "stopped_at": now if stopped else None,
        "daemon_pid": os.getpid(),
        "clock": clock or {"skewMs": None, "samples": 0},
        "reference": reference or {},
        "streams": streams or {},
    }


def encode(document: dict[str, Any]) -> bytes:
    # orjson, not json: 0.3 ms instead of 3.3 ms for 700 symbols, the largest cost per frame (bench/).
    return orjson.dumps(document)


class StateWriter:
    """The single writer of a state file: holds an exclusive lock for its lifetime, replaces the file atomically.

    The lock is an ``flock`` on ``<state>.lock``, and a lock on a file that is no longer at that path locks nothing:
    an outsider who removes the file would let a second daemon lock a new one, and both would write. So the lock's
    identity (device, inode) is checked against the path before every write: a removed lock file is taken back
    (re-created and locked, if nobody else did), and a lock file now held by someone else means this writer lost
    its lock, which is fatal (:class:`StateLockedError`): at most one write of the loser follows the takeover.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = path.with_name(path.name + ".lock")
        self._lock_fd = self._acquire()
        remove_orphans(path)  # we hold the lock: temp files of a writer killed mid-write are nobody's
        self._tmp = str(path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}"))

    def _acquire(self) -> int:
        for _ in range(5):  # the file may be removed between our open and our lock: lock what is at the path
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise StateLockedError(f"another daemon (pid {holder}) already writes {self.path} "
                                       f"(lock {self._lock_path})") from None
            if self._is_at_path(fd):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return fd
            os.close(fd)
        raise StateLockedError(f"cannot hold a lock on {self._lock_path}: it keeps being replaced")

    def _is_at_path(self, fd: int) -> bool:
        try:
            at_path = os.stat(self._lock_path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (at_path.st_dev, at_path.st_ino) == (mine.st_dev, mine.st_ino)

    def check_lock(self) -> None:
        """Raise :class:`StateLockedError` if this writer no longer holds the state file's lock."""
        if self._is_at_path(self._lock_fd):
            return
        if not self._lock_path.exists():
            try:
                fd = self._acquire()  # removed by an outsider: take it back, unless another daemon already did
            except StateLockedError as exc:
                raise StateLockedError(f"lost the lock on {self.path}: its lock file was removed and {exc}") from None
            os.close(self._lock_fd)
            self._lock_fd = fd
            log.warning("the lock file %s was removed by someone; re-created and locked again", self._lock_path)
            return
        raise StateLockedError(f"lost the lock on {self.path}: {self._lock_path} was replaced and is held by "
                               f"another process; this daemon stops writing")

    @property
    def location(self) -> str:
        return str(self.path)

    def write_reference(self, document: bytes, listed: Iterable[str] | None = None) -> None:
        """Nothing to share: readers of the state file read the reference file beside it."""

    def write(self, document: dict[str, Any]) -> int:
        """Replace the file with ``document``; readers see the old or the new file, never a partial one."""
        self.check_lock()
        data = encode(document)
        replace_through(self._tmp, str(self.path), data)  # the lock makes us its sole writer
        return len(data)

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


@dataclass(frozen=True)
class StateSnapshot:
    """A parsed state file with the questions readers ask of it.

    Records are checked with :func:`record_problem` lazily: a single-symbol lookup checks only the record it
    returns, so the first answer after the daemon's write does not wait for all 700 to be checked; the whole set
    (:attr:`symbols`, :attr:`invalid`) is checked once, when a list, health or metrics first needs it.
    """

    document: dict[str, Any]
    raw: dict[str, Any]
    read_at: float

    @cached_property
    def _checked(self) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
        bad = [(k, why) for k, v in self.raw.items() if (why := record_problem(k, v, self.read_at)) is not None]
        if not bad:
            return self.raw, bad
        dropped = {k for k, _ in bad}
        return {k: v for k, v in self.raw.items() if k not in dropped}, bad

    @property
    def symbols(self) -> dict[str, dict[str, Any]]:
        """Every valid record by symbol."""
        return self._checked[0]

    @property
    def invalid(self) -> int:
        """Records left out because they break :func:`record_problem`."""
        return len(self._checked[1])

    @property
    def invalid_examples(self) -> list[str]:
        return [f"{k[:40]!r}: {why}" for k, why in self._checked[1][:5]]

    @cached_property
    def upper_index(self) -> dict[str, str]:
        """ASCII symbols by their upper-case form; built at the first case-insensitive lookup only."""
        return {k.upper(): k for k in self.raw if k.isascii()}

    @cached_property
    def status(self) -> DaemonStatus:
        """The daemon's status keys, typed and checked once (:mod:`.daemon_status`)."""
        return DaemonStatus.of(self.document)

    def heartbeat_age(self, now: float) -> float | None:
        return self.status.heartbeat_age(now)

    def daemon_alive(self, now: float) -> bool:
        return self.status.alive(now)

    def resolve(self, symbol: str) -> str | None:
        """The stored key of a valid record for ``symbol``: exact match first (symbols may be non-ASCII), then
        ASCII case-insensitive."""
        key = symbol if symbol in self.raw else self.upper_index.get(symbol.upper()) if symbol.isascii() else None
        if key is None or record_problem(key, self.raw[key], self.read_at) is not None:
            return None
        return key

    def lookup(self, symbol: str) -> dict[str, Any] | None:
        key = self.resolve(symbol)
        return None if key is None else self.raw[key]


def age_of(record: dict[str, Any], now: float) -> float | None:
    updated = record.get("updatedAt")
    return None if not isinstance(updated, (int, float)) else max(0.0, now - updated)


def parse_document(data: bytes, now: float | None = None) -> StateSnapshot:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StateUnreadable("invalid", f"state file is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("funding_state"), dict):
        raise StateUnreadable("invalid", "state file has no funding_state object")
    version = document.get("schemaVersion", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StateUnreadable("invalid", f"state file schema {version!r} is newer than this reader")
    return StateSnapshot(document, document["funding_state"], time.time() if now is None else now)


def read_state(path: Path) -> StateSnapshot:
    """Read and parse the state file; :class:`StateUnreadable` says whether it is missing, unreadable or invalid."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StateUnreadable("missing", f"{path} does not exist (is the daemon running?)") from None
    except OSError as exc:
        raise StateUnreadable("unreadable", f"cannot read {path}: {exc.strerror}") from None
    return parse_document(data)


FileIdentity = tuple[int, int, int]


def identity(path: Path) -> FileIdentity | None:
    """``(inode, mtime_ns, size)``: every atomic replace changes the inode, so a change is never missed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
