"""What `garmin2strava status` reports, per account."""

from __future__ import annotations

from collections import Counter
from typing import Any

from garmin2strava.domain.models import UploadOutcome
from garmin2strava.ports import Store

__all__ = ["STRAVA_BUDGET_KEY", "account_status", "webhook_status"]

STRAVA_BUDGET_KEY = "strava_budget"


def webhook_status(store: Store, *, subscription_id_setting: int | None) -> dict[str, Any]:
    """Which subscription the webhook accepts, and why it refuses every event if none."""
    from garmin2strava.services.mirror import (  # noqa: PLC0415 (status stays light)
        SUBSCRIPTION_STATE_KEY,
        subscription_from_state,
    )

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


def account_status(store: Store, *, subscription_id_setting: int | None = None) -> dict[str, Any]:
    accounts: list[dict[str, Any]] = []
    for account in store.list_accounts():
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
                "uploads": dict(sorted(counts.items())),
                "failures": failing,
            }
        )
    return {
        "accounts": accounts,
        "stravaBudget": store.get_app_state(STRAVA_BUDGET_KEY),
        "webhook": webhook_status(store, subscription_id_setting=subscription_id_setting),
    }
