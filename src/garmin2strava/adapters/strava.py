"""The thin Strava client on stravalib: HTTP, tokens, and Strava's answers read into our
errors and plain values. No policy: the rate budget, the inactive application's state
and its probe, and the audit live in services.strava_access, which wraps this client.
What it adds to stravalib: docs/architecture.md, "The Strava client".
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import requests
from stravalib import exc
from stravalib.client import Client
from stravalib.util.limiter import RateLimiter

from garmin2strava.adapters.strava_json import strava_activity_from_json, upload_status_from_json
from garmin2strava.domain.budget import next_window_reset
from garmin2strava.domain.gear import StravaGear, strava_gear_from_athlete
from garmin2strava.domain.models import StravaActivity, StravaTokens, UploadStatus
from garmin2strava.domain.strava_finish import ActivityUpdate
from garmin2strava.domain.strava_urls import REAL_STRAVA_BASE_URL, REAL_STRAVA_URLS, StravaUrls
from garmin2strava.errors import (
    G2SError,
    RateLimited,
    StravaAppInactive,
    StravaAuthError,
    StravaNotFound,
    TransientError,
)
from garmin2strava.ports import StravaRequestPolicy, StravaTokenStore

__all__ = [
    "RewritingSession",
    "StravaClient",
    "rewrite_url",
    "strava_urls",
]

log = logging.getLogger(__name__)

# Where stravalib sends the API (ApiV3.server + api_base; it always builds https URLs).
_STRAVALIB_API = f"{REAL_STRAVA_BASE_URL}/api/v3"
REFRESH_MARGIN_S = 300
TIMEOUT_S = 30.0


def strava_urls(where: StravaUrls | str) -> StravaUrls:
    """`where` as StravaUrls; a plain string is one origin in Strava's old layout (the
    emulators' and the demo's `base_url`)."""
    return where if isinstance(where, StravaUrls) else StravaUrls.one_origin(where)


def rewrite_url(url: str, where: StravaUrls | str) -> str:
    """stravalib's URL to the configured Strava: `https://www.strava.com/api/v3/x` ->
    `{api}/x`, `https://www.strava.com/oauth/x` (and any other path on www) ->
    `{oauth}/oauth/x`. Any other URL is left alone."""
    urls = strava_urls(where)
    if urls == REAL_STRAVA_URLS:
        return url
    if url.startswith(_STRAVALIB_API + "/"):
        return urls.api + url[len(_STRAVALIB_API) :]
    if url.startswith(REAL_STRAVA_BASE_URL + "/"):
        return urls.oauth + url[len(REAL_STRAVA_BASE_URL) :]
    return url


class RewritingSession(requests.Session):
    """Sends stravalib's requests to the configured Strava (`where`: the API base and
    the OAuth origin), with a timeout, and lets the owner look at each request before
    it leaves (`before_send` may raise) and at each answer."""

    def __init__(
        self,
        where: StravaUrls | str,
        *,
        before_send: Callable[[requests.PreparedRequest], None] | None = None,
        after_response: Callable[[requests.PreparedRequest, requests.Response], None] | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        super().__init__()
        self.urls = strava_urls(where)
        self.before_send = before_send
        self.after_response = after_response
        self.timeout_s = timeout_s
        self.last_response: requests.Response | None = None

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        request.url = rewrite_url(str(request.url), self.urls)
        return super().prepare_request(request)

    def is_oauth(self, url: str) -> bool:
        """A token, revoke or deauthorize request: outside the API's rate limits."""
        return url.startswith(f"{self.urls.oauth}/oauth/")

    def forget_response(self) -> None:
        self.last_response = None

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if self.before_send is not None:
            self.before_send(request)
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        response = super().send(request, **kwargs)
        self.last_response = response
        if self.after_response is not None:
            self.after_response(request, response)
        return response


_LOCKS_GUARD = threading.Lock()
_REFRESH_LOCKS: dict[tuple[str, str], threading.Lock] = {}


def _refresh_lock(oauth_url: str, user_id: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _REFRESH_LOCKS.setdefault((oauth_url, user_id), threading.Lock())


def _client(session: RewritingSession) -> Client:
    # A RateLimiter without rules: stravalib's default one sleeps for hours.
    client = Client(rate_limiter=RateLimiter(), requests_session=session)
    # stravalib refreshes by itself when STRAVA_CLIENT_ID/SECRET are in the environment;
    # refreshing is ours (with a margin, and persisted), so switch that off.
    client.protocol.client_id = None
    client.protocol.client_secret = None
    return client


def _json(response: requests.Response | None) -> Any:
    if response is None:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _app_inactive_answer(response: requests.Response | None) -> bool:
    """Strava's answer to an inactive application (stravalib issue #730): 403 with
    `{"resource": "Application", "field": "Status", "code": "Inactive"}` in `errors`."""
    if response is None or response.status_code != 403:  # noqa: PLR2004 - HTTP status
        return False
    body = _json(response)
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return False
    wanted = ("application", "status", "inactive")
    return any(
        isinstance(e, dict)
        and tuple(str(e.get(k, "")).lower() for k in ("resource", "field", "code")) == wanted
        for e in errors
    )


_APP_CREDENTIALS_REFUSED = (
    "Strava refused the application credentials (check STRAVA_CLIENT_ID and "
    "STRAVA_CLIENT_SECRET); nothing was revoked"
)


def _names_the_application(response: requests.Response | None) -> bool:
    """A 400/401 about the client id or secret: it says nothing of the athlete's tokens."""
    detail = _error_summary(response)
    return "client_id" in detail or "client_secret" in detail


def _error_summary(response: requests.Response | None) -> str:
    """Strava's error fields (never a token: Strava does not echo them)."""
    body = _json(response)
    if isinstance(body, dict):
        return f"{body.get('message', '')} {body.get('errors', '')}".strip()
    return ""


class StravaClient:
    """ports.StravaApi for one account (`user_id`): stravalib, its tokens, its errors.

    `policy` sees every API request before it leaves and every answer (services.
    strava_access passes itself); without one nothing is refused or recorded."""

    def __init__(
        self,
        tokens: StravaTokenStore,
        user_id: str,
        *,
        client_id: int,
        client_secret: str,
        where: StravaUrls | str = REAL_STRAVA_URLS,
        policy: StravaRequestPolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        rotation_grace_s: float = 2.0,
    ) -> None:
        self._tokens = tokens
        self._policy = policy
        self._rotation_grace_s = rotation_grace_s
        self._user_id = user_id
        self._client_id = client_id
        self._client_secret = client_secret
        self._clock = clock or (lambda: datetime.now(UTC))
        # What the request being sent is, for the policy (set around each call).
        self._poll = False
        self._background = False
        self._refresh_margin_s: float = REFRESH_MARGIN_S
        self._session = RewritingSession(
            where, before_send=self._before_send, after_response=self._after_response
        )
        self._client = _client(self._session)

    def __repr__(self) -> str:
        return f"StravaClient(user_id={self._user_id!r}, urls={self._session.urls!r})"

    @property
    def user_id(self) -> str:
        return self._user_id

    @property
    def urls(self) -> StravaUrls:
        return self._session.urls

    # -- what the policy sees ------------------------------------------------------------
    def _before_send(self, request: requests.PreparedRequest) -> None:
        if self._policy is None or self._session.is_oauth(str(request.url)):
            return  # token requests are not part of the API rate limits
        path = urlsplit(str(request.url)).path
        # Writes count against the overall limit only, like an upload: the POST of a
        # file and the PUT that finishes an activity.
        upload = request.method == "PUT" or (
            request.method == "POST" and path.rstrip("/").endswith("/uploads")
        )
        self._policy.before_request(upload=upload, poll=self._poll, background=self._background)

    def _after_response(
        self, request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        if self._policy is None or self._session.is_oauth(str(request.url)):
            return
        self._policy.after_response(response.status_code, response.headers)

    @contextlib.contextmanager
    def tokens_as_they_are(self) -> Iterator[None]:
        """Calls inside use a token that has not expired yet as it is, without the early
        refresh: an inactive application's probe is then one request."""
        self._refresh_margin_s = 0
        try:
            yield
        finally:
            self._refresh_margin_s = REFRESH_MARGIN_S

    # -- tokens --------------------------------------------------------------------------
    def _stored_tokens(self) -> StravaTokens:
        tokens = self._tokens.get_strava_tokens(self._user_id)
        if tokens is None:
            msg = f"no Strava tokens stored for user {self._user_id}; run get-token"
            raise StravaAuthError(msg)
        return tokens

    def _usable_tokens(self, margin_s: float = REFRESH_MARGIN_S) -> StravaTokens:
        tokens = self._stored_tokens()
        return self._refresh(tokens) if self._expiring(tokens, margin_s) else tokens

    def _refresh(self, stale: StravaTokens) -> StravaTokens:
        # One refresh at a time per account in this process; other processes are
        # handled by the conditional write and the re-reads below.
        with _refresh_lock(self._session.urls.oauth, self._user_id):
            current = self._stored_tokens()
            if current.version != stale.version and not self._expiring(current):
                return current  # refreshed by someone else while we waited
            return self._refresh_unlocked(current)

    def _expiring(self, tokens: StravaTokens, margin_s: float = REFRESH_MARGIN_S) -> bool:
        return tokens.expires_at - self._clock().timestamp() < margin_s

    def _newer_tokens(self, stale: StravaTokens) -> StravaTokens | None:
        """Tokens another runner stored after `stale`, waiting up to the grace period:
        a runner elsewhere may have rotated the refresh token and not written it yet."""
        deadline = time.monotonic() + self._rotation_grace_s
        while True:
            newer = self._tokens.get_strava_tokens(self._user_id)
            if newer is not None and newer.version != stale.version:
                return newer
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def _refresh_unlocked(self, stale: StravaTokens) -> StravaTokens:
        try:
            info = self._client.refresh_access_token(
                client_id=self._client_id,
                client_secret=self._client_secret,
                refresh_token=stale.refresh_token,
            )
        except exc.Fault as error:
            if _app_inactive_answer(error.response):
                raise StravaAppInactive(next_window_reset(self._clock())) from None
            status = error.response.status_code if error.response is not None else 0
            if status >= 500:  # noqa: PLR2004 - HTTP status
                raise TransientError(f"Strava token endpoint answered {status}") from None
            newer = self._newer_tokens(stale)
            if newer is not None:
                return newer  # another runner refreshed first; our refresh token was rotated
            msg = f"Strava refused the refresh token for user {self._user_id} (access revoked?)"
            raise StravaAuthError(msg) from None
        except requests.RequestException as error:
            raise TransientError(f"Strava token refresh failed: {type(error).__name__}") from None
        return self._keep_refreshed(stale, info)

    def _keep_refreshed(self, stale: StravaTokens, info: Any) -> StravaTokens:
        """Store the tokens a refresh granted (conditionally on `stale`'s version)."""
        fresh = StravaTokens(
            access_token=info["access_token"],
            refresh_token=info["refresh_token"],
            expires_at=int(info["expires_at"]),
            scope=stale.scope,
            athlete_id=stale.athlete_id,
        )
        stored = self._tokens.replace_strava_tokens(
            self._user_id, fresh, expected_version=stale.version
        )
        if stored is not None:
            log.info(
                "strava.token_refreshed",
                extra={
                    "userId": self._user_id,
                    "athleteId": stale.athlete_id,
                    "expiresAt": fresh.expires_at,
                },
            )
            if self._policy is not None:
                self._policy.tokens_refreshed(stored)
            return stored
        # Lost the conditional write: another runner stored tokens meanwhile. Those are
        # the ones the next refresh must start from, so use them.
        newer = self._tokens.get_strava_tokens(self._user_id)
        return newer if newer is not None else fresh

    def access_revoked(self) -> bool:
        """ports.AccessCheck: one token refresh. Strava refuses the refresh token of an
        athlete who revoked access; a refusal naming the application (client id or
        secret) proves nothing and raises StravaAuthError, a 5xx raises TransientError.
        A granted refresh is stored like any other."""
        with _refresh_lock(self._session.urls.oauth, self._user_id):
            stale = self._stored_tokens()
            self._session.forget_response()
            try:
                info = self._client.refresh_access_token(
                    client_id=self._client_id,
                    client_secret=self._client_secret,
                    refresh_token=stale.refresh_token,
                )
            except exc.Fault:
                response = self._session.last_response
                status = response.status_code if response is not None else 0
                if status not in {400, 401}:  # a 5xx or 429 proves nothing: ask again later
                    raise TransientError(f"Strava token endpoint answered {status}") from None
                detail = _error_summary(response)
                if "client_id" in detail or "client_secret" in detail:
                    msg = "Strava refused the application credentials (STRAVA_CLIENT_ID/SECRET)"
                    raise StravaAuthError(msg) from None
                if self._newer_tokens(stale) is not None:
                    # Another runner rotated the refresh token meanwhile: ask again later.
                    raise TransientError("the Strava tokens changed meanwhile") from None
                return True
            except requests.RequestException as error:
                msg = f"Strava token refresh failed: {type(error).__name__}"
                raise TransientError(msg) from None
            self._keep_refreshed(stale, info)
            return False

    # -- calls ---------------------------------------------------------------------------
    def _call(
        self, request: Callable[[], Any], *, poll: bool = False, background: bool = False
    ) -> Any:
        """Run one stravalib call with fresh tokens; after a 401, refresh once and retry
        once. Answers with an HTTP error become garmin2strava errors."""
        tokens = self._usable_tokens(self._refresh_margin_s)
        for attempt in (1, 2):
            self._client.access_token = tokens.access_token
            self._session.forget_response()
            self._poll = poll
            self._background = background
            try:
                result = request()
            except G2SError:
                raise
            except (exc.Fault, exc.ActivityUploadFailed):
                result = None  # the status below says what happened
            except requests.RequestException as error:
                raise TransientError(f"Strava request failed: {type(error).__name__}") from None
            finally:
                self._poll = False
                self._background = False
            response = self._session.last_response
            status = response.status_code if response is not None else 0
            if status == 401 and attempt == 1:  # noqa: PLR2004 - HTTP status
                tokens = self._refresh(tokens)  # uses newer stored tokens if there are any
                continue
            if status >= 400 or response is None:  # noqa: PLR2004 - HTTP status
                self._raise_for(response)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_for(self, response: requests.Response | None) -> None:
        if response is None:
            raise TransientError("Strava sent no answer")
        status = response.status_code
        detail = _error_summary(response)
        if status == 429:  # noqa: PLR2004 - HTTP status
            until = (
                self._policy.throttled_until()
                if self._policy is not None
                else next_window_reset(self._clock())
            )
            raise RateLimited(until, "Strava answered 429")
        if _app_inactive_answer(response):
            raise StravaAppInactive(next_window_reset(self._clock()))
        if status in {401, 403}:
            msg = f"Strava refused access for user {self._user_id} ({status}: {detail})"
            raise StravaAuthError(msg)
        if status == 404:  # noqa: PLR2004 - HTTP status
            raise StravaNotFound(f"Strava answered 404 ({detail})")
        if status >= 500 or status == 408:  # noqa: PLR2004 - HTTP status
            raise TransientError(f"Strava answered {status}")
        raise G2SError(f"Strava answered {status} ({detail})")

    # -- the API -------------------------------------------------------------------------
    def list_activities(
        self, *, after: datetime, before: datetime, page: int = 1, per_page: int = 30
    ) -> list[StravaActivity]:
        """One page, in Strava's order (ascending start when `after` is given)."""

        def request() -> Any:
            return self._client.protocol.get(
                "/athlete/activities",
                after=int(after.timestamp()),
                before=int(before.timestamp()),
                page=page,
                per_page=per_page,
            )

        rows = self._call(request)
        if not isinstance(rows, list):
            raise TransientError("Strava's activity list is not a list")
        return [strava_activity_from_json(row) for row in rows]

    def list_activity_rows(self, *, after: datetime, page: int, per_page: int) -> list[Any]:
        """One page of the activities starting after `after`, oldest first, as Strava
        sent it (its rows are JSON objects, unread)."""

        def request() -> Any:
            return self._client.protocol.get(
                "/athlete/activities",
                after=int(after.timestamp()),
                page=page,
                per_page=per_page,
            )

        rows = self._call(request)
        if not isinstance(rows, list):
            raise TransientError("Strava's activity list is not a list")
        return rows

    def get_athlete_id(self) -> int:
        """The authorizing athlete's id (GET /athlete): one read."""
        body = self._call(lambda: self._client.protocol.get("/athlete"))
        athlete_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(athlete_id, int) or isinstance(athlete_id, bool):
            raise TransientError("Strava's athlete has no id")
        return athlete_id

    def athlete_gear(self) -> list[StravaGear]:
        """The athlete's shoes and bikes (GET /athlete): one read."""
        return strava_gear_from_athlete(self._call(lambda: self._client.protocol.get("/athlete")))

    def update_activity(self, activity_id: int, update: ActivityUpdate) -> None:
        """One PUT /activities/{id} (stravalib's `update_activity`, a JSON body) of the
        fields `update` sets; a write in Strava's limits."""

        def request() -> Any:
            return self._client.update_activity(
                activity_id,
                gear_id=update.gear_id,
                hide_from_home=update.hide_from_home,
                name=update.name,
            )

        self._call(request)

    def revoke(self) -> bool:
        """Revoke the application's access for this athlete; False when Strava says the
        tokens were dead already. No tokens stored raises StravaAuthError; anything
        else Strava answers raises one line, and nothing is revoked.

        `POST /oauth/revoke` (since 2026-06-01): HTTP Basic client id and secret, the
        refresh token in the form (revoking either token revokes both, and the refresh
        token never expires: no refresh first). Only a 404 (a Strava without revoke)
        falls back to `/oauth/deauthorize`, retired on 2027-06-01."""
        tokens = self._stored_tokens()
        try:
            response = self._session.post(
                f"{REAL_STRAVA_BASE_URL}/oauth/revoke",  # the session rewrites the host
                data={"token": tokens.refresh_token, "token_type_hint": "refresh_token"},
                auth=(str(self._client_id), self._client_secret),
            )
        except requests.RequestException as error:
            raise TransientError(f"Strava's revoke failed: {type(error).__name__}") from None
        status = response.status_code
        if status == 404:  # noqa: PLR2004 - HTTP status
            return self._deauthorize()
        if status in {400, 401}:
            if _names_the_application(response):
                raise G2SError(_APP_CREDENTIALS_REFUSED)
            return False  # the token is dead already: revoked before
        if status >= 300:  # noqa: PLR2004 - HTTP status
            raise G2SError(f"Strava answered {status} to the revoke ({_error_summary(response)})")
        log.info("strava.revoked", extra={"userId": self._user_id})
        return True

    def _deauthorize(self) -> bool:
        """`POST /oauth/deauthorize` on the OAuth origin (stravalib's own posts under
        /api/v3), the access token in the Authorization header, never in the URL."""
        url = f"{REAL_STRAVA_BASE_URL}/oauth/deauthorize"  # the session rewrites the host
        try:
            self._call(lambda: self._client.protocol.post(url))
        except StravaAuthError:
            return False  # Strava refuses the tokens: the authorization is gone already
        log.info("strava.deauthorized", extra={"userId": self._user_id})
        return True

    def get_activity(self, activity_id: int) -> dict[str, Any]:
        body = self._call(lambda: self._client.protocol.get("/activities/{id}", id=activity_id))
        if not isinstance(body, dict):
            raise TransientError("Strava's activity is not an object")
        return cast("dict[str, Any]", body)

    def get_activity_streams(
        self, activity_id: int, types: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """One GET /activities/{id}/streams (key_by_type), shown to the policy as a
        background read. Strava leaves out what it does not have; a 404 raises
        StravaNotFound."""

        def request() -> Any:
            return self._client.get_activity_streams(activity_id, types=cast("Any", list(types)))

        found = self._call(request, background=True)
        if not isinstance(found, dict):
            raise TransientError("Strava's streams are not an object")
        return {
            str(kind): {
                "data": list(stream.data or []),
                "series_type": stream.series_type,
                "original_size": stream.original_size,
                "resolution": stream.resolution,
            }
            for kind, stream in found.items()
        }

    def upload(
        self,
        path: Path,
        *,
        data_type: str,
        external_id: str,
        name: str,
        description: str | None,
        trainer: bool,
    ) -> UploadStatus:
        """Exactly one POST /uploads (two only when a 401 made us refresh)."""

        def request() -> Any:
            # stravalib raises when the answer already carries an error: a verdict
            # (error, duplicate) read from the body below like a poll's, or an HTTP
            # error that _call maps by its status.
            with path.open("rb") as activity_file, contextlib.suppress(exc.ActivityUploadFailed):
                # Not .wait(): it polls every second and then fetches the activity.
                self._client.upload_activity(
                    activity_file,
                    data_type=cast("Any", data_type),
                    name=name,
                    description=description,
                    external_id=external_id,
                    trainer=trainer,
                )
            return _json(self._session.last_response)

        return upload_status_from_json(self._call(request))

    def get_upload(self, upload_id: int) -> UploadStatus:
        """One GET /uploads/{id}, shown to the policy as a poll."""

        def request() -> Any:
            return self._client.protocol.get(
                "/uploads/{upload_id}", upload_id=upload_id, check_for_errors=False
            )

        return upload_status_from_json(self._call(request, poll=True))
