"""The operator's commands: `history`, `accounts list|pause|resume|remove|sync`,
`disconnect`. They work on either store (G2S_STORE=dynamodb from a workstation too).

cli.py imports this module for every invocation, so its top level stays light (click
and the standard library); what a command needs is imported when it runs.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from garmin2strava.entrypoints.cli_common import (
    ISO_DATE,
    format_report,
    json_option,
    load,
    load_app,
    user_option,
)
from garmin2strava.errors import G2SError, StravaAuthError
from garmin2strava.services.account_control import AccountControl, NoSuchAccount, paused_reason_of
from garmin2strava.services.history import format_history, read_history
from garmin2strava.services.strava_access import StravaAccess
from garmin2strava.services.sync_accounts import sync_all

if TYPE_CHECKING:
    from garmin2strava.bootstrap import App

__all__ = ["account_rows", "accounts", "disconnect", "history"]


@click.command()
@user_option("only this account")
@click.option("--since", type=ISO_DATE, metavar="YYYY-MM-DD", help="default: the retention period")
@click.option("--limit", type=int, default=500, show_default=True, help="events per account")
@json_option()
def history(user: str | None, since: datetime | None, limit: int, as_json: bool) -> int:
    """What each sync cycle did, per account, newest first.

    Per account, newest first: each cycle (start, duration, outcome counts, what was
    uploaded or matched with its Strava id, failures with their reasons), token
    refreshes, backoffs, deauthorizations and the operator's actions. Kept for
    G2S_AUDIT_RETENTION_DAYS (default 7); read with key-range queries on SQLite and
    DynamoDB alike. Local: no Garmin or Strava request.
    """

    app = load_app(load())
    retention = timedelta(days=app.settings.audit_retention_days)
    since = since or datetime.now(tz=UTC) - retention
    users = [user] if user else [a.user_id for a in app.store.list_accounts()]
    found = read_history(app.store, users, since=since, limit=limit)
    if as_json:
        body = {u: [e.to_json() for e in entries] for u, entries in found.items()}
        print(json.dumps(body, indent=2, default=str))
        return 0
    if not found:
        print("no accounts yet")
        return 0
    print(format_history(found))
    return 0


@click.group()
def accounts() -> None:
    """List, pause, resume, remove or sync accounts."""


def account_rows(app: App) -> list[dict[str, Any]]:
    """Each account's state and why, for `accounts list`."""

    rows = []
    for a in app.store.list_accounts():
        state = "paused" if not a.enabled else a.status.value
        why = paused_reason_of(a) if not a.enabled else a.status_detail
        if a.enabled and a.garmin_backoff_until and a.garmin_backoff_until > app.clock():
            why = f"Garmin backoff until {a.garmin_backoff_until.isoformat(timespec='seconds')}"
        elif a.enabled and a.garmin_refused_until and a.garmin_refused_until > app.clock():
            until = a.garmin_refused_until.isoformat(timespec="seconds")
            why = f"Garmin refuses this network (403) until {until}; see `status`"
        rows.append(
            {
                "userId": a.user_id,
                "state": state,
                "why": why,
                "stravaAthleteId": a.strava_athlete_id,
                "lastCycleAt": a.last_cycle_at.isoformat() if a.last_cycle_at else None,
                "lastCycleOk": a.last_cycle_ok,
                "lastCycle": a.last_cycle_summary,
            }
        )
    return rows


def _list_accounts(app: App, *, as_json: bool) -> int:
    rows = account_rows(app)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no accounts yet (see README.md: get-token, garmin login)")
        return 0
    print(f"{'account':<16} {'state':<20} {'last cycle (UTC)':<20} why")
    for row in rows:
        last = row["lastCycleAt"][:19].replace("T", " ") if row["lastCycleAt"] else "never"
        ok = "" if row["lastCycleOk"] in (None, True) else " FAILED"
        print(f"{row['userId']:<16} {row['state']:<20} {last + ok:<20} {row['why']}".rstrip())
    return 0


@accounts.command("list")
@json_option("JSON instead of a table")
def accounts_list(as_json: bool) -> int:
    """Every account with its state and last cycle. Local: no request."""
    return _list_accounts(load_app(load()), as_json=as_json)


@accounts.command("pause")
@click.argument("user_id", metavar="ID")
def accounts_pause(user_id: str) -> int:
    """Stop the account's running cycle before its next activity; no cycle until
    resumed. Local: no request."""

    try:
        _control(load_app(load())).pause(user_id)
    except NoSuchAccount as exc:
        print(f"garmin2strava: {exc}", file=sys.stderr)
        return 1
    print(f"account {user_id} paused: no new cycle; a running one stops before its next")
    return 0


@accounts.command("resume")
@click.argument("user_id", metavar="ID")
def accounts_resume(user_id: str) -> int:
    """Let a paused account sync again. Local: no request."""

    try:
        _control(load_app(load())).resume(user_id)
    except NoSuchAccount as exc:
        print(f"garmin2strava: {exc}", file=sys.stderr)
        return 1
    print(f"account {user_id} resumed: the next cycle syncs it")
    return 0


@accounts.command("remove")
@click.argument("user_id", metavar="ID")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def accounts_remove(user_id: str, yes: bool) -> int:
    """Delete the account, its tokens and its mirrored activities (asks first).

    Deletes the account, its Strava and Garmin tokens and its mirrored Strava
    activities. The upload ledger stays, so adding the account again never uploads a
    run twice; its audit events expire with G2S_AUDIT_RETENTION_DAYS. A running cycle is
    stopped before its next activity first. Local: no Garmin or Strava request.
    """

    app = load_app(load())
    if not yes and not _confirm(
        f"Remove account {user_id}: its tokens and mirrored activities are deleted."
    ):
        return 1
    try:
        done = _control(app).remove(user_id)
    except NoSuchAccount as exc:
        print(f"garmin2strava: {exc}", file=sys.stderr)
        return 1
    print(
        f"account {user_id} removed ({done['itemsDeleted']} mirrored activities and "
        "audit events deleted; the upload ledger is kept)"
    )
    return 0


@accounts.command("sync")
@click.argument("user_id", metavar="ID")
def accounts_sync(user_id: str) -> int:
    """One cycle for this account now: 1 Garmin request when there is nothing new and 0
    Strava; each new run adds 1 Garmin download, 1 Strava upload and 1 status poll."""

    app = load_app(load())
    try:
        account = _control(app).account(user_id)
    except NoSuchAccount as exc:
        print(f"garmin2strava: {exc}", file=sys.stderr)
        return 1
    if not account.enabled:
        print(f"account {user_id} is paused: `accounts resume {user_id}` first", file=sys.stderr)
        return 1
    reports = sync_all(app.store, app.sync_deps, only=user_id)
    for report in reports:
        print(format_report(report))
    return 0 if all(r.ok for r in reports) else 1


@click.command()
@user_option()
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def disconnect(user: str | None, yes: bool) -> int:
    """Revoke garmin2strava's Strava access, then forget the tokens and mirrored
    activities.

    Revokes our Strava authorization through Strava's own endpoint (POST
    /oauth/revoke: 1 Strava request; only when Strava answers it 404, POST
    /oauth/deauthorize instead), then forgets the Strava tokens and the mirrored
    activities, as a deauthorization does. The account and its upload ledger stay;
    `get-token` connects it again. When Strava answers anything else, nothing is
    forgotten (one line, exit 1).
    """

    app = load_app(load())
    user_id = user or app.settings.user_id
    if not yes and not _confirm(
        f"Disconnect account {user_id} from Strava: access is revoked, tokens and "
        "mirrored activities are deleted."
    ):
        return 1
    revoked = {"answer": "revoked"}

    def revoke() -> None:
        strava = app.strava_for(user_id)
        assert isinstance(strava, StravaAccess)
        try:
            if not strava.revoke():
                revoked["answer"] = "already revoked on Strava"
        except StravaAuthError:
            # No tokens stored: there is nothing of ours left to revoke.
            revoked["answer"] = "already revoked on Strava"

    try:
        done = _control(app).disconnect(user_id, revoke)
    except NoSuchAccount as exc:
        print(f"garmin2strava: {exc}", file=sys.stderr)
        return 1
    except G2SError as exc:
        print(
            f"garmin2strava: account {user_id} not disconnected, nothing deleted: {exc}",
            file=sys.stderr,
        )
        return 1
    print(
        f"account {user_id} disconnected ({revoked['answer']}; "
        f"{done['itemsDeleted']} mirrored activities and audit events deleted; "
        "the upload ledger is kept)"
    )
    return 0


def _control(app: App) -> AccountControl:
    return AccountControl(
        store=app.store, clock=app.clock, audit_retention_days=app.settings.audit_retention_days
    )


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        print(f"{question} Not confirmed: run again with --yes.", file=sys.stderr)
        return False
    return input(f"{question} Type 'yes' to go on: ").strip().lower() == "yes"
