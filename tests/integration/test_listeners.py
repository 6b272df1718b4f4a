"""The HTTP listener's own limits (entrypoints/listeners.py), served in-process by
uvicorn on loopback with a short request deadline and a small connection budget."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from garmin2strava.entrypoints.listeners import Listener, bind, serve_listeners

pytestmark = pytest.mark.integration

DEADLINE_S = 0.5
BUDGET = 8
HEAD_LIMIT = 4096


async def echo(request: Request) -> Response:
    body = await request.body()
    return PlainTextResponse(f"got {len(body)}")


APP = Starlette(routes=[Route("/", echo, methods=["GET", "POST"])])


@contextlib.contextmanager
def serving(deadline_s: float) -> Iterator[Listener]:
    """A listener on a free loopback port, served until the block ends."""
    bound = bind(
        "public",
        "127.0.0.1",
        0,
        settings="TEST",
        max_connections=BUDGET,
        request_deadline_s=deadline_s,
        max_head_bytes=HEAD_LIMIT,
    )
    stop = threading.Event()
    thread = threading.Thread(target=serve_listeners, args=([(bound, APP)], stop), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", bound.bound_port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the listener did not start"
            time.sleep(0.02)
    time.sleep(0.05)  # the probe connection above has gone from the guard
    yield bound
    stop.set()
    thread.join(timeout=15)
    assert not thread.is_alive()


@pytest.fixture
def listener() -> Iterator[Listener]:
    """Served with the short deadline."""
    with serving(DEADLINE_S) as bound:
        yield bound


@pytest.fixture
def patient_listener() -> Iterator[Listener]:
    """Served with a deadline no test step comes near (for the budget)."""
    with serving(30.0) as bound:
        yield bound


def connect(listener: Listener) -> socket.socket:
    return socket.create_connection(("127.0.0.1", listener.bound_port), timeout=5)


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes (or `timeout`)."""
    sock.settimeout(timeout)
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def request(listener: Listener, data: bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") -> bytes:
    with connect(listener) as sock:
        sock.sendall(data)
        sock.settimeout(5)
        return sock.recv(65536)


def test_a_request_that_trickles_in_is_cut_at_the_deadline(listener: Listener) -> None:
    """A head sent one byte every 50 ms (slowloris): 408 and closed at the deadline,
    not kept while it keeps trickling; the server answers others meanwhile."""
    with connect(listener) as slow:
        slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = b""
        slow.settimeout(0.05)
        while time.monotonic() - started < DEADLINE_S * 6:
            try:
                slow.sendall(b"x")
                answer += slow.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if answer:
                break
        took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert took < DEADLINE_S + 0.5, took
    assert request(listener).startswith(b"HTTP/1.1 200")


def test_a_silent_connection_is_closed_at_the_deadline(listener: Listener) -> None:
    """Connected and never a byte (half-open): closed by the server at the deadline."""
    with connect(listener) as silent:
        started = time.monotonic()
        assert read_all(silent) == b""
        took = time.monotonic() - started
    assert DEADLINE_S - 0.1 < took < DEADLINE_S + 0.5, took


def test_a_body_that_never_completes_is_cut_and_the_server_serves_on(
    listener: Listener,
) -> None:
    """Content-Length 100 and 10 bytes sent: cut at the deadline; the next request is
    answered as usual."""
    with connect(listener) as stalled:
        stalled.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        started = time.monotonic()
        read_all(stalled)
        took = time.monotonic() - started
    assert took < DEADLINE_S + 0.5, took
    body = b"a" * 100
    answer = request(listener, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"got 100")


def test_keep_alive_requests_within_the_deadline_are_untouched(listener: Listener) -> None:
    """Three requests on one connection, 0.3 s apart (under the deadline): all 200."""
    with connect(listener) as sock:
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(DEADLINE_S * 0.6)


def test_an_oversized_head_is_431_and_closed(listener: Listener) -> None:
    """A header past the head limit and never finished: 431, the connection closed."""
    with connect(listener) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (HEAD_LIMIT * 2))
        answer = read_all(sock, timeout=2)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:80]


def test_a_head_under_the_limit_is_served(listener: Listener) -> None:
    """A head just under the limit, sent in pieces, is an ordinary request."""
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * (HEAD_LIMIT - 200) + b"\r\n\r\n"
    with connect(listener) as sock:
        for start in range(0, len(head), 1000):
            sock.sendall(head[start : start + 1000])
            time.sleep(0.01)
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_at_the_budget_the_idlest_connection_makes_room(
    patient_listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    """With the budget full of idle connections, a new request is answered at once
    and the connection idle longest is the one closed; the drop is logged once."""
    caplog.set_level(logging.WARNING, logger="garmin2strava.entrypoints.listeners")
    listener = patient_listener
    idle = [connect(listener) for _ in range(BUDGET)]
    try:
        time.sleep(0.1)
        started = time.monotonic()
        answer = request(listener)
        took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 200")
        assert took < 0.5, took
        assert read_all(idle[0], timeout=2) == b""  # closed at once: evicted
        idle[1].settimeout(0.2)
        with pytest.raises(TimeoutError):  # the next oldest is still open
            idle[1].recv(1)
    finally:
        for sock in idle:
            sock.close()
    dropped = [r for r in caplog.records if r.getMessage() == "http.connections_dropped"]
    assert len(dropped) == 1
    assert dropped[0].__dict__["evictedCount"] == 1
    assert dropped[0].__dict__["limit"] == BUDGET
