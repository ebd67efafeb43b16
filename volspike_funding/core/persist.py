"""Atomic file replacement, shared by every file this package writes (state file, alert dedup, cooldowns)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"


def atomic_replace(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to a unique temp file beside ``path``, then rename it over ``path``.

    A reader sees the old or the new content, never a mix; a crash leaves at most an orphaned temp file, which
    :func:`remove_orphans` cleans up. No fsync: the rename is atomic against process crashes, and every file
    written here is rewritten again within seconds.
    """
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            os.fchmod(stream.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_through(tmp: str, path: str, data: bytes, mode: int = 0o644) -> None:
    """:func:`atomic_replace` through a fixed temp name ``tmp`` (beside ``path``, named so :func:`remove_orphans`
    finds it), for a file's sole writer only: two writers would share the temp file. For the state file, written
    every second: ``mkstemp`` and a buffered file object cost a third of the write (0.20 → 0.14 ms, 212 KiB)."""
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:  # a regular file takes it all at once unless the disk is full (which raises)
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)  # the umask applied to os.open's mode
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_orphans(path: Path) -> None:
    """Remove temp files a killed writer of ``path`` left behind (call only as that file's sole writer)."""
    for orphan in path.parent.glob(f"{TEMP_PREFIX}{path.name}.*"):
        orphan.unlink(missing_ok=True)


def load_json(path: Path, default: Any) -> Any:
    """A small JSON file, or ``default`` when it is missing; a corrupt one is logged and replaced by ``default``."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as exc:
        log.error("%s is unreadable (%s); starting from an empty state", path, exc)
        return default


def save_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_replace(path, json.dumps(value, ensure_ascii=False, sort_keys=True).encode())
