"""The directory watcher (store/filewatch.py) on real directories: woken by a replace, a create, a delete or
wake(); polling where inotify cannot be had (no directory yet, descriptors exhausted), then inotify again."""

from __future__ import annotations

import os
import resource
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from volspike_funding.store.filewatch import DirWatch

from ..conftest import scaled

LONG_POLL = 30.0  # a wake-up well before this came from inotify or wake(), not from the poll interval


@pytest.fixture
def armed(tmp_path: Path) -> Iterator[DirWatch]:
    """A watcher whose first wait has armed inotify and returned at once (woken beforehand)."""
    w = DirWatch(tmp_path, poll_s=LONG_POLL)
    w.wake()
    w.wait()
    yield w
    w.close()


def test_a_replace_wakes_a_pending_wait_at_once(tmp_path: Path, armed: DirWatch) -> None:
    def replace() -> None:
        (tmp_path / ".t").write_text("{}")
        os.replace(tmp_path / ".t", tmp_path / "state.json")
    assert pending_wait(armed, replace) < scaled(2)


@pytest.mark.parametrize("change", ["create", "delete"])
def test_a_create_or_delete_wakes_it_too(tmp_path: Path, armed: DirWatch, change: str) -> None:
    target = tmp_path / "f"
    if change == "delete":
        target.write_text("x")
        armed.wait()  # the create above is consumed here
    assert pending_wait(armed, target.touch if change == "create" else target.unlink) < scaled(2)


def test_wake_from_another_thread_returns_a_pending_wait(armed: DirWatch) -> None:
    assert pending_wait(armed, armed.wake) < scaled(2)


def test_nothing_happening_returns_after_the_poll_interval(tmp_path: Path) -> None:
    w = DirWatch(tmp_path, poll_s=scaled(0.2))
    try:
        started = time.monotonic()
        w.wait()
        assert scaled(0.15) <= time.monotonic() - started < scaled(3)
    finally:
        w.close()


def test_a_directory_made_later_is_polled_until_it_exists_then_watched(tmp_path: Path) -> None:
    later = tmp_path / "not-yet"
    w = DirWatch(later, poll_s=scaled(0.2))
    try:
        started = time.monotonic()
        w.wait()  # no directory: nothing to watch, the poll interval passes
        assert time.monotonic() - started >= scaled(0.15)
        later.mkdir()
        w._poll_s = LONG_POLL  # from here a prompt return can only be inotify's doing
        w.wake()
        w.wait()  # the first wait after the directory appeared arms inotify (and returns at once, woken)
        assert pending_wait(w, lambda: (later / "state.json").write_text("{}")) < scaled(2)
    finally:
        w.close()


def test_exhausted_descriptors_mean_polling_and_inotify_comes_back_after(tmp_path: Path) -> None:
    w = DirWatch(tmp_path, poll_s=scaled(0.2))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[socket.socket] = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 4096), hard))
        try:
            while True:
                held.append(socket.socket())
        except OSError:
            pass
        started = time.monotonic()
        w.wait()  # inotify_init1 fails (EMFILE): the wait still returns, at the poll interval
        assert time.monotonic() - started >= scaled(0.15)
    finally:
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        w._poll_s = LONG_POLL
        w.wake()
        w.wait()  # descriptors back: this wait arms inotify
        assert pending_wait(w, lambda: (tmp_path / "state.json").write_text("{}")) < scaled(2)
    finally:
        w.close()


def test_close_releases_every_descriptor_and_twice_is_harmless(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    w = DirWatch(tmp_path, poll_s=scaled(0.05))
    w.wait()
    assert len(os.listdir("/proc/self/fd")) == before + 3  # the wake pipe's two ends and the inotify descriptor
    w.close()
    w.close()
    assert len(os.listdir("/proc/self/fd")) == before


def pending_wait(watch: DirWatch, action: Callable[[], None]) -> float:
    """Seconds a wait() already blocked in another thread took to return once ``action`` ran."""
    blocked = threading.Event()
    took: list[float] = []

    def waiter() -> None:
        blocked.set()
        started = time.monotonic()
        watch.wait()
        took.append(time.monotonic() - started)

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    blocked.wait()
    action()  # whether the waiter is in select() yet or not, inotify holds the event for it
    thread.join(LONG_POLL + 5)
    assert took, "wait() did not return"
    return took[0]
