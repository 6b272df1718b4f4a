"""`garmin2strava demo`: the real sync, with the real garminconnect and stravalib
clients, against the local emulators and a temporary SQLite store."""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_demo
from garmin2strava.bootstrap import bootstrap
from garmin2strava.entrypoints.demo_mirror import show_mirror
from garmin2strava.entrypoints.demo_status_page import show_status_page
from garmin2strava.logs import configure_logging
from garmin2strava.services.accounts import ensure_settings_account
from garmin2strava.services.sync import CycleReport
from garmin2strava.services.sync_accounts import sync_all
from garmin2strava.settings import load_settings

__all__ = ["run_demo"]


def run_demo(*, keep: bool = False, serve: bool = False) -> int:
    configure_logging("WARNING", "text")
    workdir = Path(tempfile.mkdtemp(prefix="garmin2strava-demo-"))
    try:
        with running_sandboxes(processing_delay_s=0.2) as pair:
            return _demo(pair, workdir, serve=serve)
    finally:
        if keep:
            print(f"\nThe demo store is kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _demo(pair: SandboxPair, workdir: Path, *, serve: bool) -> int:
    now = datetime.now(tz=UTC)
    seeded = seed_demo(pair, now)
    settings = load_settings(
        env_file=None, **pair.settings_values(workdir / "garmin2strava.sqlite3")
    )
    app = bootstrap(settings)
    app.poll_delay_s = 0.5
    ensure_settings_account(app.store, settings, app.clock)

    print("garmin2strava demo: local Garmin Connect and Strava emulators on 127.0.0.1,")
    print(f"a temporary SQLite store in {workdir}.\n")
    print("On Garmin Connect:")
    for run in seeded:
        print(f"  {run.garmin_id}  {run.start_utc:%a %d %b %H:%M}  {run.type_key:<18} {run.name}")
    print("On Strava: the tempo run, put there by Garmin's own sync (garmin_ping_...).\n")

    before_g, before_s = pair.garmin_count(), pair.strava_counts()
    first = sync_all(app.store, app.sync_deps)
    print("Cycle 1:")
    _print_report(first[0], pair)
    print(f"  requests: {_requests(pair, before_g, before_s)}\n")

    before_g, before_s = pair.garmin_count(), pair.strava_counts()
    second = sync_all(app.store, app.sync_deps)
    uploaded_again = second[0].outcomes.get("uploaded", 0)
    print("Cycle 2 (nothing new on Garmin):")
    print(f"  uploaded {uploaded_again}; requests: {_requests(pair, before_g, before_s)}")

    on_strava = sorted(
        (a.start_utc, a.name, a.external_id or "") for a in pair.strava.activities.values()
    )
    print(f"\nStrava now has {len(on_strava)} activities:")
    for start, name, external_id in on_strava:
        print(f"  {start:%a %d %b %H:%M}  {name:<30} external_id={external_id}")
    mirrored = show_mirror(pair, app, since=min(r.start_utc for r in seeded) - timedelta(days=1))
    ok = all(r.ok for r in first + second) and uploaded_again == 0 and mirrored
    print("\ndemo: OK" if ok else "\ndemo: FAILED")
    show_status_page(app, serve=serve)
    return 0 if ok else 1


def _print_report(report: CycleReport, pair: SandboxPair) -> None:
    names = {run.garmin_id: run.name for run in pair.seeded}
    for outcome, garmin_id, detail in report.actions:
        print(f"  {outcome:<9} {names.get(garmin_id, garmin_id)!s:<30} {detail}".rstrip())
    listed = {garmin_id for _o, garmin_id, _d in report.actions}
    for run in pair.seeded:
        if run.garmin_id not in listed:
            print(f"  {'ignored':<9} {run.name:<30} not a run (G2S_ACTIVITY_TYPES)")
    if report.error:
        print(f"  error: {report.error}")


def _requests(pair: SandboxPair, garmin_before: int, strava_before: dict[str, int]) -> str:
    strava = pair.strava_counts()
    return (
        f"Garmin {pair.garmin_count() - garmin_before}, "
        f"Strava {strava['reads'] - strava_before['reads']} read + "
        f"{strava['uploads'] - strava_before['uploads']} upload"
    )
