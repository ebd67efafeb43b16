"""The store boundary: the state file or, shared, Redis (or Valkey): its layout, the daemons' writer and the API's
reader. :mod:`.backend` defines their interface and chooses between this and the state file.

Chosen with ``FUNDING_STORE_URL=redis://[:password@]host:port/db`` (``rediss://`` for TLS); empty keeps the state
file. The keys and scripts are :mod:`.redis_layout`'s.

Any number of daemons write at once, no leader: :data:`NEWEST_WINS` applies each update atomically and only if its
event time is newer than the stored one — and never one stamped further ahead of Redis's own clock than
``max_future_ms`` (a poisoned writer cannot freeze a symbol), while a stored time already that far ahead never
blocks a true update. So when one daemon dies, restarts or rotates, the others' data keeps flowing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Iterable

import orjson

from volspike_funding.core.errors import StateUnreadable, StoreUnavailable
from volspike_funding.core.retry import Backoff
from volspike_funding.store.redis_layout import (BEATS, CHANNEL, DAEMONS, EVENTS, HEARTBEAT, NEWEST_WINS, PROBE,
                                                 RECORDS, REFERENCE, STORED, beat_ms, checked_status, status_ttl_s,
                                                 store_now)
from volspike_funding.store.daemon_status import DaemonStatus
from volspike_funding.store.statefile import SCHEMA_VERSION, StateSnapshot
from volspike_funding.store.view import View

log = logging.getLogger("funding.store")

#: Daemon status records read per refresh (more are counted as invalid, never read).
MAX_STATUSES = 64

def _client(url: str) -> Any:
    import redis  # only with FUNDING_STORE_URL: the file-only deployment never loads it

    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=10)


def _loads_or_none(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


def describe(url: str) -> str:
    """The store for logs and health: scheme, host and port, never the password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path or ''}"


class RedisStateWriter:
    """A daemon's writer (:class:`~.backend.StateWriterLike`): changed records through :data:`NEWEST_WINS`, its
    status under its own key. Redis errors surface as :class:`StoreUnavailable`, then a backoff, so the daemon keeps streaming and keeps
    its data in memory exactly as on a full disk, and says so (write errors, health)."""

    def __init__(self, url: str, *, max_future_ms: int, slack_ms: int = 5_000, daemon_id: str | None = None) -> None:
        self.url, self.location = url, describe(url)
        self.daemon_id = daemon_id or f"{socket.gethostname()}-{os.getpid()}"
        self._max_future, self._slack = max_future_ms, slack_ms
        self._redis = _client(url)
        self._script = self._redis.register_script(NEWEST_WINS)
        self._heartbeat = self._redis.register_script(HEARTBEAT)
        #: The last reference document written, put back if the store loses it (a restart, FLUSHALL).
        self._reference: bytes | None = None
        self._sent: dict[str, int] = {}
        self._retry_at, self._backoff = 0.0, Backoff(0.5, 10.0)  # 0.5 s, doubling, up to 10 s

    def write(self, document: dict[str, Any]) -> int:
        import redis

        if time.monotonic() < self._retry_at:
            raise StoreUnavailable(f"unavailable; next try in {self._retry_at - time.monotonic():.1f} s")  # the daemon names it
        records = document["funding_state"]
        args: list[Any] = [self._max_future, self._slack, CHANNEL]
        sent = self._sent
        changed = []
        for symbol, record in records.items():
            event = record.get("eventTime")
            if sent.get(symbol) != event:
                args += [symbol, event, orjson.dumps(record)]
                changed.append((symbol, event))
        # What this daemon dropped (delisted, no longer listed) leaves the store too; a daemon that still has it
        # writes it back, until it drops it as well.
        gone = [symbol for symbol in sent if symbol not in records]
        status = {k: v for k, v in document.items() if k != "funding_state"}
        status["daemon_id"] = self.daemon_id
        ttl_ms = int(status_ttl_s(document.get("heartbeat_interval_s")) * 1000)
        try:
            pipe = self._redis.pipeline(transaction=False)
            if changed:
                self._script(keys=[RECORDS, EVENTS, STORED], args=args, client=pipe)
            if gone:
                pipe.hdel(RECORDS, *gone)
                pipe.hdel(EVENTS, *gone)
                pipe.hdel(STORED, *gone)
            self._heartbeat(keys=[DAEMONS, BEATS], args=[self.daemon_id, orjson.dumps(status), ttl_ms], client=pipe)
            if not changed:
                pipe.publish(CHANNEL, 0)  # the heartbeat: readers refresh the daemons' status too
            pipe.exists(REFERENCE)
            has_reference = pipe.execute()[-1]
            if not has_reference and self._reference is not None:
                self._redis.set(REFERENCE, self._reference)
                log.info("reference data put back into redis %s (the store had lost it)", self.location)
        except redis.RedisError as exc:
            self._sent.clear()  # Redis may have restarted empty: send everything once it is back
            self._retry_at = time.monotonic() + self._backoff.next()
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
        if self._backoff.failures:
            log.info("redis %s reachable again; writing", self.location)
        self._backoff.reset()
        sent.update(changed)
        for symbol in gone:
            del sent[symbol]
        return len(changed)

    def write_reference(self, document: bytes, listed: Iterable[str] | None = None) -> None:
        """The reference data, for API instances on other hosts (a few times an hour; best effort). With
        ``listed``, records of symbols the listing lacks leave the store too, whoever wrote them: a symbol
        delisted while no daemon ran would otherwise be served as stale for ever instead of "not found"."""
        import redis

        self._reference = document
        try:
            self._redis.set(REFERENCE, document)
            if listed is not None:
                known = set(listed)
                gone = [k for k in self._redis.hkeys(RECORDS) if k.decode(errors="replace") not in known]
                if known and gone:
                    pipe = self._redis.pipeline(transaction=False)
                    for key in (RECORDS, EVENTS, STORED):
                        pipe.hdel(key, *gone)
                    pipe.publish(CHANNEL, len(gone))
                    pipe.execute()
                    log.info("store: %d records of symbols exchangeInfo does not list removed", len(gone))
        except redis.RedisError as exc:
            log.warning("reference data not stored in redis %s: %s", self.location, type(exc).__name__)

    def close(self) -> None:
        self._redis.close()


def snapshot_document(records: dict[str, Any], statuses: list[dict[str, Any]], now: float, *,
                      invalid_statuses: int = 0, store_error: str | None = None) -> dict[str, Any]:
    """The state file's document from the store: the records, and the status of the best daemon (alive and
    connected first, freshest heartbeat next), plus every daemon's id, liveness and connection, the status
    records that were not a daemon's (ignored, counted) and why the store refuses writes, if it does."""
    seen = [(s, DaemonStatus.of(s)) for s in statuses]

    def rank(entry: tuple[dict[str, Any], DaemonStatus]) -> tuple[bool, bool, float]:
        status = entry[1]
        return (not status.stopped, status.connected, status.heartbeat_at or 0.0)

    best = max(seen, key=rank)[0] if seen else {"heartbeat_at": None, "stopped_at": now}
    daemons = [{"id": s.get("daemon_id"), "alive": not status.stopped, "connected": status.connected}
               for s, status in seen]
    return {**best, "schemaVersion": SCHEMA_VERSION, "funding_state": records, "daemons": daemons,
            "invalidDaemonStatuses": invalid_statuses, "storeError": store_error}


class RedisStateCache:
    """The API's view of the store (:class:`~.backend.StateReaderLike`): re-read at once when a daemon publishes a change,
    and at least every ``poll_s``; a Redis error keeps the last view being served, with its true ages."""

    def __init__(self, url: str, poll_s: float = 1.0) -> None:
        self.url, self.location, self.poll_s = url, describe(url), poll_s
        self.view = View()
        self._redis = _client(url)
        self._ref_bytes: bytes | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="redis-watch", daemon=True)
        #: Called on the watcher thread after each change of :attr:`view` (the local WebSocket's hub).
        self.listeners: list[Callable[[], None]] = []

    def start(self) -> "RedisStateCache":
        self.refresh()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._redis.close()

    def _loop(self) -> None:
        import redis

        pubsub = None
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(CHANNEL)
                pubsub.get_message(timeout=self.poll_s)
                while pubsub.get_message(timeout=0) is not None:
                    pass  # a burst of changes is one re-read
            except (redis.RedisError, OSError):
                pubsub = None
                self._stop.wait(self.poll_s)
            try:
                if self.refresh():
                    for listener in self.listeners:
                        listener()
            except Exception:  # as the file's watcher: it must outlive any surprise; the next change retries
                log.exception("store refresh failed")

    def refresh(self) -> bool:
        import redis

        from volspike_funding.store import reference

        previous = self.view
        try:
            pipe = self._redis.pipeline(transaction=False)
            for step in (pipe.time, lambda: pipe.hgetall(RECORDS), lambda: pipe.hgetall(STORED),
                         lambda: pipe.get(REFERENCE), lambda: pipe.hgetall(DAEMONS), lambda: pipe.hgetall(BEATS)):
                step()
            redis_time, raw, stored, ref_bytes, raw_statuses, beats = pipe.execute()
        except redis.RedisError as exc:
            error = StateUnreadable("unreadable", f"redis {self.location}: {type(exc).__name__}: {exc}")
            if previous.error is None:
                log.warning("store problem (%s); serving the last good state with its true age", error)
            self.view = previous.failed(error)
            return True
        ref = None
        if ref_bytes is not None and ref_bytes != self._ref_bytes:  # remembered only once the whole read succeeded
            try:
                ref, self._ref_bytes = reference.parse(ref_bytes), ref_bytes
            except StateUnreadable as exc:
                log.warning("reference data in the store not usable: %s", exc)
        # A value that is not JSON (an outsider's edit, a bug) costs its own symbol or status, never the read: a
        # record becomes None, which the readers' record check counts as invalid, like a bad record in the file.
        now = time.time()
        store_now_s = store_now(redis_time)
        offset = now - store_now_s  # the reader's clock minus the store's: every cross-host time is the store's
        records = {k.decode(errors="replace"): _loads_or_none(v) for k, v in raw.items()}
        for key, stamp in stored.items():
            record, at = records.get(key.decode(errors="replace")), beat_ms(stamp)
            if isinstance(record, dict) and at is not None:
                record["updatedAt"] = at / 1000 + offset
        statuses, invalid = [], 0
        for key, value in list(raw_statuses.items())[:MAX_STATUSES]:
            daemon_id = key.decode(errors="replace")
            status = checked_status(daemon_id, _loads_or_none(value), beat_ms(beats.get(key)),
                                    store_now_s * 1000, offset)
            if status is None:
                invalid += 1
            else:
                statuses.append(status)
        invalid += max(0, len(raw_statuses) - MAX_STATUSES)
        store_error = None if any(s.get("stopped_at") is None for s in statuses) else self._write_refusal()
        document = snapshot_document(records, statuses, now, invalid_statuses=invalid, store_error=store_error)
        if previous.error is not None:
            log.info("store readable again")
        self.view = previous.read(StateSnapshot(document, records, time.time()), ref)
        return True

    def _write_refusal(self) -> str | None:
        """With no live daemon status: whether the store refuses writes (``maxmemory`` reached), which would
        read as "daemon stopped" while the daemons run and retry. One tiny expiring key, never a record."""
        import redis

        try:
            self._redis.set(PROBE, b"1", px=5_000)
        except redis.ResponseError as exc:
            return f"redis {self.location} refuses writes ({type(exc).__name__}: {str(exc).rstrip('.')})"
        except redis.RedisError:
            return None  # unreachable: the read just before succeeded; the next refresh says it
        return None
