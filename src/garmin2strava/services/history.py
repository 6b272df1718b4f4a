"""The sync history: the audit events read back, per account, newest first.

Every cycle that did something (found work, failed, stopped, waited) writes one
`sync.cycle` event with its duration, outcome counts and what it did to each
activity (the Strava id of what it uploaded or
matched, the reason of what failed); the adapters and the mirror add token refreshes,
backoffs, deauthorizations and dead letters; the operator's actions add theirs. The
store keeps them `G2S_AUDIT_RETENTION_DAYS` and reads them with a key-range query.
A cycle that finds nothing to do writes no event (on AWS each write costs): the text
says "idle since" the newest event instead, when that event is no failed cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from garmin2strava.domain.models import AuditEvent
from garmin2strava.ports import Store

__all__ = ["HistoryEntry", "format_history", "idle_since", "read_history"]

# Audit kinds and how a line of history names them.
_LABELS = {
    "sync.cycle": "cycle",
    "strava.token_refreshed": "Strava token refreshed",
    "garmin.tokens_refreshed": "Garmin tokens refreshed",
    "garmin.rate_limited": "Garmin backoff",
    "strava.auth_failed": "Strava refused the token",
    "garmin.auth_failed": "Garmin refused the tokens",
    "strava.deauthorized": "Strava access revoked (mirror and audit trail deleted)",
    "strava.deauthorization_refuted": "deauthorization event refuted by Strava",
    "strava.app_inactive": "Strava application inactive: waiting",
    "strava.app_recovered": "Strava application active again",
    "upload.gave_up": "gave up an upload",
    "mirror.dead_letter": "webhook event dead-lettered",
    "account.paused": "paused",
    "account.resumed": "resumed",
    "account.removed": "removed",
    "notify.sent": "notification sent",
    "upload.finished": "set on Strava",
    "upload.gear_unmapped": "Garmin gear matched no Strava gear",
}


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One audit event, as history shows it."""

    user_id: str
    at: datetime
    kind: str
    detail: dict[str, Any]

    @property
    def started_at(self) -> datetime:
        """A cycle's start (its event is written at its end); other events: `at`."""
        duration = self.detail.get("durationMs")
        if self.kind == "sync.cycle" and isinstance(duration, int | float):
            return self.at - timedelta(milliseconds=duration)
        return self.at

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "userId": self.user_id,
            "at": self.at.isoformat(),
            "kind": self.kind,
        }
        if self.kind == "sync.cycle":
            body["startedAt"] = self.started_at.isoformat()
        detail = dict(self.detail)
        if "kind" in detail:  # a notification's started/cleared: the event's kind stays
            detail["notice"] = detail.pop("kind")
        return body | detail


def read_history(
    store: Store,
    user_ids: Sequence[str],
    *,
    since: datetime,
    limit: int = 500,
) -> dict[str, list[HistoryEntry]]:
    """Each account's events from `since` on, newest first, at most `limit` each."""
    return {
        user_id: [_entry(e) for e in store.list_audit(user_id, limit=limit, since=since)]
        for user_id in user_ids
    }


def _entry(event: AuditEvent) -> HistoryEntry:
    return HistoryEntry(event.user_id, event.at, event.kind, dict(event.detail))


def format_history(history: dict[str, list[HistoryEntry]]) -> str:
    """The text of `garmin2strava history`."""
    lines: list[str] = []
    for user_id, entries in history.items():
        lines.append(f"account {user_id}:")
        if not entries:
            lines.append("  nothing recorded in this period")
        elif (since := idle_since(entries)) is not None:
            lines.append(f"  idle since {since:%Y-%m-%d %H:%M:%S}")
        for entry in entries:
            lines.extend(_lines(entry))
    return "\n".join(lines)


def idle_since(entries: Sequence[HistoryEntry]) -> datetime | None:
    """When the account last had something recorded (`entries` newest first), unless
    that was a failed cycle: what came after was idle, since idle cycles are not
    recorded. None for no entries or a failure last."""
    if not entries:
        return None
    newest = entries[0]
    if newest.kind == "sync.cycle" and not newest.detail.get("ok"):
        return None
    return newest.at


def _lines(entry: HistoryEntry) -> Iterable[str]:
    when = entry.started_at.strftime("%Y-%m-%d %H:%M:%S")
    detail = entry.detail
    if entry.kind != "sync.cycle":
        label = _LABELS.get(entry.kind, entry.kind)
        extra = _event_detail(detail)
        yield f"  {when}  {label}{(': ' + extra) if extra else ''}"
        return
    seconds = float(detail.get("durationMs") or 0) / 1000
    outcomes = detail.get("outcomes") or {}
    counts = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "idle"
    state = "ok" if detail.get("ok") else "FAILED"
    yield f"  {when}  cycle {seconds:.1f} s  {state}  {counts}"
    if detail.get("error"):
        yield f"      error: {detail['error']}"
    if detail.get("stopped"):
        yield f"      stopped: {detail['stopped']}"
    if detail.get("deferredUntil"):
        yield f"      Strava budget spent: the rest waits until {detail['deferredUntil']}"
    for item in detail.get("items") or []:
        strava = item.get("stravaActivityId")
        target = f" -> Strava {strava}" if strava else ""
        name = f" {item['name']!r}" if item.get("name") else ""
        reason = f"  ({item['detail']})" if item.get("detail") else ""
        yield f"      {item['outcome']:<9} garmin {item['garminActivityId']}{name}{target}{reason}"
    if detail.get("itemsOmitted"):
        yield f"      ... and {detail['itemsOmitted']} more"


def _event_detail(detail: dict[str, Any]) -> str:
    keys = (
        "key",
        "kind",
        "error",
        "until",
        "activityId",
        "athleteId",
        "by",
        "itemsDeleted",
        "cause",
        "garminActivityId",
        "stravaActivityId",
        "finish",
    )
    return " ".join(f"{k}={detail[k]}" for k in keys if detail.get(k) not in (None, ""))
