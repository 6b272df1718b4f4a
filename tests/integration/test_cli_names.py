"""Names from outside on the command line (issue 9): `uploads list` and `workouts list`
never print a raw escape sequence, and a lone surrogate in a title crashes no command.
Run through `main()` against both sandboxes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from g2s_harness.cli import run_cli
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.bootstrap import build_cipher
from garmin2strava.domain.models import Workout
from garmin2strava.settings import load_settings

pytestmark = pytest.mark.integration

USER = "demo"
START = datetime(2025, 6, 2, 6, 30, tzinfo=UTC)
HOSTILE = "\x1b]0;owned\x07\x1b[2J\x00Tempo\r\nrun\x9b31m \ud800 end"


@pytest.fixture
def pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_cli_environment: None
) -> Iterator[SandboxPair]:
    """Both sandboxes and the single-user settings pointing at them; none of the
    developer's settings reach the command."""
    with running_sandboxes() as sandboxes:
        settings = sandboxes.environment(user_id=USER, db_path=tmp_path / "g2s.sqlite3")
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        yield sandboxes


def _raw_controls(text: str) -> list[str]:
    return [ch for ch in text if (ord(ch) < 0x20 and ch != "\n") or 0x7F <= ord(ch) <= 0x9F]


def test_hostile_garmin_title_is_cleaned_uploaded_and_listed_safely(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Garmin title with OSC/CSI sequences, NUL, CR/LF, a C1 CSI and a lone surrogate:
    `sync` exits 0, Strava gets the name without control characters, and `uploads list`
    prints no control character (its output encodes as UTF-8)."""
    seed_run(pair, 2101, start_utc=START, name=HOSTILE)

    code, out, err = run_cli(capsys, "sync")
    assert code == 0, out + err

    with pair.strava.lock:
        (uploaded,) = [a.name for a in pair.strava.activities.values()]
    assert uploaded == "]0;owned[2JTempo run31m \ufffd end"
    code, out, _err = run_cli(capsys, "uploads", "list")
    assert code == 0
    assert "Tempo run" in out
    assert not _raw_controls(out)
    out.encode("utf-8")


def test_stored_escape_sequences_and_surrogates_are_shown_escaped(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows written before names were cleaned (ledger detail, a mirrored Strava title
    with ESC and CR) are printed with visible escapes by `uploads list` and
    `workouts list`, never as raw control characters."""
    seed_run(pair, 2201, start_utc=START)
    assert run_cli(capsys, "sync")[0] == 0
    settings = load_settings()
    store = SqliteStore(settings.db_path, build_cipher(settings))
    try:
        (entry,) = store.list_uploads(USER)
        from dataclasses import replace

        store.put_upload(replace(entry, activity_name="\x1b[2JOld\rname", detail="e\x07"))
        store.upsert_workout(
            Workout(
                user_id=USER,
                activity_id=77,
                athlete_id=pair.athlete_id,
                name="\x1b[31mRed\rtitle \ud800",
                sport_type="Run",
                start_utc=START,
                elapsed_time=1800,
                moving_time=1700,
                distance=5000.0,
                total_elevation_gain=None,
                external_id=None,
                upload_id=None,
                is_private=False,
                is_deleted=False,
                updated_at=START,
            )
        )
    finally:
        store.close()

    code, out, _err = run_cli(capsys, "uploads", "list")
    assert code == 0
    assert "\\x1b[2JOld\\rname - e\\x07" in out
    assert not _raw_controls(out)
    code, out, _err = run_cli(capsys, "workouts", "list")
    assert code == 0
    assert "\\x1b[31mRed\\rtitle \\ud800" in out
    assert not _raw_controls(out)
