"""The mirror's two intake races (issue 19) against the real `garmin2strava serve` over
its SQLite store and queue, with the Strava emulator delivering as Strava does:

- the first event after `webhook subscribe` (and after a re-subscribe) is accepted and
  mirrored on its first delivery, not refused for the receiver's stale cache;
- 2,000 events of athletes no account is linked to are answered 200 and dropped at
  intake: the SQLite file and its WAL grow by less than 200 KiB."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from g2s_harness.serving import ServeConfig, event_body, post_event, start_serve, stop_serve
from g2s_sandbox.scenario import SandboxPair, running_sandboxes
from garmin2strava.adapters.crypto import AesGcmCipher, parse_token_key
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.models import Workout

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER = "races"
VERIFY = "verify-token-long-enough-for-a-path-secret"
UNKNOWN_EVENTS = 2000
GROWTH_BAR = 200 * 1024


@pytest.fixture
def pair() -> Iterator[SandboxPair]:
    with running_sandboxes() as sandboxes:
        # One delivery, no retry: an event refused once is lost, as the issue counts it.
        sandboxes.strava.webhooks.max_attempts = 1
        yield sandboxes


def serve_env(pair: SandboxPair, config: ServeConfig) -> dict[str, str]:
    """`serve`'s environment with no STRAVA_SUBSCRIPTION_ID: it learns the stored id."""
    env = config.env(pair)
    del env["STRAVA_SUBSCRIPTION_ID"]
    return env


def cli(env: Mapping[str, str], *args: str) -> str:
    done = subprocess.run(  # noqa: S603 (our interpreter and module, constant arguments)
        [sys.executable, "-m", "garmin2strava.entrypoints.cli", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def mirrored(config: ServeConfig, activity_id: int, *, wait_s: float = 15.0) -> Workout | None:
    deadline = time.monotonic() + wait_s
    with SqliteStore(config.db, AesGcmCipher(parse_token_key(config.token_key))) as store:
        while True:
            row = store.get_workout(USER, activity_id)
            if row is not None or time.monotonic() > deadline:
                return row
            time.sleep(0.1)


def settled(pair: SandboxPair) -> tuple[int, int]:
    """The emulator's POSTs made and events given up, once its deliveries are done."""
    webhooks = pair.strava.webhooks
    assert webhooks.wait_idle()
    return webhooks.webhook_attempts, webhooks.webhook_failures


def test_the_first_event_after_subscribe_and_resubscribe_is_mirrored(
    pair: SandboxPair, tmp_path: Path
) -> None:
    """`serve` starts with no subscription; `webhook subscribe` runs in another process;
    the first event right after it is answered 200 at its one delivery and mirrored.
    Then a re-subscribe (delete, subscribe: a new id): the same for its first event."""
    config = ServeConfig.fresh(tmp_path, user_id=USER, subscription_id=1, verify_token=VERIFY)
    env = serve_env(pair, config)
    server = start_serve(env, tmp_path / "serve.log")
    try:
        url = f"http://127.0.0.1:{config.port}/"
        cli(env, "webhook", "subscribe", "--url", url)
        first = pair.strava.webhooks.subscription
        assert first is not None
        created = pair.strava.add_activity(pair.athlete_id, start_utc=_start(), elapsed_s=60)
        assert settled(pair) == (1, 0)
        assert mirrored(config, created) is not None

        cli(env, "webhook", "delete", str(first.subscription_id))
        cli(env, "webhook", "subscribe", "--url", url)
        second = pair.strava.webhooks.subscription
        assert second is not None
        assert second.subscription_id != first.subscription_id
        again = pair.strava.add_activity(pair.athlete_id, start_utc=_start(1), elapsed_s=60)
        assert settled(pair) == (2, 0)
        assert mirrored(config, again) is not None
    finally:
        stop_serve(server)


def test_unknown_athletes_events_are_dropped_without_growing_the_store(
    pair: SandboxPair, tmp_path: Path
) -> None:
    """2,000 events of athletes nobody connected, through HTTP: all answered 200 (as
    our own events are), counted on /metrics, and the store (file and WAL, after a
    checkpoint) grows by less than 200 KiB; our athlete's event is still mirrored."""
    config = ServeConfig.fresh(tmp_path, user_id=USER, subscription_id=7001, verify_token=VERIFY)
    env = config.env(pair)
    server = start_serve(env, tmp_path / "serve.log")
    try:
        ours = pair.strava.add_activity(pair.athlete_id, start_utc=_start(), elapsed_s=60)
        now = int(time.time())
        body = event_body(ours, pair.athlete_id, 7001, event_time=now)
        assert post_event(config.port, body, path=config.webhook_path)[0] == 200
        assert mirrored(config, ours) is not None
    finally:
        stop_serve(server)
    before = checkpointed_size(config.db)

    server = start_serve(env, tmp_path / "serve.log")
    try:
        # This thread's keep-alive connection went with the first server: the first
        # POST finds it closed (None), the next one connects afresh (a duplicate).
        assert post_event(config.port, body, path=config.webhook_path)[0] in {None, 200}
        assert post_event(config.port, body, path=config.webhook_path)[0] == 200
        statuses = {
            post_event(
                config.port,
                event_body(10_000 + n, 900_000_000 + n, 7001, event_time=now),
                path=config.webhook_path,
            )[0]
            for n in range(UNKNOWN_EVENTS)
        }
        assert statuses == {200}
        metrics = _get(f"http://127.0.0.1:{env['G2S_ADMIN_PORT']}/metrics")
        assert (
            f'g2s_webhook_events_rejected_total{{reason="unknown_athlete"}} {UNKNOWN_EVENTS}'
            in metrics
        )
    finally:
        stop_serve(server)
    growth = checkpointed_size(config.db) - before
    assert growth < GROWTH_BAR, f"the store grew by {growth} bytes"


def checkpointed_size(db: Path) -> int:
    """The database and its -wal, in bytes, after a full checkpoint."""
    with sqlite3.connect(db) as conn:
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    conn.close()
    assert busy == 0
    wal = db.with_name(db.name + "-wal")
    return db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _start(hours_ago: int = 0) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(days=1, hours=hours_ago)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (loopback, our admin port)
        text: str = answer.read().decode()
        return text
