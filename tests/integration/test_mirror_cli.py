"""The mirror's commands through `main()` against both sandboxes: `mirror backfill
--streams`, `workouts show --streams`, `workouts export`, `mirror reconcile`."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from g2s_harness.cli import run_cli
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_demo

pytestmark = pytest.mark.integration

USER = "me"
NOW = datetime.now(tz=UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def clean_environment(clean_cli_environment: None) -> None:
    """conftest's clean_cli_environment for every test here."""


@pytest.fixture
def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxPair]:
    with running_sandboxes() as sandboxes:
        settings = sandboxes.environment(
            user_id=USER,
            db_path=tmp_path / "data" / "g2s.sqlite3",
            G2S_MIRROR_STREAMS="time,heartrate,latlng",
        )
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        yield sandboxes


def test_streams_backfill_show_and_export(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """After a sync, `mirror backfill --streams` mirrors every Strava activity and
    reads each one's streams once; `workouts show --streams` prints them; `workouts
    export` writes CSV atomically to a file and JSON Lines with streams to stdout."""
    seed_demo(pair, NOW)
    assert run_cli(capsys, "sync", "--once")[0] == 0
    with pair.strava.lock:
        on_strava = sorted(a.activity_id for a in pair.strava.activities.values())
    pair.reset_counts()

    code, out, _ = run_cli(capsys, "mirror", "backfill", "--streams")
    assert code == 0, out
    assert f"{len(on_strava)} with streams" in out
    assert pair.strava.requests["streams"] == len(on_strava)
    assert run_cli(capsys, "mirror", "backfill", "--streams")[0] == 0
    assert pair.strava.requests["streams"] == len(on_strava)  # read once, never again

    code, out, _ = run_cli(capsys, "workouts", "show", str(on_strava[0]), "--streams")
    assert code == 0
    assert "heartrate" in out
    assert "samples: [" in out
    code, out, _ = run_cli(capsys, "workouts", "show", str(on_strava[0]), "--streams", "--json")
    shown = json.loads(out)
    assert sorted(shown["streams"]) == ["heartrate", "latlng", "time"]  # what is kept
    assert run_cli(capsys, "workouts", "show", "999999")[0] == 1

    target = tmp_path / "out" / "workouts.csv"
    code, _, err = run_cli(capsys, "workouts", "export", "--format", "csv", "--output", str(target))
    assert code == 0
    assert f"{len(on_strava)} activities" in err
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert sorted(int(r["activityId"]) for r in rows) == on_strava
    assert [p.name for p in target.parent.iterdir()] == ["workouts.csv"]  # no temp file left

    code, out, _ = run_cli(capsys, "workouts", "export", "--streams")
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(line["activityId"] for line in lines) == on_strava
    starts = [line["startDate"] for line in lines]
    assert starts == sorted(starts)  # oldest first
    assert all(len(line["streams"]["time"]) > 1 for line in lines)


def test_reconcile_command_repairs_and_counts_reads(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mirror reconcile` mirrors what no event announced and prints the reads spent."""
    seed_demo(pair, NOW)
    assert run_cli(capsys, "sync", "--once")[0] == 0
    with pair.strava.lock:
        count = len(pair.strava.activities)
    code, out, _ = run_cli(capsys, "mirror", "reconcile")
    assert code == 0, out
    assert "the whole history" in out  # no sweep recorded: the first pass sweeps
    assert f"{count} listed, {count} added, 0 deleted, 0 changed" in out
    code, out, _ = run_cli(capsys, "mirror", "reconcile")
    assert "the whole history" not in out  # swept just now: the window
    assert f"{count} listed, 0 added, 0 deleted, 0 changed, 1 Strava reads" in out
    code, out, _ = run_cli(capsys, "mirror", "reconcile", "--sweep")
    assert code == 0, out
    assert f"the whole history, {count} listed, 0 added, 0 deleted, 0 changed" in out


def test_reconcile_help_says_what_a_sweep_costs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "mirror", "reconcile", "--help")
    assert code == 0
    assert "--sweep" in out
    assert "1 read per 200 activities" in " ".join(out.split())


def test_backfill_names_an_inactive_application_not_the_budget(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str]
) -> None:
    """Strava refuses the application (403 Application Status Inactive): `mirror
    backfill` waits, and says that the owner's subscription is why, not the budget.
    A process of its own, stopped once it said so (it would wait for the next probe)."""
    seed_demo(pair, NOW)
    assert run_cli(capsys, "sync", "--once")[0] == 0
    pair.strava.application_inactive = True
    command = [sys.executable, "-m", "garmin2strava.entrypoints.cli", "mirror", "backfill"]
    with subprocess.Popen(  # noqa: S603 (our interpreter and module)
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        try:
            assert process.stdout is not None
            said = process.stdout.readline()
        finally:
            process.kill()
    assert "mirror backfill: the Strava application is inactive" in said
    assert "subscription" in said
    assert "budget" not in said
    assert "waiting until" in said
