"""A small HTTP forward proxy on loopback that counts what goes through it (tests of
G2S_GARMIN_PROXY).

It forwards absolute-form requests (`GET http://host:port/path HTTP/1.1`, what
requests and curl send to an http proxy for an http URL) and tunnels CONNECT (what they
send for an https URL). With `credentials` it answers 407 to a request without the
matching `Proxy-Authorization: Basic`, as a proxy with a password does. Stdlib only;
every request it forwarded is in `seen` as (method, host:port, path).
"""

from __future__ import annotations

import base64
import http.client
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

__all__ = ["ForwardProxy"]

# Headers that belong to one hop, never forwarded (RFC 9110, 7.6.1).
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_TIMEOUT_S = 30.0
_TUNNEL_CHUNK = 64 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, proxy: ForwardProxy) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.proxy = proxy


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  stdlib's name
        """Quiet: tests read `seen`, not stderr."""

    def _authorized(self) -> bool:
        expected = self.server.proxy.expected_authorization
        if expected is None:
            return True
        if self.headers.get("Proxy-Authorization") == expected:
            return True
        self.server.proxy.note_refused()
        self.send_response(407)
        self.send_header("Proxy-Authenticate", 'Basic realm="g2s"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_CONNECT(self) -> None:
        if not self._authorized():
            return
        host, _, port = self.path.rpartition(":")
        try:
            upstream = socket.create_connection((host, int(port)), timeout=_TIMEOUT_S)
        except OSError:
            self.send_error(502)
            return
        self.server.proxy.note("CONNECT", self.path, "")
        self.send_response(200, "Connection Established")
        self.end_headers()
        self._tunnel(upstream)
        self.close_connection = True

    def _tunnel(self, upstream: socket.socket) -> None:
        sockets = [self.connection, upstream]
        with upstream:
            while True:
                readable, _, broken = select.select(sockets, [], sockets, _TIMEOUT_S)
                if broken or not readable:
                    return
                for source in readable:
                    data = source.recv(_TUNNEL_CHUNK)
                    if not data:
                        return
                    (upstream if source is self.connection else self.connection).sendall(data)

    def _forward(self) -> None:
        if not self._authorized():
            return
        target = urlsplit(self.path)
        if target.scheme != "http" or not target.hostname:
            self.send_error(400, "absolute http:// URL expected")
            return
        path = target.path or "/"
        if target.query:
            path = f"{path}?{target.query}"
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        self.server.proxy.note(self.command, target.netloc, target.path)
        upstream = http.client.HTTPConnection(
            target.hostname, target.port or 80, timeout=_TIMEOUT_S
        )
        try:
            upstream.request(self.command, path, body=body, headers=headers)
            answer = upstream.getresponse()
            content = answer.read()
        except (OSError, http.client.HTTPException):
            self.send_error(502)
            return
        finally:
            upstream.close()
        self.send_response(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def do_PUT(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()


class ForwardProxy:
    """`with ForwardProxy() as proxy:` then `proxy.url`; `seen` lists what it forwarded."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self._credentials = credentials
        self._lock = threading.Lock()
        self._seen: list[tuple[str, str, str]] = []
        self._refused = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def expected_authorization(self) -> str | None:
        if self._credentials is None:
            return None
        user, password = self._credentials
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")

    def note(self, method: str, netloc: str, path: str) -> None:
        with self._lock:
            self._seen.append((method, netloc, path))

    def note_refused(self) -> None:
        with self._lock:
            self._refused += 1

    @property
    def seen(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return list(self._seen)

    @property
    def refused(self) -> int:
        """Requests answered 407 (no or wrong credentials)."""
        with self._lock:
            return self._refused

    def reset(self) -> None:
        with self._lock:
            self._seen.clear()
            self._refused = 0

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("ForwardProxy is not started")
        port = self._server.server_address[1]
        if self._credentials is None:
            return f"http://127.0.0.1:{port}"
        user, password = self._credentials
        return f"http://{user}:{password}@127.0.0.1:{port}"

    def start(self) -> Self:
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="forward-proxy",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
