"""Strava reads per account per day of the mirror's reconciliation, against the sandbox.

A typical athlete: one activity most days, two some days, a year of history already
mirrored. Thirty simulated days, one pass a day (G2S_MIRROR_RECONCILE_HOURS=24), run
by the real services.reconcile and StravaAccess (stravalib) against the Strava
emulator; the webhook's own work is played by storing each day's new activities
directly. Some days the webhook misses something: a create (day 5), a delete (day
12), a rename with a visibility change (day 20), all three at once (day 25), and on
day 16 the delete and the rename of two activities of months ago, which only a sweep
(the whole history, every G2S_MIRROR_SWEEP_DAYS, 7 by default) sees. The passes run
through services.reconcile.reconcile_all, which decides which of them sweep. Prints
each pass's reads, as the emulator counted them, and the reads per day: a window pass
and a sweep with nothing missed, and the average with the repairs.

    .venv/bin/python bench/mirror_reconcile.py [--days 30] [--sweep-days 7]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from g2s_sandbox.strava import StravaSandbox
from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.adapters.strava_oauth import bootstrap_tokens_from_refresh_token
from garmin2strava.bootstrap import build_strava
from garmin2strava.domain.models import Account
from garmin2strava.domain.workouts import normalize_activity
from garmin2strava.services.reconcile import (
    LIST_PAGE,
    OVERLAP,
    ReconcileReport,
    reconcile_all,
)

ATHLETE = 777
USER = "bench"
DROP_CREATE, DROP_DELETE, DROP_RENAME = {5, 25}, {12, 25}, {20, 25}
DROP_OLD = 16  # a delete and a rename of activities of months ago: for the sweep


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--sweep-days", type=float, default=7.0, help="G2S_MIRROR_SWEEP_DAYS")
    args = parser.parse_args()
    # stravalib warns on every client it builds without these; refreshing is ours.
    os.environ.setdefault("SILENCE_TOKEN_WARNINGS", "true")
    rng = random.Random(13)  # noqa: S311 - a made-up athlete, not a secret
    real_now = datetime.now(UTC).replace(microsecond=0)
    day0 = real_now - timedelta(days=args.days)
    with tempfile.TemporaryDirectory() as tmp, StravaSandbox() as sandbox:
        store = SqliteStore(Path(tmp) / "g2s.sqlite3", AesGcmCipher(os.urandom(32)))
        refresh = sandbox.add_athlete(ATHLETE)
        tokens = bootstrap_tokens_from_refresh_token(
            sandbox.client_id, sandbox.client_secret, refresh, sandbox.base_url
        )
        store.replace_strava_tokens(USER, tokens, expected_version=None)
        store.put_account(Account(user_id=USER, strava_athlete_id=ATHLETE))
        strava = build_strava(
            store,
            USER,
            client_id=sandbox.client_id,
            client_secret=sandbox.client_secret,
            where=sandbox.base_url,
            background=True,
        )

        def webhook_mirrors(activity_id: int, at: datetime) -> None:
            raw = sandbox.activities[activity_id].detail()
            store.upsert_workout(normalize_activity(raw, user_id=USER, updated_at=at))

        history = [
            sandbox.add_activity(
                ATHLETE, start_utc=day0 - timedelta(days=d, hours=-7), elapsed_s=3000
            )
            for d in range(1, 366)
        ]
        for activity_id in history:
            webhook_mirrors(activity_id, day0)

        def due_pass(now: datetime) -> ReconcileReport:
            (report,) = reconcile_all(
                store,
                lambda _: strava,
                now=now,
                every=timedelta(days=1),
                sweep_every=timedelta(days=args.sweep_days),
            )
            return report

        # The pass before day 1 (the first, so a sweep): the mirror is in step.
        due_pass(day0)
        old_deleted, old_renamed = history[299], history[199]
        rows = []
        for day in range(1, args.days + 1):
            now = day0 + timedelta(days=day)
            for _ in range(2 if rng.random() < 0.2 else 1):
                start = now - timedelta(hours=rng.randint(2, 14))
                new = sandbox.add_activity(ATHLETE, start_utc=start, elapsed_s=2700)
                if day not in DROP_CREATE:
                    webhook_mirrors(new, now)
            recent = [w.activity_id for w in store.list_workouts(USER, limit=5)]
            if day in DROP_DELETE:
                sandbox.delete_activity(recent[2])  # the webhook never says
            if day in DROP_RENAME:
                sandbox.update_activity(recent[3], title="Renamed, no event", private=True)
            if day == DROP_OLD:
                sandbox.delete_activity(old_deleted)
                sandbox.update_activity(old_renamed, title="Renamed months later")
            sandbox.requests.clear()
            report = due_pass(now)
            assert report.complete, report
            counted = sum(sandbox.requests.values())
            assert counted == report.reads, (counted, report.reads, dict(sandbox.requests))
            rows.append((day, report))
        gone, renamed = store.get_workout(USER, old_deleted), store.get_workout(USER, old_renamed)
        old_repaired = (gone is not None and gone.is_deleted) and (
            renamed is not None and renamed.name == "Renamed months later"
        )
        mirrored = len(store.list_workouts(USER))
        store.close()
    _print(rows, args.sweep_days, mirrored=mirrored, old_repaired=old_repaired)
    return 0 if old_repaired else 1


def _print(
    rows: list[tuple[int, ReconcileReport]],
    sweep_days: float,
    *,
    mirrored: int,
    old_repaired: bool,
) -> None:
    print(
        f"window: activities started since the previous pass less {OVERLAP.days} days; "
        f"sweep (every {sweep_days:g} days): the whole history"
    )
    print(
        f"{'day':>4} {'pass':>6} {'listed':>7} {'added':>6} {'deleted':>8} "
        f"{'changed':>8} {'reads':>6}"
    )
    for day, r in rows:
        kind = "sweep" if r.sweep else "window"
        print(
            f"{day:>4} {kind:>6} {r.listed:>7} {len(r.added):>6} {len(r.deleted):>8} "
            f"{len(r.changed):>8} {r.reads:>6}"
        )
    missed = DROP_CREATE | DROP_DELETE | DROP_RENAME
    quiet = [r.reads for d, r in rows if d not in missed and not r.sweep]
    sweeps = [r.reads for d, r in rows if r.sweep and not r.deleted and not r.added]
    total = sum(r.reads for _, r in rows)
    print(
        f"reads per account per day: {sum(quiet) / len(quiet):.2f} on a window day with "
        f"nothing missed (1 list read per {LIST_PAGE} activities in the window); "
        f"a sweep with nothing to check: {_mean(sweeps)} ({mirrored} activities mirrored, "
        f"1 list read per {LIST_PAGE}); {total / len(rows):.2f} averaged over {len(rows)} "
        "days with the sweeps and the repairs (+1 per missed create, +1 per missed delete, "
        "0 per missed rename)"
    )
    print(
        f"day {DROP_OLD}'s delete and rename of activities of months ago: "
        f"{'repaired' if old_repaired else 'NOT repaired'} by the end"
    )


def _mean(values: list[int]) -> str:
    return f"{sum(values) / len(values):.2f}" if values else "none ran"


if __name__ == "__main__":
    raise SystemExit(main())
