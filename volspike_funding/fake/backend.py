"""A fake VolSpike backend and a fake Telegram Bot API on loopback, recording what they receive.

Like the real backend it answers 401 to a wrong ``X-API-Key`` and 400 to a body with a ``null`` value.
"""

from __future__ import annotations

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
        self.routes = {
            ("POST", "/api/volume-alerts/ingest"): self._ingest(self.volume_alerts),
            ("POST", "/api/market/open-interest/ingest"): self._ingest(self.oi_samples),
            ("POST", "/api/open-interest-alerts/ingest"): self._ingest(self.oi_alerts),
            ("GET", "/api/market/open-interest/snapshot"): self._snapshot,
            ("GET", "/api/market/open-interest/liquid-universe"): self._universe,
        }

    def _authorised(self, request: Request) -> bool:
        return request.headers.get("x-api-key") == self.api_key

    def _ingest(self, into: list[dict[str, Any]]) -> Any:
        def handle(request: Request) -> Reply:
            if not self._authorised(request):
                return Reply(401, {"error": "Unauthorized"})
            if not isinstance(request.body, dict):
                return Reply(400, {"error": "JSON body required"})
            if _has_null(request.body):
                return Reply(400, {"error": "null values are not accepted"})
            into.append(request.body)
            return Reply(200, {"success": True})
        return handle

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
        return Reply(200, {"symbols": [{"symbol": s} for s in self.liquid_universe]})


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
