"""`garmin2strava get-token`: Strava's OAuth authorization-code flow for your own app.

Prints the consent URL, serves Strava's redirect once on 127.0.0.1 (stdlib
http.server), checks `state` and the granted scopes, trades the code for tokens,
stores them for the account and prints the refresh token. Nothing else secret is
printed or logged: not the access token, the client secret or the code.
"""

from __future__ import annotations

import html
import logging
import secrets
import sys
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from garmin2strava.adapters.strava_oauth import authorization_url, exchange_code
from garmin2strava.bootstrap import App
from garmin2strava.domain.app_access import APP_CAPPED_KEY
from garmin2strava.domain.models import Account, AccountStatus, StravaTokens
from garmin2strava.errors import ConfigError, G2SError, StravaAppCapped

__all__ = ["REDIRECT_PATH", "REQUIRED_SCOPES", "get_token", "missing_scopes"]

log = logging.getLogger(__name__)

# activity:read_all for the mirror (private activities too), activity:write to upload.
REQUIRED_SCOPES = ("activity:read_all", "activity:write")
REDIRECT_PATH = "/exchange_token"
_STORE_ATTEMPTS = 3


class OAuthFailed(G2SError):
    """The flow ended without tokens stored; the message says why."""


def missing_scopes(granted: str) -> list[str]:
    """The required scopes not in `granted` (Strava's comma-separated list)."""
    have = {part.strip() for part in granted.split(",") if part.strip()}
    return [scope for scope in REQUIRED_SCOPES if scope not in have]


@dataclass(slots=True)
class _Answer:
    """What the redirect handler tells the browser, and whether the flow is over."""

    status: int
    title: str
    text: str
    done: bool = False
    error: str | None = None
    refresh_token: str | None = field(default=None, repr=False)


def get_token(
    app: App,
    *,
    user_id: str,
    port: int,
    timeout: float,
    open_browser: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the flow; 0 when tokens are stored, 1 otherwise (message on `err`).

    `port=0` picks a free port (the printed URL carries it)."""
    out = out or sys.stdout
    err = err or sys.stderr
    settings = app.settings
    if settings.strava_client_id is None:
        raise ConfigError("setting STRAVA_CLIENT_ID is required for get-token")
    if settings.strava_client_secret is None:
        raise ConfigError("setting STRAVA_CLIENT_SECRET is required for get-token")
    client_id = settings.strava_client_id
    client_secret = settings.strava_client_secret.get_secret_value()
    state = secrets.token_urlsafe(24)

    def on_redirect(params: dict[str, str]) -> _Answer:
        return _answer_redirect(
            app, params, state=state, user_id=user_id, client_id=client_id, secret=client_secret
        )

    try:
        server = _RedirectServer(("127.0.0.1", port), on_redirect)
    except OSError as exc:
        print(
            f"garmin2strava: cannot listen on 127.0.0.1:{port} ({exc.strerror}); "
            "choose another --port (and use it in the redirect)",
            file=err,
        )
        return 1
    with server:
        bound_port = server.server_address[1]
        redirect_uri = f"http://localhost:{bound_port}{REDIRECT_PATH}"
        url = authorization_url(
            client_id, redirect_uri, REQUIRED_SCOPES, state, settings.strava_urls
        )
        print("Open this URL in a browser, log in to Strava and authorize the app:\n", file=out)
        print(f"  {url}\n", file=out)
        print(
            f"Waiting up to {timeout:.0f} s for Strava's redirect to {redirect_uri} ...",
            file=out,
            flush=True,
        )
        if open_browser:
            webbrowser.open(url)
        answer = server.serve_until_done(timeout)
    if answer is None:
        print(
            f"garmin2strava: no redirect from Strava within {timeout:.0f} s; nothing stored",
            file=err,
        )
        return 1
    if answer.error is not None:
        print(f"garmin2strava: {answer.error}", file=err)
        return 1
    print(f"\nStrava tokens stored for account {user_id}.", file=out)
    print(
        "Refresh token (set STRAVA_REFRESH_TOKEN to it only to run elsewhere; keep it secret):",
        file=out,
    )
    print(answer.refresh_token, file=out, flush=True)
    return 0


def _answer_redirect(
    app: App,
    params: dict[str, str],
    *,
    state: str,
    user_id: str,
    client_id: int,
    secret: str,
) -> _Answer:
    # The state proves the redirect answers the URL we printed (no forged request,
    # no stale tab from an earlier run): anything else is refused and we wait on.
    if not secrets.compare_digest(params.get("state", ""), state):
        log.warning("oauth.state_mismatch")
        return _Answer(400, "Wrong state", "This is not the authorization we asked for.")
    if "error" in params:
        reason = params["error"]
        msg = (
            "Strava authorization was denied in the browser; nothing stored"
            if reason == "access_denied"
            else f"Strava answered the authorization with error {reason!r}; nothing stored"
        )
        return _Answer(200, "Not authorized", msg, done=True, error=msg)
    code = params.get("code", "")
    if not code:
        return _Answer(400, "No code", "Strava's redirect carries no code.")
    redirect_scope = params.get("scope")
    try:
        if redirect_scope is not None:
            _check_scopes(redirect_scope)  # before the exchange: no tokens for nothing
        tokens, granted, athlete_id = exchange_code(
            client_id,
            secret,
            code,
            app.settings.strava_urls,
            granted_scope=redirect_scope,
        )
        _check_scopes(granted)
        _store_tokens(app, user_id, tokens, athlete_id)
    except StravaAppCapped as exc:
        # Kept application-wide, for `status` to say without asking Strava.
        app.store.put_app_state(APP_CAPPED_KEY, {"since": app.clock().isoformat()})
        msg = f"{exc}; nothing stored"
        return _Answer(200, "Not done", msg, done=True, error=msg)
    except G2SError as exc:
        return _Answer(200, "Not done", str(exc), done=True, error=str(exc))
    log.info(
        "oauth.tokens_stored",
        extra={"userId": user_id, "athleteId": athlete_id, "scope": granted},
    )
    return _Answer(
        200,
        "Done",
        f"Strava tokens stored for account {user_id}. You can close this tab.",
        done=True,
        refresh_token=tokens.refresh_token,
    )


def _check_scopes(granted: str) -> None:
    missing = missing_scopes(granted)
    if missing:
        names = " and ".join(missing)
        msg = (
            f"Strava did not grant {names} (granted: {granted or 'nothing'}); garmin2strava "
            "needs it to upload and mirror your activities. Run get-token again and leave "
            "every box ticked. Nothing stored."
        )
        raise OAuthFailed(msg)


def _store_tokens(app: App, user_id: str, tokens: StravaTokens, athlete_id: int) -> None:
    store = app.store
    owner = store.user_for_athlete(athlete_id)
    if owner is not None and owner != user_id:
        msg = f"Strava athlete {athlete_id} is linked to account {owner!r}; use --user {owner}"
        raise OAuthFailed(msg)
    account = store.get_account(user_id) or Account(user_id=user_id, created_at=app.clock())
    if account.strava_athlete_id not in {None, athlete_id}:
        msg = (
            f"account {user_id!r} belongs to Strava athlete {account.strava_athlete_id}, and "
            f"this authorization is for athlete {athlete_id}; use another --user"
        )
        raise OAuthFailed(msg)
    for _attempt in range(_STORE_ATTEMPTS):
        current = store.get_strava_tokens(user_id)
        expected = current.version if current is not None else None
        # Condition: no other writer (a daemon refreshing) stored tokens since we read
        # them. Ours come from a fresh consent, so on a lost race we read and try again.
        if store.replace_strava_tokens(user_id, tokens, expected_version=expected) is not None:
            break
    else:
        msg = f"the Strava tokens of account {user_id!r} keep changing; run get-token again"
        raise OAuthFailed(msg)
    store.link_athlete(athlete_id, user_id)
    if store.get_app_state(APP_CAPPED_KEY):
        store.put_app_state(APP_CAPPED_KEY, {})  # an athlete connected: not capped now
    if account.status in {AccountStatus.NEEDS_STRAVA_AUTH, AccountStatus.DISCONNECTED}:
        account = replace(account, status=AccountStatus.ACTIVE, status_detail="")
    store.put_account(replace(account, strava_athlete_id=athlete_id))


class _RedirectServer(ThreadingHTTPServer):
    """Serves until one redirect settles the flow, or until the deadline. Threaded, so
    a browser's idle pre-connection cannot hold up the real redirect; redirects are
    settled one at a time, and once settled every later request gets a 404."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], on_redirect: Callable[[dict[str, str]], _Answer]
    ) -> None:
        self.on_redirect = on_redirect
        self.answer: _Answer | None = None
        self.settled = threading.Event()
        self.redirect_lock = threading.Lock()
        super().__init__(address, _RedirectHandler)

    def serve_until_done(self, timeout: float) -> _Answer | None:
        thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="oauth-redirect"
        )
        thread.start()
        try:
            self.settled.wait(timeout)
        finally:
            self.shutdown()
            thread.join()
        return self.answer


class _RedirectHandler(BaseHTTPRequestHandler):
    server: _RedirectServer
    timeout = 10  # seconds a connection may idle (the socket's timeout)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        """Silent: the request line carries the authorization code."""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != REDIRECT_PATH:
            self._page(404, "Not found", "Nothing here.")
            return
        params = {key: values[0] for key, values in parse_qs(parts.query).items()}
        with self.server.redirect_lock:
            if self.server.answer is not None:
                self._page(404, "Not found", "This authorization is settled already.")
                return
            answer = self.server.on_redirect(params)
            self._page(answer.status, answer.title, answer.text)
            if answer.done:
                self.server.answer = answer
                self.server.settled.set()

    def _page(self, status: int, title: str, text: str) -> None:
        body = (
            "<!doctype html><meta charset=utf-8>"
            f"<title>garmin2strava: {html.escape(title)}</title>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)
