"""The login cooldown: after Garmin answers a login with 429, no new login for hours.

garminconnect walks every login strategy on a 429, so one failed login is several
attempts, and Garmin's per-account throttle deepens with each (hevy2garmin #163,
#212). `garmin login` therefore records each 429 in the store (application state
`garmin_login_cooldown.{user}`: the count in a row and the end of the wait) and
refuses to start before that end unless forced: 2 h after the first, then 4 h, 8 h
..., at most 24 h. A successful login resets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from garmin2strava.ports import AppState

__all__ = [
    "COOLDOWN_FIRST",
    "COOLDOWN_MAX",
    "LoginCooldown",
    "cooldown_after",
    "login_cooldown",
    "login_rate_limited",
    "login_succeeded",
]

COOLDOWN_FIRST = timedelta(hours=2)
COOLDOWN_MAX = timedelta(hours=24)
_DOUBLINGS_MAX = 8  # 2 h * 2**8 is far past the cap; bounds the power


@dataclass(frozen=True, slots=True)
class LoginCooldown:
    until: datetime
    refusals: int  # login 429s in a row


def cooldown_after(refusals: int) -> timedelta:
    """The wait after the `refusals`-th login 429 in a row: 2 h, 4 h, 8 h ... 24 h."""
    doublings = min(max(refusals - 1, 0), _DOUBLINGS_MAX)
    return min(COOLDOWN_MAX, COOLDOWN_FIRST * (1 << doublings))


def _key(user_id: str) -> str:
    return f"garmin_login_cooldown.{user_id}"


def login_cooldown(store: AppState, user_id: str) -> LoginCooldown | None:
    """The recorded cooldown (it may be over: compare `until` with now), if any."""
    stored = store.get_app_state(_key(user_id))
    if not stored or not stored.get("until"):
        return None
    return LoginCooldown(datetime.fromisoformat(str(stored["until"])), int(stored["refusals"]))


def login_rate_limited(store: AppState, user_id: str, now: datetime) -> LoginCooldown:
    """Record one more login 429: the cooldown that starts now."""
    before = login_cooldown(store, user_id)
    refusals = (before.refusals if before else 0) + 1
    cooldown = LoginCooldown(now + cooldown_after(refusals), refusals)
    store.put_app_state(
        _key(user_id), {"until": cooldown.until.isoformat(), "refusals": cooldown.refusals}
    )
    return cooldown


def login_succeeded(store: AppState, user_id: str) -> None:
    if login_cooldown(store, user_id) is not None:
        store.put_app_state(_key(user_id), {})
