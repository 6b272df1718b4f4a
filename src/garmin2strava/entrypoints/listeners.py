"""The container's HTTP listeners: sockets bound before anything starts, and uvicorn's
HTTP protocol with the limits a public port needs.

`bind` binds in the calling thread, before any thread starts, so a taken port or a
foreign host is one ConfigError. `GuardedProtocol` adds to uvicorn's httptools
protocol a request deadline, a head limit and a connection budget per listener,
logging drops as `http.connections_dropped`. docs/architecture.md, "The HTTP
listeners", says which holes of uvicorn alone they close.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from garmin2strava.errors import ConfigError

__all__ = [
    "MAX_HEAD_BYTES",
    "REQUEST_DEADLINE_S",
    "ConnectionGuard",
    "Listener",
    "bind",
    "connection_budget",
    "serve_listeners",
]

log = logging.getLogger(__name__)

# A request's line and headers; Strava's are about 400 bytes.
MAX_HEAD_BYTES = 16 * 1024
# Head and body of one request, from the moment the server waits for it.
REQUEST_DEADLINE_S = 10.0
LOG_INTERVAL_S = 10.0
BACKLOG = 1024
# Descriptors kept for everything but connections: the SQLite files, the outgoing
# HTTPS connections to Strava and Garmin, temporary files, the event loops.
_RESERVED_FDS = 128
_MAX_CONNECTIONS = 4096
_MIN_CONNECTIONS = 16


def connection_budget(reserve_for_others: int = 0) -> int:
    """Connections one listener may hold: the descriptor limit minus a reserve."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _MAX_CONNECTIONS
    free = int(soft) - _RESERVED_FDS - reserve_for_others
    return max(_MIN_CONNECTIONS, min(_MAX_CONNECTIONS, free))


@dataclass(slots=True)
class ConnectionGuard:
    """One listener's connections, the idle ones oldest first, and the drop counts.
    Lives on the listener's event loop: no lock needed."""

    name: str
    max_open: int
    request_deadline_s: float = REQUEST_DEADLINE_S
    max_head_bytes: int = MAX_HEAD_BYTES
    log_interval_s: float = LOG_INTERVAL_S
    open: set[GuardedProtocol] = field(default_factory=set)
    # Insertion-ordered: the first is the connection that has waited longest.
    idle: dict[GuardedProtocol, None] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)  # since the start
    _unlogged: Counter[str] = field(default_factory=Counter)
    _last_log: float = float("-inf")
    _flush_armed: bool = False

    def admit(self, conn: GuardedProtocol) -> bool:
        """A new connection: make room for it if the budget is spent; False when
        there is none (every connection has a request in hand)."""
        if len(self.open) >= self.max_open:
            oldest = next(iter(self.idle), None)
            if oldest is None:
                self.drop("refused")
                return False
            self.drop("evicted")
            self.gone(oldest)  # now: its connection_lost comes on a later turn of the loop
            oldest.close_now()
        self.open.add(conn)
        self.idle[conn] = None
        return True

    def busy(self, conn: GuardedProtocol) -> None:
        self.idle.pop(conn, None)

    def waiting(self, conn: GuardedProtocol) -> None:
        self.idle.pop(conn, None)
        self.idle[conn] = None  # to the end: it is now the newest idle one

    def gone(self, conn: GuardedProtocol) -> None:
        self.open.discard(conn)
        self.idle.pop(conn, None)

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        self._unlogged[reason] += 1
        now = time.monotonic()
        if now - self._last_log >= self.log_interval_s:
            self._flush()
        elif not self._flush_armed:
            self._flush_armed = True
            asyncio.get_running_loop().call_later(
                self.log_interval_s - (now - self._last_log), self._flush
            )

    def _flush(self) -> None:
        self._flush_armed = False
        if not self._unlogged:
            return
        self._last_log = time.monotonic()
        counts, self._unlogged = dict(self._unlogged), Counter()
        log.warning(
            "http.connections_dropped",
            extra={
                "listener": self.name,
                "open": len(self.open),
                "limit": self.max_open,
                **{f"{reason}Count": n for reason, n in sorted(counts.items())},
            },
        )


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request deadline, a head limit and a place
    in its listener's connection budget (`guard`, set by `protocol_class`)."""

    guard: ConnectionGuard

    def connection_made(  # type: ignore[override]  # uvicorn's own signature
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self._head_bytes = 0
        self._awaiting_head = True
        self._deadline: asyncio.TimerHandle | None = None
        if not self.guard.admit(self):
            self.close_now()
            return
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.gone(self)
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._awaiting_head
            and self._head_bytes > self.guard.max_head_bytes
            and not self.transport.is_closing()
        ):
            self.guard.drop("headTooLarge")
            self._refuse(431, "Request Header Fields Too Large")

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self.guard.busy(self)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # The whole request is in: the app's own limits apply from here.
        self._cancel_deadline()
        self._awaiting_head, self._head_bytes = True, 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self.guard.waiting(self)
            self._arm_deadline()

    def close_now(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _arm_deadline(self) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(self.guard.request_deadline_s, self._expired)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._head_bytes or not self._awaiting_head:
            self.guard.drop("timedOut")  # a request begun and never finished
            self._refuse(408, "Request Timeout")
        else:
            self.guard.drop("idle")  # connected and silent
            self.close_now()

    def _refuse(self, status: int, reason: str) -> None:
        cycle: RequestResponseCycle | None = self.cycle  # None before the first request
        if cycle is not None and not cycle.response_started:
            cycle.keep_alive = False
        body = reason.encode("ascii")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, body, len(body), body)
        )
        self.close_now()


def protocol_class(guard: ConnectionGuard) -> type[GuardedProtocol]:
    """A protocol class bound to one listener's guard (uvicorn builds the instances)."""
    return type(f"GuardedProtocol_{guard.name}", (GuardedProtocol,), {"guard": guard})


@dataclass(slots=True)
class Listener:
    """One bound address (every socket of it: a name may resolve to v4 and v6), the
    settings that chose it (for messages), its ASGI app, and its guard."""

    name: str
    host: str
    port: int
    settings: str
    sockets: list[socket.socket]
    guard: ConnectionGuard

    @property
    def bound_port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def bind(
    name: str,
    host: str,
    port: int,
    *,
    settings: str,
    max_connections: int,
    request_deadline_s: float = REQUEST_DEADLINE_S,
    max_head_bytes: int = MAX_HEAD_BYTES,
) -> Listener:
    """Bind now; a ConfigError naming `settings` when it cannot. The event loop
    listens once the app has started (until then a connection is refused, not
    left waiting in the backlog)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        msg = f"settings {settings}: cannot listen on {where}: not a host of this machine ({exc})"
        raise ConfigError(msg) from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:
                continue  # a family this kernel lacks (IPv6 off in a container, say)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)  # a port in use fails here already
            sock.setblocking(False)  # noqa: FBT003 (the socket module's signature)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        reason = exc.strerror or type(exc).__name__
        msg = f"settings {settings}: cannot listen on {where}: {reason}"
        raise ConfigError(msg) from None
    if not sockets:
        msg = f"settings {settings}: cannot listen on {where}: no usable address"
        raise ConfigError(msg)
    guard = ConnectionGuard(
        name=name,
        max_open=max_connections,
        request_deadline_s=request_deadline_s,
        max_head_bytes=max_head_bytes,
    )
    return Listener(name, host, port, settings, sockets, guard)


def serve_listeners(
    served: Sequence[tuple[Listener, Callable[..., object]]],
    stop: threading.Event,
) -> None:
    """Serve each listener's app on one event loop until `stop` is set. Raises when
    a server ends by itself (its lifespan failed, ...)."""
    servers = [
        uvicorn.Server(
            uvicorn.Config(
                app,
                log_config=None,  # our JSON logging stays in charge
                access_log=False,
                lifespan="on",  # an app warms its request path before listening
                http=protocol_class(listener.guard),
                timeout_keep_alive=5,
                backlog=BACKLOG,
                timeout_graceful_shutdown=10,
            )
        )
        for listener, app in served
    ]

    async def main() -> None:
        async def run(server: uvicorn.Server, listener: Listener) -> None:
            try:
                await server.serve(sockets=listener.sockets)
            except SystemExit:  # uvicorn's way of saying its startup failed
                msg = f"the {listener.name} listener did not start"
                raise RuntimeError(msg) from None
            if not stop.is_set():
                msg = f"the {listener.name} listener stopped by itself"
                raise RuntimeError(msg)

        tasks = [
            asyncio.create_task(run(server, listener))
            for server, (listener, _app) in zip(servers, served, strict=True)
        ]
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for server in servers:
                server.should_exit = True
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop_servers() -> None:
        stop.wait()
        for server in servers:
            server.should_exit = True  # uvicorn looks at it every 0.1 s

    threading.Thread(target=stop_servers, name="http-stop", daemon=True).start()

    # Off the main thread uvicorn leaves signals alone: they are the daemon's.
    loop_factory = servers[0].config.get_loop_factory() if servers else None
    asyncio.run(main(), loop_factory=loop_factory)
