"""What `garmin2strava status` reports: per account, for the Strava application
(its access, its rate budget, its athlete capacity), and the open conditions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from garmin2strava.domain.app_access import APP_ACCESS_KEY, APP_CAPPED_KEY, StravaAppAccess
from garmin2strava.domain.conditions import CONDITIONS, GARMIN_REFUSED_FIX
from garmin2strava.domain.models import Account, AccountStatus, UploadOutcome
from garmin2strava.errors import APP_CAPPED_CAUSE, APP_INACTIVE_CAUSE
from garmin2strava.ports import AppState, Store
from garmin2strava.services.mirror_subscription import (
    SUBSCRIPTION_STATE_KEY,
    subscription_from_state,
)
from garmin2strava.services.notify import open_conditions

__all__ = [
    "DEFAULT_ATHLETE_CAPACITY",
    "STRAVA_BUDGET_KEY",
    "account_status",
    "connected_accounts",
    "open_conditions_status",
    "strava_app_status",
    "webhook_status",
]

STRAVA_BUDGET_KEY = "strava_budget"
DEFAULT_ATHLETE_CAPACITY = 10  # Strava's Standard tier since June 2026


def strava_app_status(store: AppState, *, now: datetime) -> dict[str, Any]:
    """The application's access as `status`, /healthz and /metrics show it."""
    access = StravaAppAccess.from_dict(store.get_app_state(APP_ACCESS_KEY))
    next_probe = access.next_probe_at(now)
    return {
        "state": "inactive" if access.inactive else "active",
        "inactiveSince": access.inactive_since.isoformat() if access.inactive_since else None,
        "cause": APP_INACTIVE_CAUSE if access.inactive else None,
        "probes": access.probes,
        "lastProbeAt": access.last_probe_at.isoformat() if access.last_probe_at else None,
        "nextProbeAt": next_probe.isoformat() if next_probe else None,
        "recoveredAt": access.recovered_at.isoformat() if access.recovered_at else None,
    }


def connected_accounts(accounts: Sequence[Account]) -> list[Account]:
    """The accounts that count against the athlete capacity: an athlete counts from
    authorizing until revoking."""
    return [
        a
        for a in accounts
        if a.strava_athlete_id is not None and a.status is not AccountStatus.DISCONNECTED
    ]


def _capacity_warnings(accounts: Sequence[Account], capacity: int) -> list[str]:
    connected = connected_accounts(accounts)
    if len(connected) <= capacity:
        return []
    warning = (
        f"the Strava application holds {len(connected)} connected accounts but serves at "
        f"most {capacity} athletes (G2S_STRAVA_ATHLETE_CAPACITY; 10 in Strava's Standard "
        "tier): Strava refuses the athletes beyond it; disconnect some, or move the "
        "application to the Extended tier and raise the setting"
    )
    return [warning]


def webhook_status(store: Store, *, subscription_id_setting: int | None) -> dict[str, Any]:
    """Which subscription the webhook accepts, and why it refuses every event if none."""

    stored = subscription_from_state(store.get_app_state(SUBSCRIPTION_STATE_KEY))
    if subscription_id_setting is not None:
        return {"subscriptionId": subscription_id_setting, "source": "STRAVA_SUBSCRIPTION_ID"}
    if stored is not None:
        return {"subscriptionId": stored, "source": "store (webhook subscribe / webhook list)"}
    return {
        "subscriptionId": None,
        "source": None,
        "problem": (
            "no webhook subscription id is known, so the webhook refuses every event: run "
            "`garmin2strava webhook subscribe --url ...` (or `webhook list` if one exists)"
        ),
    }


def open_conditions_status(store: AppState) -> list[dict[str, Any]]:
    """The conditions open now (README "Being told"), oldest first: what needs a
    person, since when, and what fixes it. `status`, the status page and /healthz."""

    found: list[dict[str, Any]] = []
    for state in open_conditions(store):
        condition = CONDITIONS[state.key]
        found.append(
            {
                "key": state.key,
                "userId": state.user_id,
                "since": state.since.isoformat(),
                "severity": str(condition.severity),
                "meaning": condition.meaning,
                "detail": state.detail,
                "fix": condition.fix.format(user=state.user_id or ""),
                "told": state.started_sent_at is not None,
            }
        )
    return found


def account_status(
    store: Store,
    *,
    now: datetime,
    athlete_capacity: int = DEFAULT_ATHLETE_CAPACITY,
    subscription_id_setting: int | None = None,
) -> dict[str, Any]:
    accounts: list[dict[str, Any]] = []
    listed = store.list_accounts()
    for account in listed:
        entries = store.list_uploads(account.user_id, limit=3000)
        counts = Counter(e.outcome.value for e in entries)
        failing = [
            {
                "garminActivityId": e.garmin_activity_id,
                "outcome": e.outcome.value,
                "attempts": e.attempts,
                "error": e.detail,
                "nextRetryAt": e.next_retry_at.isoformat() if e.next_retry_at else None,
            }
            for e in entries
            if e.outcome in {UploadOutcome.FAILED, UploadOutcome.DEAD}
        ]
        accounts.append(
            {
                "userId": account.user_id,
                "status": account.status.value,
                "statusDetail": account.status_detail,
                "enabled": account.enabled,
                "stravaAthleteId": account.strava_athlete_id,
                "lastCycleAt": account.last_cycle_at.isoformat() if account.last_cycle_at else None,
                "lastCycleOk": account.last_cycle_ok,
                "lastCycle": account.last_cycle_summary,
                "garminBackoffUntil": account.garmin_backoff_until.isoformat()
                if account.garmin_backoff_until
                else None,
                "garminRefused": _garmin_refused(account),
                "uploads": dict(sorted(counts.items())),
                "failures": failing,
                "renamesNotCarried": renames_not_carried(store, account.user_id),
            }
        )
    app = strava_app_status(store, now=now)
    warnings = _capacity_warnings(listed, athlete_capacity)
    if app["state"] == "inactive":
        warnings.insert(0, f"{APP_INACTIVE_CAUSE}; next probe at {app['nextProbeAt']}")
    capped = store.get_app_state(APP_CAPPED_KEY) or {}
    if capped.get("since"):
        warnings.append(f"{APP_CAPPED_CAUSE} (get-token, {capped['since']})")
    return {
        "accounts": accounts,
        "stravaBudget": store.get_app_state(STRAVA_BUDGET_KEY),
        "stravaApp": app | {"athleteCapacity": athlete_capacity},
        "warnings": warnings,
        "webhook": webhook_status(store, subscription_id_setting=subscription_id_setting),
        "conditions": open_conditions_status(store),
    }


# Why a Garmin rename was not carried to Strava (services/sync.py's `rename_skip` item).
RENAMES_NOT_CARRIED = (
    "Garmin renames are carried only where the mirror is live (`run` with the webhook, "
    "or the Lambda functions): elsewhere Strava's current name is unknown without a read"
)


def renames_not_carried(store: Store, user_id: str) -> int:
    """Garmin renames the account's last cycle saw and skipped (no live mirror)."""
    for event in store.list_audit(user_id, limit=20):
        if event.kind == "sync.cycle":
            items = event.detail.get("items") or []
            return sum(
                1 for i in items if isinstance(i, dict) and i.get("outcome") == "rename_skip"
            )
    return 0


def _garmin_refused(account: Account) -> dict[str, Any] | None:
    """Garmin's 403 spell (it refuses this network): since when, until when, what helps."""
    if account.garmin_refused_since is None:
        return None
    until = account.garmin_refused_until
    return {
        "since": account.garmin_refused_since.isoformat(),
        "until": until.isoformat() if until else None,
        "refusals": account.garmin_refusals,
        "fix": GARMIN_REFUSED_FIX,
    }
