"""The operator's commands through the real CLI, on SQLite and on DynamoDB (moto),
against the Garmin/Strava sandboxes: `history`, `accounts ...`, `disconnect`."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from g2s_harness.cli import run_cli
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from garmin2strava.adapters.store.dynamodb import create_table
from garmin2strava.domain.upload_rules import is_our_external_id

pytestmark = pytest.mark.integration

USER = "me"
START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


@pytest.fixture(params=["sqlite", "dynamodb"])
def pair(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clean_cli_environment: None,
) -> Iterator[SandboxPair]:
    """Both sandboxes and single-user settings on the store named by the parameter."""
    table = None
    if request.param == "dynamodb":
        request.getfixturevalue("aws_env")
        table = f"g2s-console-{uuid.uuid4().hex[:10]}"
        create_table(boto3.client("dynamodb"), table)
        monkeypatch.setenv("G2S_STORE", "dynamodb")
        monkeypatch.setenv("G2S_DYNAMODB_TABLE", table)
    with running_sandboxes() as sandboxes:
        settings = sandboxes.environment(
            user_id=USER, db_path=tmp_path / "g2s.sqlite3", G2S_UPLOAD_POLL_DELAY_SECONDS="0"
        )
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        yield sandboxes
    if table is not None:
        boto3.client("dynamodb").delete_table(TableName=table)


def _strava_id_of(pair: SandboxPair, garmin_id: int) -> int:
    with pair.strava.lock:
        (found,) = [
            a.activity_id
            for a in pair.strava.activities.values()
            if is_our_external_id(a.external_id, garmin_id)
        ]
    return found


def test_history_shows_the_uploading_cycle_with_the_strava_id_and_idle_since(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str]
) -> None:
    """One uploading cycle then two idle ones: `history --json` lists the one cycle that
    did something (idle cycles write no event), naming the uploaded run's Strava id;
    the text says so, under "idle since" that cycle."""
    seed_run(pair, 4_000_001, start_utc=START, name="Easy 5k")
    for _ in range(3):
        assert run_cli(capsys, "sync")[0] == 0
    strava_id = _strava_id_of(pair, 4_000_001)

    code, out, _ = run_cli(capsys, "history", "--json", "--user", USER)
    assert code == 0
    events = json.loads(out)[USER]
    cycles = [e for e in events if e["kind"] == "sync.cycle"]
    (uploading,) = cycles
    assert uploading["outcomes"] == {"uploaded": 1}
    (item,) = uploading["items"]
    assert (item["garminActivityId"], item["outcome"], item["stravaActivityId"]) == (
        4_000_001,
        "uploaded",
        strava_id,
    )
    assert item["name"] == "Easy 5k"
    assert uploading["ok"]
    assert uploading["durationMs"] >= 0
    # The first cycle refreshed the bare refresh token: the history says so.
    assert any(e["kind"] == "strava.token_refreshed" for e in events)

    code, out, _ = run_cli(capsys, "history")
    assert code == 0
    lines = out.splitlines()
    cycle_lines = [line for line in lines if " cycle " in line]
    (cycle_line,) = cycle_lines
    assert "uploaded 1" in cycle_line
    newest_at = datetime.fromisoformat(events[0]["at"])
    assert lines[1] == f"  idle since {newest_at:%Y-%m-%d %H:%M:%S}"
    assert f"-> Strava {strava_id}" in out

    # --since after every event: nothing in that period.
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    code, out, _ = run_cli(capsys, "history", "--since", tomorrow, "--json")
    assert json.loads(out) == {USER: []}


def test_accounts_pause_resume_and_sync_now(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str]
) -> None:
    """A paused account is listed as paused with why and gets no cycle (no Garmin
    request); `accounts sync` refuses it; resumed, `accounts sync` uploads now."""
    assert run_cli(capsys, "accounts", "list")[0] == 0  # creates the settings account
    code, out, _ = run_cli(capsys, "accounts", "pause", USER)
    assert code == 0
    code, out, _ = run_cli(capsys, "accounts", "list", "--json")
    (row,) = json.loads(out)
    assert row["state"] == "paused"
    assert row["why"].startswith("paused by the operator since ")
    seed_run(pair, 4_000_002, start_utc=START, name="Tempo")
    before = pair.garmin_count()
    assert run_cli(capsys, "sync")[0] == 0
    assert pair.garmin_count() == before
    code, _out, err = run_cli(capsys, "accounts", "sync", USER)
    assert code == 1
    assert "paused" in err

    assert run_cli(capsys, "accounts", "resume", USER)[0] == 0
    code, out, _ = run_cli(capsys, "accounts", "sync", USER)
    assert code == 0
    assert "uploaded" in out
    assert pair.strava_counts()["uploads"] == 1
    code, out, _ = run_cli(capsys, "history", "--json")
    kinds = [e["kind"] for e in json.loads(out)[USER]]
    assert kinds.index("account.resumed") < kinds.index("account.paused")  # newest first


def test_accounts_remove_asks_then_keeps_only_the_ledger(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Without --yes (and no terminal to ask) nothing is removed; with it, what is left
    of the account is its upload ledger and the ledger's idle mark (and the tokens'
    tombstones, which keep no secret): no account, token, mirrored activity or audit
    event."""
    seed_run(pair, 4_000_003, start_utc=START, name="Long run")
    assert run_cli(capsys, "sync")[0] == 0
    assert run_cli(capsys, "mirror", "backfill")[0] == 0
    before = {sk.split("#")[0] for sk, _body in _items_of(pair, tmp_path)}
    assert {"ACCOUNT", "TOKEN", "UPLOAD", "WORKOUT", "AUDIT"} <= before
    code, _out, err = run_cli(capsys, "accounts", "remove", USER)
    assert code == 1
    assert "--yes" in err
    assert run_cli(capsys, "accounts", "list", "--json")[1].count(USER) == 1

    code, out, _ = run_cli(capsys, "accounts", "remove", USER, "--yes")
    assert code == 0, out
    assert "removed" in out
    left = _items_of(pair, tmp_path)
    kinds = {sk.split("#")[0] for sk, _body in left}
    assert kinds == {"UPLOAD", "LEDGER", "TOKEN"}
    assert [sk for sk, _body in left if sk.startswith("LEDGER")] == ["LEDGER#MARK"]
    assert all("ciphertext" not in body for sk, body in left if sk.startswith("TOKEN#"))
    code, out, _ = run_cli(capsys, "accounts", "list", "--json")
    # The settings would create the account again: without them it stays gone.
    assert [r["userId"] for r in json.loads(out)] == [USER]
    os.environ.pop("STRAVA_REFRESH_TOKEN")
    os.environ.pop("GARMIN_TOKENS")
    assert run_cli(capsys, "accounts", "remove", USER, "--yes")[0] == 0
    assert json.loads(run_cli(capsys, "accounts", "list", "--json")[1]) == []


def test_disconnect_revokes_on_strava_and_forgets_tokens(
    pair: SandboxPair, capsys: pytest.CaptureFixture[str]
) -> None:
    """`disconnect --yes` calls Strava's revoke (the sandbox revokes the athlete's
    tokens), deletes our tokens; the account stays, disconnected, and no cycle runs."""
    seed_run(pair, 4_000_004, start_utc=START)
    assert run_cli(capsys, "sync")[0] == 0
    code, out, err = run_cli(capsys, "disconnect", "--yes")
    assert code == 0, err
    assert "(revoked;" in out
    assert pair.strava.requests["revoke"] == 1
    assert pair.strava.requests["deauthorize"] == 0
    assert pair.strava.refresh_token_of(pair.athlete_id) is None
    code, out, _ = run_cli(capsys, "accounts", "list", "--json")
    (row,) = json.loads(out)
    assert row["state"] == "disconnected"
    before = pair.garmin_count()
    run_cli(capsys, "sync")
    assert pair.garmin_count() == before
    code, out, _ = run_cli(capsys, "history", "--json")
    assert any(e["kind"] == "strava.deauthorized" for e in json.loads(out)[USER])


def _items_of(pair: SandboxPair, tmp_path: Path) -> list[tuple[str, dict[str, object]]]:
    """Every item under the account's partition key, read straight from the store."""
    del pair
    if os.environ.get("G2S_STORE") == "dynamodb":
        client = boto3.client("dynamodb")
        answer = client.query(
            TableName=os.environ["G2S_DYNAMODB_TABLE"],
            KeyConditionExpression="PK = :pk",
            ExpressionAttributeValues={":pk": {"S": f"USER#{USER}"}},
        )
        return [(i["SK"]["S"], dict(i)) for i in answer["Items"]]
    with sqlite3.connect(tmp_path / "g2s.sqlite3") as conn:
        rows = conn.execute("SELECT sk, body FROM items WHERE pk = ?", (f"USER#{USER}",))
        return [(sk, json.loads(body)) for sk, body in rows]
