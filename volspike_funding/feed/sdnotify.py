"""systemd's notify protocol (``sd_notify``) without a dependency: one datagram per message to ``$NOTIFY_SOCKET``.

A no-op when the variable is unset, so the daemon runs the same under systemd, in a shell and in tests.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        # An abstract socket is written "@name" and addressed with a leading NUL byte.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        watchdog_for_us = usec.isdigit() and (not pid or pid == str(os.getpid()))
        #: systemd's watchdog timeout in seconds, or ``None`` when systemd expects no pets.
        self.watchdog_s: float | None = int(usec) / 1e6 if watchdog_for_us else None
        self._last_pet = float("-inf")

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *lines: str) -> bool:
        if not self._address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self._address)
            return True
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self._address.lstrip("\0"), exc)
            return False

    def pet(self, mono: float, fresh: bool, status: Callable[[], str]) -> None:
        """``WATCHDOG=1`` four times per watchdog period, only while the data is ``fresh``: a daemon that runs but
        serves stale data is restarted by systemd."""
        if self.watchdog_s is None or not fresh or mono - self._last_pet < self.watchdog_s / 4:
            return
        self._last_pet = mono
        self.notify("WATCHDOG=1", status())

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def status_line(symbols: int, data_age: float | None, connected: bool, cannot_write: str | None) -> str:
    """The ``STATUS=`` line ``systemctl status`` shows; ``cannot_write``: where writes fail (a full disk, or the
    shared store unreachable)."""
    state = ("connected" if connected else "disconnected") + (f", cannot write {cannot_write}" if cannot_write else "")
    age_text = "no data yet" if data_age is None else f"newest data {data_age:.1f} s old"
    return f"STATUS={symbols} symbols, {age_text}, {state}"
