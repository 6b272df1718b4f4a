"""A Strava API v3 emulator on loopback, for tests and `garmin2strava demo`.

Stdlib only but for `fitdecode` (uploads are judged by activity_files.py, never by the
daemon's check). It emulates what the daemon depends on, traps included (rotating
refresh tokens, rate limits, uploads still processing, duplicates, listing order);
time comes from `clock`, and uploads finish in the background. This module serves
strava_records, strava_state, strava_api and strava_webhooks over HTTP and is the one
to import; sandbox/README.md, "The Strava emulator", has the details.
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
    `base_url`. All state is behind one lock; tests read it through the attributes."""

    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _processing: threading.Thread | None = None
    _stopping: threading.Event | None = None
    PROCESSING_TICK_S = 0.05

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> Self:
        handler = type("_BoundHandler", (_Handler,), {"sandbox": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll interval
            name="strava-sandbox",
            daemon=True,
        )
        self._thread.start()
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

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._processing is not None:
            self._processing.join(timeout=10)
            self._processing = None
        self.webhooks.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the Strava sandbox is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    sandbox: StravaSandbox
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        """Quiet: request lines carry tokens in query strings (stravalib 2.5 style)."""

    def _serve(self, method: str) -> None:
        self.sandbox.record_request(method, self.path)
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload, extra = self.sandbox.handle(method, parts.path, query, self.headers, body)
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

    def do_DELETE(self) -> None:
        self._serve("DELETE")
