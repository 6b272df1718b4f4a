"""`garmin2strava store init` against a local DynamoDB-compatible server."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest

from garmin2strava.adapters.crypto import generate_token_key
from garmin2strava.entrypoints.cli import main


def test_store_init_creates_the_table_once(
    aws_env: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """store init creates the table with both indexes and TTL, and a rerun is harmless."""
    monkeypatch.chdir(tmp_path)
    table = f"g2s-init-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("G2S_STORE", "dynamodb")
    monkeypatch.setenv("G2S_DYNAMODB_TABLE", table)
    monkeypatch.setenv("G2S_TOKEN_KEY", generate_token_key())
    assert main(["store", "init"]) == 0
    assert main(["store", "init"]) == 0
    assert capsys.readouterr().out.count(f"DynamoDB table {table} is ready") == 2
    client = boto3.client("dynamodb")
    described = client.describe_table(TableName=table)["Table"]
    assert {i["IndexName"] for i in described.get("LocalSecondaryIndexes", [])} == {"LSI1"}
    assert {i["IndexName"] for i in described.get("GlobalSecondaryIndexes", [])} == {"GSI1"}
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl.get("AttributeName") == "expiresAt"


def test_store_init_on_sqlite_needs_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the default SQLite store, store init says there is nothing to do."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("G2S_DB_PATH", str(tmp_path / "g2s.sqlite3"))
    monkeypatch.delenv("G2S_STORE", raising=False)
    assert main(["store", "init"]) == 0
    assert "nothing to initialise" in capsys.readouterr().out
