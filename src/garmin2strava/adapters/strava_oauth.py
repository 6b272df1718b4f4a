"""The application's OAuth calls on stravalib: the authorization URL, the code exchange
(the get-token command) and turning a bare refresh token into stored-ready tokens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import requests
from stravalib import exc
from stravalib.client import Client
from stravalib.protocol import Scope

from garmin2strava.adapters.strava import (
    RewritingSession,
    _app_inactive_answer,
    _client,
    _error_summary,
    _json,
    rewrite_url,
)
from garmin2strava.domain.budget import next_window_reset
from garmin2strava.domain.models import StravaTokens
from garmin2strava.domain.strava_urls import REAL_STRAVA_URLS, StravaUrls
from garmin2strava.errors import (
    G2SError,
    StravaAppCapped,
    StravaAppInactive,
    StravaAuthError,
    TransientError,
)

__all__ = ["authorization_url", "bootstrap_tokens_from_refresh_token", "exchange_code"]


def authorization_url(
    client_id: int,
    redirect_uri: str,
    scope: str | Sequence[str],
    state: str | None,
    where: StravaUrls | str = REAL_STRAVA_URLS,
) -> str:
    scopes = scope.split(",") if isinstance(scope, str) else list(scope)
    client = Client(rate_limit_requests=False)
    url = client.authorization_url(
        client_id=client_id,
        redirect_uri=redirect_uri,
        scope=cast("list[Scope]", [s.strip() for s in scopes if s.strip()]),
        state=state,
    )
    return rewrite_url(url, where)


def _token_error(error: exc.Fault, what: str) -> G2SError:
    if _app_inactive_answer(error.response):
        # Not the athlete's doing: authorizing again would not help.
        return StravaAppInactive(next_window_reset(datetime.now(UTC)))
    status = error.response.status_code if error.response is not None else 0
    if status == 403 and _capped_answer(error.response):  # noqa: PLR2004 - HTTP status
        return StravaAppCapped()
    if status >= 500:  # noqa: PLR2004 - HTTP status
        return TransientError(f"Strava token endpoint answered {status}")
    return StravaAuthError(f"Strava refused the {what} ({status})")


def _capped_answer(response: requests.Response | None) -> bool:
    """403 "Limit of connected athletes exceeded" (its wording in every report seen:
    craibo/ha_strava #288, jat255/strava-to-fittrackee #22), in the message or errors."""
    return "limit of connected athletes" in _error_summary(response).lower()


def exchange_code(
    client_id: int,
    client_secret: str,
    code: str,
    where: StravaUrls | str = REAL_STRAVA_URLS,
    *,
    granted_scope: str | None = None,
) -> tuple[StravaTokens, str, int]:
    """Trade an authorization code for tokens: (tokens, granted scope, athlete id).

    Strava reports the granted scope in the redirect, not in the token answer: pass it
    as `granted_scope` (a `scope` field in the answer wins if Strava ever sends one).
    """
    session = RewritingSession(where)
    client = _client(session)
    try:
        info, athlete = cast(
            "tuple[Any, Any]",
            client.exchange_code_for_token(
                client_id=client_id, client_secret=client_secret, code=code, return_athlete=True
            ),
        )
    except exc.Fault as error:
        raise _token_error(error, "authorization code (expired or used already?)") from None
    except requests.RequestException as error:
        raise TransientError(f"Strava token exchange failed: {type(error).__name__}") from None
    raw = _json(session.last_response)
    scope = raw.get("scope") if isinstance(raw, dict) else None
    scope = scope if isinstance(scope, str) else (granted_scope or "")
    athlete_id = athlete.id if athlete is not None and athlete.id is not None else None
    tokens = StravaTokens(
        access_token=info["access_token"],
        refresh_token=info["refresh_token"],
        expires_at=int(info["expires_at"]),
        scope=scope or None,
    )
    if athlete_id is None:
        athlete_id = _athlete_id(client, tokens.access_token)
    return _with_athlete(tokens, athlete_id), scope, athlete_id


def bootstrap_tokens_from_refresh_token(
    client_id: int,
    client_secret: str,
    refresh_token: str,
    where: StravaUrls | str = REAL_STRAVA_URLS,
    *,
    scope: str | None = None,
) -> StravaTokens:
    """Turn a bare STRAVA_REFRESH_TOKEN into stored-ready tokens: one refresh, then one
    GET /athlete for the athlete id (a read outside the budget check: run once)."""
    client = _client(RewritingSession(where))
    try:
        info = client.refresh_access_token(
            client_id=client_id, client_secret=client_secret, refresh_token=refresh_token
        )
    except exc.Fault as error:
        raise _token_error(error, "refresh token (revoked or rotated already?)") from None
    except requests.RequestException as error:
        raise TransientError(f"Strava token refresh failed: {type(error).__name__}") from None
    tokens = StravaTokens(
        access_token=info["access_token"],
        refresh_token=info["refresh_token"],
        expires_at=int(info["expires_at"]),
        scope=scope,
    )
    return _with_athlete(tokens, _athlete_id(client, tokens.access_token))


def _athlete_id(client: Client, access_token: str) -> int:
    client.access_token = access_token
    try:
        athlete = client.get_athlete()
    except exc.Fault as error:
        raise _token_error(error, "new access token") from None
    except requests.RequestException as error:
        raise TransientError(f"Strava athlete request failed: {type(error).__name__}") from None
    if athlete.id is None:
        raise TransientError("Strava's athlete has no id")
    return int(athlete.id)


def _with_athlete(tokens: StravaTokens, athlete_id: int) -> StravaTokens:
    return StravaTokens(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_at=tokens.expires_at,
        scope=tokens.scope,
        athlete_id=athlete_id,
    )
