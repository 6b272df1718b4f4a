"""What the local commands and an idle sync import (issue 11, start-up): `--help`
loads nothing heavy, not even pydantic (it reads no setting); `status` and the lists
load pydantic for their settings but no client library, no AWS SDK and no web server;
an idle `sync --once` (nothing new on Garmin, so no Strava request) never loads
stravalib. Each child is a fresh interpreter that runs its commands one after another
through main() and reports, after each, the watched modules loaded so far: the union
of what its commands imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from g2s_harness.cli import run_cli
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from garmin2strava.adapters.crypto import generate_token_key

pytestmark = pytest.mark.integration

CLIENTS = ("stravalib", "garminconnect", "garth")
# What a local command has no use for: the AWS SDK, the web server, the FIT reader.
UNUSED_LOCALLY = (*CLIENTS, "boto3", "botocore", "uvicorn", "starlette", "fitparse")
WATCHED = (*UNUSED_LOCALLY, "pydantic", "pydantic_settings")
SETTINGS_LIBRARIES = ["pydantic", "pydantic_settings"]
LOCAL_COMMANDS = (["status"], ["uploads", "list"], ["workouts", "list"], ["events", "list-dead"])
# argv[1]: the steps, each [command, variables set before it].
CHILD = (
    "import json, os, sys\n"
    "from garmin2strava.entrypoints.cli import main\n"
    "after = []\n"
    "for command, variables in json.loads(sys.argv[1]):\n"
    "    os.environ.update(variables)\n"
    "    code = main(command)\n"
    f"    after.append([code, sorted(m for m in {WATCHED!r} if m in sys.modules)])\n"
    "print(json.dumps(after))\n"
)
WRONG_LOOKBACK = "garmin2strava: setting G2S_LOOKBACK: Input should be greater than or equal to 1"

type Step = list[str] | tuple[list[str], dict[str, str]]


@pytest.fixture
def pair() -> Iterator[SandboxPair]:
    with running_sandboxes() as sandboxes:
        yield sandboxes


def _child(steps: list[Step], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    encoded = [step if isinstance(step, tuple) else (step, {}) for step in steps]
    return subprocess.run(  # noqa: S603 (our interpreter, fixed code)
        [sys.executable, "-c", CHILD, json.dumps(encoded)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def _run(env: dict[str, str], cwd: Path, *steps: Step) -> list[tuple[int, list[str]]]:
    """Each step's exit code and the watched modules loaded once it ended."""
    done = _child(list(steps), env, cwd)
    after = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(after) == len(steps), done.stdout
    return [(code, loaded) for code, loaded in after]


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
    after = _run(env, tmp_path, *LOCAL_COMMANDS)
    assert [code for code, _ in after] == [0] * len(LOCAL_COMMANDS)
    assert not set(CLIENTS) & set(after[-1][1])

    seed_run(
        pair,
        51_000_001,
        start_utc=datetime.now(UTC) - timedelta(hours=3),
        type_key="road_biking",
        name="Commute",
    )
    pair.reset_counts()
    ((code, loaded),) = _run(env, tmp_path, ["sync", "--once"])
    assert code == 0
    assert pair.strava_total() == 0
    assert pair.garmin.requests["list"] == 1
    assert "stravalib" not in loaded
    assert "garminconnect" in loaded

    seed_run(pair, 51_000_002, start_utc=datetime.now(UTC) - timedelta(hours=2), name="Run")
    quick = env | {"G2S_UPLOAD_POLL_DELAY_SECONDS": "0"}
    ((code, loaded),) = _run(quick, tmp_path, ["sync", "--once"])
    assert code == 0
    assert pair.strava_counts()["uploads"] == 1
    assert {"stravalib", "garminconnect"} <= set(loaded)


def test_help_loads_nothing_heavy_and_the_local_commands_no_client(
    pair: SandboxPair, tmp_path: Path
) -> None:
    """`--help` ends with none of the watched modules loaded; `status` and the lists,
    one after another in the same interpreter, add pydantic (their settings) and
    nothing else watched: no client library, no AWS SDK, no web server."""
    env = _env(pair, tmp_path)
    after = _run(env, tmp_path, ["--help"], *LOCAL_COMMANDS)
    assert after == [(0, []), *[(0, SETTINGS_LIBRARIES)] * len(LOCAL_COMMANDS)]


def test_a_wrong_setting_gives_one_line_and_exit_2_from_a_real_process(
    pair: SandboxPair, tmp_path: Path
) -> None:
    """G2S_LOOKBACK=0 in the environment of a fresh `status`: one line naming the
    setting is all of stderr, exit 2."""
    env = _env(pair, tmp_path) | {"G2S_LOOKBACK": "0"}
    done = _child([["status"]], env, tmp_path)
    ((code, _loaded),) = json.loads(done.stdout.strip().splitlines()[-1])
    assert code == 2
    assert done.stderr.strip() == WRONG_LOOKBACK


@pytest.mark.usefixtures("clean_cli_environment")
def test_a_wrong_setting_gives_one_line_and_exit_2_from_every_local_command(
    pair: SandboxPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """G2S_LOOKBACK=0 (in the environment or .env): one line naming the setting on
    stderr, exit 2, from each local command (through main(), in this process)."""
    for name, value in _env(pair, tmp_path).items():
        if name.startswith(("G2S_", "STRAVA_", "GARMIN_")):
            monkeypatch.setenv(name, value)
    with monkeypatch.context() as patch:
        patch.setenv("G2S_LOOKBACK", "0")
        for command in LOCAL_COMMANDS:
            code, _out, err = run_cli(capsys, *command)
            assert (code, err.strip()) == (2, WRONG_LOOKBACK), command
    (tmp_path / ".env").write_text("g2s_lookback=0\n", encoding="utf-8")
    for command in LOCAL_COMMANDS:
        code, _out, err = run_cli(capsys, *command)
        assert (code, err.strip()) == (2, WRONG_LOOKBACK), command
