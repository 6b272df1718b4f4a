"""Rules of the operator's console: outcome colours, gauges, history lines, the
budget's usage per window, the admin listener's exposure check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from garmin2strava.domain.budget import RateBudget
from garmin2strava.domain.models import Account, UploadOutcome
from garmin2strava.entrypoints.status_page import check_admin_exposure, is_loopback_host
from garmin2strava.errors import ConfigError
from garmin2strava.services.account_control import paused_reason_of
from garmin2strava.services.history import HistoryEntry, format_history
from garmin2strava.services.status_page_view import KINDS, Gauge, kind_of

T0 = datetime(2025, 6, 2, 7, 0, tzinfo=UTC)


def test_every_ledger_outcome_has_a_colour_class() -> None:
    """Each outcome maps to one of the time line's classes; exists and duplicate are
    both 'matched', pending and processing both 'pending'."""
    assert {kind_of(o) for o in UploadOutcome} == set(KINDS)
    assert kind_of(UploadOutcome.EXISTS) == kind_of(UploadOutcome.DUPLICATE) == "matched"
    assert kind_of(UploadOutcome.PROCESSING) == kind_of(UploadOutcome.PENDING) == "pending"


def test_gauge_fraction_is_bounded() -> None:
    """A gauge is full at its limit and never past it; a zero limit reads empty."""
    assert Gauge("x", 50, 200, T0).fraction == 0.25
    assert Gauge("x", 300, 200, T0).fraction == 1.0
    assert Gauge("x", 5, 0, T0).fraction == 0.0


def test_budget_usage_counts_only_within_its_windows() -> None:
    """Usage seen in an earlier quarter hour counts for the day but not the window."""
    budget = RateBudget(
        short_usage=30, daily_usage=400, read_short_usage=20, read_daily_usage=300, observed_at=T0
    )
    assert budget.usage(T0 + timedelta(minutes=5))["short"] == (30, 200)
    later = budget.usage(T0 + timedelta(minutes=20))
    assert later["short"] == (0, 200)
    assert later["read_short"] == (0, 100)
    assert later["daily"] == (400, 2000)
    assert budget.usage(T0 + timedelta(days=1))["read_daily"] == (0, 1000)


def test_history_lines_name_the_strava_id_the_reason_and_idle_cycles() -> None:
    """A cycle line starts at the cycle's start (its end minus its duration), lists
    each activity with its Strava id or reason; an idle cycle says 'idle'."""
    busy = HistoryEntry(
        "u1",
        T0,
        "sync.cycle",
        {
            "ok": True,
            "durationMs": 2500,
            "outcomes": {"uploaded": 1, "failed": 1},
            "items": [
                {
                    "garminActivityId": 1,
                    "outcome": "uploaded",
                    "name": "Easy",
                    "stravaActivityId": 99,
                    "detail": "",
                },
                {
                    "garminActivityId": 2,
                    "outcome": "failed",
                    "name": "",
                    "detail": "TransientError: 503",
                },
            ],
        },
    )
    idle = HistoryEntry(
        "u1",
        T0 + timedelta(minutes=1),
        "sync.cycle",
        {"ok": True, "durationMs": 40, "outcomes": {}},
    )
    backoff = HistoryEntry("u1", T0, "garmin.rate_limited", {"until": "2025-06-02T13:00"})
    text = format_history({"u1": [idle, busy, backoff]})
    lines = text.splitlines()
    assert lines[0] == "account u1:"
    assert "idle" in lines[1]
    assert "2025-06-02 06:59:57  cycle 2.5 s  ok  failed 1, uploaded 1" in text
    assert "garmin 1 'Easy' -> Strava 99" in text
    assert "garmin 2  (TransientError: 503)" in text
    assert "Garmin backoff: until=2025-06-02T13:00" in text
    assert busy.to_json()["startedAt"] == (T0 - timedelta(seconds=2.5)).isoformat()


def test_a_paused_account_says_since_when() -> None:
    """The reason names the time the operator paused it."""
    account = Account(user_id="u1", enabled=False, paused_at=T0)
    assert paused_reason_of(account) == "paused by the operator since 2025-06-02 07:00:00 UTC"
    assert paused_reason_of(Account(user_id="u1", enabled=False)) == "account disabled"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("127.8.0.1", True),
        ("0.0.0.0", False),  # noqa: S104 - the case under test, nothing binds
        ("10.0.0.5", False),
        ("g2s.lan", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    """Only loopback addresses (and `localhost`) count as loopback."""
    assert is_loopback_host(host) is loopback
    if loopback:
        check_admin_exposure(host, None)
    else:
        with pytest.raises(ConfigError, match="G2S_ADMIN_TOKEN"):
            check_admin_exposure(host, None)
