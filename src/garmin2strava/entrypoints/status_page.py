"""The status page at `/` of the admin listener, and its actions (plain HTML forms).

Jinja2 (templates/status_page.html) and an inline SVG time line, no JavaScript (a
`<meta http-equiv="refresh">` reloads it every 30 s, not right after an action).
Protection: `G2S_ADMIN_TOKEN` is required once the admin listener leaves loopback
(`check_admin_exposure`) and then carried by every request (Basic password or Bearer);
without it, `Host` must name a loopback host (against DNS rebinding); every POST
carries the page's CSRF token and, when the browser sends one, an `Origin` of this host.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from garmin2strava.errors import ConfigError, G2SError
from garmin2strava.ports import EventQueue, Store
from garmin2strava.services.account_control import AccountControl, retry_upload
from garmin2strava.services.status_page_view import KINDS, StatusPageView, build_view
from garmin2strava.services.sync_accounts import sync_all

__all__ = [
    "ServedStatusPage",
    "StatusPage",
    "check_admin_exposure",
    "create_status_page_app",
    "is_loopback_host",
    "serve_status_page",
    "status_page_for_app",
    "status_page_routes",
]

if TYPE_CHECKING:
    from garmin2strava.bootstrap import App

log = logging.getLogger(__name__)

_TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
_REFRESH_S = 30
# What an action may say on the page it redirects to (codes, never free text).
_NOTES = {
    "sync": "A cycle for {user} has started; this page shows its outcome when done.",
    "sync-paused": "{user} is paused: resume it first.",
    "pause": "{user} is paused: a running cycle stops before its next activity.",
    "resume": "{user} is resumed: the next cycle syncs it.",
    "retry-upload": "Garmin activity {item} of {user} will be retried by the next cycle.",
    "retry-upload-none": "Garmin activity {item} of {user} has nothing to retry.",
    "retry-event": "Webhook event {item} is back in the queue.",
    "retry-event-none": "Webhook event {item} is not dead any more.",
    "unknown": "No account {user}.",
}
_SVG_WIDTH = 960
_SVG_LEFT = 120
_LANE_HEIGHT = 34


def is_loopback_host(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_admin_exposure(host: str, token: str | None) -> None:
    """Refuse to serve the admin listener on a non-loopback host without a token."""
    if not is_loopback_host(host) and not token:
        msg = (
            f"setting G2S_ADMIN_TOKEN is required: the admin listener (G2S_ADMIN_HOST={host}) "
            "is not loopback, and it serves the status page and its actions"
        )
        raise ConfigError(msg)


@dataclass(slots=True, kw_only=True)
class StatusPage:
    """What the page reads and does. `sync_now(user_id)` starts one cycle for the
    account and returns at once (the caller runs it in the background)."""

    store: Store
    queue: EventQueue | None
    clock: Callable[[], datetime]
    sync_now: Callable[[str], None]
    interval_s: int | None = None
    audit_retention_days: int = 7
    admin_token: str | None = None
    _csrf_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def csrf_token(self) -> str:
        return hmac.new(self._csrf_key, b"garmin2strava-console", hashlib.sha256).hexdigest()

    def control(self) -> AccountControl:
        return AccountControl(
            store=self.store, clock=self.clock, audit_retention_days=self.audit_retention_days
        )

    def view(self) -> StatusPageView:
        return build_view(self.store, self.queue, now=self.clock(), interval_s=self.interval_s)


def status_page_for_app(
    app: App, queue: EventQueue | None, *, interval_s: int | None, admin_token: str | None
) -> StatusPage:
    """The page of a process that runs `app`: "Sync now" runs one cycle in a thread
    of its own (the account's lease keeps it from running beside the scheduler's)."""

    def sync_now(user_id: str) -> None:
        def run() -> None:
            for report in sync_all(app.store, app.sync_deps, only=user_id):
                log.info(
                    "console.sync_done",
                    extra={"userId": report.user_id, "ok": report.ok, "outcomes": report.outcomes},
                )

        threading.Thread(target=run, name=f"sync-now-{user_id}", daemon=True).start()
        log.info("console.sync_requested", extra={"userId": user_id})

    return StatusPage(
        store=app.store,
        queue=queue,
        clock=app.clock,
        sync_now=sync_now,
        interval_s=interval_s,
        audit_retention_days=app.settings.audit_retention_days,
        admin_token=admin_token,
    )


@dataclass(slots=True)
class ServedStatusPage:
    """The page served by uvicorn in a thread (the demo's, the tests')."""

    url: str
    stop: Callable[[], None]


def serve_status_page(
    page: StatusPage, *, host: str = "127.0.0.1", port: int = 0
) -> ServedStatusPage:
    """Bind now (port 0: a free one), serve in a daemon thread until `stop()`."""
    import uvicorn

    check_admin_exposure(host, page.admin_token)
    sock = socket.create_server((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        create_status_page_app(page), log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="status-page-http", daemon=True
    )
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    shown = f"[{host}]" if ":" in host else host
    return ServedStatusPage(url=f"http://{shown}:{bound}/", stop=stop)


def status_page_routes(page: StatusPage) -> list[Route]:
    """The page and its actions, for the admin app to mount at its root."""
    guard = _Guard(page)

    async def show(request: Request) -> Response:
        view = await run_in_threadpool(page.view)
        note = _note(request)
        context = {
            "view": view,
            "kinds": KINDS,
            "svg": _timeline(view),
            "csrf": page.csrf_token,
            "note": note,
            "refresh_s": None if note else _REFRESH_S,
        }
        return _TEMPLATES.TemplateResponse(request, "status_page.html", context)

    async def account_action(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        action = request.path_params["action"]
        note = await run_in_threadpool(_account_action, page, user_id, action)
        return _back(note, user=user_id)

    async def retry_upload_action(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        garmin_id = int(request.path_params["garmin_id"])
        done = await run_in_threadpool(retry_upload, page.store, user_id, garmin_id, page.clock())
        return _back("retry-upload" if done else "retry-upload-none", user=user_id, item=garmin_id)

    async def retry_event_action(request: Request) -> Response:
        queue_id = int(request.path_params["queue_id"])
        queue = page.queue
        done = queue is not None and await run_in_threadpool(
            lambda: queue.retry_dead(queue_id, now=page.clock())
        )
        return _back("retry-event" if done else "retry-event-none", item=queue_id)

    return [
        Route("/", guard(show), methods=["GET"]),
        Route(
            "/accounts/{user_id:str}/{action:str}",
            guard(account_action, post=True),
            methods=["POST"],
        ),
        Route(
            "/uploads/{user_id:str}/{garmin_id:int}/retry",
            guard(retry_upload_action, post=True),
            methods=["POST"],
        ),
        Route(
            "/events/{queue_id:int}/retry", guard(retry_event_action, post=True), methods=["POST"]
        ),
    ]


def create_status_page_app(page: StatusPage) -> Starlette:
    """The page alone, as an app (tests, `demo --serve`)."""
    return Starlette(routes=status_page_routes(page))


def _account_action(page: StatusPage, user_id: str, action: str) -> str:
    control = page.control()
    account = page.store.get_account(user_id)
    if account is None:
        return "unknown"
    if action == "pause":
        control.pause(user_id)
        return "pause"
    if action == "resume":
        control.resume(user_id)
        return "resume"
    if action == "sync":
        if not account.enabled:
            return "sync-paused"
        page.sync_now(user_id)
        return "sync"
    raise _NotFound


class _NotFound(G2SError):
    pass


def _back(note: str, **values: object) -> Response:
    query = urlencode({"note": note, **{k: str(v) for k, v in values.items()}})
    return RedirectResponse(f"/?{query}", status_code=303)


def _note(request: Request) -> str | None:
    template = _NOTES.get(request.query_params.get("note", ""))
    if template is None:
        return None
    return template.format(
        user=request.query_params.get("user", ""), item=request.query_params.get("item", "")
    )


Handler = Callable[[Request], Awaitable[Response]]


class _Guard:
    """Authentication, Host and CSRF checks in front of every route."""

    def __init__(self, page: StatusPage) -> None:
        self._page = page

    def __call__(self, handler: Handler, *, post: bool = False) -> Handler:
        async def guarded(request: Request) -> Response:
            refused = self._refuse(request)
            if refused is not None:
                return refused
            if post:
                sent = await _form_csrf(request)
                if not hmac.compare_digest(sent, self._page.csrf_token) or not _same_origin(
                    request
                ):
                    log.warning("console.csrf_refused", extra={"path": request.url.path})
                    return PlainTextResponse(
                        "This form is stale or not from this page: reload the page.",
                        status_code=403,
                    )
            try:
                return await handler(request)
            except _NotFound:
                return PlainTextResponse("Not Found", status_code=404)

        return guarded

    def _refuse(self, request: Request) -> Response | None:
        token = self._page.admin_token
        if token is None:
            host = request.headers.get("host", "")
            if not is_loopback_host(urlsplit(f"//{host}").hostname or ""):
                return PlainTextResponse("Misdirected Request", status_code=421)
            return None
        presented = _presented_token(request.headers.get("authorization", ""))
        if presented is None or not hmac.compare_digest(presented.encode(), token.encode()):
            return PlainTextResponse(
                "Unauthorized: the admin token is the password (any user name).",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="garmin2strava", charset="UTF-8"'},
            )
        return None


_MAX_FORM_BYTES = 4096  # the forms carry the CSRF token and nothing else


async def _form_csrf(request: Request) -> str:
    """The `csrf` field of an urlencoded form (parsed here: no multipart library)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            return ""
    values = parse_qs(body.decode("ascii", errors="replace"))
    return values.get("csrf", [""])[0]


def _presented_token(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None  # a sandboxed or privacy-stripped origin is not ours
    return urlsplit(origin).netloc == request.headers.get("host", "")


# -- the time line's geometry (the template draws it) ---------------------------------------
def _timeline(view: StatusPageView) -> dict[str, Any]:
    lanes = {a.user_id: i for i, a in enumerate(view.accounts)}
    for mark in view.marks:  # a removed account's runs stay in its own lane
        lanes.setdefault(mark.user_id, len(lanes))
    plot = _SVG_WIDTH - _SVG_LEFT - 20
    height = 30 + _LANE_HEIGHT * max(1, len(lanes))
    ticks = []
    for day in range(0, view.days + 1, 5):
        at = view.window_start + timedelta(days=day)
        ticks.append({"x": _SVG_LEFT + plot * day / view.days, "label": f"{at:%d %b}"})
    dots = [
        {
            "mark": mark,
            "x": round(_SVG_LEFT + plot * mark.x, 1),
            "y": 20 + _LANE_HEIGHT * lanes[mark.user_id] + _LANE_HEIGHT / 2,
        }
        for mark in view.marks
    ]
    return {
        "width": _SVG_WIDTH,
        "height": height,
        "left": _SVG_LEFT,
        "right": _SVG_WIDTH - 20,
        "lanes": [
            {"user_id": user, "y": 20 + _LANE_HEIGHT * i + _LANE_HEIGHT / 2}
            for user, i in lanes.items()
        ],
        "ticks": ticks,
        "dots": dots,
    }
