"""Loading a consumer's at-most-once memory (the volume dedupe file, the OI cooldowns) without trusting a bad one.

Those files are what stops a restart from sending the hour's alerts again. One that cannot be read (not JSON,
``null``, the wrong shape) is moved aside as ``<name>.unreadable-<UTC time>`` (kept for a post-mortem, never
silently overwritten) and logged at ERROR. One that is missing while the consumer's status file shows it ran
recently was deleted. In both cases the caller is told the memory is *suspect* and must err on the side of not
sending what may already have been sent.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from volspike_funding.core.persist import save_json
from volspike_funding.store import consumer_status

log = logging.getLogger("funding.state")

#: A status file younger than this means the consumer ran lately, so its missing state file was deleted.
RECENT_S = 2 * 3600.0


def load_guarded(path: Path, consumer: str, valid: Callable[[Any], bool],
                 clock: Callable[[], float] = time.time) -> tuple[dict[str, Any], bool]:
    """The state in ``path`` (``{}`` when there is none) and whether it is suspect (see the module's doc)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        status = consumer_status.status_path(path, consumer)
        try:
            ran_at = status.stat().st_mtime
        except OSError:
            ran_at = float("-inf")
        if clock() - ran_at < RECENT_S:
            # Left missing while suspect: a restart during the hold is suspect again. The caller writes the file
            # when the hold ends.
            log.error("%s is missing although %s ran %.0f s ago (%s): it was deleted; alerts that may already have "
                      "been sent are held back", path, consumer, clock() - ran_at, status)
            return {}, True
        # A first start (nothing was sent that could be sent again). Written now, so that from here on a missing
        # file beside a recent status file can only mean it was deleted, even if nothing is ever alerted.
        save_json(path, {})
        return {}, False
    except OSError as exc:
        return _set_aside(path, f"unreadable ({exc})")
    try:
        value = json.loads(raw)
    except ValueError as exc:
        return _set_aside(path, f"not JSON ({exc})")
    if not isinstance(value, dict) or not valid(value):
        return _set_aside(path, f"not a valid state ({type(value).__name__}: {raw[:80]!r})")
    return value, False


def _set_aside(path: Path, problem: str) -> tuple[dict[str, Any], bool]:
    aside = path.with_name(f"{path.name}.unreadable-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
    try:
        os.replace(path, aside)
        kept = f"kept aside as {aside}"
    except OSError as exc:
        kept = f"could not be moved aside ({exc})"
    log.error("%s is %s; %s. Starting without it: alerts that may already have been sent are held back", path,
              problem, kept)
    return {}, True
