"""Conditions a person must act on, and when each is told: one notice when it starts,
one when it clears, nothing in between (README "Being told"). Pure: the services
observe, store and send."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

__all__ = [
    "CONDITIONS",
    "GARMIN_REFUSED_FIX",
    "Condition",
    "ConditionState",
    "Notice",
    "NoticeKind",
    "Observation",
    "Severity",
    "advance",
    "delivered",
    "state_id",
    "tried",
]


class Severity(StrEnum):
    """Apprise's notification types, by name: a start is a failure or a warning."""

    FAILURE = "failure"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    scope: Literal["app", "account"]
    severity: Severity
    meaning: str  # what happened, one sentence
    fix: str  # the exact command or action; `{user}` is the account's id


# What helps when Garmin answers 403 to this host: said by the condition, the cycle and
# `status` alike.
GARMIN_REFUSED_FIX = (
    "run from another network, or send Garmin's requests through your own connection "
    "with G2S_GARMIN_PROXY (an http(s) or socks proxy URL); logging in again does not "
    "help. garmin2strava status shows the next try"
)

_CATALOGUE = (
    Condition(
        "garmin.tokens_refused",
        "account",
        Severity.FAILURE,
        "Garmin refuses the stored tokens: no run of this account is synced.",
        "log in again: garmin2strava garmin login --user {user}",
    ),
    Condition(
        "strava.authorization_refused",
        "account",
        Severity.FAILURE,
        "Strava refuses this athlete's authorization: nothing is uploaded or mirrored.",
        "authorize again: garmin2strava get-token --user {user}",
    ),
    Condition(
        "strava.app_inactive",
        "app",
        Severity.FAILURE,
        "Strava answers that the application is inactive: nothing is uploaded or read.",
        "renew the Strava subscription of the application's owner "
        "(https://www.strava.com/settings/api); the sync resumes by itself",
    ),
    Condition(
        "uploads.dead",
        "account",
        Severity.FAILURE,
        "An upload used up its attempts and is given up.",
        "see why with garmin2strava uploads list --user {user}, then "
        "garmin2strava uploads retry --user {user} GARMIN_ID",
    ),
    Condition(
        "mirror.dead_letters",
        "app",
        Severity.FAILURE,
        "Webhook events used up their attempts and wait as dead letters.",
        "see them with garmin2strava events list-dead, then garmin2strava events retry "
        "--all (on AWS: redrive the dead-letter queue to the events queue)",
    ),
    Condition(
        "webhook.subscription_unknown",
        "app",
        Severity.FAILURE,
        "No Strava webhook subscription is known: the mirror hears of no change.",
        "subscribe: garmin2strava webhook subscribe --url https://your.host "
        "(or set STRAVA_SUBSCRIPTION_ID)",
    ),
    Condition(
        "garmin.backoff_long",
        "account",
        Severity.FAILURE,
        "Garmin has been refusing requests (429) for more than 12 hours.",
        "sign in at https://connect.garmin.com to see whether Garmin locked the "
        "account; the sync resumes by itself when Garmin lets it",
    ),
    Condition(
        "garmin.network_refused",
        "account",
        Severity.FAILURE,
        "Garmin answers 403: it refuses this network or client (cloud addresses get "
        "blocked); no run of this account is synced.",
        GARMIN_REFUSED_FIX,
    ),
    Condition(
        "strava.unreachable",
        "app",
        Severity.FAILURE,
        "Strava has been unreachable or failing (5xx) for more than an hour while work waits.",
        "nothing to do if https://status.strava.com shows an outage; otherwise check "
        "this host's network. The work waits and resumes by itself",
    ),
    Condition(
        "strava.budget_nearly_spent",
        "app",
        Severity.WARNING,
        "90 % of the day's Strava requests are spent; the rest waits for tomorrow's budget.",
        "nothing to do; it clears when the budget resets at midnight UTC. "
        "If it recurs, sync fewer accounts per application",
    ),
    Condition(
        "store.unwritable",
        "app",
        Severity.FAILURE,
        "The disk of the store or of the temporary directory is nearly full (under "
        "64 MiB free), or writing there failed: new runs may be lost to it.",
        "free space on the disk that holds G2S_DB_PATH and the temporary directory "
        "(TMPDIR); the notification names each directory and what is left",
    ),
    Condition(
        "strava.athlete_capacity_exceeded",
        "app",
        Severity.FAILURE,
        "There are more accounts than the Strava application's athlete capacity.",
        "raise the capacity on https://www.strava.com/settings/api, or remove "
        "accounts (garmin2strava accounts remove ID)",
    ),
)
CONDITIONS: Mapping[str, Condition] = {c.key: c for c in _CATALOGUE}


@dataclass(frozen=True, slots=True)
class Observation:
    """A condition seen now: `user_id` is None for an app-wide one."""

    key: str
    user_id: str | None
    detail: str  # what, specifically (a run's Garmin name and date, the 403's text)
    since: datetime


def state_id(key: str, user_id: str | None) -> str:
    return f"{key}#{user_id or '*'}"


@dataclass(frozen=True, slots=True)
class ConditionState:
    """One condition's life, kept in the store until its clearing has been told."""

    key: str
    user_id: str | None
    since: datetime
    detail: str
    started_sent_at: datetime | None = None
    cleared_at: datetime | None = None
    cleared_sent_at: datetime | None = None
    # An attempt to tell the start failed, yet it may have arrived (an answer that
    # came too late): its clearing is told even if no attempt is confirmed.
    start_tried_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.cleared_at is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "userId": self.user_id,
            "since": self.since.isoformat(),
            "detail": self.detail,
            "startedSentAt": _iso(self.started_sent_at),
            "clearedAt": _iso(self.cleared_at),
            "clearedSentAt": _iso(self.cleared_sent_at),
            "startTriedAt": _iso(self.start_tried_at),
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ConditionState:
        return cls(
            key=str(value["key"]),
            user_id=value.get("userId"),
            since=datetime.fromisoformat(str(value["since"])),
            detail=str(value.get("detail", "")),
            started_sent_at=_time(value.get("startedSentAt")),
            cleared_at=_time(value.get("clearedAt")),
            cleared_sent_at=_time(value.get("clearedSentAt")),
            start_tried_at=_time(value.get("startTriedAt")),
        )


class NoticeKind(StrEnum):
    STARTED = "started"
    CLEARED = "cleared"


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification to deliver; `state` is the condition it tells of."""

    state: ConditionState
    kind: NoticeKind

    @property
    def id(self) -> str:
        return state_id(self.state.key, self.state.user_id)

    @property
    def title(self) -> str:
        return f"[garmin2strava] {self.state.key} {self.kind}"

    @property
    def notify_type(self) -> str:
        """Apprise's type: failure or warning on a start, success on a clearing."""
        if self.kind is NoticeKind.CLEARED:
            return "success"
        return str(CONDITIONS[self.state.key].severity)

    @property
    def body(self) -> str:
        condition = CONDITIONS[self.state.key]
        user = self.state.user_id
        lines = [f"Account: {user}"] if user else ["For the whole installation."]
        since = self.state.since.strftime("%Y-%m-%d %H:%M UTC")
        if self.kind is NoticeKind.STARTED:
            lines.append(condition.meaning)
            if self.state.detail:
                lines.append(self.state.detail)
            lines.append(f"Since: {since}")
            lines.append(f"Fix: {condition.fix.format(user=user or '')}")
        else:
            cleared = self.state.cleared_at or self.state.since
            lines.append(f"Cleared at {cleared.strftime('%Y-%m-%d %H:%M UTC')} (since {since}).")
            lines.append(f"It was: {condition.meaning}")
        return "\n".join(lines)


def advance(
    states: Mapping[str, ConditionState],
    observed: Sequence[Observation],
    checked: Collection[tuple[str, str | None]],
    now: datetime,
) -> tuple[dict[str, ConditionState], list[Notice]]:
    """The states after this observation, and the notices still owed.

    `checked` names the (key, user) pairs this observer looked at: a condition it did
    not look at neither opens nor clears here (the webhook worker does not see Garmin's
    state). A notice stays owed until `delivered` marks it, so a channel that is down
    is retried on later calls and then told once. A condition that clears before any
    attempt to tell its start is forgotten without a word; one whose start was tried
    (`tried`: it may have arrived) is told cleared, so an owner who got a start is
    never left without its end.
    """
    seen = {state_id(o.key, o.user_id): o for o in observed}
    after: dict[str, ConditionState] = {}
    for sid, state in states.items():
        if sid in seen and not state.open:  # back before its clearing was told:
            after[sid] = replace(state, cleared_at=None)  # the same spell, nothing owed
            continue
        if state.open and (state.key, state.user_id) in checked and sid not in seen:
            if state.started_sent_at is not None or state.start_tried_at is not None:
                after[sid] = replace(state, cleared_at=now)  # else over before anyone knew
            continue
        after[sid] = state
    for sid, observation in seen.items():
        if sid not in after:
            after[sid] = ConditionState(
                observation.key, observation.user_id, observation.since, observation.detail
            )
    notices = [
        Notice(state, NoticeKind.STARTED if state.open else NoticeKind.CLEARED)
        for state in after.values()
        if (state.open and state.started_sent_at is None)
        or (not state.open and state.cleared_sent_at is None)
    ]
    return after, notices


def delivered(
    states: Mapping[str, ConditionState], notice: Notice, now: datetime
) -> dict[str, ConditionState]:
    """The states once `notice` went out: a told clearing ends the condition's record."""
    after = dict(states)
    current = after.get(notice.id)
    if current is None:
        return after
    if notice.kind is NoticeKind.STARTED:
        after[notice.id] = replace(current, started_sent_at=now)
    elif not current.open:
        del after[notice.id]
    return after


def tried(
    states: Mapping[str, ConditionState], notice: Notice, now: datetime
) -> dict[str, ConditionState]:
    """The states once an attempt to deliver `notice` failed: a start that may have
    arrived (the channel's time ran out, say) is remembered, so its clearing is told."""
    after = dict(states)
    current = after.get(notice.id)
    if current is not None and notice.kind is NoticeKind.STARTED and current.open:
        after[notice.id] = replace(current, start_tried_at=current.start_tried_at or now)
    return after


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _time(value: object) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None
