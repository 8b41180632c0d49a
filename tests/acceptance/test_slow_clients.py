"""Slow clients over real sockets against the real server (uvicorn with campaign.http_guard):
trickled headers and bodies are cut off, and hundreds of them never lock out a real client."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.acceptance.conftest import NOW, _serve
from tests.conftest import EngineFactory
from tests.smtp_server import free_port

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 1.0
MAX_CONNECTIONS = 100
PARTIAL = b"POST /subscribe HTTP/1.1\r\nHost: x\r\nUser-Agent: slow"


@pytest.fixture
def server(engine: EngineFactory) -> Iterator[str]:
    """A served engine with small limits, so the test is fast; its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app, _ = engine(
        NOW,
        PUBLIC_BASE_URL=url,
        SIGNUP_RATE_PER_MINUTE="1000",
        HTTP_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        HTTP_BODY_TIMEOUT=str(BODY_TIMEOUT),
        HTTP_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    )
    app.signups.double_opt_in = False  # the welcome is sent during the signup request
    serving = _serve(app, port)
    next(serving)
    yield url
    next(serving, None)


def _connect(url: str, first: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5)
    sock.sendall(first)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed it (EOF or reset); False while it is still open."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def _wait_closed(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing `sock` within `seconds`; None if it stayed open."""
    sock.settimeout(seconds)
    received = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                return received
            received += chunk
    except ConnectionResetError:
        return received
    except TimeoutError:
        return None
    return None


def test_hundreds_of_trickling_connections_never_lock_out_a_real_signup(server: str) -> None:
    """300 sockets trickling a request header: the server keeps at most its cap open, closes
    the oldest of them to make room, and a real client's signup succeeds within seconds."""
    slow = [_connect(server, PARTIAL) for _ in range(300)]
    try:
        for sock in slow:  # one more byte each: still alive, still no whole header
            with contextlib.suppress(OSError):  # already closed by the server: the point
                sock.send(b"x")
        started = time.monotonic()
        answer = httpx.post(server + "/subscribe", data={"email": "real@example.org"}, timeout=10)
        elapsed = time.monotonic() - started
        assert answer.status_code == 200
        assert "Check your email" in answer.text
        assert elapsed < 5
        closed = sum(_closed_by_server(sock) for sock in slow)
        assert closed >= 300 - MAX_CONNECTIONS
        survivors = [sock for sock in slow if not _closed_by_server(sock)]
        for sock in survivors:  # the rest go when their header deadline passes
            assert _wait_closed(sock, HEADER_TIMEOUT + 3) is not None
    finally:
        for sock in slow:
            sock.close()


def test_a_trickled_header_is_cut_off_after_the_header_timeout(server: str) -> None:
    """A request line sent a byte at a time (also on a kept-alive connection, after a whole
    request) is closed when HTTP_HEADER_TIMEOUT has passed since it began."""
    sock = _connect(server, b"GET /subscr")
    started = time.monotonic()
    deadline = started + HEADER_TIMEOUT + 3
    while time.monotonic() < deadline and not _closed_by_server(sock):
        try:
            sock.send(b"i")
        except OSError:
            break
        time.sleep(0.2)  # the client's trickle, not a wait for a schedule
    assert time.monotonic() - started < HEADER_TIMEOUT + 2
    sock.close()

    kept = _connect(server, b"GET /subscribe HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept.recv(4096).startswith(b"HTTP/1.1 200")
    kept.send(b"GET /subscr")  # the next request on the same connection trickles
    assert _wait_closed(kept, HEADER_TIMEOUT + 3) is not None
    kept.close()


def test_a_trickled_body_gets_408_after_the_body_timeout(server: str) -> None:
    """Headers at once, then a body that never finishes: 408 (or a closed connection) after
    HTTP_BODY_TIMEOUT, for a page that reads the body and one that does not."""
    for path in ("/subscribe", "/healthz"):
        sock = _connect(
            server,
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
            "\r\nContent-Length: 100\r\n\r\nemail=".encode(),
        )
        started = time.monotonic()
        received = _wait_closed(sock, BODY_TIMEOUT + 4)
        assert received is not None, path
        assert time.monotonic() - started < BODY_TIMEOUT + 3
        if path == "/subscribe":
            assert received.startswith(b"HTTP/1.1 408")
        sock.close()
