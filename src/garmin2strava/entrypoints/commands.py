"""The commands behind the CLI. Each builds what it needs through bootstrap."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from garmin2strava.bootstrap import App, bootstrap, utc_now
from garmin2strava.domain.models import LedgerEntry
from garmin2strava.domain.text import shown
from garmin2strava.entrypoints.console_commands import CONSOLE_COMMANDS, run_console_command
from garmin2strava.entrypoints.mirror_commands import MIRROR_COMMANDS, run_mirror_command
from garmin2strava.errors import ConfigError, G2SError
from garmin2strava.logs import configure_logging
from garmin2strava.services.accounts import ensure_settings_account
from garmin2strava.services.runner import sync_all
from garmin2strava.services.status import account_status
from garmin2strava.settings import Settings, load_settings

__all__ = ["dispatch"]

log = logging.getLogger(__name__)


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from garmin2strava.entrypoints.demo import run_demo  # noqa: PLC0415

        return run_demo(keep=args.keep, serve=args.serve)
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    if args.command in MIRROR_COMMANDS:
        return run_mirror_command(settings, args)
    if args.command in CONSOLE_COMMANDS:
        return run_console_command(settings, args)
    handlers = {
        "run": cmd_run,
        "serve": cmd_serve,
        "sync": cmd_sync,
        "backfill": cmd_backfill,
        "uploads": cmd_uploads,
        "status": cmd_status,
        "get-token": cmd_get_token,
        "garmin": cmd_garmin,
        "store": cmd_store,
    }
    return handlers[args.command](settings, args)


def _app(settings: Settings) -> App:
    app = bootstrap(settings)
    ensure_settings_account(app.store, settings, utc_now)
    return app


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from garmin2strava.entrypoints.daemon import run_daemon  # noqa: PLC0415
    from garmin2strava.entrypoints.server import MirrorRuntime  # noqa: PLC0415

    app = _app(settings)
    if settings.store != "sqlite" or getattr(args, "no_http", False):
        return run_daemon(app)
    mirror = MirrorRuntime(app)  # binds the ports first: a taken one ends the command now
    _link_settings_athlete(app)
    return run_daemon(
        app, extra_threads=[mirror.serve_http, mirror.work], preload=MirrorRuntime.MODULES
    )


def cmd_serve(settings: Settings, _args: argparse.Namespace) -> int:
    from garmin2strava.entrypoints.daemon import run_daemon  # noqa: PLC0415
    from garmin2strava.entrypoints.server import MirrorRuntime  # noqa: PLC0415

    app = _app(settings)
    mirror = MirrorRuntime(app)  # binds the ports first: a taken one ends the command now
    _link_settings_athlete(app)
    return run_daemon(
        app,
        extra_threads=[mirror.serve_http, mirror.work],
        sync=False,
        preload=MirrorRuntime.MODULES,
    )


def _link_settings_athlete(app: App) -> None:
    """The mirror needs athlete -> account; a failure here must not stop the daemon."""
    from garmin2strava.adapters.strava import StravaAdapter  # noqa: PLC0415
    from garmin2strava.services.accounts import ensure_athlete_linked  # noqa: PLC0415

    user_id = app.settings.user_id
    if app.store.get_account(user_id) is None or app.store.get_strava_tokens(user_id) is None:
        return
    try:
        strava = app.strava_for(user_id)
        assert isinstance(strava, StravaAdapter)
        ensure_athlete_linked(app.store, user_id, strava.get_athlete_id)
    except G2SError as exc:
        log.warning("account.athlete_link_failed", extra={"userId": user_id, "error": str(exc)})


def cmd_sync(settings: Settings, args: argparse.Namespace) -> int:
    app = _app(settings)
    if not app.store.list_accounts():
        raise ConfigError(
            "no account: set STRAVA_CLIENT_ID, STRAVA_CLIENT_SECRET, STRAVA_REFRESH_TOKEN "
            "and GARMIN_TOKENS (or run `garmin2strava get-token` and `garmin2strava garmin login`)"
        )
    reports = sync_all(app.store, app.sync_deps, dry_run=args.dry_run, only=args.user)
    for report in reports:
        print(format_report(report, dry_run=args.dry_run))
    return 0 if all(r.ok for r in reports) else 1


def format_report(report: Any, *, dry_run: bool = False) -> str:
    lines = [f"account {report.user_id}:"]
    if report.skipped_reason:
        lines.append(f"  skipped: {report.skipped_reason}")
    if report.error:
        lines.append(f"  error: {report.error}")
    for outcome, garmin_id, detail in report.actions:
        label = "would upload" if outcome == "would_upload" else outcome
        lines.append(f"  {label:<12} garmin {garmin_id}  {detail}".rstrip())
    if report.deferred_until and not report.error:
        lines.append(f"  Strava budget spent: the rest waits until {report.deferred_until}")
    if len(lines) == 1:
        lines.append("  nothing to do" + (" (dry run)" if dry_run else ""))
    return "\n".join(lines)


def cmd_backfill(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm  # noqa: PLC0415 (only this command draws a progress bar)

    from garmin2strava.services.backfill import BackfillProgress, backfill_account  # noqa: PLC0415

    app = _app(settings)
    user_id = args.user or settings.user_id
    until = args.until or datetime.now(tz=UTC)
    if args.since >= until:
        raise ConfigError("--since must be before --until")
    bar = tqdm(total=0, unit="activity", disable=args.no_progress or not sys.stderr.isatty())

    def on_progress(progress: BackfillProgress) -> None:
        bar.total = progress.total
        bar.n = progress.done
        note = (
            f"waiting for Strava until {progress.waiting_until:%H:%M}"
            if progress.waiting_until
            else ""
        )
        bar.set_postfix_str(note)
        bar.refresh()

    try:
        progress = backfill_account(
            app.sync_deps(user_id), user_id, since=args.since, until=until, on_progress=on_progress
        )
    finally:
        bar.close()
    for report in progress.reports:
        if report.actions or report.error or report.skipped_reason:
            print(format_report(report))
    print(f"backfill: {progress.done} of {progress.total} activities handled")
    return 0 if progress.done == progress.total else 1


def cmd_uploads(settings: Settings, args: argparse.Namespace) -> int:
    app = _app(settings)
    if args.uploads_command == "retry":
        return _retry_upload(app, args.user or settings.user_id, args.garmin_activity_id)
    users = [args.user] if args.user else [a.user_id for a in app.store.list_accounts()]
    entries = [e for u in users for e in app.store.list_uploads(u, limit=args.limit)]
    if args.json:
        print(json.dumps([ledger_json(e) for e in entries], indent=2))
        return 0
    if not entries:
        print("no uploads recorded yet")
        return 0
    header = ("user", "garmin id", "start (UTC)", "outcome", "strava id")
    print("{:<10} {:>12} {:<17} {:<10} {:>12}  detail".format(*header))
    for e in entries:
        start = e.start_utc.strftime("%Y-%m-%d %H:%M") if e.start_utc else "-"
        strava = str(e.strava_activity_id or "-")
        print(
            f"{e.user_id:<10} {e.garmin_activity_id:>12} {start:<17} {e.outcome.value:<10} "
            f"{strava:>12}  {shown(e.activity_name)} "
            f"{('- ' + shown(e.detail)) if e.detail else ''}".rstrip()
        )
    return 0


def _retry_upload(app: App, user_id: str, garmin_id: int) -> int:
    from garmin2strava.services.account_control import retry_upload  # noqa: PLC0415

    entry = app.store.get_uploads(user_id, [garmin_id]).get(garmin_id)
    if entry is None:
        print(f"no ledger entry for Garmin activity {garmin_id} ({user_id})", file=sys.stderr)
        return 1
    if not retry_upload(app.store, user_id, garmin_id, app.clock()):
        print(f"Garmin activity {garmin_id} is {entry.outcome.value}: nothing to retry")
        return 1
    print(f"Garmin activity {garmin_id} will be retried by the next cycle")
    return 0


def ledger_json(e: LedgerEntry) -> dict[str, Any]:
    return {
        "userId": e.user_id,
        "garminActivityId": e.garmin_activity_id,
        "externalId": e.external_id,
        "outcome": e.outcome.value,
        "name": e.activity_name,
        "typeKey": e.type_key,
        "startUtc": e.start_utc.isoformat() if e.start_utc else None,
        "attempts": e.attempts,
        "stravaActivityId": e.strava_activity_id,
        "uploadId": e.upload_id,
        "detail": e.detail,
        "nextRetryAt": e.next_retry_at.isoformat() if e.next_retry_at else None,
        "updatedAt": e.updated_at.isoformat(),
    }


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    app = _app(settings)
    status = account_status(
        app.store,
        now=app.clock(),
        athlete_capacity=settings.strava_athlete_capacity,
        subscription_id_setting=settings.strava_subscription_id,
    )
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    if not status["accounts"]:
        print("no accounts yet (see README.md: get-token, garmin login)")
    for acc in status["accounts"]:
        detail = f" - {acc['statusDetail']}" if acc["statusDetail"] else ""
        print(f"account {acc['userId']}: {acc['status']}{detail}")
        last = acc["lastCycleAt"] or "never"
        print(f"  last cycle: {last} ok={acc['lastCycleOk']} {acc['lastCycle']}")
        print(f"  uploads: {acc['uploads'] or 'none'}")
        if acc["garminBackoffUntil"]:
            print(f"  Garmin backoff until {acc['garminBackoffUntil']}")
        for f in acc["failures"]:
            print(
                f"  {f['outcome']}: garmin {f['garminActivityId']} "
                f"after {f['attempts']} attempts: {f['error']}"
            )
    budget = status["stravaBudget"]
    print(f"Strava budget: {json.dumps(budget) if budget else 'no request made yet'}")
    strava_app = status["stravaApp"]
    since = f" since {strava_app['inactiveSince']}" if strava_app["inactiveSince"] else ""
    print(f"Strava application: {strava_app['state']}{since}")
    for warning in status["warnings"]:
        print(f"warning: {warning}")
    hook = status["webhook"]
    if hook["subscriptionId"] is None:
        print(f"webhook: {hook['problem']}")
    else:
        print(f"webhook: accepts subscription {hook['subscriptionId']} (from {hook['source']})")
    return 0


def cmd_get_token(settings: Settings, args: argparse.Namespace) -> int:
    from garmin2strava.entrypoints.oauth import get_token  # noqa: PLC0415

    return get_token(
        bootstrap(settings),
        user_id=args.user or settings.user_id,
        port=args.port,
        timeout=args.timeout,
        open_browser=args.open,
    )


def cmd_garmin(settings: Settings, args: argparse.Namespace) -> int:
    from garmin2strava.adapters.garmin import interactive_login  # noqa: PLC0415
    from garmin2strava.domain.models import Account  # noqa: PLC0415

    app = bootstrap(settings)
    user_id = args.user or settings.user_id
    email = args.email or settings.garmin_email or input("Garmin email: ")
    password = (
        settings.garmin_password.get_secret_value()
        if settings.garmin_password
        else getpass.getpass("Garmin password: ")
    )
    blob = interactive_login(email, password, lambda: input("Garmin MFA code: ").strip())
    current = app.store.get_garmin_tokens(user_id)
    app.store.replace_garmin_tokens(
        user_id, blob, expected_version=current.version if current else None
    )
    account = app.store.get_account(user_id) or Account(user_id=user_id, created_at=utc_now())
    if account.status.value == "needs_garmin_login":
        from garmin2strava.domain.models import AccountStatus  # noqa: PLC0415

        account = replace(account, status=AccountStatus.ACTIVE, status_detail="")
    app.store.put_account(account)
    print(f"Garmin tokens stored for account {user_id}; the daemon will use them from now on.")
    return 0


def cmd_store(settings: Settings, _args: argparse.Namespace) -> int:
    if settings.store != "dynamodb":
        print(f"G2S_STORE is {settings.store}: nothing to initialise (SQLite creates itself)")
        return 0
    import boto3  # noqa: PLC0415 (only this command and the DynamoDB adapter need it)

    from garmin2strava.adapters.store.dynamodb_table import create_table  # noqa: PLC0415

    create_table(boto3.client("dynamodb"), settings.dynamodb_table)
    print(f"DynamoDB table {settings.dynamodb_table} is ready")
    return 0
