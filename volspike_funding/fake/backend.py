"""A fake VolSpike backend and a fake Telegram Bot API on loopback, recording what they receive.

As strict as the real backend (``volspike-nodejs-backend/src/routes``): 401 to a wrong ``X-API-Key``; volume alerts
checked against the route's zod schema (``ingestAlertSchema``: an optional field may be absent but not null,
datetimes are ISO 8601 with a zone); OI ingest needs a ``data`` array of ``{symbol, openInterest: number}``; an OI
alert needs ``symbol``, ``direction`` (UP/DOWN) and numeric ``baseline``, ``current``. The liquid-universe update
upserts the symbols sent and **deletes every symbol not in it**, as the real one does.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from .http_fake import HttpFake, Reply, Request


def _has_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_null(v) for v in value)
    return False


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_iso(value: Any) -> bool:
    if not isinstance(value, str) or not _ISO.match(value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


#: The volume-alert route's schema: field -> (check, required).
VOLUME_ALERT_SCHEMA: dict[str, tuple[Any, bool]] = {
    "symbol": (lambda v: isinstance(v, str), True), "asset": (lambda v: isinstance(v, str), True),
    "currentVolume": (_is_number, True), "previousVolume": (_is_number, True), "volumeRatio": (_is_number, True),
    "price": (_is_number, False), "fundingRate": (_is_number, False),
    "candleDirection": (lambda v: v in ("bullish", "bearish"), False), "message": (lambda v: isinstance(v, str), True),
    "timestamp": (_is_iso, True), "detectionTime": (_is_iso, False), "hourTimestamp": (_is_iso, True),
    "isUpdate": (lambda v: isinstance(v, bool), False),
    "alertType": (lambda v: v in ("SPIKE", "HALF_UPDATE", "FULL_UPDATE"), False),
    "priceChange": (_is_number, False), "oiChange": (_is_number, False)}


def volume_alert_problems(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["body is not an object"]
    problems = []
    for name, (check, required) in VOLUME_ALERT_SCHEMA.items():
        if name not in body:
            if required:
                problems.append(f"{name}: Required")
        elif not check(body[name]):
            problems.append(f"{name}: invalid {body[name]!r}")
    return problems


def oi_ingest_problems(body: Any) -> list[str]:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return ["Invalid payload: data array required"]
    return [f"data[{i}] needs symbol and a numeric openInterest" for i, item in enumerate(data)
            if not (isinstance(item, dict) and item.get("symbol") and _is_number(item.get("openInterest")))]


def oi_alert_problems(body: Any) -> list[str]:
    if not (isinstance(body, dict) and body.get("symbol") and body.get("direction") in ("UP", "DOWN")
            and _is_number(body.get("baseline")) and _is_number(body.get("current"))):
        return ["Invalid payload: missing required fields"]
    return []


class FakeBackend(HttpFake):
    def __init__(self, api_key: str = "test-key", **kw: Any) -> None:
        super().__init__(**kw)
        self.api_key = api_key
        self.volume_alerts: list[dict[str, Any]] = []
        self.oi_samples: list[dict[str, Any]] = []
        self.oi_alerts: list[dict[str, Any]] = []
        #: ``(symbol, hour ISO) -> open interest`` answered by the snapshot route.
        self.oi_snapshots: dict[tuple[str, str], float] = {}
        self.liquid_universe: list[str] | None = None
        #: Bodies of the accepted liquid-universe updates.
        self.universe_updates: list[dict[str, Any]] = []
        self.routes = {
            ("POST", "/api/volume-alerts/ingest"): self._ingest(self.volume_alerts, volume_alert_problems),
            ("POST", "/api/market/open-interest/ingest"): self._ingest(self.oi_samples, oi_ingest_problems),
            ("POST", "/api/open-interest-alerts/ingest"): self._ingest(self.oi_alerts, oi_alert_problems),
            ("POST", "/api/market/open-interest/liquid-universe/update"): self._universe_update,
            ("GET", "/api/market/open-interest/snapshot"): self._snapshot,
            ("GET", "/api/market/open-interest/liquid-universe"): self._universe,
        }

    def _authorised(self, request: Request) -> bool:
        return request.headers.get("x-api-key") == self.api_key

    def _ingest(self, into: list[dict[str, Any]], problems_of: Any) -> Any:
        def handle(request: Request) -> Reply:
            if not self._authorised(request):
                return Reply(401, {"error": "Unauthorized"})
            if not isinstance(request.body, dict):
                return Reply(400, {"error": "JSON body required"})
            if _has_null(request.body):
                return Reply(400, {"error": "null values are not accepted"})
            problems = problems_of(request.body)
            if problems:
                return Reply(400, {"error": "Invalid alert data", "details": problems})
            into.append(request.body)
            return Reply(200, {"success": True})
        return handle

    def _universe_update(self, request: Request) -> Reply:
        if not self._authorised(request):
            return Reply(401, {"error": "Unauthorized"})
        body = request.body if isinstance(request.body, dict) else {}
        symbols = [s for s in body.get("symbols") or [] if isinstance(s, dict) and s.get("symbol")]
        before = set(self.liquid_universe or [])
        names = [s["symbol"] for s in symbols]
        self.liquid_universe = names  # upsert these, delete the rest: the real route's semantics
        self.universe_updates.append(body)
        return Reply(200, {"success": True, "upserted": len(names), "removed": len(before - set(names)),
                           "totalSymbols": len(names)})

    def _snapshot(self, request: Request) -> Reply:
        if not self._authorised(request):
            return Reply(401, {"error": "Unauthorized"})
        key = (request.query.get("symbol", ""), request.query.get("ts", ""))
        if key not in self.oi_snapshots:
            return Reply(200, {"found": False})
        return Reply(200, {"found": True, "openInterest": self.oi_snapshots[key]})

    def _universe(self, request: Request) -> Reply:
        if self.liquid_universe is None:
            return Reply(503, {"error": "not ready"})
        return Reply(200, {"symbols": [{"symbol": s} for s in self.liquid_universe],
                           "updatedAt": "2026-11-24T00:00:00.000Z"})


class FakeTelegram(HttpFake):
    def __init__(self, token: str = "123:abc", **kw: Any) -> None:
        super().__init__(**kw)
        self.token = token
        self.messages: list[dict[str, Any]] = []
        self.routes = {("POST", "/bot*"): self._send, ("GET", "/bot*"): self._send}

    def _send(self, request: Request) -> Reply:
        if request.path != f"/bot{self.token}/sendMessage":
            return Reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        payload = request.body if isinstance(request.body, dict) else request.query
        if not payload.get("chat_id") or not payload.get("text"):
            return Reply(400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"})
        self.messages.append(payload)
        return Reply(200, {"ok": True, "result": {"message_id": len(self.messages), "text": payload["text"]}})
