"""A minimal Lambda Runtime API on loopback, for one function: what AWS's runtime
interface client (awslambdaric) talks to inside a real Lambda sandbox.

`invoke(event)` hands the event to the runtime's next `GET .../invocation/next` and
waits for its `POST .../invocation/{id}/response` (the answer) or `.../error` (the
function raised); `POST /runtime/init/error` (the handler could not even be imported)
fails every pending and later invocation. Paths and headers as AWS documents them
("AWS Lambda runtime API", version 2018-06-01)."""

from __future__ import annotations

import json
import queue
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["Invocation", "InvocationFailed", "RuntimeApi"]

PREFIX = "/2018-06-01/runtime"
_RESULT = re.compile(rf"^{PREFIX}/invocation/([^/]+)/(response|error)$")
# How often a waiting GET .../next looks whether the server is closing.
_POLL_S = 0.2


class InvocationFailed(Exception):
    """The function reported an error (its errorType and errorMessage), or never
    answered in time, or its runtime failed to start."""


@dataclass
class Invocation:
    """One event handed to the runtime, and what the runtime reported for it."""

    request_id: str
    event: Any
    done: threading.Event = field(default_factory=threading.Event)
    answer: Any = None
    error: dict[str, Any] | None = None


class RuntimeApi:
    """The Runtime API of one function (`function_arn`, `timeout_s` for the deadline
    each invocation carries). Use as a context manager; `address` is what
    AWS_LAMBDA_RUNTIME_API holds."""

    def __init__(self, function_arn: str, timeout_s: float) -> None:
        self.function_arn = function_arn
        self.timeout_s = timeout_s
        self.pending: queue.Queue[Invocation] = queue.Queue()
        self.invocations: dict[str, Invocation] = {}
        self.broken: dict[str, Any] | None = None  # why the runtime cannot answer
        self.closing = threading.Event()
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _handler_class(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()

    def invoke(self, event: Any, *, wait_s: float | None = None) -> Any:
        """The function's answer to `event`; InvocationFailed when it raised, its
        runtime failed to start, or no answer came within `wait_s` (its timeout)."""
        invocation = Invocation(str(uuid.uuid4()), event)
        with self.lock:
            if self.broken is not None:
                raise InvocationFailed(f"the runtime cannot answer: {self.broken}")
            self.invocations[invocation.request_id] = invocation
        self.pending.put(invocation)
        if not invocation.done.wait(self.timeout_s if wait_s is None else wait_s):
            raise InvocationFailed(f"no answer within {self.timeout_s} s")
        if invocation.error is not None:
            raise InvocationFailed(f"the function failed: {invocation.error}")
        return invocation.answer

    # -- the Runtime API's requests ------------------------------------------------------
    def get(self, path: str) -> Reply:
        """GET .../invocation/next: the next event, once one is handed over."""
        if path != f"{PREFIX}/invocation/next":
            return Reply(HTTPStatus.NOT_FOUND, {"errorMessage": "no such path"})
        invocation = self._next_invocation()
        if invocation is None:
            return Reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"errorMessage": "closing"})
        trace = f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]};Sampled=0"
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(int((time.time() + self.timeout_s) * 1000)),
            "Lambda-Runtime-Invoked-Function-Arn": self.function_arn,
            "Lambda-Runtime-Trace-Id": trace,
        }
        return Reply(HTTPStatus.OK, invocation.event, headers)

    def post(self, path: str, body: Any) -> Reply:
        """POST .../init/error, .../invocation/{id}/response or .../error."""
        if path == f"{PREFIX}/init/error":
            self.fail_pending(_error(body))
            return Reply(HTTPStatus.ACCEPTED, {"status": "OK"})
        match = _RESULT.match(path)
        if match is None:
            return Reply(HTTPStatus.NOT_FOUND, {"errorMessage": "no such path"})
        if not self._settle(match[1], match[2], body):
            return Reply(HTTPStatus.BAD_REQUEST, {"errorMessage": "unknown or answered request"})
        return Reply(HTTPStatus.ACCEPTED, {"status": "OK"})

    def _next_invocation(self) -> Invocation | None:
        """The next event, waiting for one; None once the server closes."""
        while not self.closing.is_set():
            try:
                return self.pending.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return None

    def _settle(self, request_id: str, kind: str, body: Any) -> bool:
        with self.lock:
            invocation = self.invocations.get(request_id)
        if invocation is None or invocation.done.is_set():
            return False
        if kind == "response":
            invocation.answer = body
        else:
            invocation.error = _error(body)
        invocation.done.set()
        return True

    def fail_pending(self, error: dict[str, Any]) -> None:
        """The runtime cannot answer any more (it failed to start, or its process
        ended): every pending invocation, and every later one, fails with `error`."""
        with self.lock:
            self.broken = error
            waiting = [i for i in self.invocations.values() if not i.done.is_set()]
        for invocation in waiting:
            invocation.error = error
            invocation.done.set()


def _error(body: Any) -> dict[str, Any]:
    """An error report's JSON (errorType, errorMessage, ...), or its text wrapped."""
    return body if isinstance(body, dict) else {"errorMessage": str(body)}


@dataclass(frozen=True)
class Reply:
    status: HTTPStatus
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A runtime stopped while its GET .../next waited: its connection is gone,
        which is how every run ends. Anything else is still printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_class(api: RuntimeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # The runtime client keeps its connection open between requests.
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            """Quiet: the smoke test prints what matters."""

        def do_GET(self) -> None:
            self._send(api.get(self.path))

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            self._send(api.post(self.path, body))

        def _send(self, reply: Reply) -> None:
            raw = json.dumps(reply.payload).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

    return Handler
