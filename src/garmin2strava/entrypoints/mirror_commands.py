"""The mirror's commands: `webhook`, `mirror backfill|reconcile`, `workouts
list|show|export`, `events`.

`add_mirror_parsers` is imported by cli.py for every invocation, so this module's
top level stays light (argparse and the standard library); what a command needs is
imported when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
    from garmin2strava.bootstrap import App
    from garmin2strava.domain.models import Workout
    from garmin2strava.settings import Settings

__all__ = ["MIRROR_COMMANDS", "add_mirror_parsers", "run_mirror_command"]

MIRROR_COMMANDS = frozenset({"webhook", "mirror", "workouts", "events"})

AddParser = Callable[..., argparse.ArgumentParser]


def add_mirror_parsers(add: AddParser, date_type: Callable[[str], datetime]) -> None:
    """Register the mirror's commands with cli.py's `add(name, help, description)`."""
    webhook = add(
        "webhook",
        "the application's Strava webhook subscription (one per application)",
        "Subscribe the application to Strava's webhook, list or delete the subscription.\n"
        "Uses STRAVA_CLIENT_ID, STRAVA_CLIENT_SECRET and STRAVA_VERIFY_TOKEN. The callback\n"
        "URL is --url followed by /webhooks/strava/<secret>, the secret being\n"
        "G2S_WEBHOOK_SECRET or derived from STRAVA_VERIFY_TOKEN; it is never printed.\n"
        "Strava checks the callback URL before it answers, so the daemon must be running\n"
        "and reachable. subscribe and list store the subscription id: the daemon then\n"
        "accepts only that subscription's events.",
    ).add_subparsers(dest="webhook_command", metavar="ACTION", required=True)
    p = webhook.add_parser("subscribe", help="create the subscription (Strava verifies the URL)")
    p.add_argument(
        "--url",
        required=True,
        metavar="URL",
        help="the daemon's public base URL, e.g. https://your.host; Strava is given "
        "URL/webhooks/strava/<secret> (at most 255 characters)",
    )
    webhook.add_parser("list", help="show the subscription, if any, and store its id")
    p = webhook.add_parser("delete", help="delete the subscription")
    p.add_argument("subscription_id", type=int, metavar="ID")

    mirror = add("mirror", "the local mirror of Strava activities").add_subparsers(
        dest="mirror_command", metavar="ACTION", required=True
    )
    p = mirror.add_parser(
        "backfill",
        help="fill the mirror from Strava's activity list (paced, resumable)",
        description="Copy Strava activities starting at or after --since (default: all)\n"
        "into the mirror, 200 a request, within the read budget (it waits for the next\n"
        "window when the budget is spent). Interrupt it at any time: a rerun goes on from\n"
        "where it stopped. Once complete, the uploader answers its existence check from\n"
        "the mirror for activities from then on. Subscribe the webhook first, so the\n"
        "mirror stays current after the backfill.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--since", type=date_type, metavar="YYYY-MM-DD", help="default: everything")
    p.add_argument("--user", metavar="USER_ID", help="default: G2S_USER_ID")
    p.add_argument(
        "--streams",
        action="store_true",
        help="then read the streams (G2S_MIRROR_STREAMS) of every mirrored activity that\n"
        "has none yet, one read each, leaving 20%% of each read window to the uploader",
    )
    p = mirror.add_parser(
        "reconcile",
        help="repair what the webhook missed (the daemon does it every G2S_MIRROR_RECONCILE_HOURS)",
        description="List the activities that started since the last pass (less 7 days),\n"
        "one read per 200: fetch those the mirror lacks, check (and soft-delete) those\n"
        "Strava no longer lists, apply changed names, types and visibility; then read\n"
        "pending streams. Runs now, whatever the schedule.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--user", metavar="USER_ID", help="default: every account")

    workouts = add("workouts", "the mirrored Strava activities").add_subparsers(
        dest="workouts_command", metavar="ACTION", required=True
    )
    p = workouts.add_parser("list", help="list mirrored activities, newest first")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument("--include-deleted", action="store_true", help="also activities deleted")
    p.add_argument("--user", metavar="USER_ID", help="default: G2S_USER_ID")
    p = workouts.add_parser("show", help="one mirrored activity (and its streams)")
    p.add_argument("activity_id", type=int, metavar="ID", help="the Strava activity id")
    p.add_argument("--streams", action="store_true", help="also the stored streams")
    p.add_argument("--json", action="store_true", help="JSON instead of text")
    p.add_argument("--user", metavar="USER_ID", help="default: G2S_USER_ID")
    p = workouts.add_parser(
        "export",
        help="the mirror as JSON Lines or CSV, oldest first (to stdout or --output)",
        description="Write every mirrored activity (from --since on) as JSON Lines or CSV.\n"
        "Streamed: memory stays flat however long the mirror. With --streams, JSON Lines\n"
        "adds each activity's streams; CSV writes one row per sample instead.\n"
        "--output writes the file atomically (a temporary file renamed when complete).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", dest="fmt")
    p.add_argument("--since", type=date_type, metavar="YYYY-MM-DD", help="default: everything")
    p.add_argument("--streams", action="store_true", help="include the stored streams")
    p.add_argument("--include-deleted", action="store_true", help="also activities deleted")
    p.add_argument("--output", "-o", metavar="FILE", help="default: standard output")
    p.add_argument("--user", metavar="USER_ID", help="default: G2S_USER_ID")

    events = add(
        "events", "webhook events that used up their attempts (dead letters)"
    ).add_subparsers(dest="events_command", metavar="ACTION", required=True)
    events.add_parser("list-dead", help="list dead events with their last error")
    p = events.add_parser("retry", help="put dead events back in the queue")
    p.add_argument("queue_id", type=int, nargs="?", metavar="ID")
    p.add_argument("--all", action="store_true", help="every dead event")


def run_mirror_command(settings: Settings, args: argparse.Namespace) -> int:
    handlers: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
        "webhook": cmd_webhook,
        "mirror": cmd_mirror,
        "workouts": cmd_workouts,
        "events": cmd_events,
    }
    return handlers[args.command](settings, args)


# -- webhook -------------------------------------------------------------------------------
def cmd_webhook(settings: Settings, args: argparse.Namespace) -> int:
    from garmin2strava.adapters.strava_subscriptions import (  # noqa: PLC0415 (stravalib only when used)
        create_subscription,
        delete_subscription,
        list_subscriptions,
    )
    from garmin2strava.bootstrap import build_store  # noqa: PLC0415 (light top level)
    from garmin2strava.errors import ConfigError  # noqa: PLC0415 (light top level)
    from garmin2strava.services.mirror import (  # noqa: PLC0415 (light top level)
        SUBSCRIPTION_STATE_KEY,
        remember_subscription,
        subscription_from_state,
    )

    if settings.strava_client_id is None or settings.strava_client_secret is None:
        raise ConfigError("settings STRAVA_CLIENT_ID and STRAVA_CLIENT_SECRET are required")
    client_id = settings.strava_client_id
    secret = settings.strava_client_secret.get_secret_value()
    base_url = settings.strava_base_url
    store = build_store(settings)
    now = datetime.now(tz=UTC)
    if args.webhook_command == "subscribe":
        verify, path_secret = _webhook_secrets(settings)
        callback_url = _callback_url(args.url, path_secret)
        sub_id = create_subscription(client_id, secret, callback_url, verify, base_url=base_url)
        remember_subscription(store, sub_id, now=now)
        print(f"subscribed: subscription {sub_id} delivers events to {_shown(callback_url)}")
        print(f"subscription {sub_id} is stored: the daemon accepts only its events")
        return 0
    if args.webhook_command == "list":
        subs = list_subscriptions(client_id, secret, base_url=base_url)
        ids = [sub["id"] for sub in subs if isinstance(sub.get("id"), int)]
        remember_subscription(store, ids[0] if len(ids) == 1 else None, now=now)
        if not subs:
            print("no webhook subscription (the daemon refuses every event until there is one)")
        for sub in subs:
            url = str(sub.get("callback_url") or "")
            ours = _is_our_callback(url, settings.webhook_path_secret)
            print(
                f"{sub.get('id')}  {_shown(url)}  created {sub.get('created_at')}"
                f"  ({'this configuration' if ours else 'NOT this configuration: subscribe again'})"
            )
        return 0
    delete_subscription(args.subscription_id, client_id, secret, base_url=base_url)
    if subscription_from_state(store.get_app_state(SUBSCRIPTION_STATE_KEY)) in {
        args.subscription_id,
        None,
    }:
        remember_subscription(store, None, now=now)
    print(f"deleted webhook subscription {args.subscription_id}")
    return 0


def _webhook_secrets(settings: Settings) -> tuple[str, str]:
    """The verify token and the callback path's secret, refusing a guessable one."""
    from garmin2strava.domain.webhook import MIN_SECRET_LENGTH  # noqa: PLC0415 (light top level)
    from garmin2strava.errors import ConfigError  # noqa: PLC0415 (light top level)

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
    from urllib.parse import urlsplit  # noqa: PLC0415 (light top level)

    from garmin2strava.domain.webhook import WEBHOOK_PATH_PREFIX, callback_path  # noqa: PLC0415
    from garmin2strava.errors import ConfigError  # noqa: PLC0415 (light top level)

    parts = urlsplit(base)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query:
        raise ConfigError("--url: give the daemon's public base URL, e.g. https://your.host")
    trimmed = base.rstrip("/").removesuffix(WEBHOOK_PATH_PREFIX.rstrip("/"))
    return trimmed + callback_path(path_secret)


def _is_our_callback(url: str, path_secret: str | None) -> bool:
    from garmin2strava.domain.webhook import (  # noqa: PLC0415 (light top level)
        WEBHOOK_PATH_PREFIX,
        path_secret_matches,
    )

    _head, found, given = url.partition(WEBHOOK_PATH_PREFIX)
    return bool(found) and path_secret_matches(given.rstrip("/"), path_secret)


def _shown(url: str) -> str:
    from garmin2strava.domain.webhook import redact_callback_url  # noqa: PLC0415 (light)

    return redact_callback_url(url)


# -- mirror backfill -----------------------------------------------------------------------
def _app(settings: Settings) -> App:
    from garmin2strava.bootstrap import bootstrap  # noqa: PLC0415 (light top level)
    from garmin2strava.services.accounts import ensure_settings_account  # noqa: PLC0415

    app = bootstrap(settings)
    ensure_settings_account(app.store, settings, app.clock)
    return app


def cmd_mirror(settings: Settings, args: argparse.Namespace) -> int:
    if args.mirror_command == "reconcile":
        return _reconcile(settings, args)
    from garmin2strava.errors import ConfigError  # noqa: PLC0415 (light top level)
    from garmin2strava.services.mirror_backfill import (  # noqa: PLC0415 (light top level)
        ActivityLister,
        backfill_mirror,
    )

    if args.streams and not settings.mirror_streams:
        raise ConfigError("--streams needs G2S_MIRROR_STREAMS (e.g. time,heartrate,latlng)")
    app = _app(settings)
    user_id = args.user or settings.user_id
    if app.store.get_account(user_id) is None:
        raise ConfigError(f"no account {user_id!r} (see README.md: get-token)")
    strava = app.strava_for(user_id)
    if not isinstance(strava, ActivityLister):
        raise ConfigError("this Strava client cannot list all activities")

    def wait_until(until: datetime) -> bool:
        print(f"mirror backfill: Strava's read budget is spent; waiting until {until:%H:%M} UTC")
        app.stop.wait(max(0.0, (until - app.clock()).total_seconds()))
        return not app.stop.is_set()

    result = backfill_mirror(
        app.store, strava, user_id, since=args.since, clock=app.clock, wait_until=wait_until
    )
    print(f"mirror backfill: {result.stored} activities stored, {result.skipped} unreadable")
    if result.complete and result.covers_since is not None:
        print(f"the mirror covers activities from {result.covers_since:%Y-%m-%d %H:%M} UTC on")
    if not result.complete:
        return 1
    return _backfill_streams(app, user_id, args, wait_until) if args.streams else 0


def _backfill_streams(
    app: App, user_id: str, args: argparse.Namespace, wait_until: Callable[[datetime], bool]
) -> int:
    from garmin2strava.services.streams import backfill_streams  # noqa: PLC0415 (light top level)

    result = backfill_streams(
        app.store,
        app.strava_for(user_id),
        user_id,
        app.settings.mirror_streams,
        since=args.since,
        clock=app.clock,
        wait_until=wait_until,
    )
    print(
        f"mirror backfill --streams: {result.stored} with streams, {result.none} without, "
        f"{result.already} read before"
    )
    return 0 if result.complete else 1


def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import timedelta  # noqa: PLC0415 (light top level)

    from garmin2strava.services.reconcile import reconcile_all  # noqa: PLC0415

    app = _app(settings)
    reports = reconcile_all(
        app.store,
        app.strava_background_for,
        now=app.clock(),
        every=timedelta(hours=settings.mirror_reconcile_hours),
        stream_types=settings.mirror_streams,
        only=args.user,
        force=True,
    )
    if not reports:
        print("mirror reconcile: no account with Strava tokens")
    for r in reports:
        print(
            f"{r.user_id}: since {r.since:%Y-%m-%d %H:%M} UTC, {r.listed} listed, "
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
def workout_json(w: Workout) -> dict[str, Any]:
    return {
        "userId": w.user_id,
        "activityId": w.activity_id,
        "athleteId": w.athlete_id,
        "name": w.name,
        "sportType": w.sport_type,
        "startDate": w.start_date.isoformat(),
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


def cmd_workouts(settings: Settings, args: argparse.Namespace) -> int:
    if args.workouts_command == "show":
        return _show_workout(settings, args)
    if args.workouts_command == "export":
        return _export(settings, args)
    from garmin2strava.domain.text import shown  # noqa: PLC0415 (light top level)

    app = _app(settings)
    user_id = args.user or settings.user_id
    rows = app.store.list_workouts(user_id, include_deleted=args.include_deleted)
    if args.json:
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
            f"{w.activity_id:>12}  {w.start_date:%Y-%m-%d %H:%M}  {shown(w.sport_type):<12} "
            f"{km:>6}  {shown(w.name)}{flags}"
        )
    return 0


def _show_workout(settings: Settings, args: argparse.Namespace) -> int:
    app = _app(settings)
    user_id = args.user or settings.user_id
    workout = app.store.get_workout(user_id, args.activity_id)
    if workout is None:
        print(f"no mirrored activity {args.activity_id} for {user_id}", file=sys.stderr)
        return 1
    streams = app.store.get_streams(user_id, args.activity_id) if args.streams else None
    if args.json:
        record: dict[str, Any] = workout_json(workout)
        if args.streams:
            record["streams"] = None if streams is None else streams.streams
        print(json.dumps(record, indent=2))
        return 0
    from garmin2strava.domain.text import shown  # noqa: PLC0415 (light top level)

    for name, value in workout_json(workout).items():
        print(f"{name:>20}  {shown(value) if isinstance(value, str) else value}")
    if not args.streams:
        return 0
    if streams is None:
        print(f"{'streams':>20}  not read yet (G2S_MIRROR_STREAMS; mirror backfill --streams)")
    elif not streams.found:
        print(f"{'streams':>20}  none on Strava (read {streams.fetched_at:%Y-%m-%d %H:%M} UTC)")
    for kind, stream in sorted((streams.streams if streams else {}).items()):
        data = stream.get("data") or []
        head = ", ".join(json.dumps(v) for v in data[:5])
        more = ", ..." if len(data) > 5 else ""  # noqa: PLR2004 - the samples shown
        print(f"{kind:>20}  {len(data)} samples: [{head}{more}]")
    return 0


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415 (light top level)

    from garmin2strava.services.export import (  # noqa: PLC0415 (light top level)
        atomic_output,
        export_workouts,
    )

    app = _app(settings)
    user_id = args.user or settings.user_id
    options = {
        "fmt": args.fmt,
        "since": args.since,
        "streams": args.streams,
        "include_deleted": args.include_deleted,
    }
    if args.output is None:
        result = export_workouts(app.store, user_id, sys.stdout, **options)
    else:
        with atomic_output(Path(args.output)) as out:
            result = export_workouts(app.store, user_id, out, **options)
    print(
        f"workouts export: {result.activities} activities"
        + (f", {result.samples} stream samples" if args.streams else ""),
        file=sys.stderr,
    )
    return 0


# -- events (dead letters of the SQLite queue) ---------------------------------------------
def cmd_events(settings: Settings, args: argparse.Namespace) -> int:
    from garmin2strava.adapters.queue_sqlite import SqliteEventQueue  # noqa: PLC0415 (as above)
    from garmin2strava.errors import ConfigError  # noqa: PLC0415 (light top level)

    if settings.store != "sqlite":
        raise ConfigError(
            "the events commands read the SQLite queue (G2S_STORE=sqlite); on AWS the "
            "dead events are in the SQS dead-letter queue"
        )
    queue = SqliteEventQueue(settings.db_path)
    try:
        if args.events_command == "list-dead":
            return _list_dead(queue)
        return _retry_dead(queue, args)
    finally:
        queue.close()


def _list_dead(queue: SqliteEventQueue) -> int:
    dead = queue.list_dead()
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


def _retry_dead(queue: SqliteEventQueue, args: argparse.Namespace) -> int:
    if (args.queue_id is None) == (not args.all):
        print("garmin2strava: events retry takes an ID or --all (not both)", file=sys.stderr)
        return 2
    now = datetime.now(tz=UTC)
    ids = [d.queue_id for d in queue.list_dead(limit=100_000)] if args.all else [args.queue_id]
    retried = [i for i in ids if queue.retry_dead(i, now=now)]
    missing = sorted(set(ids) - set(retried))
    if retried:
        print(f"{len(retried)} event(s) back in the queue; the worker processes them next")
    if missing:
        print(f"no dead event {', '.join(map(str, missing))}", file=sys.stderr)
        return 1
    if not ids:
        print("no dead events")
    return 0
