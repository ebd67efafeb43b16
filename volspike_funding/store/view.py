"""The API's view of the state file: parsed off the event loop, only when the file changed, kept when it breaks.

A watcher thread wakes on every replace of the file (inotify, see :mod:`.filewatch`), compares the file's identity
``(inode, mtime_ns, size)`` with the last one read, and only then reads and parses it and pre-computes what requests
need. Request handlers only read :attr:`StateCache.view`, an immutable object swapped in one assignment.
"""

from __future__ import annotations

import bisect
import gc
import logging
import threading
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from volspike_funding.store import reference
from volspike_funding.store import statefile
from volspike_funding.core.errors import StateUnreadable
from volspike_funding.store.filewatch import DirWatch
from volspike_funding.store.reference import ReferenceData

log = logging.getLogger("funding.api")


@dataclass(frozen=True)
class View:
    """One parsed state file plus what every request would otherwise recompute."""

    snapshot: statefile.StateSnapshot | None = None
    #: The last read problem (the previous good snapshot keeps being served) and when it began.
    error: StateUnreadable | None = None
    error_since: float | None = None
    read_errors: int = 0
    #: Binance's reference data as the daemon last wrote it (``None`` until there is a usable file).
    reference: ReferenceData | None = None

    @property
    def symbols(self) -> dict[str, dict[str, Any]]:
        return self.snapshot.symbols if self.snapshot is not None else {}

    @cached_property
    def updated_sorted(self) -> list[float]:
        """Every symbol's ``updatedAt``, sorted (to count stale symbols with one bisection); computed at the first
        health or metrics request, not between the daemon's write and the first answer showing it."""
        return sorted(u for r in self.symbols.values() if isinstance(u := r.get("updatedAt"), (int, float)))

    def failed(self, error: StateUnreadable, counted: bool = True) -> "View":
        """After a failed read: the last good snapshot keeps being served; the problem and when it began are kept."""
        since = self.error_since if self.error is not None else time.time()
        return View(self.snapshot, error, since, self.read_errors + counted, self.reference)

    def read(self, snapshot: statefile.StateSnapshot, reference: ReferenceData | None = None) -> "View":
        """After a good read: the new snapshot (and reference data, if new), the problem over."""
        return View(snapshot, read_errors=self.read_errors,
                    reference=self.reference if reference is None else reference)

    def stale_count(self, now: float, stale_after: float) -> int:
        return bisect.bisect_left(self.updated_sorted, now - stale_after)

    def stale_names(self, now: float, stale_after: float, limit: int = 50) -> list[str]:
        cutoff = now - stale_after
        names = [n for n, rec in self.symbols.items() if not isinstance(rec.get("updatedAt"), (int, float))
                 or rec["updatedAt"] < cutoff]
        return sorted(names)[:limit]


def _read_without_gc(path: Path) -> statefile.StateSnapshot:
    """Parse with the cyclic GC paused: a snapshot's ~1,500 new dicts would otherwise trigger collections that also
    walk the previous snapshot, right between the daemon's write and the first answer showing it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return statefile.read_state(path)
    finally:
        if enabled:
            gc.enable()


class StateCache:
    def __init__(self, path: Path, poll_s: float = 0.5, reference_path: Path | None = None) -> None:
        self.path = path
        self.reference_path = reference_path or path.with_name(".funding_reference.json")
        self.view = View()
        self._identity: statefile.FileIdentity | None | str = "never read"
        self._reference_identity: statefile.FileIdentity | None | str = "never read"
        self._watch = DirWatch(path.parent, poll_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="state-watch", daemon=True)
        #: Called on the watcher thread after each change of :attr:`view` (the local WebSocket's hub).
        self.listeners: list[Callable[[], None]] = []

    @property
    def location(self) -> str:
        return str(self.path)

    def start(self) -> "StateCache":
        self.refresh()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._watch.wake()
        self._thread.join(5)
        self._watch.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._watch.wait()
            try:
                if self.refresh():
                    for listener in self.listeners:
                        listener()
            except Exception:  # the watcher must outlive any surprise; the next change retries
                log.exception("state refresh failed")

    def _refresh_reference(self) -> bool:
        """Re-read the reference file if it changed; a broken one keeps the last good copy (logged)."""
        current = statefile.identity(self.reference_path)
        if current == self._reference_identity:
            return False
        self._reference_identity = current
        if current is None:
            return False
        try:
            data = reference.read(self.reference_path)
        except StateUnreadable as exc:
            log.warning("reference file problem (%s); keeping the last good copy", exc)
            return False
        self.view = replace(self.view, reference=data)
        return True

    def refresh(self) -> bool:
        """Re-read the files whose identity changed; return whether the view changed."""
        changed = self._refresh_reference()
        current = statefile.identity(self.path)
        if current == self._identity:
            return changed
        previous = self.view
        try:
            if current is None:
                raise StateUnreadable("missing", f"{self.path} does not exist (is the daemon running?)")
            snapshot = _read_without_gc(self.path)
        except StateUnreadable as exc:
            if previous.error is None or previous.error.reason != exc.reason:
                log.warning("state file problem (%s); %s", exc,
                            "serving the last good state with its true age" if previous.snapshot else
                            "nothing to serve yet")
            self.view = previous.failed(exc, counted=exc.reason != "missing")
            self._identity = current  # after the view: a reader that sees the identity sees its view
            return True
        if previous.error is not None and previous.snapshot is not None:
            log.info("state file readable again")
        self.view = previous.read(snapshot)
        self._identity = current
        return True

    @property
    def identity(self) -> statefile.FileIdentity | None | str:
        """Identity of the file the current view was read from (or failed to be read from)."""
        return self._identity
