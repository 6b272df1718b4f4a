"""Wrong settings and unsafe files through the real `garmin2strava` entry point (in
this process through main(), and as a process of its own where files or the process
matter): every command refuses with one line naming the setting or the file, exits non-zero, and
prints no traceback and no secret; nothing on disk is changed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest

from garmin2strava.adapters.crypto import generate_token_key
from garmin2strava.entrypoints.cli import cli, main
from garmin2strava.entrypoints.cli_common import IsoDate

pytestmark = pytest.mark.integration

# Secrets the process is given: none may appear in what it prints.
SECRETS = {
    "STRAVA_CLIENT_SECRET": "sekrit-client-3f9a1c",
    "STRAVA_REFRESH_TOKEN": "sekrit-refresh-77b2e0",
    "GARMIN_TOKENS": '{"di_token": "sekrit-garmin-5d1e"}',
    "GARMIN_PASSWORD": "sekrit-password-a0c4",
}


def leaf_commands() -> list[list[str]]:
    """Every command of the click group (but `demo`, which reads no setting), with its
    required arguments and options filled in."""
    found: list[list[str]] = []

    def fill(param: click.Parameter) -> list[str]:
        kind = param.type
        value = "1" if isinstance(kind, click.types.IntParamType) else "x"
        if isinstance(kind, IsoDate):
            value = "2024-01-01"
        if isinstance(kind, click.Choice):
            value = str(kind.choices[0])
        return [value] if isinstance(param, click.Argument) else [param.opts[-1], value]

    def walk(prefix: list[str], group: click.Group) -> None:
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                walk([*prefix, name], command)
            elif name != "demo":
                args = [word for p in command.params if p.required for word in fill(p)]
                found.append([*prefix, name, *args])

    walk([], cli)
    return found


COMMANDS = leaf_commands()


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("G2S_", "STRAVA_", "GARMIN_"))
    }
    env |= SECRETS | {
        "STRAVA_CLIENT_ID": "4242",
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "G2S_DB_PATH": str(tmp_path / "data" / "g2s.sqlite3"),
        "G2S_TOKEN_KEY": generate_token_key(),
        "G2S_HTTP_PORT": "1",  # never reached: every command here must stop before
        "G2S_LOG_FORMAT": "text",
    }
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our interpreter and module)
        [sys.executable, "-m", "garmin2strava.entrypoints.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def run_cli_in_process(
    args: list[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> subprocess.CompletedProcess[str]:
    """`run_cli` without the process: `main(args)` in this one, with `env`'s settings
    (the test also uses `clean_cli_environment`), as a CompletedProcess of its exit
    code and what it printed."""
    for name in list(os.environ):
        if name.startswith(("G2S_", "STRAVA_", "GARMIN_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def assert_one_line(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Non-zero, one line on stderr holding every needle, nothing on stdout, no secret."""
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, output
    assert done.stdout == "", output
    for needle in needles:
        assert needle in lines[0], lines[0]
    for secret in SECRETS.values():
        assert secret not in output
    return lines[0]


@pytest.mark.usefixtures("clean_cli_environment")
def test_every_command_refuses_a_wrong_setting_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """STRAVA_SUBSCRIPTION_ID=0: each of the commands (every one the parser has but
    demo), run in this process through main(), exits 2 with one line naming the
    setting, and writes no store (test_status_in_its_own_process_refuses_the_same_way
    is the same refusal from a process of its own)."""
    assert len(COMMANDS) > 15, COMMANDS
    env = base_env(tmp_path) | {"STRAVA_SUBSCRIPTION_ID": "0"}
    results = [run_cli_in_process(args, env, monkeypatch, capsys) for args in COMMANDS]
    for args, done in zip(COMMANDS, results, strict=True):
        assert done.returncode == 2, (args, done.stderr)
        assert_one_line(done, "STRAVA_SUBSCRIPTION_ID", "greater than or equal to 1")
    assert not (tmp_path / "data").exists()


def test_status_in_its_own_process_refuses_the_same_way(tmp_path: Path) -> None:
    """STRAVA_SUBSCRIPTION_ID=0 given to a real `garmin2strava status` process: exit 2,
    one line naming the setting, no traceback, no secret, no store."""
    env = base_env(tmp_path) | {"STRAVA_SUBSCRIPTION_ID": "0"}
    done = run_cli(["status"], env, tmp_path)
    assert done.returncode == 2, done.stderr
    assert_one_line(done, "STRAVA_SUBSCRIPTION_ID", "greater than or equal to 1")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("G2S_GARMIN_BACKOFF_SECONDS", "1000000000000", "less than or equal to"),
        ("G2S_GARMIN_BACKOFF_SECONDS", "1e12", "valid integer"),
        ("STRAVA_SUBSCRIPTION_ID", "-1", "greater than or equal to 1"),
        ("STRAVA_SUBSCRIPTION_ID", "99999999999999999999", "less than or equal to"),
        ("STRAVA_CLIENT_ID", "0", "greater than or equal to 1"),
        ("G2S_SYNC_INTERVAL_SECONDS", "1" + "0" * 30, "less than or equal to"),
        ("G2S_UPLOAD_POLL_DELAY_SECONDS", "nan", "G2S_UPLOAD_POLL_DELAY_SECONDS"),
        ("G2S_UPLOAD_POLL_DELAY_SECONDS", "inf", "less than or equal to"),
        ("G2S_HTTP_PORT", "70000", "less than or equal to 65535"),
        ("G2S_ADMIN_PORT", "0", "greater than or equal to 1"),
        ("G2S_HTTP_HOST", "bad host", "IP address or a host name"),
        ("G2S_ADMIN_HOST", "-x.example", "IP address or a host name"),
        ("G2S_HTTP_HOST", "a" * 64 + ".example", "IP address or a host name"),
    ],
)
@pytest.mark.usefixtures("clean_cli_environment")
def test_a_wrong_number_or_host_is_one_line(  # noqa: PLR0917 (the table's columns and two fixtures)
    tmp_path: Path,
    setting: str,
    value: str,
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Out of bounds, not a number, not a host: `status` (in this process, through
    main()) exits 2 with one line naming it."""
    done = run_cli_in_process(
        ["status"], base_env(tmp_path) | {setting: value}, monkeypatch, capsys
    )
    assert done.returncode == 2
    assert_one_line(done, setting, says)


@pytest.mark.usefixtures("clean_cli_environment")
@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_a_db_path_that_is_a_symlink_is_refused_and_its_target_untouched(
    tmp_path: Path,
    dangling: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """G2S_DB_PATH a symbolic link: one line naming it, exit 2 (three commands through
    main() in this process); the file it points at keeps its mode and its bytes
    (before this it was chmod'ed to 0600 and a traceback followed), and no key file
    appears beside the link."""
    target = tmp_path / "elsewhere" / "precious.txt"
    target.parent.mkdir()
    if not dangling:
        target.write_text("not a database\n")
        target.chmod(0o644)
    link = tmp_path / "data" / "g2s.sqlite3"
    link.parent.mkdir()
    link.symlink_to(target)
    env = base_env(tmp_path) | {"G2S_DB_PATH": str(link)}
    del env["G2S_TOKEN_KEY"]
    for args in (["status"], ["serve"], ["uploads", "list"]):
        done = run_cli_in_process(args, env, monkeypatch, capsys)
        assert done.returncode == 2
        assert_one_line(done, "G2S_DB_PATH", "symbolic link")
    if dangling:
        assert not target.exists()
    else:
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        assert target.read_text() == "not a database\n"
    assert sorted(p.name for p in link.parent.iterdir()) == ["g2s.sqlite3"]


def test_a_token_key_file_open_to_others_is_refused(tmp_path: Path) -> None:
    """An existing token.key readable by others (0644): refused with one line that
    says how to fix it, exit 2, the file unchanged; once it is 0600 the command runs."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    key_file = data / "token.key"
    key = generate_token_key()
    key_file.write_text(key + "\n")
    key_file.chmod(0o644)
    env = base_env(tmp_path)
    del env["G2S_TOKEN_KEY"]
    done = run_cli(["status"], env, tmp_path)
    assert done.returncode == 2
    line = assert_one_line(done, str(key_file), "chmod 600", "0644")
    assert key not in line
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o644
    assert key_file.read_text() == key + "\n"
    key_file.chmod(0o600)
    no_account = {name: value for name, value in env.items() if name not in SECRETS}
    done = run_cli(["status"], no_account, tmp_path)
    assert done.returncode == 0, done.stderr
    assert key_file.read_text() == key + "\n"


def test_a_db_path_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    """G2S_DB_PATH naming a directory: one line naming the setting, no traceback."""
    folder = tmp_path / "data" / "g2s.sqlite3"
    folder.mkdir(parents=True)
    done = run_cli(["status"], base_env(tmp_path) | {"G2S_DB_PATH": str(folder)}, tmp_path)
    assert_one_line(done, "G2S_DB_PATH")
