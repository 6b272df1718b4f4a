"""A Strava API v3 emulator on loopback, for tests and `garmin2strava demo`.

Stdlib only but for `fitdecode` (uploads are judged by activity_files.py, never by the
daemon's check). It emulates what the daemon depends on, traps included (rotating
refresh tokens, rate limits, uploads still processing, duplicates, listing order);
time comes from `clock`, and uploads finish in the background. This module serves
strava_records, strava_state, strava_api and strava_webhooks over HTTP and is the one
to import; sandbox/README.md, "The Strava emulator", has the details.

Two layouts: one origin as Strava was until 2027 (the API under `/api/v3`, OAuth under
`/oauth/`; `base_url`), or with `two_hosts=True` as from 2027-01-04: an API server with
the API at its root and no prefix (`api_url`) and an OAuth-only server (`oauth_url`),
each answering 404 to the other's paths and noting them in `misrouted`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from g2s_sandbox.strava_api import StravaApi
from g2s_sandbox.strava_records import SandboxActivity, SandboxUpload

__all__ = ["SandboxActivity", "SandboxUpload", "StravaSandbox"]


class StravaSandbox(StravaApi):
    """The emulator. Start it (or use it as a context manager) and point a client at
    `base_url` (or, with two hosts, at `api_url` and `oauth_url`). All state is behind
    one lock; tests read it through the attributes."""

    _processing: threading.Thread | None = None
    _stopping: threading.Event | None = None
    PROCESSING_TICK_S = 0.05

    def __init__(self, *, two_hosts: bool = False, **state: Any) -> None:
        super().__init__(**state)
        self.two_hosts = two_hosts
        # Request lines ("METHOD target") per server: "origin", or "api" and "oauth".
        self.host_lines: dict[str, list[str]] = {}
        # Requests one of the two hosts refused as the other's ("api: POST /oauth/token").
        self.misrouted: list[str] = []
        self._servers: dict[str, tuple[ThreadingHTTPServer, threading.Thread]] = {}

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> Self:
        for host in ("api", "oauth") if self.two_hosts else ("origin",):
            self._serve_as(host)
        self.webhooks.start()
        stopping = self._stopping = threading.Event()

        def process() -> None:
            while not stopping.wait(self.PROCESSING_TICK_S):
                self.settle()

        self._processing = threading.Thread(
            target=process, name="strava-sandbox-processing", daemon=True
        )
        self._processing.start()
        return self

    def _serve_as(self, host: str) -> None:
        handler = type("_BoundHandler", (_Handler,), {"sandbox": self, "host": host})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll interval
            name=f"strava-sandbox-{host}",
            daemon=True,
        )
        thread.start()
        self.host_lines[host] = []
        self._servers[host] = (server, thread)

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._processing is not None:
            self._processing.join(timeout=10)
            self._processing = None
        self.webhooks.stop()
        for server, thread in self._servers.values():
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        self._servers.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _origin(self, host: str) -> str:
        if host not in self._servers:
            raise RuntimeError(f"the Strava sandbox serves no {host!r} host (started?)")
        address, port = self._servers[host][0].server_address[:2]
        return f"http://{address!s}:{port}"

    @property
    def base_url(self) -> str:
        """The one origin (Strava's layout until 2027); none with two hosts."""
        return self._origin("origin")

    @property
    def api_url(self) -> str:
        """The API base: `{base_url}/api/v3`, or the API host's root."""
        return self._origin("api") if self.two_hosts else f"{self.base_url}/api/v3"

    @property
    def oauth_url(self) -> str:
        """The origin serving /oauth/*."""
        return self._origin("oauth") if self.two_hosts else self.base_url

    def route(self, host: str, method: str, path: str) -> str | None:
        """The one-origin path a request to `host` means; None (noted in `misrouted`)
        when it belongs to the other host. The API host has no /api/v3 prefix."""
        with self.lock:
            self.host_lines[host].append(f"{method} {path}")
        oauth = path.startswith("/oauth/")
        if host == "origin":
            return path
        if host == "oauth" and oauth:
            return path
        if host == "api" and not oauth and not (path + "/").startswith("/api/v3/"):
            return "/api/v3" + path
        with self.lock:
            self.misrouted.append(f"{host}: {method} {path}")
        return None


class _Handler(BaseHTTPRequestHandler):
    sandbox: StravaSandbox
    host: str  # "origin", "api" or "oauth"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        """Quiet: request lines carry tokens in query strings (stravalib 2.5 style)."""

    def _serve(self, method: str) -> None:
        self.sandbox.record_request(method, self.path)
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.sandbox.route(self.host, method, parts.path)
        status: int
        payload: dict[str, Any] | list[Any]
        extra: dict[str, str]
        if path is None:
            status, payload, extra = 404, {"message": "Not Found", "errors": []}, {}
        else:
            status, payload, extra = self.sandbox.handle(method, path, query, self.headers, body)
        raw = b"" if status == 204 else json.dumps(payload).encode()  # noqa: PLR2004 - HTTP status
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")
