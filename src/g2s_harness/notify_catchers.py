"""Where the tests' notifications land, on 127.0.0.1: a JSON webhook that records what
was POSTed to it (Apprise's json://), and a real SMTP server (aiosmtpd) that keeps the
mails it is given (mailto://). Both are context managers."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["Hit", "JsonCatcher", "Mail", "SmtpCatcher"]


@dataclass(frozen=True, slots=True)
class Hit:
    """One request the JSON catcher answered: its method, path (with query) and body."""

    method: str
    path: str
    body: dict[str, Any]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    catcher: JsonCatcher


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        catcher = self.server.catcher
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else {}
        if catcher.delay_s:  # a slow destination: it answers late (or when closed)
            catcher.closing.wait(catcher.delay_s)
        with catcher.lock:
            status = catcher.status
            if status < 300:  # noqa: PLR2004 (2xx: taken)
                catcher.hits.append(Hit(self.command, self.path, body))
            else:
                catcher.refused += 1
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        """Quiet: one line per request would bury the test output."""


class JsonCatcher:
    """An HTTP server on 127.0.0.1: what json:// delivers (and heartbeat pings). Set
    `status` to 503 for a destination that is down; `delay_s` answers that late."""

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.status = 200
        self.hits: list[Hit] = []
        self.refused = 0
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.catcher = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "hook") -> str:
        """The json:// URL that posts to `path` here."""
        return f"json://127.0.0.1:{self.port}/{path}"

    def http_url(self, path: str = "ping") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [hit.body for hit in self.hits]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()


@dataclass(frozen=True, slots=True)
class Mail:
    """One mail the SMTP server took: envelope, subject and plain-text body."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str
    text: str


@dataclass
class _MailHandler:
    mails: list[Mail] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(  # noqa: N802 (aiosmtpd's name)
        self, _server: SMTP, _session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        part = message.get_body(preferencelist=("plain", "html"))
        text = part.get_content() if part is not None else ""
        mail = Mail(
            str(envelope.mail_from),
            tuple(envelope.rcpt_tos),
            str(message["Subject"] or ""),
            str(text),
        )
        with self.lock:
            self.mails.append(mail)
        return "250 OK"


class _LoopbackController(Controller):
    """aiosmtpd's Controller on a free port: it binds port 0, then learns the port
    before it checks that the server answers."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = int(self.server.sockets[0].getsockname()[1])
        super()._trigger_server()  # type: ignore[no-untyped-call]  # aiosmtpd: untyped


class SmtpCatcher:
    """A real SMTP server on 127.0.0.1 that keeps every mail. With `user`/`password`
    it offers AUTH LOGIN/PLAIN over the plain connection (loopback only) and takes
    only those."""

    def __init__(self, *, user: str | None = None, password: str | None = None) -> None:
        self._handler = _MailHandler()
        self._credentials = (user, password) if user and password else None
        options: dict[str, Any] = {}
        if self._credentials:
            options = {"authenticator": self._authenticate, "auth_require_tls": False}
        self._controller = _LoopbackController(
            self._handler, hostname="127.0.0.1", port=0, **options
        )

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def url(self, *, to: str = "owner@example.com") -> str:
        """The mailto:// URL that delivers here (plain SMTP: mode=insecure)."""
        login = ""
        if self._credentials:
            user, password = self._credentials
            login = f"{user}:{password}@"
        return (
            f"mailto://{login}127.0.0.1:{self.port}"
            f"?mode=insecure&from=garmin2strava@example.com&to={to}"
        )

    @property
    def mails(self) -> list[Mail]:
        with self._handler.lock:
            return list(self._handler.mails)

    def _authenticate(
        self, _server: SMTP, _session: Session, _envelope: Envelope, _mechanism: str, data: Any
    ) -> AuthResult:
        assert self._credentials is not None
        user, password = self._credentials
        given = (
            (data.login.decode(), data.password.decode())
            if isinstance(data, LoginPassword)
            else None
        )
        return AuthResult(success=given == (user, password))

    def __enter__(self) -> Self:
        self._controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._controller.stop()
