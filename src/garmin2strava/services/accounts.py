"""Accounts: single-user mode from settings, and the account list a cycle walks."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from garmin2strava.domain.models import Account, StravaTokens
from garmin2strava.errors import ConfigError
from garmin2strava.ports import Store
from garmin2strava.settings import Settings

__all__ = ["ensure_athlete_linked", "ensure_settings_account", "read_garmin_tokens_setting"]

log = logging.getLogger(__name__)

_SINGLE_USER_SETTINGS = (
    "STRAVA_CLIENT_ID",
    "STRAVA_CLIENT_SECRET",
    "STRAVA_REFRESH_TOKEN",
    "GARMIN_TOKENS",
)


def ensure_settings_account(
    store: Store, settings: Settings, clock: Callable[[], datetime]
) -> Account | None:
    """Create the account `G2S_USER_ID` from settings on first use.

    The settings' tokens bootstrap the account only: once stored, the store holds the
    rotated tokens and the settings' copies are ignored (they are probably dead).
    Returns the account, or None when single-user settings are not given at all.
    """
    given = {
        "STRAVA_CLIENT_ID": settings.strava_client_id is not None,
        "STRAVA_CLIENT_SECRET": settings.strava_client_secret is not None,
        "STRAVA_REFRESH_TOKEN": settings.strava_refresh_token is not None,
        "GARMIN_TOKENS": settings.garmin_tokens is not None,
    }
    account = store.get_account(settings.user_id)
    if account is not None:
        _store_missing_tokens(store, settings, account.user_id)
        return account
    if not given["STRAVA_REFRESH_TOKEN"] and not given["GARMIN_TOKENS"]:
        return None
    missing = [name for name in _SINGLE_USER_SETTINGS if not given[name]]
    if missing:
        msg = f"setting {missing[0]} is required to create account {settings.user_id!r}"
        raise ConfigError(msg)
    account = Account(user_id=settings.user_id, created_at=clock())
    store.put_account(account)
    _store_missing_tokens(store, settings, account.user_id)
    log.info("account.created", extra={"userId": account.user_id})
    return account


def _store_missing_tokens(store: Store, settings: Settings, user_id: str) -> None:
    if settings.garmin_tokens is not None and store.get_garmin_tokens(user_id) is None:
        blob = read_garmin_tokens_setting(settings.garmin_tokens.get_secret_value())
        store.replace_garmin_tokens(user_id, blob, expected_version=None)
    if settings.strava_refresh_token is not None and store.get_strava_tokens(user_id) is None:
        # No access token yet: the adapter refreshes on first use, so creating the
        # account costs no Strava request (an idle first cycle stays at zero).
        tokens = StravaTokens(
            access_token="",
            refresh_token=settings.strava_refresh_token.get_secret_value(),
            expires_at=0,
        )
        store.replace_strava_tokens(user_id, tokens, expected_version=None)


def read_garmin_tokens_setting(value: str) -> str:
    """GARMIN_TOKENS: the token JSON itself, a `.json` file, or a directory holding
    `garmin_tokens.json` (as garminconnect's GARMINTOKENS)."""
    text = value.strip()
    if not text.startswith("{"):
        path = Path(text).expanduser()
        if path.is_dir():
            path /= "garmin_tokens.json"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            msg = f"setting GARMIN_TOKENS: cannot read {path}: {exc.strerror}"
            raise ConfigError(msg) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError("setting GARMIN_TOKENS: not valid token JSON") from None
    if not isinstance(data, dict) or not data.get("di_token") or not data.get("di_refresh_token"):
        raise ConfigError(
            "setting GARMIN_TOKENS: needs di_token and di_refresh_token "
            "(run `garmin2strava garmin login`)"
        )
    return json.dumps({k: data.get(k) for k in ("di_token", "di_refresh_token", "di_client_id")})


def ensure_athlete_linked(
    store: Store, user_id: str, athlete_id_of: Callable[[], int]
) -> int | None:
    """Link the account to its Strava athlete, so webhook events (which carry only
    `owner_id`) find it. Accounts made by `get-token` are linked already; one made from
    settings is linked here once, at daemon start-up, for one Strava read. Never
    called by a sync cycle, so idle cycles stay at zero Strava requests."""
    account = store.get_account(user_id)
    if account is None:
        return None
    if account.strava_athlete_id is not None:
        if store.user_for_athlete(account.strava_athlete_id) is None:
            store.link_athlete(account.strava_athlete_id, user_id)
        return account.strava_athlete_id
    athlete_id = athlete_id_of()
    store.link_athlete(athlete_id, user_id)
    store.put_account(replace(account, strava_athlete_id=athlete_id))
    log.info("account.athlete_linked", extra={"userId": user_id, "athleteId": athlete_id})
    return athlete_id
