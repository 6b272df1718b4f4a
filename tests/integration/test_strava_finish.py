"""Issue 21's acceptance end to end: the real app (bootstrap, SQLite store,
garminconnect's `get_activity_gear`, stravalib's `update_activity`) against both
emulators on loopback, which apply the PUT so the test sees Strava's activity as it
ends: with its shoe, hidden from home, renamed."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from g2s_sandbox.scenario import SandboxPair, seed_run
from g2s_sandbox.strava_records import SandboxActivity
from garmin2strava.bootstrap import App
from garmin2strava.domain.budget import RateBudget
from garmin2strava.domain.upload_rules import external_id_for
from garmin2strava.domain.workouts import normalize_activity
from garmin2strava.entrypoints.cli import ledger_json
from garmin2strava.services.history import format_history, read_history
from garmin2strava.services.status import STRAVA_BUDGET_KEY
from garmin2strava.services.status_page_view import build_view
from garmin2strava.services.sync import CycleReport
from garmin2strava.services.sync_accounts import sync_all

pytestmark = pytest.mark.integration

USER = "demo"
START = datetime(2025, 6, 2, 6, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


def cycle(app: App) -> CycleReport:
    (report,) = sync_all(app.store, app.sync_deps)
    return report


def on_strava(pair: SandboxPair, app: App, garmin_id: int) -> SandboxActivity:
    entry = app.store.get_uploads(USER, [garmin_id])[garmin_id]
    assert entry.strava_activity_id is not None
    with pair.strava.lock:
        return pair.strava.activities[entry.strava_activity_id]


def test_gear_by_name_by_map_and_a_hidden_treadmill_run(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """A run with Garmin gear "Pegasus 41" ends with the athlete's "Pegasus 41" shoe; a
    run whose gear G2S_GEAR_MAP maps ends with the mapped shoe; a treadmill run under
    `indoor` ends hidden from home. One PUT each, counted as writes (not reads) by
    Strava and by our budget; one Garmin gear request per run."""
    pegasus = pair.strava.add_gear(pair.athlete_id, "Pegasus 41")
    mapped = pair.strava.add_gear(pair.athlete_id, "Trail shoes (Strava's name)")
    seed_run(pair, 1, start_utc=START, gear=("Pegasus 41",))
    seed_run(pair, 2, start_utc=START + HOUR, gear=("Speedgoat 5",))
    seed_run(pair, 3, start_utc=START + 2 * HOUR, type_key="treadmill_running")
    app = make_app(gear_map=f"Speedgoat 5={mapped}", hide_from_home="indoor")

    report = cycle(app)

    assert report.ok, report.error
    assert on_strava(pair, app, 1).gear_id == pegasus
    assert on_strava(pair, app, 2).gear_id == mapped
    treadmill = on_strava(pair, app, 3)
    assert (treadmill.hide_from_home, treadmill.trainer) == (True, True)
    assert pair.garmin.requests["gear"] == 3
    assert pair.strava.requests["update"] == 3
    assert pair.strava.requests["athlete"] == 1  # the athlete's gear, read once
    assert pair.strava_counts() == {"reads": 5, "uploads": 3, "writes": 3}  # list, athlete, 3 polls
    budget = RateBudget.from_dict(app.store.get_app_state(STRAVA_BUDGET_KEY))
    now = datetime.now(UTC)
    # Strava's headers after the last request: 11 in all, of which 5 reads.
    assert (budget.usage(now)["short"][0], budget.usage(now)["read_short"][0]) == (11, 5)


def test_an_idle_cycle_after_finishing_is_one_garmin_request_and_no_strava(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    pair.strava.add_gear(pair.athlete_id, "Pegasus 41")
    seed_run(pair, 4, start_utc=START, gear=("Pegasus 41",))
    app = make_app(hide_from_home="under:10km")
    cycle(app)
    pair.reset_counts()
    cycle(app)
    assert pair.garmin.requests == {"list": 1}
    assert pair.strava_total() == 0


def test_a_garmin_rename_reaches_strava_and_a_strava_rename_is_kept(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """With the mirror live (the Strava emulator's events applied by the real worker):
    a run renamed on Garmin after its upload is renamed on Strava; a run renamed on
    Strava first keeps Strava's name."""
    seed_run(pair, 5, start_utc=START, name="Morning Run")
    seed_run(pair, 6, start_utc=START + HOUR, name="Evening Run")
    app = make_app()
    app.mirror_live = lambda: True
    cycle(app)
    # The mirror as the worker keeps it from Strava's events: one row per upload.
    for garmin_id in (5, 6):
        activity = on_strava(pair, app, garmin_id)
        app.store.upsert_workout(
            normalize_activity(activity.detail(), user_id=USER, updated_at=datetime.now(UTC))
        )
    strava_edit = on_strava(pair, app, 6)
    pair.strava.update_activity(strava_edit.activity_id, title="Named on Strava")
    app.store.upsert_workout(
        normalize_activity(
            on_strava(pair, app, 6).detail(), user_id=USER, updated_at=datetime.now(UTC)
        )
    )
    pair.garmin.rename_activity(5, "Hill repeats")
    pair.garmin.rename_activity(6, "Garmin's new name")
    pair.reset_counts()

    cycle(app)

    assert on_strava(pair, app, 5).name == "Hill repeats"
    assert on_strava(pair, app, 6).name == "Named on Strava"
    assert dict(pair.strava.requests) == {"update": 1}


# -- a store from before issue 21 -----------------------------------------------------------
OLD_START = "2025-06-02T06:30:00.000000Z"  # START as the store writes times
OLD_LSI1SK = f"UPLOAD#{OLD_START}#{40:020d}"


def old_ledger_item(garmin_id: int, strava_id: int, name: str) -> dict[str, object]:
    """An `uploaded` ledger entry exactly as the code before issue 21 wrote it (no
    `finish`): the keys of its codec, nothing else."""
    return {
        "userId": USER,
        "garminActivityId": garmin_id,
        "externalId": external_id_for(garmin_id),
        "outcome": "uploaded",
        "updatedAt": "2025-06-02T09:00:00.000000Z",
        "activityName": name,
        "typeKey": "running",
        "startDate": OLD_START,
        "attempts": 1,
        "stravaActivityId": strava_id,
        "uploadId": 77,
        "detail": "",
        "nextRetryAt": None,
    }


def test_a_sqlite_store_from_before_keeps_working(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """An old file's uploaded entry (written by sqlite3, as the old code left it) is
    read, never uploaded again, and a Garmin rename of it is carried (its uploaded name
    is the ledger's name); a new run in the same store gets its gear."""
    seed_run(pair, 40, start_utc=START, name="Old run")
    strava_id = pair.strava.add_activity(
        pair.athlete_id,
        start_utc=START,
        elapsed_s=1800,
        name="Old run",
        external_id=f"{external_id_for(40)}.fit",
    )
    app = make_app()
    app.mirror_live = lambda: True
    item = old_ledger_item(40, strava_id, "Old run")
    with sqlite3.connect(app.settings.db_path) as conn:
        conn.execute(
            "INSERT INTO items (pk, sk, body, lsi1sk) VALUES (?, ?, ?, ?)",
            (f"USER#{USER}", "UPLOAD#GARMIN#40", json.dumps(item), OLD_LSI1SK),
        )
    with pair.strava.lock:
        detail = pair.strava.activities[strava_id].detail()
    app.store.upsert_workout(normalize_activity(detail, user_id=USER, updated_at=datetime.now(UTC)))
    shoe = pair.strava.add_gear(pair.athlete_id, "Pegasus 41")
    seed_run(pair, 41, start_utc=START + HOUR, gear=("Pegasus 41",))
    pair.garmin.rename_activity(40, "Old run, renamed")

    assert cycle(app).ok

    assert pair.strava.requests["upload"] == 1  # the new run only
    assert on_strava(pair, app, 40).name == "Old run, renamed"
    assert on_strava(pair, app, 41).gear_id == shoe
    assert app.store.list_unsettled_uploads(USER) == []


def test_history_the_status_page_and_uploads_list_show_gear_hidden_and_renames(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """Per run: the gear set (which), hidden (by which rule), the name carried, and the
    Garmin gear that matched nothing, in history, the status page's rows and
    `uploads list --json`."""
    shoe = pair.strava.add_gear(pair.athlete_id, "Pegasus 41")
    seed_run(pair, 60, start_utc=datetime.now(UTC) - 2 * HOUR, gear=("Pegasus 41",))
    seed_run(pair, 61, start_utc=datetime.now(UTC) - HOUR, gear=("Old boots",))
    app = make_app(hide_from_home="under:10km")
    cycle(app)

    entries = app.store.get_uploads(USER, [60, 61])
    assert ledger_json(entries[60])["finish"] == {
        "gear": {"id": shoe, "name": "Pegasus 41"},
        "gearUnmapped": None,
        "hidden": True,
        "hiddenBy": "under:10km",
        "nameCarried": None,
        "stravaNameKept": False,
        "owed": None,
        "error": None,
    }
    unmapped = ledger_json(entries[61])["finish"]
    assert (unmapped["gear"], unmapped["gearUnmapped"]) == (None, "Old boots")
    text = format_history(read_history(app.store, [USER], since=START))
    assert "set on Strava: garminActivityId=60 stravaActivityId=" in text
    assert f"finish=gear Pegasus 41 ({shoe}); hidden from home (under:10km)" in text
    marks = {
        m.garmin_id: m.finish
        for m in build_view(app.store, None, now=datetime.now(UTC), interval_s=None).marks
    }
    assert marks[60] == f"gear Pegasus 41 ({shoe}); hidden from home (under:10km)"
    assert marks[61].startswith("gear unmapped: Old boots (Strava's default kept)")
