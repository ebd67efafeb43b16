"""The API's connection policy (api/protocol.py) directly, in process, against the real uvicorn on loopback:
the request-head deadline, the connection cap, 431/400 JSON answers, the descriptor limit and accept errors."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from volspike_funding.api import protocol
from volspike_funding.api.protocol import (FD_HEADROOM, MAX_HEAD_BYTES, effective_max_connections, protocol_class,
                                           quiet_accept_errors, raise_fd_limit)
from volspike_funding.api.server import ServerThread
from volspike_funding.core.logs import RateLimitedLog
from volspike_funding.core.settings import Settings

from ..conftest import ROOT, scaled, scaled_s
from .test_api import put_state, record

HEAD_TIMEOUT = 0.3  # seconds, before scaling
MAX_CONNECTIONS = 4
REQUEST = b"GET /funding/BTCUSDT HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def api(make_settings: Callable[..., Settings]) -> Iterator[ServerThread]:
    settings = make_settings(FUNDING_API_HEADER_TIMEOUT_S=scaled_s(HEAD_TIMEOUT),
                             FUNDING_API_MAX_CONNECTIONS=str(MAX_CONNECTIONS))
    put_state(settings.state_file, {"BTCUSDT": record("BTCUSDT", 0)})
    with ServerThread(settings, poll_s=0.05) as server:
        yield server


def connect(api: ServerThread) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(api.url.rsplit(":", 1)[1])))
    sock.settimeout(scaled(5))
    return sock


def read_response(sock: socket.socket) -> tuple[bytes, dict[str, Any]]:
    """One whole response (status line, JSON body) read off the socket: by its content-length, or to the close."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    while (len(body) < lengths[0]) if lengths else (chunk := sock.recv(65536)):
        body += sock.recv(65536) if lengths else chunk
    return head.split(b"\r\n")[0], json.loads(body)


def closed_by_server(sock: socket.socket) -> float:
    """Seconds until the server closes ``sock`` (EOF or reset)."""
    started = time.monotonic()
    try:
        assert sock.recv(1) == b""
    except ConnectionResetError:
        pass
    return time.monotonic() - started


# -- the request-head deadline ----------------------------------------------------------------------------------

def test_a_connection_that_sends_nothing_is_closed_at_the_head_deadline(api: ServerThread) -> None:
    with connect(api) as sock:
        assert closed_by_server(sock) < scaled(3)  # the deadline, not the client's 5 s timeout


def test_a_head_that_never_ends_is_closed_even_while_bytes_keep_coming(api: ServerThread) -> None:
    """uvicorn's keep-alive timer restarts on every byte; the head deadline does not."""
    with connect(api) as sock:
        sock.sendall(b"GET /funding/BTCUSDT HTTP/1.1\r\n")
        started = time.monotonic()
        with pytest.raises(OSError):  # BrokenPipe/ConnectionReset once the server has closed
            while time.monotonic() - started < scaled(5):
                sock.sendall(b"X-Slow: 1\r\n")
                time.sleep(scaled(HEAD_TIMEOUT) / 10)
        assert time.monotonic() - started < scaled(3)


def test_a_keep_alive_connection_gets_a_new_deadline_after_each_response(api: ServerThread) -> None:
    with connect(api) as sock:
        for _ in range(3):  # three requests, each well inside its own deadline, over more than one deadline in all
            sock.sendall(REQUEST)
            status, body = read_response(sock)
            assert status == b"HTTP/1.1 200 OK" and body["symbol"] == "BTCUSDT"
            time.sleep(scaled(HEAD_TIMEOUT) / 2)
        assert closed_by_server(sock) < scaled(3)  # then idle: closed like a new connection


# -- the connection cap ---------------------------------------------------------------------------------------------

def test_beyond_the_cap_a_new_connection_gets_a_json_503_at_once_and_the_others_still_work(api: ServerThread) -> None:
    held = [connect(api) for _ in range(MAX_CONNECTIONS)]
    try:
        with connect(api) as extra:
            started = time.monotonic()
            status, body = read_response(extra)
            assert status == b"HTTP/1.1 503 Service Unavailable" and body == {
                "detail": {"error": "Too many connections; please retry"}}
            assert time.monotonic() - started < scaled(1) and closed_by_server(extra) < scaled(1)
        held[0].sendall(REQUEST)  # the connections inside the cap are served
        assert read_response(held[0])[0] == b"HTTP/1.1 200 OK"
    finally:
        for sock in held:
            sock.close()


# -- 431 and 400 ---------------------------------------------------------------------------------------------------

def test_a_head_over_the_limit_gets_431_in_the_api_error_shape(api: ServerThread) -> None:
    with connect(api) as sock:
        sock.sendall(b"GET /funding/batch?symbols=" + b"A" * (MAX_HEAD_BYTES + 1024))
        status, body = read_response(sock)
        assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
        assert body == {"detail": {"error": "Request head too large"}}


def test_a_long_url_under_the_limit_is_answered_not_refused(api: ServerThread) -> None:
    with connect(api) as sock:
        sock.sendall(b"GET /funding/batch?symbols=" + b"BTCUSDT," * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _ = read_response(sock)
        assert status.split()[1] in (b"200", b"422")  # past h11's 16 KiB default: the app answers it


@pytest.mark.parametrize("garbage", [b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"])
def test_a_malformed_request_gets_400_in_the_api_error_shape(api: ServerThread, garbage: bytes) -> None:
    with connect(api) as sock:
        sock.sendall(garbage)
        status, body = read_response(sock)
        assert status == b"HTTP/1.1 400 Bad Request" and body == {"detail": {"error": "Invalid HTTP request"}}
        assert closed_by_server(sock) < scaled(1)


def test_protocol_class_carries_its_limits() -> None:
    cls = protocol_class(1.5, 7)
    assert issubclass(cls, protocol.GuardedH11Protocol) and (cls.header_timeout_s, cls.max_connections) == (1.5, 7)
    assert protocol.GuardedH11Protocol.max_connections == 4096  # the base class is left alone


# -- descriptors ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("configured, fds, expected", [(4096, 1024, 1024 - FD_HEADROOM), (100, 65536, 100),
                                                       (4096, FD_HEADROOM, 1), (4096, 10, 1)])
def test_the_cap_leaves_descriptor_headroom(configured: int, fds: int, expected: int) -> None:
    assert effective_max_connections(configured, fds) == expected


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 256:
        pytest.skip(f"needs a finite hard limit of at least 256 (here {hard})")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
        assert raise_fd_limit() == hard and resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        assert raise_fd_limit() == hard  # already there: nothing to do
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- accept errors ----------------------------------------------------------------------------------------------

def test_accept_errors_are_one_line_a_minute_and_other_errors_reach_the_previous_handler(
        caplog: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(protocol, "_accept_log", RateLimitedLog(protocol.log, 60.0, clock=lambda: now[0]))
    caplog.set_level(logging.WARNING, "funding.api")
    loop = asyncio.new_event_loop()
    try:
        others: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: others.append(context))
        quiet_accept_errors(loop)
        emfile = {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")}
        for _ in range(5):
            loop.call_exception_handler(emfile)
        assert caplog.text.count("cannot accept connections: Too many open files") == 1 and not others
        now[0] += 60
        loop.call_exception_handler(emfile)
        assert caplog.text.count("cannot accept connections") == 2 and "(4 more since the last report)" in caplog.text
        assert "Traceback" not in caplog.text
        loop.call_exception_handler({"message": "Task exception was never retrieved", "exception": ValueError("x")})
        loop.call_exception_handler({"message": "accept() failed", "exception": ValueError("not an OSError")})
        assert [c["message"] for c in others] == ["Task exception was never retrieved", "accept() failed"]
    finally:
        loop.close()


def test_without_a_previous_handler_other_errors_go_to_asyncios_default(caplog: Any) -> None:
    caplog.set_level(logging.ERROR, "asyncio")
    loop = asyncio.new_event_loop()
    try:
        quiet_accept_errors(loop)
        loop.call_exception_handler({"message": "something else broke", "exception": RuntimeError("boom")})
        assert "something else broke" in caplog.text
    finally:
        loop.close()


ACCEPT_SERVER = """
import asyncio, logging, resource, socket, sys
sys.path.insert(0, sys.argv[1])
from volspike_funding.api.protocol import quiet_accept_errors
logging.basicConfig(level=logging.WARNING, format="%(message)s")

async def main() -> None:
    quiet_accept_errors(asyncio.get_running_loop())
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    held = []
    try:  # use up every descriptor but none: the next accept() fails with EMFILE
        while True:
            held.append(socket.socket())
    except OSError:
        pass
    await asyncio.sleep(float(sys.argv[2]))

asyncio.run(main())
"""


def test_a_real_emfile_on_accept_is_one_log_line_without_a_traceback(tmp_path: Path) -> None:
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    script = tmp_path / "accept_server.py"
    script.write_text(ACCEPT_SERVER)
    proc = subprocess.Popen(["prlimit", "--nofile=64:64", sys.executable, str(script), str(ROOT), str(scaled(1.5))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        _, stderr = proc.communicate(timeout=scaled(30))
    finally:
        for client in clients:
            client.close()
    assert proc.returncode == 0, stderr
    assert stderr.count("cannot accept connections: Too many open files") == 1 and "Traceback" not in stderr
