"""The `garmin2strava` command line, run in-process through click's CliRunner against
both sandboxes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from g2s_harness.cli import run_cli
from g2s_harness.serving import free_port
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_demo, seed_run
from garmin2strava.bootstrap import bootstrap
from garmin2strava.domain.webhook import derive_path_secret
from garmin2strava.entrypoints.cli import cli
from garmin2strava.entrypoints.server import MirrorRuntime
from garmin2strava.settings import load_settings

pytestmark = pytest.mark.integration

USER = "me"
NOW = datetime.now(tz=UTC).replace(microsecond=0)

# Every command (and action) with the options its --help must mention.
HELP_OPTIONS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("run",): ("--no-http", "G2S_SYNC_INTERVAL_SECONDS", "SIGTERM"),
    ("serve",): ("G2S_HTTP_PORT",),
    ("sync",): ("--once", "--dry-run", "--user"),
    ("backfill",): ("--since", "--until", "--user", "--no-progress"),
    ("uploads",): ("list", "retry"),
    ("uploads", "list"): ("--json", "--user", "--limit"),
    ("uploads", "retry"): ("GARMIN_ID", "--user"),
    ("status",): ("--json",),
    ("get-token",): ("--port", "--user", "--timeout", "--open", "activity:read_all"),
    ("garmin",): ("login",),
    ("garmin", "login"): ("--email", "--user"),
    ("demo",): ("--keep", "--serve"),
    ("history",): ("--user", "--since", "--json"),
    ("accounts",): ("list", "pause", "resume", "remove", "sync"),
    ("accounts", "remove"): ("ID", "--yes"),
    ("disconnect",): ("--user", "--yes"),
    ("webhook", "subscribe"): ("--url", "/webhooks/strava/<secret>"),
}


def _commands() -> dict[tuple[str, ...], tuple[str, ...]]:
    """Every command path of the click group, with the options and arguments it declares
    (an option by its longest name, an argument by its metavar)."""
    found: dict[tuple[str, ...], tuple[str, ...]] = {}

    def walk(prefix: tuple[str, ...], group: click.Group) -> None:
        for name, command in group.commands.items():
            found[(*prefix, name)] = tuple(
                max(p.opts, key=len) if isinstance(p, click.Option) else str(p.metavar or p.name)
                for p in command.params
            )
            if isinstance(command, click.Group):
                walk((*prefix, name), command)

    walk((), cli)
    return found


COMMANDS = _commands()


@pytest.fixture(autouse=True)
def clean_environment(clean_cli_environment: None) -> None:
    """conftest's clean_cli_environment for every test here."""


@pytest.fixture
def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxPair]:
    """Both sandboxes, and the single-user settings pointing at them."""
    with running_sandboxes() as sandboxes:
        settings = sandboxes.environment(
            user_id=USER,
            db_path=tmp_path / "data" / "g2s.sqlite3",
            # The emulator processes an upload in 0 s: no 2 s wait before each poll.
            G2S_UPLOAD_POLL_DELAY_SECONDS="0",
        )
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        yield sandboxes


def uploads_json(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    code, out, _err = run_cli(capsys, "uploads", "list", "--json")
    assert code == 0
    entries: list[dict[str, object]] = json.loads(out)
    return entries


# -- help -------------------------------------------------------------------------------
def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`garmin2strava --help` exits 0 and names every command."""
    code, out, _err = run_cli(capsys, "--help")
    assert code == 0
    for command, *_action in COMMANDS:
        assert command in out


def test_the_documented_commands_exist() -> None:
    """Every command HELP_OPTIONS expects is in the parser."""
    assert set(HELP_OPTIONS) <= set(COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS), ids=" ".join)
def test_command_help_mentions_its_options(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command's --help exits 0 and mentions each of its options."""
    code, out, _err = run_cli(capsys, *command, "--help")
    assert code == 0
    for option in COMMANDS[command] + HELP_OPTIONS.get(command, ()):
        assert option in out, f"{' '.join(command)} --help does not mention {option}"


def test_every_command_help_says_what_it_costs() -> None:
    """Each command's --help says what it costs in requests (or that it makes none)."""
    runner = CliRunner()
    leaves = [c for c in COMMANDS if not isinstance(_command(c), click.Group)]
    assert len(leaves) > 15
    for command in leaves:
        result = runner.invoke(cli, [*command, "--help"])
        assert result.exit_code == 0
        assert "request" in result.stdout, f"{' '.join(command)} --help names no cost"


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def test_help_through_the_module_entry_point(tmp_path: Path) -> None:
    """`python -m garmin2strava.entrypoints.cli --help` works as a separate process."""
    done = subprocess.run(
        [sys.executable, "-m", "garmin2strava.entrypoints.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "get-token" in done.stdout
    assert done.stderr == ""


# -- bad settings ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("G2S_SYNC_INTERVAL_SECONDS", "abc"),
        ("G2S_SYNC_INTERVAL_SECONDS", "5"),
        ("G2S_STRAVA_BASE_URL", "http://example.com"),
        ("G2S_STORE", "postgres"),
        ("G2S_DEAD_LETTER_RETENTION_DAYS", "0"),
        ("G2S_WEBHOOK_SECRET", "too-short"),
        ("G2S_WEBHOOK_SECRET", "a/b" * 10),
    ],
)
def test_bad_setting_exits_2_with_one_line_naming_it(
    name: str, value: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong setting stops the command with exit 2 and one stderr line naming it."""
    monkeypatch.setenv(name, value)
    code, out, err = run_cli(capsys, "status")
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    assert name in lines[0]


def test_a_dotenv_file_in_the_working_directory_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Settings come from ./.env too (which is why the tests run in tmp_path)."""
    (tmp_path / ".env").write_text("G2S_SYNC_INTERVAL_SECONDS=abc\n", encoding="utf-8")
    code, _out, err = run_cli(capsys, "status")
    assert code == 2
    assert "G2S_SYNC_INTERVAL_SECONDS" in err


# -- sync ------------------------------------------------------------------------------
def test_sync_once_uploads_and_exits_0(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str]
) -> None:
    """One cycle uploads the new runs, and the ledger and status say so."""
    seed_demo(pair, NOW)
    code, out, err = run_cli(capsys, "sync", "--once")
    assert code == 0, err
    uploaded = {r.garmin_id for r in pair.seeded if r.expect == "uploaded"}
    assert {a.external_id for a in pair.strava.activities.values()} >= {
        f"garmin2strava_{gid}" for gid in uploaded
    }
    assert pair.strava_counts()["uploads"] == len(uploaded)
    assert f"account {USER}:" in out

    entries = uploads_json(capsys)
    outcomes = {e["garminActivityId"]: e["outcome"] for e in entries}
    assert outcomes == {
        r.garmin_id: r.expect for r in pair.seeded if r.expect in {"uploaded", "exists", "skipped"}
    }
    assert all(e["userId"] == USER for e in entries)

    code, out, _err = run_cli(capsys, "status", "--json")
    assert code == 0
    status = json.loads(out)
    (account,) = status["accounts"]
    assert account["userId"] == USER
    assert account["status"] == "active"
    assert account["lastCycleOk"] is True
    assert account["uploads"] == {"exists": 1, "skipped": 1, "uploaded": len(uploaded)}
    assert status["stravaBudget"] is not None

    code, _out, err = run_cli(capsys, "sync", "--once")
    assert code == 0, err
    assert pair.strava_counts()["uploads"] == len(uploaded)


def test_sync_once_exits_1_when_an_account_failed(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str]
) -> None:
    """Revoked Garmin tokens fail the account's cycle: exit 1, and status names why."""
    seed_demo(pair, NOW)
    pair.garmin.revoke_all_tokens()
    code, out, _err = run_cli(capsys, "sync", "--once")
    assert code == 1
    assert f"account {USER}:" in out
    assert pair.strava_counts()["uploads"] == 0

    code, out, _err = run_cli(capsys, "status", "--json")
    assert code == 0
    (account,) = json.loads(out)["accounts"]
    assert account["status"] == "needs_garmin_login"


def test_an_inactive_strava_application_is_shown_and_sends_nobody_to_get_token(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Strava refuses the application (403 Application Status Inactive): `sync --once`
    exits 0 and names the cause, nothing is uploaded, the account stays active, and
    `status` shows the application inactive with the owner's subscription named; with
    G2S_STRAVA_ATHLETE_CAPACITY=0 refused by name."""
    seed_demo(pair, NOW)
    pair.strava.application_inactive = True
    code, out, err = run_cli(capsys, "sync", "--once")
    assert code == 0, err
    assert "Strava application is inactive" in out
    assert "Strava budget spent" not in out
    assert pair.strava_counts()["uploads"] == 0

    code, out, _err = run_cli(capsys, "status")
    assert code == 0
    assert f"account {USER}: active" in out
    assert "Strava application: inactive since" in out
    assert "warning: the Strava application is inactive" in out
    assert "subscription" in out

    monkeypatch.setenv("G2S_STRAVA_ATHLETE_CAPACITY", "0")
    code, _out, err = run_cli(capsys, "status")
    assert code == 2
    assert "G2S_STRAVA_ATHLETE_CAPACITY" in err


def test_dry_run_changes_nothing(pair: SandboxPair, capsys: pytest.CaptureFixture[str]) -> None:
    """--dry-run names what it would upload, uploads nothing and records nothing."""
    seed_demo(pair, NOW)
    code, out, err = run_cli(capsys, "sync", "--once", "--dry-run")
    assert code == 0, err
    assert "would upload" in out
    assert pair.strava_counts()["uploads"] == 0
    assert pair.garmin.requests["download"] == 0
    assert uploads_json(capsys) == []


def test_uploads_retry_requeues_a_dead_entry(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run Strava refused until it was dead is uploaded after `uploads retry`."""
    monkeypatch.setenv("G2S_MAX_ATTEMPTS", "1")
    run = seed_run(pair, 31_000_001, start_utc=NOW - timedelta(hours=3), name="Refused")
    pair.strava.fail_next("upload", 400)
    code, _out, _err = run_cli(capsys, "sync", "--once")
    assert code == 0  # a dead upload is recorded; the account's cycle itself went fine
    (entry,) = uploads_json(capsys)
    assert (entry["garminActivityId"], entry["outcome"]) == (run.garmin_id, "dead")

    code, _out, _err = run_cli(capsys, "uploads", "retry", "31000001")
    assert code == 0
    (entry,) = uploads_json(capsys)
    assert (entry["outcome"], entry["attempts"]) == ("failed", 0)

    code, _out, err = run_cli(capsys, "sync", "--once")
    assert code == 0, err
    (entry,) = uploads_json(capsys)
    assert entry["outcome"] == "uploaded"
    assert pair.strava_counts()["uploads"] == 2

    code, _out, _err = run_cli(capsys, "uploads", "retry", "31000001")
    assert code == 1  # nothing to retry once uploaded
    code, _out, _err = run_cli(capsys, "uploads", "retry", "404")
    assert code == 1


# -- backfill --------------------------------------------------------------------------
def test_backfill_uploads_history_beyond_the_lookback_once(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backfill uploads every older run the lookback never sees; a rerun uploads none."""
    monkeypatch.setenv("G2S_LOOKBACK", "2")
    for i in range(21):
        start = NOW - timedelta(days=60 - i)
        seed_run(pair, 41_000_000 + i, start_utc=start, duration_s=600, name=f"Old {i}")
    for i in range(2):
        start = NOW - timedelta(hours=10 - i)
        seed_run(pair, 42_000_000 + i, start_utc=start, duration_s=600, name=f"New {i}")
    code, _out, err = run_cli(capsys, "sync", "--once")
    assert code == 0, err
    assert pair.strava_counts()["uploads"] == 2  # the lookback: the newest two only

    since = (NOW - timedelta(days=90)).date().isoformat()
    code, out, err = run_cli(capsys, "backfill", "--since", since, "--no-progress")
    assert code == 0, err
    assert "backfill: 23 of 23 activities handled" in out
    assert pair.strava_counts()["uploads"] == 23
    external_ids = {a.external_id for a in pair.strava.activities.values()}
    assert external_ids == {f"garmin2strava_{r.garmin_id}" for r in pair.seeded}

    code, out, err = run_cli(capsys, "backfill", "--since", since, "--no-progress")
    assert code == 0, err
    assert "backfill: 23 of 23 activities handled" in out
    assert pair.strava_counts()["uploads"] == 23


def test_backfill_rejects_since_after_until(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str]
) -> None:
    """--since must come before --until (exit 2, a usage error)."""
    code, _out, err = run_cli(
        capsys, "backfill", "--since", "2025-02-01", "--until", "2025-01-01", "--no-progress"
    )
    assert code == 2
    assert "--since" in err
    assert pair.strava_counts()["uploads"] == 0


# -- demo ------------------------------------------------------------------------------
def test_demo_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """`garmin2strava demo` runs the real sync against the emulators and says OK."""
    code, out, _err = run_cli(capsys, "demo")
    assert code == 0
    assert "demo: OK" in out


def test_demo_without_the_emulators_says_how_to_get_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An install without the `sandbox` extra: one line naming what is missing and how
    to get it, exit 1, no traceback."""
    for name in [m for m in sys.modules if m.split(".")[0] == "g2s_sandbox"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delitem(sys.modules, "garmin2strava.entrypoints.demo", raising=False)
    monkeypatch.setitem(sys.modules, "g2s_sandbox", None)  # importing from it now fails
    code, out, err = run_cli(capsys, "demo")
    assert code == 1
    assert out == ""
    expected = (
        "garmin2strava demo: the emulators (g2s-sandbox) are not installed; in a clone "
        "of the repository, `make demo` installs them"
    )
    assert err.strip().splitlines() == [expected]


# -- webhook ---------------------------------------------------------------------------
LONG_VERIFY = "a-long-random-verify-token-for-the-cli-test"


@pytest.fixture
def daemon_webhook(pair: SandboxPair, monkeypatch: pytest.MonkeyPatch) -> Iterator[MirrorRuntime]:
    """The daemon's webhook server (MirrorRuntime, as `serve` builds it) on free ports,
    with no STRAVA_SUBSCRIPTION_ID: it knows only what the store holds."""
    monkeypatch.setenv("STRAVA_VERIFY_TOKEN", LONG_VERIFY)
    monkeypatch.setenv("G2S_HTTP_PORT", str(free_port()))
    # The admin listener starts with the public one: on a free port too, or two test
    # workers (or a daemon on this machine) collide on the default 8081.
    monkeypatch.setenv("G2S_ADMIN_PORT", str(free_port()))
    runtime = MirrorRuntime(bootstrap(load_settings()))
    stop = threading.Event()
    thread = threading.Thread(target=runtime.serve_http, args=(stop,), daemon=True)
    thread.start()
    port = runtime.app.settings.http_port
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield runtime
    stop.set()
    thread.join(timeout=10)
    runtime.queue.close()


def test_webhook_subscribe_registers_the_secret_path_and_stores_the_id(
    daemon_webhook: MirrorRuntime, pair: SandboxPair, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `status` says every event is refused and why. `webhook subscribe --url`
    registers <url>/webhooks/strava/<secret> (Strava's handshake passes), stores the id,
    which the running daemon picks up by itself within seconds; `webhook list` stores it
    too and recognises the URL; `webhook delete` forgets it. Neither the secret nor the
    verify token is printed."""
    secret = derive_path_secret(LONG_VERIFY)
    code, out, _err = run_cli(capsys, "status")
    assert code == 0
    assert "no webhook subscription id is known" in out
    assert daemon_webhook.receiver.subscriptions.current() is None

    port = daemon_webhook.app.settings.http_port
    code, out, err = run_cli(capsys, "webhook", "subscribe", "--url", f"http://127.0.0.1:{port}/")
    assert code == 0, err
    subscription = pair.strava.webhooks.subscription
    assert subscription is not None
    assert subscription.callback_url == f"http://127.0.0.1:{port}/webhooks/strava/{secret}"
    assert f"subscription {subscription.subscription_id}" in out
    assert "/webhooks/strava/<secret>" in out
    deadline = time.monotonic() + 10
    while daemon_webhook.receiver.subscriptions.current() != subscription.subscription_id:
        assert time.monotonic() < deadline, "the daemon did not learn the stored id"
        time.sleep(0.1)

    code, status_out, _err = run_cli(capsys, "status")
    assert f"webhook: accepts subscription {subscription.subscription_id} (from store" in status_out
    code, list_out, list_err = run_cli(capsys, "webhook", "list")
    assert code == 0
    assert "(this configuration)" in list_out
    for text in (out, err, status_out, list_out, list_err):
        assert secret not in text
        assert secret[:12] not in text
        assert LONG_VERIFY not in text

    code, _out, err = run_cli(capsys, "webhook", "delete", str(subscription.subscription_id))
    assert code == 0, err
    _code, status_out, _err = run_cli(capsys, "status")
    assert "no webhook subscription id is known" in status_out


def test_webhook_subscribe_refuses_a_verify_token_too_short_to_derive_a_secret(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short STRAVA_VERIFY_TOKEN (without G2S_WEBHOOK_SECRET) would make a guessable
    path: exit 2, one line naming the setting, no request to Strava."""
    monkeypatch.setenv("STRAVA_VERIFY_TOKEN", "STRAVA")
    code, out, err = run_cli(capsys, "webhook", "subscribe", "--url", "https://example.org")
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert "STRAVA_VERIFY_TOKEN" in err
    assert pair.strava.webhooks.subscription is None
