"""The mirror's commands: `webhook subscribe|list|delete`, `mirror backfill|reconcile`,
`workouts list|show|export`, `events list-dead|retry`.

cli.py imports this module for every invocation, so its top level stays light (click
and the standard library); what a command needs is imported when it runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from garmin2strava.domain.app_access import APP_ACCESS_KEY, StravaAppAccess
from garmin2strava.domain.text import shown
from garmin2strava.domain.webhook import (
    MIN_SECRET_LENGTH,
    WEBHOOK_PATH_PREFIX,
    callback_path,
    path_secret_matches,
    redact_callback_url,
)
from garmin2strava.entrypoints.cli_common import ISO_DATE, json_option, load, load_app, user_option
from garmin2strava.errors import APP_INACTIVE_CAUSE, ConfigError
from garmin2strava.services.export import (
    atomic_output,
    export_workouts,
)
from garmin2strava.services.mirror_backfill import (
    ActivityLister,
    backfill_mirror,
)
from garmin2strava.services.mirror_subscription import (
    SUBSCRIPTION_STATE_KEY,
    remember_subscription,
    subscription_from_state,
)
from garmin2strava.services.reconcile import reconcile_all
from garmin2strava.services.streams import backfill_streams

if TYPE_CHECKING:
    from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
    from garmin2strava.bootstrap import App
    from garmin2strava.domain.models import Workout
    from garmin2strava.settings import Settings

__all__ = ["events", "mirror", "webhook", "workout_json", "workouts"]


# -- webhook -------------------------------------------------------------------------------
@click.group()
def webhook() -> None:
    """The application's Strava webhook subscription (one per application).

    Subscribe the application to Strava's webhook, list or delete the subscription:
    1 Strava request each. Uses STRAVA_CLIENT_ID, STRAVA_CLIENT_SECRET and
    STRAVA_VERIFY_TOKEN. The callback URL is --url followed by
    /webhooks/strava/<secret>, the secret being G2S_WEBHOOK_SECRET or derived from
    STRAVA_VERIFY_TOKEN; it is never printed. Strava checks the callback URL before it
    answers, so the daemon must be running and reachable. subscribe and list store the
    subscription id: the daemon then accepts only that subscription's events.
    """


def _strava_app(settings: Settings) -> tuple[int, str]:
    if settings.strava_client_id is None or settings.strava_client_secret is None:
        raise ConfigError("settings STRAVA_CLIENT_ID and STRAVA_CLIENT_SECRET are required")
    return settings.strava_client_id, settings.strava_client_secret.get_secret_value()


@webhook.command("subscribe")
@click.option(
    "--url",
    required=True,
    metavar="URL",
    help="the daemon's public base URL, e.g. https://your.host; Strava is given "
    "URL/webhooks/strava/<secret> (at most 255 characters)",
)
def webhook_subscribe(url: str) -> int:
    """Create the subscription (Strava verifies the URL): 1 Strava request, during which
    Strava calls the daemon's callback once. Stores the subscription id.

    The callback is URL/webhooks/strava/<secret>; the secret is G2S_WEBHOOK_SECRET or
    derived from STRAVA_VERIFY_TOKEN, and never printed.
    """
    from garmin2strava.adapters.strava_subscriptions import (
        create_subscription,
    )
    from garmin2strava.bootstrap import build_store

    settings = load()
    client_id, secret = _strava_app(settings)
    store = build_store(settings)
    verify, path_secret = _webhook_secrets(settings)
    callback_url = _callback_url(url, path_secret)
    sub_id = create_subscription(
        client_id, secret, callback_url, verify, where=settings.strava_urls
    )
    remember_subscription(store, sub_id, now=datetime.now(tz=UTC))
    print(f"subscribed: subscription {sub_id} delivers events to {_shown(callback_url)}")
    print(f"subscription {sub_id} is stored: the daemon accepts only its events")
    return 0


@webhook.command("list")
def webhook_list() -> int:
    """Show the subscription, if any, and store its id: 1 Strava request."""
    from garmin2strava.adapters.strava_subscriptions import (
        list_subscriptions,
    )
    from garmin2strava.bootstrap import build_store

    settings = load()
    client_id, secret = _strava_app(settings)
    store = build_store(settings)
    subs = list_subscriptions(client_id, secret, where=settings.strava_urls)
    ids = [sub["id"] for sub in subs if isinstance(sub.get("id"), int)]
    remember_subscription(store, ids[0] if len(ids) == 1 else None, now=datetime.now(tz=UTC))
    if not subs:
        print("no webhook subscription (the daemon refuses every event until there is one)")
    for sub in subs:
        callback = str(sub.get("callback_url") or "")
        ours = _is_our_callback(callback, settings.webhook_path_secret)
        print(
            f"{sub.get('id')}  {_shown(callback)}  created {sub.get('created_at')}"
            f"  ({'this configuration' if ours else 'NOT this configuration: subscribe again'})"
        )
    return 0


@webhook.command("delete")
@click.argument("subscription_id", type=int, metavar="ID")
def webhook_delete(subscription_id: int) -> int:
    """Delete the subscription ID: 1 Strava request. Forgets the stored id when it is
    this one."""
    from garmin2strava.adapters.strava_subscriptions import (
        delete_subscription,
    )
    from garmin2strava.bootstrap import build_store

    settings = load()
    client_id, secret = _strava_app(settings)
    store = build_store(settings)
    delete_subscription(subscription_id, client_id, secret, where=settings.strava_urls)
    if subscription_from_state(store.get_app_state(SUBSCRIPTION_STATE_KEY)) in {
        subscription_id,
        None,
    }:
        remember_subscription(store, None, now=datetime.now(tz=UTC))
    print(f"deleted webhook subscription {subscription_id}")
    return 0


def _webhook_secrets(settings: Settings) -> tuple[str, str]:
    """The verify token and the callback path's secret, refusing a guessable one."""

    if settings.strava_verify_token is None:
        raise ConfigError(
            "setting STRAVA_VERIFY_TOKEN is required: the daemon answers Strava's "
            "handshake with it (use a long random string)"
        )
    verify = settings.strava_verify_token.get_secret_value()
    if settings.webhook_secret is None and len(verify) < MIN_SECRET_LENGTH:
        msg = (
            "setting STRAVA_VERIFY_TOKEN: the callback path's secret is derived from it, so "
            f"use a random string of at least {MIN_SECRET_LENGTH} characters (or set "
            "G2S_WEBHOOK_SECRET)"
        )
        raise ConfigError(msg)
    path_secret = settings.webhook_path_secret
    assert path_secret is not None  # a verify token is set
    return verify, path_secret


def _callback_url(base: str, path_secret: str) -> str:
    parts = urlsplit(base)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query:
        raise ConfigError("--url: give the daemon's public base URL, e.g. https://your.host")
    trimmed = base.rstrip("/").removesuffix(WEBHOOK_PATH_PREFIX.rstrip("/"))
    return trimmed + callback_path(path_secret)


def _is_our_callback(url: str, path_secret: str | None) -> bool:

    _head, found, given = url.partition(WEBHOOK_PATH_PREFIX)
    return bool(found) and path_secret_matches(given.rstrip("/"), path_secret)


def _shown(url: str) -> str:
    return redact_callback_url(url)


# -- mirror --------------------------------------------------------------------------------
@click.group()
def mirror() -> None:
    """The local mirror of Strava activities."""


@mirror.command("backfill")
@click.option("--since", type=ISO_DATE, metavar="YYYY-MM-DD", help="default: everything")
@user_option()
@click.option(
    "--streams",
    is_flag=True,
    help="then read the streams (G2S_MIRROR_STREAMS) of every mirrored activity that has "
    "none yet, one read each, leaving 20% of each read window to the uploader",
)
def mirror_backfill(since: datetime | None, user: str | None, streams: bool) -> int:
    """Fill the mirror from Strava's activity list (paced, resumable).

    Copies Strava activities starting at or after --since (default: all) into the
    mirror: 1 Strava request (a read) per 200 activities, within the read budget (it
    waits for the next window when the budget is spent). Interrupt it at any time: a
    rerun goes on from where it stopped. Once complete, the uploader answers its
    existence check from the mirror for activities from then on. Subscribe the webhook
    first, so the mirror stays current after the backfill. Reads also
    G2S_MIRROR_STREAMS.
    """

    settings = load()
    if streams and not settings.mirror_streams:
        raise ConfigError("--streams needs G2S_MIRROR_STREAMS (e.g. time,heartrate,latlng)")
    app = load_app(settings)
    user_id = user or settings.user_id
    if app.store.get_account(user_id) is None:
        raise ConfigError(f"no account {user_id!r} (see README.md: get-token)")
    strava = app.strava_for(user_id)
    if not isinstance(strava, ActivityLister):
        raise ConfigError("this Strava client cannot list all activities")

    def wait_until(until: datetime) -> bool:
        print(f"mirror backfill: {_why_strava_waits(app)}; waiting until {until:%H:%M} UTC")
        app.stop.wait(max(0.0, (until - app.clock()).total_seconds()))
        return not app.stop.is_set()

    result = backfill_mirror(
        app.store, strava, user_id, since=since, clock=app.clock, wait_until=wait_until
    )
    print(f"mirror backfill: {result.stored} activities stored, {result.skipped} unreadable")
    if result.complete and result.covers_since is not None:
        print(f"the mirror covers activities from {result.covers_since:%Y-%m-%d %H:%M} UTC on")
    if not result.complete:
        return 1
    return _backfill_streams(app, user_id, since, wait_until) if streams else 0


def _why_strava_waits(app: App) -> str:
    """What stops the backfill's reads: the application gone inactive (the owner's
    subscription lapsed, which waiting alone does not mend) or the read budget."""
    access = StravaAppAccess.from_dict(app.store.get_app_state(APP_ACCESS_KEY))
    if access.inactive_since is not None:
        return f"{APP_INACTIVE_CAUSE}; it is tried again"
    return "Strava's read budget is spent"


def _backfill_streams(
    app: App, user_id: str, since: datetime | None, wait_until: Callable[[datetime], bool]
) -> int:
    result = backfill_streams(
        app.store,
        app.strava_for(user_id),
        user_id,
        app.settings.mirror_streams,
        since=since,
        clock=app.clock,
        wait_until=wait_until,
    )
    print(
        f"mirror backfill --streams: {result.stored} with streams, {result.none} without, "
        f"{result.already} read before"
    )
    return 0 if result.complete else 1


@mirror.command("reconcile")
@user_option("default: every account")
@click.option(
    "--sweep",
    is_flag=True,
    help="list the whole history, not the window: 1 read per 200 activities, "
    "plus 1 per mirrored activity Strava no longer lists",
)
def mirror_reconcile(user: str | None, *, sweep: bool) -> int:
    """Repair what the webhook missed (the daemon does it every G2S_MIRROR_RECONCILE_HOURS).

    Lists the activities that started since the last pass (less 7 days), 1 Strava
    request (a read) per 200: fetches those the mirror lacks and checks (and
    soft-deletes) those Strava no longer lists, 1 read each; applies changed names,
    types and visibility; then reads pending streams (G2S_MIRROR_STREAMS). It keeps 20%
    of each read window for the uploader. Runs now, whatever the schedule.

    A sweep (--sweep, or due every G2S_MIRROR_SWEEP_DAYS) lists the whole history
    instead, 1 read per 200 activities, and checks every live mirrored activity Strava
    did not list, 1 read each; an older activity the mirror lacks is stored from the
    list, for no read.
    """

    settings = load()
    app = load_app(settings)
    reports = reconcile_all(
        app.store,
        app.strava_background_for,
        now=app.clock(),
        every=timedelta(hours=settings.mirror_reconcile_hours),
        sweep_every=timedelta(days=settings.mirror_sweep_days),
        stream_types=settings.mirror_streams,
        only=user,
        force=True,
        sweep=sweep,
    )
    if not reports:
        print("mirror reconcile: no account with Strava tokens")
    for r in reports:
        if r.error is not None:
            print(f"{r.user_id}: failed, {r.error}; the pass stays due")
            continue
        listing = "the whole history" if r.sweep else f"since {r.since:%Y-%m-%d %H:%M} UTC"
        print(
            f"{r.user_id}: {listing}, {r.listed} listed, "
            f"{len(r.added)} added, {len(r.deleted)} deleted, {len(r.changed)} changed, "
            f"{r.reads} Strava reads"
        )
        if r.deferred_until is not None:
            print(
                f"{r.user_id}: stopped, the read budget is kept for the uploader until "
                f"{r.deferred_until:%H:%M} UTC; run again then"
            )
    return 0 if all(r.complete for r in reports) else 1


# -- workouts ------------------------------------------------------------------------------
@click.group()
def workouts() -> None:
    """The mirrored Strava activities (local: no request)."""


def workout_json(w: Workout) -> dict[str, Any]:
    return {
        "userId": w.user_id,
        "activityId": w.activity_id,
        "athleteId": w.athlete_id,
        "name": w.name,
        "sportType": w.sport_type,
        "startDate": w.start_utc.isoformat(),
        "elapsedTime": w.elapsed_time,
        "movingTime": w.moving_time,
        "distance": w.distance,
        "totalElevationGain": w.total_elevation_gain,
        "externalId": w.external_id,
        "uploadId": w.upload_id,
        "isPrivate": w.is_private,
        "isDeleted": w.is_deleted,
        "updatedAt": w.updated_at.isoformat(),
    }


@workouts.command("list")
@json_option("JSON instead of a table")
@click.option("--include-deleted", is_flag=True, help="also activities deleted")
@user_option()
def workouts_list(as_json: bool, include_deleted: bool, user: str | None) -> int:
    """List mirrored activities, newest first. Local: no Strava request."""

    settings = load()
    app = load_app(settings)
    user_id = user or settings.user_id
    rows = app.store.list_workouts(user_id, include_deleted=include_deleted)
    if as_json:
        print(json.dumps([workout_json(w) for w in rows], indent=2))
        return 0
    if not rows:
        print(f"no mirrored activities for {user_id} (webhook subscribe, mirror backfill)")
        return 0
    print(f"{'strava id':>12}  {'start (UTC)':<16}  {'sport':<12} {'km':>6}  name")
    for w in rows:
        km = f"{w.distance / 1000:.2f}" if w.distance is not None else "-"
        flags = (" [deleted]" if w.is_deleted else "") + (" [private]" if w.is_private else "")
        print(
            f"{w.activity_id:>12}  {w.start_utc:%Y-%m-%d %H:%M}  {shown(w.sport_type):<12} "
            f"{km:>6}  {shown(w.name)}{flags}"
        )
    return 0


@workouts.command("show")
@click.argument("activity_id", type=int, metavar="ID")
@click.option("--streams", is_flag=True, help="also the stored streams")
@json_option()
@user_option()
def workouts_show(activity_id: int, streams: bool, as_json: bool, user: str | None) -> int:
    """One mirrored activity, ID being its Strava activity id (and its stored streams).
    Local: no Strava request."""

    settings = load()
    app = load_app(settings)
    user_id = user or settings.user_id
    workout = app.store.get_workout(user_id, activity_id)
    if workout is None:
        print(f"no mirrored activity {activity_id} for {user_id}", file=sys.stderr)
        return 1
    stored = app.store.get_streams(user_id, activity_id) if streams else None
    if as_json:
        record: dict[str, Any] = workout_json(workout)
        if streams:
            record["streams"] = None if stored is None else stored.streams
            record["streamsNote"] = None if stored is None else stored.note
        print(json.dumps(record, indent=2))
        return 0
    for name, value in workout_json(workout).items():
        print(f"{name:>20}  {shown(value) if isinstance(value, str) else value}")
    if not streams:
        return 0
    if stored is None:
        print(f"{'streams':>20}  not read yet (G2S_MIRROR_STREAMS; mirror backfill --streams)")
    elif stored.note is not None:
        at = f"{stored.fetched_at:%Y-%m-%d %H:%M} UTC"
        print(f"{'streams':>20}  none kept: {shown(stored.note)} ({at})")
    elif not stored.found:
        print(f"{'streams':>20}  none on Strava (read {stored.fetched_at:%Y-%m-%d %H:%M} UTC)")
    for kind, stream in sorted((stored.streams if stored else {}).items()):
        data = stream.get("data") or []
        head = ", ".join(json.dumps(v) for v in data[:5])
        more = ", ..." if len(data) > 5 else ""  # noqa: PLR2004 - the samples shown
        print(f"{kind:>20}  {len(data)} samples: [{head}{more}]")
    return 0


@workouts.command("export")
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True
)
@click.option("--since", type=ISO_DATE, metavar="YYYY-MM-DD", help="default: everything")
@click.option("--streams", is_flag=True, help="include the stored streams")
@click.option("--include-deleted", is_flag=True, help="also activities deleted")
@click.option("--output", "-o", metavar="FILE", help="default: standard output")
@user_option()
def workouts_export(  # noqa: PLR0917 (click passes one keyword per option)
    fmt: str,
    since: datetime | None,
    streams: bool,
    include_deleted: bool,
    output: str | None,
    user: str | None,
) -> int:
    """The mirror as JSON Lines or CSV, oldest first (to stdout or --output).

    Writes every mirrored activity (from --since on). Streamed: memory stays flat
    however long the mirror. With --streams, JSON Lines adds each activity's streams;
    CSV writes one row per sample instead. --output writes the file atomically (a
    temporary file renamed when complete). Local: no Strava request.
    """

    settings = load()
    app = load_app(settings)
    user_id = user or settings.user_id
    options: dict[str, Any] = {
        "fmt": fmt,
        "since": since,
        "streams": streams,
        "include_deleted": include_deleted,
    }
    if output is None:
        result = export_workouts(app.store, user_id, sys.stdout, **options)
    else:
        with atomic_output(Path(output)) as out:
            result = export_workouts(app.store, user_id, out, **options)
    print(
        f"workouts export: {result.activities} activities"
        + (f", {result.samples} stream samples" if streams else ""),
        file=sys.stderr,
    )
    return 0


# -- events (dead letters of the SQLite queue) ---------------------------------------------
@click.group()
def events() -> None:
    """Webhook events that used up their attempts (dead letters; SQLite store)."""


def _dead_letters(settings: Settings) -> SqliteEventQueue:
    from garmin2strava.adapters.queue_sqlite import SqliteEventQueue

    if settings.store != "sqlite":
        raise ConfigError(
            "the events commands read the SQLite queue (G2S_STORE=sqlite); on AWS the "
            "dead events are in the SQS dead-letter queue"
        )
    return SqliteEventQueue(settings.db_path)


@events.command("list-dead")
def events_list_dead() -> int:
    """List dead events with their last error. Local: no request."""
    queue = _dead_letters(load())
    try:
        dead = queue.list_dead()
    finally:
        queue.close()
    if not dead:
        print("no dead events")
    for d in dead:
        e = d.event
        print(
            f"{d.queue_id:>6}  {e.object_type}.{e.aspect_type} {e.object_id} "
            f"(athlete {e.owner_id})  attempts {d.attempts}  died {d.died_at:%Y-%m-%d %H:%M}"
            f"  {d.error}"
        )
    return 0


@events.command("retry")
@click.argument("queue_id", type=int, required=False, metavar="ID")
@click.option("--all", "retry_all", is_flag=True, help="every dead event")
def events_retry(queue_id: int | None, retry_all: bool) -> int:
    """Put dead event ID (or --all of them) back in the queue: the worker processes
    them next (1 Strava request, a read, per `create`)."""
    queue = _dead_letters(load())
    try:
        if (queue_id is None) == (not retry_all):
            print("garmin2strava: events retry takes an ID or --all (not both)", file=sys.stderr)
            return 2
        now = datetime.now(tz=UTC)
        ids = [d.queue_id for d in queue.list_dead(limit=100_000)] if retry_all else [queue_id]
        retried = [i for i in ids if i is not None and queue.retry_dead(i, now=now)]
    finally:
        queue.close()
    missing = sorted({i for i in ids if i is not None} - set(retried))
    if retried:
        print(f"{len(retried)} event(s) back in the queue; the worker processes them next")
    if missing:
        print(f"no dead event {', '.join(map(str, missing))}", file=sys.stderr)
        return 1
    if not ids:
        print("no dead events")
    return 0
