"""What the local commands and an idle sync import (issue 11, start-up): `status`
loads neither client library nor pydantic, and an idle `sync --once` (nothing new on
Garmin, so no Strava request) never loads stravalib. Each runs in a fresh interpreter,
which reports the modules it ended with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from garmin2strava.adapters.crypto import generate_token_key
from garmin2strava.sandbox.scenario import SandboxPair, running_sandboxes, seed_run

pytestmark = pytest.mark.integration

CLIENTS = ("stravalib", "garminconnect", "garth")
# The settings of a local command are read without pydantic (settings_fast).
WATCHED = (*CLIENTS, "pydantic", "pydantic_settings")
LOCAL_COMMANDS = (["status"], ["uploads", "list"], ["workouts", "list"], ["events", "list-dead"])
CHILD = (
    "import json, sys\n"
    "from garmin2strava.entrypoints.cli import main\n"
    "code = main(sys.argv[1:])\n"
    f"print(json.dumps([code, sorted(m for m in {WATCHED!r} if m in sys.modules)]))\n"
)


@pytest.fixture
def pair() -> Iterator[SandboxPair]:
    with running_sandboxes() as sandboxes:
        yield sandboxes


def _child(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our interpreter, fixed code)
        [sys.executable, "-c", CHILD, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def _run(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, list[str]]:
    done = _child(args, env, cwd)
    code, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return code, loaded


def _env(pair: SandboxPair, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("G2S_", "STRAVA_", "GARMIN_"))}
    return env | {
        "STRAVA_CLIENT_ID": str(pair.strava.client_id),
        "STRAVA_CLIENT_SECRET": pair.strava.client_secret,
        "STRAVA_REFRESH_TOKEN": pair.strava_refresh_token,
        "GARMIN_TOKENS": pair.garmin_tokens,
        "G2S_USER_ID": "me",
        "G2S_DB_PATH": str(tmp_path / "g2s.sqlite3"),
        "G2S_TOKEN_KEY": generate_token_key(),
        "G2S_STRAVA_BASE_URL": pair.strava.base_url,
        "G2S_GARMIN_BASE_URL": pair.garmin.base_url,
        "G2S_LOG_LEVEL": "WARNING",
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
    }


def test_status_and_an_idle_sync_load_no_strava_client(pair: SandboxPair, tmp_path: Path) -> None:
    """`status` (and the lists) import neither stravalib nor garminconnect; `sync
    --once` with only a ride on Garmin makes 1 Garmin request, 0 Strava, and imports
    garminconnect but not stravalib. The control: a cycle that uploads loads both."""
    env = _env(pair, tmp_path)
    for command in LOCAL_COMMANDS:
        assert _run(command, env, tmp_path)[0] == 0, command

    seed_run(
        pair,
        51_000_001,
        start_utc=datetime.now(UTC) - timedelta(hours=3),
        type_key="road_biking",
        name="Commute",
    )
    pair.reset_counts()
    code, loaded = _run(["sync", "--once"], env, tmp_path)
    assert code == 0
    assert pair.strava_total() == 0
    assert pair.garmin.requests["list"] == 1
    assert "stravalib" not in loaded
    assert "garminconnect" in loaded

    seed_run(pair, 51_000_002, start_utc=datetime.now(UTC) - timedelta(hours=2), name="Run")
    code, loaded = _run(["sync", "--once"], env | {"G2S_UPLOAD_POLL_DELAY_SECONDS": "0"}, tmp_path)
    assert code == 0
    assert pair.strava_counts()["uploads"] == 1
    assert {"stravalib", "garminconnect"} <= set(loaded)


def test_the_local_commands_read_their_settings_without_pydantic(
    pair: SandboxPair, tmp_path: Path
) -> None:
    """`--help`, `status` and the lists end without pydantic or a client library loaded;
    a `.env` beside them is read the same way. The control: a setting only pydantic
    takes ("+5") loads it, and still answers."""
    env = _env(pair, tmp_path)
    for command in (["--help"], *LOCAL_COMMANDS):
        assert _run(command, env, tmp_path) == (0, []), command
    (tmp_path / ".env").write_text("G2S_LOOKBACK=30\n", encoding="utf-8")
    assert _run(["status"], env, tmp_path) == (0, [])
    code, loaded = _run(["status"], env | {"G2S_LOOKBACK": "+5"}, tmp_path)
    assert code == 0
    assert "pydantic_settings" in loaded


def test_a_wrong_setting_gives_one_line_and_exit_2_from_every_local_command(
    pair: SandboxPair, tmp_path: Path
) -> None:
    """G2S_LOOKBACK=0 (in the environment or .env): pydantic's one line naming the
    setting on stderr, exit 2, from each local command."""
    line = "garmin2strava: setting G2S_LOOKBACK: Input should be greater than or equal to 1"
    env = _env(pair, tmp_path)
    for command in LOCAL_COMMANDS:
        done = _child(command, env | {"G2S_LOOKBACK": "0"}, tmp_path)
        assert json.loads(done.stdout.strip().splitlines()[-1])[0] == 2, command
        assert done.stderr.strip() == line, command
    (tmp_path / ".env").write_text("g2s_lookback=0\n", encoding="utf-8")
    done = _child(["status"], env, tmp_path)
    assert json.loads(done.stdout.strip().splitlines()[-1])[0] == 2
    assert done.stderr.strip() == line
