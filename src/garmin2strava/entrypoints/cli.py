"""`garmin2strava`: the command line (click). Each command is one function: its
options, its help and its work side by side. Thin: read the settings, build the app,
call a service, print.

The top level imports click and the standard library only: `--help` and the local
commands (`status`, `uploads list`, ...) never load a client library, and what a
command needs is imported when it runs.

Exit codes: 0 success, 1 a sync or command failed, 2 bad settings or usage.
"""

from __future__ import annotations

import getpass
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from garmin2strava.domain.models import Account, AccountStatus
from garmin2strava.domain.text import shown
from garmin2strava.entrypoints import account_commands, mirror_commands, notify_commands
from garmin2strava.entrypoints.cli_common import (
    ISO_DATE,
    format_report,
    json_option,
    load,
    load_app,
    user_option,
)
from garmin2strava.errors import ConfigError, G2SError, GarminAuthError, GarminRateLimited
from garmin2strava.services.account_control import retry_upload
from garmin2strava.services.backfill import BackfillProgress, backfill_account
from garmin2strava.services.garmin_login import (
    login_cooldown,
    login_rate_limited,
    login_succeeded,
)
from garmin2strava.services.status import RENAMES_NOT_CARRIED, account_status
from garmin2strava.services.strava_access import StravaAccess
from garmin2strava.services.sync_accounts import sync_all

if TYPE_CHECKING:
    from garmin2strava.bootstrap import App
    from garmin2strava.domain.models import LedgerEntry

__all__ = ["cli", "ledger_json", "main"]

log = logging.getLogger(__name__)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Commands(click.Group):
    """The group: a command's int result is the exit code, and our errors are one line
    on stderr (ConfigError: a bad setting, exit 2; any other G2SError: exit 1). Here
    rather than in main() so that click's CliRunner sees what the process does."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            code = super().invoke(ctx)
        except ConfigError as exc:
            print(f"garmin2strava: {exc}", file=sys.stderr)
            ctx.exit(2)
        except G2SError as exc:
            print(f"garmin2strava: {exc}", file=sys.stderr)
            ctx.exit(1)
        except KeyboardInterrupt:
            print("garmin2strava: interrupted", file=sys.stderr)
            ctx.exit(130)
        ctx.exit(code if isinstance(code, int) else 0)


@click.group(
    cls=_Commands,
    context_settings=CONTEXT,
    epilog='Settings come from the environment or a .env file (README.md, "Settings"). '
    "Every command but demo reads the store's: G2S_STORE (sqlite), G2S_DB_PATH, "
    "G2S_TOKEN_KEY (else a key file beside the database), G2S_DYNAMODB_TABLE, "
    "G2S_KMS_KEY_ID; and G2S_LOG_LEVEL, G2S_LOG_FORMAT. Single-user mode needs "
    "STRAVA_CLIENT_ID, STRAVA_CLIENT_SECRET, STRAVA_REFRESH_TOKEN and GARMIN_TOKENS; "
    "the account G2S_USER_ID is created on first use, without a request. "
    "Try it without any account: `garmin2strava demo`. "
    "Exit codes: 0 success, 1 a sync or command failed, 2 a bad setting or usage.",
)
def cli() -> None:
    """Every Garmin run on Strava exactly once, and a mirror of your Strava activities in a
    database you own."""


# -- the daemon ----------------------------------------------------------------------------
@cli.command()
@click.option("--no-http", is_flag=True, help="no HTTP listener at all, no mirror worker")
def run(no_http: bool) -> int:
    """The daemon: sync every G2S_SYNC_INTERVAL_SECONDS, serve the webhook, process events.

    Every G2S_SYNC_INTERVAL_SECONDS (default 60) each enabled account gets one sync
    cycle (never two at once; missed runs are coalesced). The webhook is served on
    G2S_HTTP_HOST:G2S_HTTP_PORT, the status page, /healthz and /metrics on
    G2S_ADMIN_HOST:G2S_ADMIN_PORT. On the DynamoDB store (G2S_STORE=dynamodb) only the
    admin listener is served: no webhook listener and no mirror worker (on AWS those
    are Lambda functions over SQS), and /healthz speaks of the sync alone. SIGTERM or
    Ctrl-C finishes the activity in hand and exits 0. Logs are JSON lines on stderr.

    Costs: an idle cycle is 1 Garmin request and 0 Strava; a new run adds 1 Garmin
    download, 1 Strava upload and 1 status poll (at most one list query per group of
    nearby runs); each webhook `create` is 1 Strava read (2 with G2S_MIRROR_STREAMS).
    Reads also G2S_ACTIVITY_TYPES, G2S_LOOKBACK, G2S_MAX_ATTEMPTS,
    G2S_UPLOAD_POLL_DELAY_SECONDS, G2S_MIRROR_RECONCILE_HOURS, G2S_MIRROR_SWEEP_DAYS,
    STRAVA_VERIFY_TOKEN.
    """
    from garmin2strava.entrypoints.daemon import run_daemon
    from garmin2strava.entrypoints.server import AdminRuntime, MirrorRuntime
    from garmin2strava.entrypoints.telling import written_disks
    from garmin2strava.services.conditions import sync_sight

    app = load_app(load())
    if no_http:
        return run_daemon(app)
    if app.settings.store != "sqlite":
        admin = AdminRuntime(app)  # binds the port first: a taken one ends the command now
        log.info(
            "daemon.admin_only",
            extra={
                "store": app.settings.store,
                "port": admin.listener.bound_port,
                "reason": "the webhook and the mirror worker run elsewhere (Lambda over SQS)",
            },
        )
        return run_daemon(app, extra_threads=[admin.serve_http], preload=AdminRuntime.MODULES)
    mirror = MirrorRuntime(app)  # binds the ports first: a taken one ends the command now
    _link_settings_athlete(app)
    sight = sync_sight(
        athlete_capacity=app.settings.strava_athlete_capacity,
        subscription_id_setting=app.settings.strava_subscription_id,
        queue=mirror.queue,
        mirror_expected=True,
        disks=written_disks(app.settings),
    )
    return run_daemon(
        app,
        extra_threads=[mirror.serve_http, mirror.work],
        preload=MirrorRuntime.MODULES,
        sight=sight,
    )


@cli.command()
def serve() -> int:
    """The webhook server and the mirror worker alone (no sync).

    Serves GET/POST /webhooks/strava/<secret> on G2S_HTTP_HOST:G2S_HTTP_PORT and
    /healthz, /metrics on G2S_ADMIN_HOST:G2S_ADMIN_PORT, and processes queued webhook
    events. No sync cycles. Costs: 1 Strava request (a read) per `create` event (2
    with G2S_MIRROR_STREAMS); updates and deletes none. Reads also STRAVA_VERIFY_TOKEN,
    G2S_WEBHOOK_SECRET, STRAVA_SUBSCRIPTION_ID.
    """
    from garmin2strava.entrypoints.daemon import run_daemon
    from garmin2strava.entrypoints.server import MirrorRuntime
    from garmin2strava.services.conditions import mirror_sight

    app = load_app(load())
    mirror = MirrorRuntime(app)  # binds the ports first: a taken one ends the command now
    _link_settings_athlete(app)
    sight = mirror_sight(
        athlete_capacity=app.settings.strava_athlete_capacity,
        subscription_id_setting=app.settings.strava_subscription_id,
        queue=mirror.queue,
    )
    return run_daemon(
        app,
        extra_threads=[mirror.serve_http, mirror.work],
        sync=False,
        preload=MirrorRuntime.MODULES,
        sight=sight,
    )


def _link_settings_athlete(app: App) -> None:
    """The mirror needs athlete -> account; a failure here must not stop the daemon."""
    from garmin2strava.services.accounts import ensure_athlete_linked

    user_id = app.settings.user_id
    if app.store.get_account(user_id) is None or app.store.get_strava_tokens(user_id) is None:
        return
    try:
        strava = app.strava_for(user_id)
        assert isinstance(strava, StravaAccess)
        ensure_athlete_linked(app.store, user_id, strava.get_athlete_id)
    except G2SError as exc:
        log.warning("account.athlete_link_failed", extra={"userId": user_id, "error": str(exc)})


# -- the uploader --------------------------------------------------------------------------
@cli.command()
@click.option("--once", is_flag=True, help="one cycle (the only mode; for clarity)")
@click.option(
    "--dry-run",
    is_flag=True,
    help="say what would be uploaded; download, upload and record nothing",
)
@user_option("only this account")
def sync(once: bool, dry_run: bool, user: str | None) -> int:  # noqa: ARG001 (--once: the only mode)
    """One sync cycle for every account, then exit (non-zero if any account failed).

    Costs per account: 1 Garmin request when there is nothing new, and 0 Strava; each
    new run adds 1 Garmin download, 1 Strava upload and 1 status poll after
    G2S_UPLOAD_POLL_DELAY_SECONDS (at most one list query per group of nearby runs).
    --dry-run still lists Garmin and may query Strava. Reads also G2S_ACTIVITY_TYPES,
    G2S_LOOKBACK, G2S_MAX_ATTEMPTS, G2S_MATCH_TOLERANCE_SECONDS, G2S_UPLOAD_DESCRIPTION.
    """
    from garmin2strava.entrypoints.telling import (
        after_cycle,
        cycle_ok,
        default_sight,
    )

    app = load_app(load())
    if not app.store.list_accounts():
        raise ConfigError(
            "no account: set STRAVA_CLIENT_ID, STRAVA_CLIENT_SECRET, STRAVA_REFRESH_TOKEN "
            "and GARMIN_TOKENS (or run `garmin2strava get-token` and `garmin2strava garmin login`)"
        )
    reports = sync_all(app.store, app.sync_deps, dry_run=dry_run, only=user)
    for report in reports:
        print(format_report(report, dry_run=dry_run))
    if not dry_run:  # a dry run changes nothing: nothing to tell, no heartbeat
        after_cycle(app, default_sight(app), ok=cycle_ok(reports))
    return 0 if cycle_ok(reports) else 1


@cli.command()
@click.option("--since", type=ISO_DATE, required=True, metavar="YYYY-MM-DD", help="inclusive")
@click.option("--until", type=ISO_DATE, metavar="YYYY-MM-DD", help="exclusive; default now")
@user_option()
@click.option("--no-progress", is_flag=True, help="no progress bar")
def backfill(since: datetime, until: datetime | None, user: str | None, no_progress: bool) -> int:
    """Upload older Garmin history, paced by the Strava budget (resumable).

    Walks Garmin history between --since and --until (default: now), oldest first, and
    uploads what Strava does not have. When the Strava budget is spent it waits for the
    next window. Interrupt it at any time: a rerun skips what is done. Costs: 1 Garmin
    request per page of history, then per run 1 Garmin download, 1 Strava upload and 1
    status poll (list queries for groups of nearby runs). Reads also
    G2S_ACTIVITY_TYPES, G2S_MATCH_TOLERANCE_SECONDS.
    """
    from tqdm import tqdm

    settings = load()
    app = load_app(settings)
    user_id = user or settings.user_id
    until = until or datetime.now(tz=UTC)
    if since >= until:
        raise ConfigError("--since must be before --until")
    bar = tqdm(total=0, unit="activity", disable=no_progress or not sys.stderr.isatty())

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
            app.sync_deps(user_id), user_id, since=since, until=until, on_progress=on_progress
        )
    finally:
        bar.close()
    for report in progress.reports:
        if report.actions or report.error or report.skipped_reason:
            print(format_report(report))
    print(f"backfill: {progress.done} of {progress.total} activities handled")
    return 0 if progress.done == progress.total else 1


@cli.group()
def uploads() -> None:
    """The upload ledger (local: no request)."""


@uploads.command("list")
@json_option("JSON instead of a table")
@user_option("only this account")
@click.option("--limit", type=int, default=50, show_default=True, help="entries per account")
def uploads_list(as_json: bool, user: str | None, limit: int) -> int:
    """List ledger entries, newest first. Local: no Garmin or Strava request."""

    app = load_app(load())
    users = [user] if user else [a.user_id for a in app.store.list_accounts()]
    entries = [e for u in users for e in app.store.list_uploads(u, limit=limit)]
    if as_json:
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
            f"{('- ' + shown(e.detail)) if e.detail else ''}"
            f"{('- ' + shown(finish)) if (finish := finish_summary(e)) else ''}".rstrip()
        )
    return 0


def _print_renames_not_carried(count: int) -> None:
    if count:
        print(f"  Garmin renames not carried: {count} ({RENAMES_NOT_CARRIED})")


def finish_summary(e: LedgerEntry) -> str:
    return e.finish.summary() if e.finish is not None else ""


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
        # Gear, feed muting and renames set on Strava (issue 21); None: nothing planned.
        "finish": e.finish.to_json() if e.finish is not None else None,
    }


@uploads.command("retry")
@click.argument("garmin_activity_id", type=int, metavar="GARMIN_ID")
@user_option()
def uploads_retry(garmin_activity_id: int, user: str | None) -> int:
    """Put a failed, dead or skipped activity back in the queue: the next cycle tries
    it again (its attempts start over). Local: no request now."""

    settings = load()
    app = load_app(settings)
    user_id = user or settings.user_id
    entry = app.store.get_uploads(user_id, [garmin_activity_id]).get(garmin_activity_id)
    if entry is None:
        print(
            f"no ledger entry for Garmin activity {garmin_activity_id} ({user_id})", file=sys.stderr
        )
        return 1
    if not retry_upload(app.store, user_id, garmin_activity_id, app.clock()):
        print(f"Garmin activity {garmin_activity_id} is {entry.outcome.value}: nothing to retry")
        return 1
    print(f"Garmin activity {garmin_activity_id} will be retried by the next cycle")
    return 0


@cli.command()
@json_option()
def status(as_json: bool) -> int:
    """Per account: last cycle, outcome counts, failures, backoffs; the Strava budget, the
    application's state, the webhook subscription, and the open conditions (README
    "Being told") with when each began and what fixes it.

    Local: no Garmin or Strava request (it reads what the last requests recorded).
    Reads also G2S_STRAVA_ATHLETE_CAPACITY and STRAVA_SUBSCRIPTION_ID.
    """

    settings = load()
    app = load_app(settings)
    report = account_status(
        app.store,
        now=app.clock(),
        athlete_capacity=settings.strava_athlete_capacity,
        subscription_id_setting=settings.strava_subscription_id,
    )
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    if not report["accounts"]:
        print("no accounts yet (see README.md: get-token, garmin login)")
    for acc in report["accounts"]:
        detail = f" - {acc['statusDetail']}" if acc["statusDetail"] else ""
        print(f"account {acc['userId']}: {acc['status']}{detail}")
        last = acc["lastCycleAt"] or "never"
        print(f"  last cycle: {last} ok={acc['lastCycleOk']} {acc['lastCycle']}")
        print(f"  uploads: {acc['uploads'] or 'none'}")
        if acc["garminBackoffUntil"]:
            print(f"  Garmin backoff until {acc['garminBackoffUntil']}")
        if refused := acc["garminRefused"]:
            print(
                f"  Garmin refuses this network (403) since {refused['since']}, "
                f"next try after {refused['until']}: {refused['fix']}"
            )
        for f in acc["failures"]:
            print(
                f"  {f['outcome']}: garmin {f['garminActivityId']} "
                f"after {f['attempts']} attempts: {f['error']}"
            )
        _print_renames_not_carried(acc["renamesNotCarried"])
    budget = report["stravaBudget"]
    print(f"Strava budget: {json.dumps(budget) if budget else 'no request made yet'}")
    strava_app = report["stravaApp"]
    since = f" since {strava_app['inactiveSince']}" if strava_app["inactiveSince"] else ""
    print(f"Strava application: {strava_app['state']}{since}")
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    hook = report["webhook"]
    if hook["subscriptionId"] is None:
        print(f"webhook: {hook['problem']}")
    else:
        print(f"webhook: accepts subscription {hook['subscriptionId']} (from {hook['source']})")
    for condition in report["conditions"]:
        account = f" (account {condition['userId']})" if condition["userId"] else ""
        print(f"condition {condition['key']}{account} since {condition['since']}")
        print(f"  fix: {condition['fix']}")
    return 0


# -- accounts' credentials -----------------------------------------------------------------
@cli.command("get-token")
@click.option("--port", type=int, default=9321, show_default=True, help="local redirect port")
@user_option()
@click.option("--timeout", type=float, default=300.0, show_default=True, help="seconds to wait")
@click.option("--open", "open_browser", is_flag=True, help="also open the URL in a web browser")
def get_token(port: int, user: str | None, timeout: float, open_browser: bool) -> int:
    """Strava OAuth for your own app: store the tokens, print the refresh token.

    Prints the authorization URL (scopes activity:read_all,activity:write), waits for
    Strava's redirect on http://localhost:PORT, exchanges the code (1 Strava request),
    stores the tokens for G2S_USER_ID and prints the refresh token (for
    STRAVA_REFRESH_TOKEN). Set your Strava app's 'Authorization Callback Domain' to
    localhost. Reads STRAVA_CLIENT_ID and STRAVA_CLIENT_SECRET.
    """
    from garmin2strava.bootstrap import bootstrap
    from garmin2strava.entrypoints.oauth import get_token as run_flow

    settings = load()
    return run_flow(
        bootstrap(settings),
        user_id=user or settings.user_id,
        port=port,
        timeout=timeout,
        open_browser=open_browser,
    )


@cli.group()
def garmin() -> None:
    """Garmin Connect account commands."""


@garmin.command("login")
@click.option("--email", help="default: GARMIN_EMAIL, else asked")
@click.option(
    "--force",
    is_flag=True,
    help="log in even during the cooldown that follows Garmin's 429 to a login",
)
@user_option()
def garmin_login(email: str | None, user: str | None, force: bool) -> int:
    """Interactive Garmin login (MFA prompt); stores the tokens.

    Logs in to Garmin Connect once, interactively (asks for an MFA code if your account
    has one), and stores the tokens for G2S_USER_ID. This is the only place a password
    is used; the daemon never logs in by itself. Costs: Garmin's login requests (a
    handful, once). Reads GARMIN_EMAIL and GARMIN_PASSWORD (else asks), and logs in
    where the sync goes: G2S_GARMIN_BASE_URL. After Garmin answers a login with 429 it
    refuses to start for 2 h, then 4 h, 8 h ... up to 24 h (each try deepens Garmin's
    throttle), unless --force.
    """

    from garmin2strava.adapters.garmin import interactive_login
    from garmin2strava.bootstrap import bootstrap

    settings = load()
    app = bootstrap(settings)
    user_id = user or settings.user_id
    cooldown = login_cooldown(app.store, user_id)
    if cooldown is not None and cooldown.until > app.clock() and not force:
        left = _hours_minutes(cooldown.until - app.clock())
        msg = (
            f"Garmin rate-limited the last login; wait {left} (until "
            f"{cooldown.until.isoformat(timespec='minutes')}) or use --force"
        )
        raise GarminRateLimited(msg)
    email = email or settings.garmin_email or input("Garmin email: ")
    password = (
        settings.garmin_password.get_secret_value()
        if settings.garmin_password
        else getpass.getpass("Garmin password: ")
    )
    try:
        blob = interactive_login(
            email,
            password,
            _ask_mfa_code,
            # Where the sync goes (G2S_GARMIN_BASE_URL), so the tokens suit that Garmin.
            base_url=settings.garmin_base_url,
            di_token_url=settings.garmin_di_token_url,
            proxy=settings.garmin_proxy_url,  # G2S_GARMIN_PROXY: the login too
        )
    except GarminRateLimited as exc:
        cooldown = login_rate_limited(app.store, user_id, app.clock())
        msg = f"{exc}; next login after {cooldown.until.isoformat(timespec='minutes')}"
        raise GarminRateLimited(msg) from None
    login_succeeded(app.store, user_id)
    _store_fresh_garmin_tokens(app, user_id, blob)
    account = app.store.get_account(user_id) or Account(user_id=user_id, created_at=app.clock())
    if account.status is AccountStatus.NEEDS_GARMIN_LOGIN:
        account = replace(account, status=AccountStatus.ACTIVE, status_detail="")
    app.store.put_account(account)
    print(f"Garmin tokens stored for account {user_id}; the daemon will use them from now on.")
    return 0


def _hours_minutes(left: timedelta) -> str:
    minutes = max(1, int(left.total_seconds() + 59) // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _ask_mfa_code() -> str:
    """The code typed at the prompt; a closed stdin ends the login in one line."""
    try:
        return input("Garmin MFA code: ").strip()
    except EOFError:
        msg = "Garmin login failed: Garmin asks for an MFA code and none was typed"
        raise GarminAuthError(msg) from None


def _store_fresh_garmin_tokens(app: App, user_id: str, blob: str) -> None:
    """The login's tokens replace whatever is stored, even when a running daemon rotates
    the old ones meanwhile (its compare-and-set moves the version under us): the fresh
    login is the newer, so it is written over that, a few times at most."""
    for _ in range(_TOKEN_WRITE_ATTEMPTS):
        current = app.store.get_garmin_tokens(user_id)
        expected = current.version if current else None
        if app.store.replace_garmin_tokens(user_id, blob, expected_version=expected):
            return
    msg = "Garmin login succeeded, but the stored tokens kept changing; run `garmin login` again"
    raise G2SError(msg)


_TOKEN_WRITE_ATTEMPTS = 5


# -- the store and the demo ----------------------------------------------------------------
@cli.group()
def store() -> None:
    """The store itself."""


@store.command("init")
def store_init() -> int:
    """Create the DynamoDB table G2S_DYNAMODB_TABLE (local use; terraform does it in AWS).

    Creates the table named by G2S_DYNAMODB_TABLE, with its indexes and TTL, at boto3's
    endpoint (AWS_ENDPOINT_URL_DYNAMODB for a local server). An existing table is left
    as it is. The SQLite store needs no init. No Garmin or Strava request.
    """
    settings = load()
    if settings.store != "dynamodb":
        print(f"G2S_STORE is {settings.store}: nothing to initialise (SQLite creates itself)")
        return 0
    import boto3

    from garmin2strava.adapters.store.dynamodb_table import create_table

    create_table(boto3.client("dynamodb"), settings.dynamodb_table)
    print(f"DynamoDB table {settings.dynamodb_table} is ready")
    return 0


@cli.command()
@click.option("--keep", is_flag=True, help="keep the temporary store and say where")
@click.option(
    "--serve", is_flag=True, help="keep the status page up after the demo (Ctrl-C ends it)"
)
def demo(keep: bool, serve: bool) -> int:
    """The real sync against local emulators of Garmin and Strava (no account needed).

    Runs the real garminconnect and stravalib clients against emulators on 127.0.0.1
    and a temporary SQLite store: no request leaves 127.0.0.1, and no setting is read.
    """
    try:
        from garmin2strava.entrypoints.demo import run_demo
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "g2s_sandbox":
            raise
        print(
            "garmin2strava demo: the emulators (g2s-sandbox) are not installed; in a clone "
            "of the repository, `make demo` installs them",
            file=sys.stderr,
        )
        return 1
    return run_demo(keep=keep, serve=serve)


for _command in (
    mirror_commands.webhook,
    mirror_commands.mirror,
    mirror_commands.workouts,
    mirror_commands.events,
    account_commands.history,
    account_commands.accounts,
    account_commands.disconnect,
    notify_commands.notify,
):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit code (never raises SystemExit itself)."""
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="garmin2strava",
            standalone_mode=False,
        )
    except click.ClickException as exc:  # usage errors: exit 2, click's message
        exc.show()
        return exc.exit_code
    except click.Abort:  # Ctrl-C at a prompt (click turns it into Abort)
        print("garmin2strava: interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
