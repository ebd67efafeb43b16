"""A small threaded HTTP server on loopback for the fakes: routing, JSON, fault injection and request counts."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.error import HTTPError
from urllib.parse import parse_qs, urlsplit
from urllib.request import urlopen


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    #: When it arrived (``time.monotonic``): what a test of "nothing asked until Retry-After" compares.
    at: float = 0.0


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] | None = None


Handler = Callable[[Request], Reply]


def free_port() -> int:
    """An ephemeral loopback port nobody listens on (for a server started as another process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, timeout: float = 20.0,
                       ready: Callable[[int, bytes], bool] = lambda status, body: status == 200) -> None:
    """Wait until a server started as another process answers ``url`` as ``ready`` (status, body) wants; a server
    not there yet, or an answer ``ready`` cannot read, means "not yet". ``TimeoutError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            try:
                with urlopen(url, timeout=1) as reply:
                    status, body = reply.status, reply.read()
            except HTTPError as answer:  # a 4xx/5xx is an answer too
                status, body = answer.code, answer.read()
            if ready(status, body):
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} was not ready within {timeout:g} s")
        time.sleep(0.1)


@dataclass
class Fault:
    status: int
    count: int
    headers: dict[str, str]
    body: Any
    delay_s: float


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (a size bound, a timeout) is one of the faults tested, not a bug here.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class HttpFake:
    """Subclasses register routes in ``routes`` as ``(method, path-or-prefix)``; a prefix ends with ``*``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.counts: Counter[str] = Counter()
        self.requests: list[Request] = []
        #: TCP connections accepted (a client reusing its keep-alive connections adds none).
        self.connections = 0
        self._faults: dict[str, list[Fault]] = {}
        #: Seconds every answer on a path takes (a droplet's REST round trip is 150-300 ms), for benchmarks.
        self.latency_s: dict[str, float] = {}
        self._lock = threading.Lock()
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:  # once per connection; handle() then serves its keep-alive requests
                super().setup()
                with fake._lock:
                    fake.connections += 1

            def _serve(self) -> None:
                fake._dispatch(self)

            do_GET = do_POST = _serve

        self._server = _Server((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=type(self).__name__, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "HttpFake":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "HttpFake":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def fail(self, path: str, status: int, count: int = 1, *, headers: dict[str, str] | None = None,
             body: Any = None, delay_s: float = 0.0) -> None:
        """The next ``count`` requests to ``path`` answer ``status`` (after ``delay_s``)."""
        with self._lock:
            self._faults.setdefault(path, []).append(Fault(status, count, headers or {}, body, delay_s))

    def common_headers(self) -> dict[str, str]:
        """Headers a subclass puts on injected faults' answers too (its routes add their own)."""
        return {}

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(path)
            if not queue:
                return None
            fault = queue[0]
            fault.count -= 1
            if fault.count <= 0:
                queue.pop(0)
            return fault

    def _route(self, method: str, path: str) -> Handler | None:
        handler = self.routes.get((method, path))
        if handler is None:
            for (m, pattern), candidate in self.routes.items():
                if m == method and pattern.endswith("*") and path.startswith(pattern[:-1]):
                    return candidate
        return handler

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw and "json" in (h.headers.get("Content-Type") or "") else raw.decode()
        except ValueError:
            body = raw.decode(errors="replace")
        request = Request(h.command, parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()},
                          {k.lower(): v for k, v in h.headers.items()}, body, time.monotonic())
        with self._lock:
            self.counts[parts.path] += 1
            self.requests.append(request)
        delay = self.latency_s.get(parts.path, self.latency_s.get("*", 0.0))
        if delay:
            time.sleep(delay)
        fault = self._take_fault(parts.path)
        if fault is not None:
            time.sleep(fault.delay_s)
            reply = Reply(fault.status, fault.body if fault.body is not None else {"error": "injected"},
                          {**self.common_headers(), **fault.headers})
        else:
            handler = self._route(h.command, parts.path)
            reply = handler(request) if handler else Reply(404, {"error": "no such route"})
        data = json.dumps(reply.body, ensure_ascii=False).encode()
        try:
            h.send_response(reply.status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for key, value in (reply.headers or {}).items():
                h.send_header(key, value)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer
