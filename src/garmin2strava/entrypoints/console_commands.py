"""The operator's commands: `history`, `accounts list|pause|resume|remove|sync`,
`disconnect`. They work on either store (G2S_STORE=dynamodb from a workstation too).

`add_console_parsers` is imported by cli.py for every invocation, so this module's top
level stays light; what a command needs is imported when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from garmin2strava.bootstrap import App
    from garmin2strava.services.account_control import AccountControl
    from garmin2strava.settings import Settings

__all__ = ["CONSOLE_COMMANDS", "add_console_parsers", "run_console_command"]

CONSOLE_COMMANDS = frozenset({"history", "accounts", "disconnect"})

AddParser = Callable[..., argparse.ArgumentParser]


def add_console_parsers(add: AddParser, date_type: Callable[[str], datetime]) -> None:
    """Register the commands with cli.py's `add(name, help, description)`."""
    p = add(
        "history",
        "what each sync cycle did, per account, newest first",
        "Per account, newest first: each cycle (start, duration, outcome counts, what was\n"
        "uploaded or matched with its Strava id, failures with their reasons), token\n"
        "refreshes, backoffs, deauthorizations and the operator's actions. Kept for\n"
        "G2S_AUDIT_RETENTION_DAYS (default 7); read with key-range queries on SQLite and\n"
        "DynamoDB alike.",
    )
    p.add_argument("--user", metavar="USER_ID", help="only this account")
    p.add_argument(
        "--since", type=date_type, metavar="YYYY-MM-DD", help="default: the retention period"
    )
    p.add_argument("--limit", type=int, default=500, help="events per account (default 500)")
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    accounts = add("accounts", "list, pause, resume, remove or sync accounts").add_subparsers(
        dest="accounts_command", metavar="ACTION", required=True
    )
    p = accounts.add_parser("list", help="every account with its state and last cycle")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p = accounts.add_parser(
        "pause",
        help="stop the account's running cycle before its next activity; no cycle until resumed",
    )
    p.add_argument("user_id", metavar="ID")
    p = accounts.add_parser("resume", help="let a paused account sync again")
    p.add_argument("user_id", metavar="ID")
    p = accounts.add_parser(
        "remove",
        help="delete the account, its tokens and its mirrored activities (asks first)",
        description="Delete the account, its Strava and Garmin tokens and its mirrored Strava\n"
        "activities. The upload ledger stays, so adding the account again never uploads a\n"
        "run twice; its audit events expire with G2S_AUDIT_RETENTION_DAYS. A running cycle\n"
        "is stopped before its next activity first.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("user_id", metavar="ID")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p = accounts.add_parser("sync", help="one cycle for this account now")
    p.add_argument("user_id", metavar="ID")

    p = add(
        "disconnect",
        "revoke garmin2strava's Strava access, then forget the tokens and mirrored activities",
        "Revoke our Strava authorization through Strava's own endpoint (POST\n"
        "/oauth/deauthorize), then forget the Strava tokens and the mirrored activities, as\n"
        "a deauthorization does. The account and its upload ledger stay; `get-token`\n"
        "connects it again.",
    )
    p.add_argument("--user", metavar="USER_ID", help="default: G2S_USER_ID")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def run_console_command(settings: Settings, args: argparse.Namespace) -> int:
    from garmin2strava.bootstrap import bootstrap, utc_now  # noqa: PLC0415 (light top level)
    from garmin2strava.services.accounts import ensure_settings_account  # noqa: PLC0415

    app = bootstrap(settings)
    ensure_settings_account(app.store, settings, utc_now)
    if args.command == "history":
        return cmd_history(app, args)
    if args.command == "accounts":
        return cmd_accounts(app, args)
    return cmd_disconnect(app, args)


def _control(app: App) -> AccountControl:
    from garmin2strava.services.account_control import AccountControl  # noqa: PLC0415

    return AccountControl(
        store=app.store, clock=app.clock, audit_retention_days=app.settings.audit_retention_days
    )


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        print(f"{question} Not confirmed: run again with --yes.", file=sys.stderr)
        return False
    return input(f"{question} Type 'yes' to go on: ").strip().lower() == "yes"


def cmd_history(app: App, args: argparse.Namespace) -> int:
    from garmin2strava.services.history import format_history, read_history  # noqa: PLC0415

    retention = timedelta(days=app.settings.audit_retention_days)
    since = args.since or datetime.now(tz=UTC) - retention
    users = [args.user] if args.user else [a.user_id for a in app.store.list_accounts()]
    history = read_history(app.store, users, since=since, limit=args.limit)
    if args.json:
        body = {user: [e.to_json() for e in entries] for user, entries in history.items()}
        print(json.dumps(body, indent=2, default=str))
        return 0
    if not history:
        print("no accounts yet")
        return 0
    print(format_history(history))
    return 0


def cmd_accounts(app: App, args: argparse.Namespace) -> int:
    from garmin2strava.services.account_control import NoSuchAccount  # noqa: PLC0415

    action = args.accounts_command
    if action == "list":
        return _list_accounts(app, as_json=args.json)
    control = _control(app)
    user_id = args.user_id
    try:
        if action == "pause":
            control.pause(user_id)
            print(f"account {user_id} paused: no new cycle; a running one stops before its next")
        elif action == "resume":
            control.resume(user_id)
            print(f"account {user_id} resumed: the next cycle syncs it")
        elif action == "remove":
            if not args.yes and not _confirm(
                f"Remove account {user_id}: its tokens and mirrored activities are deleted."
            ):
                return 1
            done = control.remove(user_id)
            print(
                f"account {user_id} removed ({done['itemsDeleted']} mirrored activities and "
                "audit events deleted; the upload ledger is kept)"
            )
        else:
            return _sync_now(app, control, user_id)
    except NoSuchAccount as exc:
        print(f"garmin2strava: {exc}", file=sys.stderr)
        return 1
    return 0


def _sync_now(app: App, control: AccountControl, user_id: str) -> int:
    from garmin2strava.entrypoints.commands import format_report  # noqa: PLC0415
    from garmin2strava.services.runner import sync_all  # noqa: PLC0415

    account = control.account(user_id)
    if not account.enabled:
        print(f"account {user_id} is paused: `accounts resume {user_id}` first", file=sys.stderr)
        return 1
    reports = sync_all(app.store, app.sync_deps, only=user_id)
    for report in reports:
        print(format_report(report))
    return 0 if all(r.ok for r in reports) else 1


def account_rows(app: App) -> list[dict[str, Any]]:
    """Each account's state and why, for `accounts list`."""
    from garmin2strava.services.account_control import paused_reason_of  # noqa: PLC0415

    rows = []
    for a in app.store.list_accounts():
        state = "paused" if not a.enabled else a.status.value
        why = paused_reason_of(a) if not a.enabled else a.status_detail
        if a.enabled and a.garmin_backoff_until and a.garmin_backoff_until > app.clock():
            why = f"Garmin backoff until {a.garmin_backoff_until.isoformat(timespec='seconds')}"
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


def cmd_disconnect(app: App, args: argparse.Namespace) -> int:
    from garmin2strava.errors import StravaAuthError  # noqa: PLC0415
    from garmin2strava.services.account_control import NoSuchAccount  # noqa: PLC0415

    user_id = args.user or app.settings.user_id
    if not args.yes and not _confirm(
        f"Disconnect account {user_id} from Strava: access is revoked, tokens and "
        "mirrored activities are deleted."
    ):
        return 1
    revoked = {"answer": "revoked"}

    def revoke() -> None:
        from garmin2strava.adapters.strava import StravaAdapter  # noqa: PLC0415

        strava = app.strava_for(user_id)
        assert isinstance(strava, StravaAdapter)
        try:
            strava.deauthorize()
        except StravaAuthError:
            # No tokens, or Strava refuses them: the authorization is gone already.
            revoked["answer"] = "already revoked on Strava"

    try:
        done = _control(app).disconnect(user_id, revoke)
    except NoSuchAccount as exc:
        print(f"garmin2strava: {exc}", file=sys.stderr)
        return 1
    print(
        f"account {user_id} disconnected ({revoked['answer']}; "
        f"{done['itemsDeleted']} mirrored activities and audit events deleted; "
        "the upload ledger is kept)"
    )
    return 0
