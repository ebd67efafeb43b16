"""The consumers' status files: what a consumer tells monitoring (REST 429/418, deliveries). Writer and reader.

Each consumer rewrites ``<its state directory>/<consumer>.status.json`` after every scan or loop (atomic, a few
hundred bytes); the API, given ``FUNDING_CONSUMER_STATUS_DIR``, exports them at ``/metrics`` so one Prometheus
scrape sees the daemon and the consumers. Shape::

    {"consumer": "oi_poller", "updatedAt": 1795478400.1, "pid": 1234,
     "rest": {"requests": 51200, "rateLimited": 0, "banned": 0},
     "deliveries": {"accepted": 1724, "rejected": 0, "uncertain": 0, "dropped": 0}}
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson

from volspike_funding.core.persist import atomic_replace

SUFFIX = ".status.json"
MAX_FILES = 16


def status_path(state_file: Path, consumer: str) -> Path:
    return state_file.with_name(consumer + SUFFIX)


def write(path: Path, consumer: str, rest: dict[str, int], deliveries: dict[str, int]) -> None:
    """Best effort: monitoring must never stop a consumer (a full disk is reported by the daemon's health)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_replace(path, orjson.dumps({"consumer": consumer, "updatedAt": time.time(), "pid": os.getpid(),
                                           "rest": rest, "deliveries": deliveries}))
    except OSError:
        pass


def _count(raw: Any) -> int:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0 else 0


def read_all(directory: Path) -> list[dict[str, Any]]:
    """Every readable, well-formed status file of ``directory`` (bounded; a bad one is skipped)."""
    found = []
    try:
        paths = sorted(directory.glob("*" + SUFFIX))[:MAX_FILES]
    except OSError:
        return []
    for path in paths:
        try:
            doc = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("consumer"), str):
            continue
        updated = doc.get("updatedAt")
        found.append({"consumer": doc["consumer"][:40],
                      "updatedAt": float(updated) if isinstance(updated, (int, float)) else None,
                      "rest": {k: _count((doc.get("rest") or {}).get(k)) for k in ("requests", "rateLimited",
                                                                                  "banned")},
                      "deliveries": {k: _count((doc.get("deliveries") or {}).get(k))
                                     for k in ("accepted", "rejected", "uncertain", "dropped")}})
    return found
