"""When a condition is told: once when it starts, once when it clears, retried until
delivered (domain/conditions.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from garmin2strava.domain.conditions import (
    CONDITIONS,
    Condition,
    ConditionState,
    NoticeKind,
    Observation,
    advance,
    delivered,
    state_id,
    tried,
)

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
GARMIN = ("garmin.tokens_refused", "alice")
INACTIVE = ("strava.app_inactive", None)
REFUSED = Observation(*GARMIN, detail="Garmin answered 401", since=T0)


def _cycle(
    states: dict[str, ConditionState],
    observed: list[Observation],
    now: datetime,
    *,
    checked: tuple[tuple[str, str | None], ...] = (GARMIN, INACTIVE),
    deliver: bool = True,
) -> tuple[dict[str, ConditionState], list[tuple[str, str]]]:
    states, notices = advance(states, observed, checked, now)
    told = []
    for notice in notices:
        if deliver:
            states = delivered(states, notice, now)
            told.append((notice.state.key, str(notice.kind)))
    return states, told


def test_one_start_and_one_clearing_over_many_cycles() -> None:
    states: dict[str, ConditionState] = {}
    told: list[tuple[str, str]] = []
    for minute in range(10):
        states, sent = _cycle(states, [REFUSED], T0 + timedelta(minutes=minute))
        told += sent
    assert told == [("garmin.tokens_refused", "started")]
    assert states[state_id(*GARMIN)].since == T0
    states, sent = _cycle(states, [], T0 + timedelta(minutes=11))
    assert sent == [("garmin.tokens_refused", "cleared")]
    assert states == {}  # a told clearing ends the record
    _, sent = _cycle(states, [], T0 + timedelta(minutes=12))
    assert sent == []


def test_a_channel_down_owes_the_notice_until_it_is_delivered() -> None:
    states, sent = _cycle({}, [REFUSED], T0, deliver=False)
    assert sent == []
    states, owed = advance(states, [REFUSED], [GARMIN], T0 + timedelta(minutes=1))
    assert [n.kind for n in owed] == [NoticeKind.STARTED]
    states = delivered(states, owed[0], T0 + timedelta(minutes=1))
    _, owed = advance(states, [REFUSED], [GARMIN], T0 + timedelta(minutes=2))
    assert owed == []


def test_what_was_not_checked_neither_opens_nor_clears() -> None:
    """The webhook worker does not look at Garmin: it must not clear Garmin's condition."""
    states, _ = _cycle({}, [REFUSED], T0)
    states, sent = _cycle(states, [], T0 + timedelta(minutes=1), checked=(INACTIVE,))
    assert sent == []
    assert states[state_id(*GARMIN)].open


def test_over_before_it_was_told_is_forgotten_silently() -> None:
    states, _ = _cycle({}, [REFUSED], T0, deliver=False)
    states, sent = _cycle(states, [], T0 + timedelta(minutes=1))
    assert sent == []
    assert states == {}


def test_over_after_a_start_that_may_have_arrived_is_told_cleared() -> None:
    states, (notice,) = advance({}, [REFUSED], [GARMIN], T0)
    states = tried(states, notice, T0)  # the attempt failed, perhaps after it arrived
    states, sent = _cycle(states, [], T0 + timedelta(minutes=1))
    assert sent == [("garmin.tokens_refused", "cleared")]
    assert states == {}


def test_a_failed_clearing_is_not_a_tried_start() -> None:
    states, _ = _cycle({}, [REFUSED], T0)
    states, (notice,) = advance(states, [], [GARMIN], T0 + timedelta(minutes=1))
    assert tried(states, notice, T0) == states


def test_back_before_its_clearing_was_told_is_the_same_spell() -> None:
    states, _ = _cycle({}, [REFUSED], T0)
    states, _ = _cycle(states, [], T0 + timedelta(minutes=1), deliver=False)
    states, sent = _cycle(states, [REFUSED], T0 + timedelta(minutes=2))
    assert sent == []
    assert states[state_id(*GARMIN)].open
    assert states[state_id(*GARMIN)].since == T0


def test_a_new_spell_after_a_told_clearing_is_told_again() -> None:
    states, _ = _cycle({}, [REFUSED], T0)
    states, _ = _cycle(states, [], T0 + timedelta(minutes=1))
    later = Observation(*GARMIN, detail="again", since=T0 + timedelta(hours=1))
    _, sent = _cycle(states, [later], T0 + timedelta(hours=1))
    assert sent == [("garmin.tokens_refused", "started")]


def test_the_notice_names_the_account_what_since_when_and_the_fix() -> None:
    _, (notice,) = advance({}, [REFUSED], [GARMIN], T0)
    assert notice.title == "[garmin2strava] garmin.tokens_refused started"
    assert notice.notify_type == "failure"
    assert "Account: alice" in notice.body
    assert "Garmin answered 401" in notice.body
    assert "Since: 2026-12-01 06:00 UTC" in notice.body
    assert "garmin2strava garmin login --user alice" in notice.body


def test_app_wide_notices_name_no_account_and_the_budget_is_a_warning() -> None:
    budget = Observation("strava.budget_nearly_spent", None, detail="", since=T0)
    _, (notice,) = advance({}, [budget], [("strava.budget_nearly_spent", None)], T0)
    assert notice.notify_type == "warning"
    assert "Account" not in notice.body
    states = {notice.id: ConditionState(budget.key, None, T0, "", started_sent_at=T0)}
    _, (clearing,) = advance(states, [], [("strava.budget_nearly_spent", None)], T0)
    assert clearing.title == "[garmin2strava] strava.budget_nearly_spent cleared"
    assert clearing.notify_type == "success"


def test_states_survive_their_stored_form() -> None:
    state = ConditionState(
        *GARMIN, since=T0, detail="x", started_sent_at=T0, cleared_at=T0, start_tried_at=T0
    )
    assert ConditionState.from_dict(state.to_dict()) == state


@pytest.mark.parametrize("condition", CONDITIONS.values(), ids=lambda c: c.key)
def test_every_condition_says_what_and_how_to_fix(condition: Condition) -> None:
    """Keys are `area.what`; the fix names a command or a place to act."""
    area, _, what = condition.key.partition(".")
    assert area in {"garmin", "strava", "uploads", "mirror", "webhook", "store"}
    assert what
    assert condition.meaning.endswith(".")
    assert (
        "garmin2strava " in condition.fix
        or "https://" in condition.fix
        or condition.fix.startswith(("nothing to do", "free space"))
    )
