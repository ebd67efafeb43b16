"""Wake up when a file in a directory is replaced: Linux inotify through ctypes, with a polling fallback.

The API re-reads the state file within a millisecond of the daemon's ``os.replace`` this way, without a stat per
request and without a dependency. Where inotify is unavailable (another OS, exhausted watches, the directory not
created yet), :meth:`DirWatch.wait` simply returns after the poll interval.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
from pathlib import Path

log = logging.getLogger(__name__)

_IN_CLOSE_WRITE, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x8, 0x80, 0x100, 0x200
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1  # noqa: B018 - probe for the symbol
        return libc
    except (OSError, AttributeError):
        return None


class DirWatch:
    def __init__(self, directory: Path, poll_s: float = 0.5) -> None:
        self._dir = directory
        self._poll_s = poll_s
        self._libc = _libc()
        self._fd = -1
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)

    def _arm(self) -> None:
        if self._fd >= 0 or self._libc is None or not self._dir.is_dir():
            return
        fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            return
        mask = _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
        if self._libc.inotify_add_watch(fd, os.fsencode(self._dir), mask) < 0:
            log.warning("inotify unavailable for %s (errno %d); polling every %.2f s", self._dir,
                        ctypes.get_errno(), self._poll_s)
            os.close(fd)
            self._libc = None
            return
        self._fd = fd

    def wait(self) -> None:
        """Return after something changed in the directory, or after the poll interval at the latest."""
        self._arm()
        watched = [self._wake_r] + ([self._fd] if self._fd >= 0 else [])
        ready, _, _ = select.select(watched, [], [], self._poll_s)
        for fd in ready:
            try:
                while os.read(fd, 65536):
                    pass
            except BlockingIOError:
                pass

    def wake(self) -> None:
        """Make a pending :meth:`wait` return now (from another thread)."""
        os.write(self._wake_w, b"x")

    def close(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._fd = self._wake_r = self._wake_w = -1
