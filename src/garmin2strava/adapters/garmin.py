"""Garmin Connect through garminconnect, for one account (ports.GarminPort).

The client is built without credentials and fed the stored DI tokens; it never
logs in. Garmin rotates the refresh token on every refresh, so right after its own
refresh, and again after every call (the library refreshes on a 401 retry), the
adapter compares `client.dumps()` with what it loaded and writes a changed blob back
with a conditional write. A process that loses that race adopts the
newer stored tokens: the other writer's refresh already killed ours.

The login command (`interactive_login`) is the only place a password is used.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from curl_cffi import requests as cffi_requests
from garminconnect import (
    Garmin,
    GarminConnectAuthenticationError,
    GarminConnectConnectionError,
    GarminConnectTooManyRequestsError,
)
from garminconnect import client as garmin_client
from garminconnect.exceptions import GarminConnectNotFoundError

from garmin2strava.domain.models import AuditEvent
from garmin2strava.errors import (
    ArchiveRejected,
    GarminAuthError,
    GarminNetworkRefused,
    GarminNotFound,
    GarminRateLimited,
    GarminRefused,
    TransientError,
)
from garmin2strava.ports import Store

__all__ = [
    "MAX_ORIGINAL_BYTES",
    "NO_DI_TOKENS",
    "GarminConnectAdapter",
    "interactive_login",
    "point_client_at",
    "route_through",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_HTTP_CLIENT_ERROR = 400
_HTTP_UNAUTHORIZED = 401
_HTTP_FORBIDDEN = 403
_HTTP_NOT_FOUND = 404
_HTTP_PROXY_AUTH = 407
_HTTP_TOO_MANY = 429
_HTTP_SERVER_ERROR = 500
# 4xx answers that say "not now" rather than "never": request timeout, conflict
# (the resource is being changed), too early. Any other 4xx repeats on every attempt.
_HTTP_RETRYABLE_4XX = frozenset({408, 409, 425})
_RELOGIN_HINT = "run `garmin2strava garmin login` again"
# garminconnect's own words on a 403: a refused network, which a new login cannot fix.
_REFUSED_HINT = (
    "Garmin may be blocking this client or network; use another network or G2S_GARMIN_PROXY"
)
# The largest ORIGINAL we download: the archive limit of fitfile.extract_original.
MAX_ORIGINAL_BYTES = 64 * 1024 * 1024
_DOWNLOAD_CHUNK = 64 * 1024

# Private garminconnect attributes we set to reach the sandbox (or a mirror).
# tests/integration/test_garmin_adapter.py fails if an upgrade renames them.
CLIENT_URL_ATTRIBUTES = (
    "_connectapi",
    "_di_token_url",
    "_sso",
    "_connect",
    "_ios_service_url",
    "_mobile_sso_service_url",
    "_portal_service_url",
)


def point_client_at(garmin: Garmin, *, base_url: str, di_token_url: str) -> None:
    """Send every request the library could make (API, refresh, SSO) to `base_url`."""
    base = base_url.rstrip("/")
    client = garmin.client
    client._connectapi = base  # noqa: SLF001  the library has no public setting for this
    client._di_token_url = di_token_url  # noqa: SLF001  same
    if base != "https://connectapi.garmin.com":
        # An accidental login must hit the emulator (where it is counted), not Garmin.
        client._sso = f"{base}/sso"  # noqa: SLF001  same
        client._connect = f"{base}/connect"  # noqa: SLF001  same
        client._ios_service_url = f"{base}/gcm/ios"  # noqa: SLF001  same
        client._mobile_sso_service_url = f"{base}/gcm/android"  # noqa: SLF001  same
        client._portal_service_url = f"{base}/connect/app"  # noqa: SLF001  same


def route_through(garmin: Garmin, proxy: str) -> None:
    """Send this client's own requests through `proxy`: the API and download session
    (requests), the web-session one, and the DI token posts (refresh, ticket exchange),
    which the library makes with a module-level curl_cffi (or requests) call.

    The sessions stop reading the environment's proxy variables (trust_env): with
    requests those would override the session's proxies, and a NO_PROXY entry could
    send a Garmin request around the proxy. A login's own sessions are made inside the
    library: `interactive_login` routes those with `_proxy_environment`.
    """
    client = garmin.client
    for session in (client._api_session, client.cs):  # noqa: SLF001  no public setting
        session.proxies = {"http": proxy, "https": proxy}
        session.trust_env = False
    # The library's SessionMixin._http_post, replaced on this instance only.
    client._http_post = functools.partial(_post_through, proxy)  # type: ignore[method-assign]  # noqa: SLF001


def _post_through(proxy: str, url: str, **kwargs: Any) -> Any:
    """The library's SessionMixin._http_post, through `proxy`."""
    timeout = kwargs.pop("timeout", 30)
    if garmin_client.HAS_CFFI:  # as the library decides: curl_cffi when installed
        return cffi_requests.post(url, impersonate="chrome", timeout=timeout, proxy=proxy, **kwargs)
    with requests.Session() as session:
        session.trust_env = False
        return session.post(url, timeout=timeout, proxies={"http": proxy, "https": proxy}, **kwargs)


_PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
)
_NO_PROXY_VARIABLES = ("no_proxy", "NO_PROXY")


@contextlib.contextmanager
def _proxy_environment(proxy: str | None) -> Iterator[None]:
    """While this holds, the process's proxy variables name `proxy` and nothing is
    exempt: the login strategies make their sessions inside the library (requests and
    curl_cffi both read these variables). Only the one-shot `garmin login` uses it, and
    restores the variables after."""
    if proxy is None:
        yield
        return
    names = (*_PROXY_VARIABLES, *_NO_PROXY_VARIABLES)
    saved = {name: os.environ.get(name) for name in names}
    for name in _PROXY_VARIABLES:
        os.environ[name] = proxy
    for name in _NO_PROXY_VARIABLES:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _status_of(exc: BaseException) -> int | None:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


class GarminConnectAdapter:
    """One Garmin account's API. Never logs in; persists rotated tokens itself.

    Construction does no I/O. Tokens are read from the store on the first call
    (and again whenever the stored version moved, e.g. after a new login), so a
    missing token raises GarminAuthError from that call.
    """

    def __init__(
        self,
        store: Store,
        user_id: str,
        *,
        base_url: str,
        di_token_url: str,
        proxy: str | None = None,
        retry_attempts: int = 3,
        retry_min_wait: float = 1.0,
        retry_max_wait: float = 10.0,
        max_download_bytes: int = MAX_ORIGINAL_BYTES,
        audit_retention_days: int = 7,
    ) -> None:
        self._store = store
        self._max_download_bytes = max_download_bytes
        self._audit_retention_days = audit_retention_days
        self._user_id = user_id
        self._base_url = base_url
        self._di_token_url = di_token_url
        self._proxy = proxy
        self._retry = (retry_attempts, retry_min_wait, retry_max_wait)
        self._garmin: Garmin | None = None
        self._blob: str | None = None
        self._version: int | None = None
        self._lock = threading.Lock()

    # -- the port -----------------------------------------------------------------
    def list_activities(self, *, start: int, limit: int) -> list[dict[str, Any]]:
        """Raw activity-list records, newest first. One request while the token is fresh."""
        result = self._call(lambda g: g.get_activities(start=start, limit=limit))
        if not isinstance(result, list):
            raise TransientError("Garmin activity list: unexpected response shape")
        return [item for item in result if isinstance(item, dict)]

    def download_original(self, activity_id: int) -> bytes:
        """The ORIGINAL zip. GarminNotFound for a manual activity (no file), GarminRefused
        for another 4xx that retrying will not change, TransientError for 5xx/network,
        ArchiveRejected for a file over the size limit (stopped while it downloads).

        `Garmin.download_activity` returns the whole body, however large; this sends
        the same GET through the library's own authenticated request (its token
        refresh and 401 retry included) with `stream=True`, and reads it in chunks.
        A 5xx or network error is retried as the library retries its downloads
        (`retry_attempts`, exponential waits between `retry_min_wait` and
        `retry_max_wait`).
        """
        limit = self._max_download_bytes
        attempts, min_wait, max_wait = self._retry

        def fetch(garmin: Garmin) -> bytes:
            path = f"{garmin.garmin_connect_fit_download}/{int(activity_id)}"
            response = garmin.client.request(
                "GET", "connectapi", path, stream=True, headers={"Accept": "*/*"}
            )
            with contextlib.closing(response):
                return _read_limited(response, limit)

        for attempt in range(attempts + 1):
            try:
                return self._call(fetch)
            except TransientError as exc:
                if attempt >= attempts or not _library_would_retry(exc.__cause__):
                    raise
                time.sleep(min(max_wait, min_wait * 2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def activity_gear(self, activity_id: int) -> Any:
        """Garmin's gear records for one activity (garminconnect's `get_activity_gear`:
        `/gear-service/gear/filterGear?activityId=`), as Garmin sent them. One request."""
        return self._call(lambda g: g.get_activity_gear(int(activity_id)))

    # -- machinery ----------------------------------------------------------------
    def _call(self, operation: Callable[[Garmin], T]) -> T:
        with self._lock:
            garmin = self._client()
            try:
                if self._refresh_if_expiring(garmin):
                    # Garmin killed the old refresh token when it answered: the new
                    # tokens are saved before the request they were refreshed for, so
                    # a crash during that request (a download can take a while) does
                    # not leave the store holding a dead refresh token.
                    self._write_back(garmin)
                return operation(garmin)
            except GarminConnectTooManyRequestsError as exc:
                raise GarminRateLimited("Garmin answered 429 (too many requests)") from exc
            except GarminConnectAuthenticationError as exc:
                msg = f"Garmin refused the stored tokens; {_RELOGIN_HINT}"
                raise GarminAuthError(msg) from exc
            except GarminConnectNotFoundError as exc:
                raise GarminNotFound("Garmin answered 404") from exc
            except GarminConnectConnectionError as exc:
                raise _translate_status(_status_of(exc)) from exc
            except requests.RequestException as exc:
                raise TransientError(f"Garmin unreachable: {type(exc).__name__}") from exc
            finally:
                if self._garmin is garmin:  # not dropped by a write that lost its race
                    self._write_back(garmin)

    def _client(self) -> Garmin:
        stored = self._store.get_garmin_tokens(self._user_id)
        if stored is None:
            msg = f"no Garmin tokens stored for this account; {_RELOGIN_HINT}"
            raise GarminAuthError(msg)
        if self._garmin is None or stored.version != self._version:
            self._garmin = self._build(stored.blob)
            self._blob, self._version = stored.blob, stored.version
        return self._garmin

    def _build(self, blob: str) -> Garmin:
        attempts, min_wait, max_wait = self._retry
        garmin = Garmin(retry_attempts=attempts, retry_min_wait=min_wait, retry_max_wait=max_wait)
        point_client_at(garmin, base_url=self._base_url, di_token_url=self._di_token_url)
        if self._proxy is not None:
            route_through(garmin, self._proxy)
        try:
            garmin.client.loads(blob)
        except GarminConnectConnectionError as exc:
            msg = f"the stored Garmin tokens are unreadable; {_RELOGIN_HINT}"
            raise GarminAuthError(msg) from exc
        return garmin

    @staticmethod
    def _refresh_if_expiring(garmin: Garmin) -> bool:
        """Refresh here rather than inside the library, which swallows the reason.
        True when the tokens were refreshed.

        The library would turn a 429 or a 5xx from the token endpoint into a later
        401 ("stop the account"); we want "back off" or "try again" instead.
        """
        client = garmin.client
        with client._token_lock:  # noqa: SLF001  the library's own refresh lock
            if not client._token_expires_soon():  # noqa: SLF001  no public expiry check
                return False
            try:
                client._refresh_di_token()  # noqa: SLF001  the public path hides failures
            except GarminConnectAuthenticationError as exc:
                status = _status_from_refresh_message(str(exc))
                if status == _HTTP_TOO_MANY:
                    raise GarminRateLimited("Garmin token refresh answered 429") from exc
                if status == _HTTP_FORBIDDEN:
                    msg = f"Garmin token refresh answered 403; {_REFUSED_HINT}"
                    raise GarminNetworkRefused(msg) from exc
                if status is not None and status >= _HTTP_SERVER_ERROR:
                    raise TransientError(f"Garmin token refresh answered {status}") from exc
                raise
            except Exception as exc:
                # curl_cffi's own network errors are not requests' classes.
                msg = f"Garmin token refresh failed: {type(exc).__name__}"
                raise TransientError(msg) from exc
            return True

    def _write_back(self, garmin: Garmin) -> None:
        blob = garmin.client.dumps()
        if blob == self._blob:
            return
        written = self._store.replace_garmin_tokens(
            self._user_id, blob, expected_version=self._version
        )
        if written is not None:
            self._blob, self._version = written.blob, written.version
            logger.info(
                "garmin.tokens_saved",
                extra={"userId": self._user_id, "tokenVersion": written.version},
            )
            self._store.add_audit(  # the sync history shows each refresh
                AuditEvent(
                    user_id=self._user_id,
                    at=datetime.now(UTC),
                    kind="garmin.tokens_refreshed",
                    event_id=uuid.uuid4().hex,
                    detail={"tokenVersion": written.version},
                ),
                retention_days=self._audit_retention_days,
            )
            return
        # Another process refreshed first; its tokens are the live ones.
        stored = self._store.get_garmin_tokens(self._user_id)
        logger.warning(
            "garmin.tokens_cas_lost",
            extra={
                "userId": self._user_id,
                "tokenVersion": None if stored is None else stored.version,
            },
        )
        self._garmin = None
        self._blob = self._version = None


def _library_would_retry(cause: BaseException | None) -> bool:
    """A 5xx answer, or a network error on the request (not on the token refresh)."""
    if isinstance(cause, GarminConnectConnectionError):
        status = _status_of(cause)
        return status is not None and status >= _HTTP_SERVER_ERROR
    return isinstance(cause, requests.ConnectionError | requests.Timeout)


def _read_limited(response: requests.Response, limit: int) -> bytes:
    """The body, or ArchiveRejected as soon as it is known to be over `limit` bytes:
    from its Content-Length before reading, else once that much has arrived."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        msg = f"ORIGINAL is {int(declared)} bytes, over the {limit}-byte limit; not downloaded"
        raise ArchiveRejected(msg)
    chunks: list[bytes] = []
    received = 0
    for chunk in response.iter_content(chunk_size=_DOWNLOAD_CHUNK):
        received += len(chunk)
        if received > limit:
            msg = f"ORIGINAL is over the {limit}-byte limit; download stopped at {received} bytes"
            raise ArchiveRejected(msg)
        chunks.append(chunk)
    return b"".join(chunks)


def _status_from_refresh_message(message: str) -> int | None:
    # The library raises GarminConnectAuthenticationError(f"DI token refresh failed: {status}").
    tail = message.rsplit(":", 1)[-1].strip()
    return int(tail) if tail.isdigit() else None


_FIXED_ANSWERS: dict[int, Callable[[], Exception]] = {
    # 401 is the refused token; 403 is not the token (see GarminNetworkRefused).
    _HTTP_UNAUTHORIZED: lambda: GarminAuthError(f"Garmin answered 401; {_RELOGIN_HINT}"),
    _HTTP_FORBIDDEN: lambda: GarminNetworkRefused(f"Garmin answered 403; {_REFUSED_HINT}"),
    _HTTP_TOO_MANY: lambda: GarminRateLimited("Garmin answered 429 (too many requests)"),
    _HTTP_NOT_FOUND: lambda: GarminNotFound("Garmin answered 404"),
    # The proxy's answer, not Garmin's: retried next cycle once its credentials are right.
    _HTTP_PROXY_AUTH: lambda: TransientError(
        "the proxy refused the request (407): check G2S_GARMIN_PROXY's user and password"
    ),
}


def _translate_status(status: int | None) -> Exception:
    fixed = _FIXED_ANSWERS.get(status) if status is not None else None
    if fixed is not None:
        return fixed()
    if (
        status is not None
        and _HTTP_CLIENT_ERROR <= status < _HTTP_SERVER_ERROR
        and status not in _HTTP_RETRYABLE_4XX
    ):
        return GarminRefused(status)
    if status is None:
        return TransientError("Garmin unreachable (network error)")
    return TransientError(f"Garmin answered {status}")


@contextlib.contextmanager
def _library_quiet() -> Iterator[None]:
    """garminconnect's own log records below ERROR are dropped while this holds."""
    library = logging.getLogger("garminconnect")
    level = library.level
    library.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        library.setLevel(level)


def interactive_login(
    email: str,
    password: str,
    prompt_mfa: Callable[[], str],
    *,
    base_url: str | None = None,
    di_token_url: str | None = None,
    proxy: str | None = None,
) -> str:
    """Log in once with a password (and MFA); return the token blob to store.

    Uses the client's credential login directly, not `Garmin.login()`, which would
    prefer a `GARMINTOKENS` variable over the password and load the profile. The
    library's warnings about each strategy it tries (five of them on a 429) are held
    back: the error raised here is the one line the user reads.
    """
    garmin = Garmin(retry_attempts=0)
    if base_url is not None:
        token_url = di_token_url or f"{base_url.rstrip('/')}/di-oauth2-service/oauth/token"
        point_client_at(garmin, base_url=base_url, di_token_url=token_url)
    if proxy is not None:
        route_through(garmin, proxy)
    try:
        with _library_quiet(), _proxy_environment(proxy):
            garmin.client.login(email, password, prompt_mfa=prompt_mfa)
    except GarminConnectTooManyRequestsError as exc:
        msg = (
            "Garmin is rate-limiting logins for this account; wait hours before retrying"
            f" (Garmin: {_library_words(exc, password, proxy)})"
        )
        raise GarminRateLimited(msg) from None
    except GarminConnectAuthenticationError:
        raise GarminAuthError("Garmin login failed: wrong email, password or MFA code") from None
    except (GarminConnectConnectionError, requests.RequestException) as exc:
        msg = f"Garmin login failed: {_library_words(exc, password, proxy)}"
        raise TransientError(msg) from None
    blob = str(garmin.client.dumps())
    if not _has_di_tokens(blob):
        raise GarminAuthError(NO_DI_TOKENS)
    return blob


# garminconnect falls back to a JWT_WEB cookie session when Garmin refuses the DI
# token exchange: it "logs in", but dumps() then holds nulls that loads() refuses.
NO_DI_TOKENS = (
    "Garmin login gave no DI tokens (Garmin refused the token exchange and the library "
    "fell back to a web session, which the sync cannot use); nothing stored. "
    "Try again later, or from another network"
)
_LIBRARY_WORDS_MAX = 300


def _has_di_tokens(blob: str) -> bool:
    try:
        tokens = json.loads(blob)
    except ValueError:
        return False
    return (
        isinstance(tokens, dict)
        and bool(tokens.get("di_token"))
        and bool(tokens.get("di_refresh_token"))
    )


def _library_words(exc: BaseException, *secrets: str | None) -> str:
    """The library's own message (already free of tickets and query values), on one
    line, shortened, never with the password or the proxy URL (it may hold one) in it;
    its class name if empty."""
    words = " ".join(str(exc).split())
    for secret in secrets:
        if secret:
            words = words.replace(secret, "***")
    words = words[:_LIBRARY_WORDS_MAX]
    return words or type(exc).__name__
