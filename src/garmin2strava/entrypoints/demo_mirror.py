"""The demo's second half: the mirror filling through Strava's webhook.

The container's own webhook server and worker (entrypoints/server.py) run on a free
loopback port; the Strava emulator subscribes to it (with the real handshake), a
mirror backfill copies what was there before, then an edit and a delete made on
"Strava" arrive as webhook events and the worker applies them.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime

from pydantic import SecretStr

from g2s_sandbox.scenario import SandboxPair
from garmin2strava.adapters.strava_subscriptions import create_subscription
from garmin2strava.bootstrap import App, bootstrap
from garmin2strava.domain.webhook import callback_path, derive_path_secret, redact_callback_url
from garmin2strava.entrypoints.server import MirrorRuntime
from garmin2strava.services.mirror_backfill import backfill_mirror
from garmin2strava.services.mirror_subscription import remember_subscription
from garmin2strava.services.strava_access import StravaAccess

__all__ = ["show_mirror"]

_WAIT_S = 15.0


def show_mirror(pair: SandboxPair, app: App, *, since: datetime) -> bool:
    """Run the mirror part of the demo; True when every step did what it should."""
    port = _free_port()
    verify = secrets.token_urlsafe(24)
    settings = app.settings.model_copy(
        update={
            "http_port": port,
            "admin_port": _free_port(),
            "strava_verify_token": SecretStr(verify),
        }
    )
    runtime = MirrorRuntime(bootstrap(settings, store=app.store))
    stop = threading.Event()
    threads = [
        threading.Thread(target=runtime.serve_http, args=(stop,), name="demo-http", daemon=True),
        threading.Thread(target=runtime.work, args=(stop,), name="demo-worker", daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        if not _listening(port):
            print("\nMirror: the webhook server did not start")
            return False
        return _mirror_steps(pair, app, runtime, port=port, verify=verify, since=since)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        runtime.queue.close()


def _mirror_steps(
    pair: SandboxPair, app: App, runtime: MirrorRuntime, *, port: int, verify: str, since: datetime
) -> bool:
    strava_sb = pair.strava
    callback = f"http://127.0.0.1:{port}" + callback_path(derive_path_secret(verify))
    user_id = app.settings.user_id
    sub_id = create_subscription(
        strava_sb.client_id, strava_sb.client_secret, callback, verify, strava_sb.base_url
    )
    # What `webhook subscribe` does: the receiver accepts this subscription's events.
    remember_subscription(app.store, sub_id, now=app.clock())
    runtime.receiver.subscriptions.load()
    shown = redact_callback_url(callback)
    print(f"\nMirror: webhook subscription {sub_id} -> {shown} (handshake verified)")

    before = pair.strava_counts()
    strava = app.strava_for(user_id)
    assert isinstance(strava, StravaAccess)
    result = backfill_mirror(
        app.store, strava, user_id, since=since, clock=app.clock, wait_until=lambda _until: False
    )
    reads = pair.strava_counts()["reads"] - before["reads"]
    print(f"  mirror backfill: {result.stored} activities stored with {reads} Strava read(s)")

    live = sorted(
        (a for a in strava_sb.activities.values() if not a.deleted), key=lambda a: a.start_utc
    )
    renamed, deleted = live[0], live[-1]
    old_name = renamed.name
    before = pair.strava_counts()
    strava_sb.update_activity(renamed.activity_id, title=f"{old_name} (renamed on Strava)")
    strava_sb.delete_activity(deleted.activity_id)
    print(f"  on Strava: renamed {old_name!r}, deleted {deleted.name!r}")
    delivered = strava_sb.webhooks.wait_idle(_WAIT_S)
    processed = _wait_for(lambda: runtime.stats.get("events_processed") >= 2)  # noqa: PLR2004 - the two events above
    reads = pair.strava_counts()["reads"] - before["reads"]
    print(
        f"  webhook: {strava_sb.webhooks.webhook_deliveries} event(s) delivered, "
        f"{runtime.stats.get('events_processed')} processed with {reads} Strava read(s)"
    )

    rows = app.store.list_workouts(user_id, include_deleted=True)
    print(f"\nThe mirror ({len(rows)} rows):")
    for w in sorted(rows, key=lambda w: w.start_utc):
        flag = "  [deleted]" if w.is_deleted else ""
        print(f"  {w.start_utc:%a %d %b %H:%M}  {w.sport_type:<10} {w.name}{flag}")
    by_id = {w.activity_id: w for w in rows}
    renamed_row, deleted_row = by_id.get(renamed.activity_id), by_id.get(deleted.activity_id)
    return (
        result.complete
        and delivered
        and processed
        and renamed_row is not None
        and renamed_row.name.endswith("(renamed on Strava)")
        and deleted_row is not None
        and deleted_row.is_deleted
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    def accepts() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    return _wait_for(accepts)


def _wait_for(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + _WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
