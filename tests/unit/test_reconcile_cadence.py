"""When a due reconciliation pass is a sweep of the whole history (services/reconcile.py
`sweep_is_due`): G2S_MIRROR_SWEEP_DAYS after the last complete sweep, at once when none
is recorded, never when the setting is 0."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from garmin2strava.services.reconcile import sweep_is_due

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def _state(**times: datetime) -> dict[str, Any]:
    return {"startedAt": (NOW - timedelta(days=1)).isoformat()} | {
        k: v.isoformat() for k, v in times.items()
    }


@pytest.mark.parametrize(
    ("swept", "due"),
    [
        (NOW - timedelta(days=3), False),  # a window pass
        (NOW - WEEK + timedelta(seconds=1), False),  # a second short
        (NOW - WEEK, True),  # exactly the cadence old
        (NOW - timedelta(days=40), True),
    ],
)
def test_a_sweep_is_due_once_the_last_is_the_cadence_old(swept: datetime, *, due: bool) -> None:
    assert sweep_is_due(_state(sweptAt=swept), now=NOW, every=WEEK) is due


@pytest.mark.parametrize(
    "state",
    [
        None,  # a new install: no pass yet
        {"startedAt": (NOW - timedelta(days=1)).isoformat()},  # a state stored before sweeps
        {"startedAt": (NOW - timedelta(days=1)).isoformat(), "sweptAt": "not a time"},
        {"startedAt": (NOW - timedelta(days=1)).isoformat(), "sweptAt": 12},
    ],
    ids=["no-state", "before-sweeps", "garbled", "not-text"],
)
def test_with_no_sweep_recorded_the_next_pass_sweeps(state: dict[str, Any] | None) -> None:
    assert sweep_is_due(state, now=NOW, every=WEEK)


@pytest.mark.parametrize("every", [None, timedelta(0)], ids=["none", "zero"])
@pytest.mark.parametrize("state", [None, _state(sweptAt=NOW - timedelta(days=400))])
def test_sweep_days_zero_never_sweeps(
    every: timedelta | None, state: dict[str, Any] | None
) -> None:
    assert not sweep_is_due(state, now=NOW, every=every)
