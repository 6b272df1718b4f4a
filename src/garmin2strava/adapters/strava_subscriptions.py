"""The application's webhook subscription on stravalib (Strava's push subscriptions API).

Application calls: client id and secret, no athlete token, not counted in the budget
(run by hand, a few times in the life of a deployment).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import requests
from stravalib import exc

from garmin2strava.adapters.strava import (
    RewritingSession,
    _app_inactive_answer,
    _client,
    _error_summary,
)
from garmin2strava.domain.budget import next_window_reset
from garmin2strava.domain.strava_urls import REAL_STRAVA_URLS, StravaUrls
from garmin2strava.domain.webhook import redact_callback_url
from garmin2strava.errors import G2SError, StravaAppInactive, StravaAuthError, TransientError

__all__ = ["create_subscription", "delete_subscription", "list_subscriptions"]


def create_subscription(
    client_id: int,
    client_secret: str,
    callback_url: str,
    verify_token: str,
    where: StravaUrls | str = REAL_STRAVA_URLS,
) -> int:
    """Subscribe the application; Strava answers only after it verified the callback
    with the handshake. Returns the subscription id."""
    session = RewritingSession(where)
    client = _client(session)
    try:
        body = client.protocol.post(
            "/push_subscriptions",
            data={
                "client_id": client_id,
                "client_secret": client_secret,
                "callback_url": callback_url,
                "verify_token": verify_token,
            },
        )
    except exc.Fault:
        raise _subscription_error(session.last_response, callback_url) from None
    except requests.RequestException as error:
        msg = f"Strava subscription request failed: {type(error).__name__}"
        raise TransientError(msg) from None
    if not isinstance(body, dict) or not isinstance(body.get("id"), int):
        raise TransientError("Strava's subscription answer has no id")
    return int(body["id"])


def list_subscriptions(
    client_id: int, client_secret: str, where: StravaUrls | str = REAL_STRAVA_URLS
) -> list[dict[str, Any]]:
    """The application's subscriptions (zero or one), as Strava's JSON."""
    session = RewritingSession(where)
    client = _client(session)
    try:
        # Strava documents these two as query parameters of this GET, and a GET that
        # carries a body is refused before it reaches Strava (stravalib #740/#741):
        # the one request whose URL holds the client secret. `webhook list` is run by
        # hand; nothing in the daemon calls it.
        body = client.protocol.get(
            "/push_subscriptions", client_id=client_id, client_secret=client_secret
        )
    except exc.Fault:
        raise _subscription_error(session.last_response, None) from None
    except requests.RequestException as error:
        msg = f"Strava subscription request failed: {type(error).__name__}"
        raise TransientError(msg) from None
    if not isinstance(body, list):
        raise TransientError("Strava's subscription list is not a list")
    return [cast("dict[str, Any]", row) for row in body if isinstance(row, dict)]


def delete_subscription(
    subscription_id: int,
    client_id: int,
    client_secret: str,
    where: StravaUrls | str = REAL_STRAVA_URLS,
) -> None:
    session = RewritingSession(where)
    client = _client(session)
    try:
        client.delete_subscription(subscription_id, client_id, client_secret)
    except exc.Fault:
        response = session.last_response
        if response is not None and response.status_code == 404:  # noqa: PLR2004 - HTTP status
            msg = f"Strava has no webhook subscription {subscription_id} for this application"
            raise G2SError(msg) from None
        raise _subscription_error(response, None) from None
    except requests.RequestException as error:
        msg = f"Strava subscription request failed: {type(error).__name__}"
        raise TransientError(msg) from None


def _subscription_error(response: requests.Response | None, callback_url: str | None) -> G2SError:
    if _app_inactive_answer(response):
        return StravaAppInactive(next_window_reset(datetime.now(UTC)))
    status = response.status_code if response is not None else 0
    detail = _error_summary(response)
    if status == 401 or "client_id" in detail:  # noqa: PLR2004 - HTTP status
        return StravaAuthError(
            "Strava refused the application credentials "
            "(check STRAVA_CLIENT_ID and STRAVA_CLIENT_SECRET)"
        )
    if "already exists" in detail:
        return G2SError(
            "Strava already has a webhook subscription for this application (one is "
            "allowed); see it with `garmin2strava webhook list`, delete it with "
            "`garmin2strava webhook delete ID`, then subscribe again"
        )
    if "not verifiable" in detail or "verif" in detail.lower():
        return G2SError(
            f"Strava could not verify the callback URL {redact_callback_url(callback_url or '')}: "
            "it must answer "
            "Strava's GET ?hub.mode=subscribe&hub.challenge=...&hub.verify_token=... with "
            "200 and the challenge within 2 seconds. Is the daemon running and reachable "
            "there, with the same STRAVA_VERIFY_TOKEN?"
        )
    if status >= 500 or status == 0:  # noqa: PLR2004 - HTTP status
        return TransientError(f"Strava answered {status} to a subscription request")
    return G2SError(f"Strava refused the subscription request ({status}: {detail})")
