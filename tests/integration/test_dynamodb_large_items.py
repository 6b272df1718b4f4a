"""DynamoDB's 400 KB item limit on moto (which enforces it): what the store writes for
streams and large raw activities, item by item."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from g2s_sandbox.strava_records import SandboxActivity
from g2s_sandbox.strava_streams import activity_streams
from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.store.dynamodb import DynamoDBStore, create_table
from garmin2strava.domain.models import Workout
from garmin2strava.domain.streams import STREAM_TYPES, ActivityStreams

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.integration

T0 = datetime(2025, 5, 1, 7, 0, tzinfo=UTC)
LIMIT = 400 * 1024


@pytest.fixture
def client(aws_env: str) -> DynamoDBClient:
    return boto3.client("dynamodb")


@pytest.fixture
def table(client: DynamoDBClient) -> Iterator[str]:
    name = f"g2s-test-{uuid.uuid4().hex[:12]}"
    create_table(client, name)
    yield name
    client.delete_table(TableName=name)


def _items(client: DynamoDBClient, table: str) -> list[dict[str, Any]]:
    return list(client.scan(TableName=table)["Items"])


def _size(item: dict[str, Any]) -> int:
    """Attribute names plus values, about as DynamoDB counts them."""
    total = 0
    for name, value in item.items():
        total += len(name)
        ((kind, raw),) = value.items()
        total += len(raw) if kind == "B" else len(json.dumps(raw))
    return total


def _raw(size: int) -> dict[str, Any]:
    rng = random.Random(size)  # noqa: S311 - test data, not secrets
    efforts = [
        {"id": rng.getrandbits(60), "polyline": "".join(rng.choices("abcdefghij_~@?", k=500))}
        for _ in range(size // 540)
    ]
    return {"id": 7, "name": "Long Ride", "segment_efforts": efforts}


def _workout(raw: dict[str, Any], updated_at: datetime) -> Workout:
    return Workout(
        user_id="u1", activity_id=7, athlete_id=42, name="Long Ride", sport_type="Ride",
        start_utc=T0, elapsed_time=21600, moving_time=None, distance=None,
        total_elevation_gain=None, external_id=None, upload_id=None, is_private=False,
        is_deleted=False, updated_at=updated_at, raw=raw,
    )  # fmt: skip


def test_six_hour_ride_streams_take_two_items_each_under_the_limit(
    client: DynamoDBClient, table: str
) -> None:
    """A 6-hour ride's streams become 2 items, each under 400 KB, and read back equal."""
    store = DynamoDBStore(table, AesGcmCipher(bytes(range(32))), client=client)
    ride = SandboxActivity(9, 42, "Long Ride", "Ride", T0, 6 * 3600, 180_000.0)
    _, body = activity_streams(ride, ",".join(STREAM_TYPES), key_by_type=True)
    assert isinstance(body, dict)
    kept = ActivityStreams("u1", 9, fetched_at=T0, streams=body)
    store.put_streams(kept)
    items = _items(client, table)
    assert sorted(i["SK"]["S"] for i in items) == ["STREAMS#STRAVA#9#0000", "STREAMS#STRAVA#9#0001"]
    assert all(_size(i) < LIMIT for i in items)
    assert store.get_streams("u1", 9) == kept


def test_a_split_raw_activity_leaves_no_parts_behind_when_replaced(
    client: DynamoDBClient, table: str
) -> None:
    """A 2 MB raw activity is one row plus part items under the limit; a newer, smaller
    row deletes those parts; an older write that loses deletes the parts it wrote."""
    store = DynamoDBStore(table, AesGcmCipher(bytes(range(32))), client=client)
    big = _raw(2_000_000)
    assert store.upsert_workout(_workout(big, T0))
    items = _items(client, table)
    parts = [i for i in items if "#RAW#" in i["SK"]["S"]]
    assert len(parts) >= 2
    assert all(_size(i) < LIMIT for i in items)
    assert store.upsert_workout(_workout({"id": 7}, T0 + timedelta(hours=1)))
    assert [i["SK"]["S"] for i in _items(client, table)] == ["WORKOUT#STRAVA#7"]
    assert not store.upsert_workout(_workout(_raw(1_500_000), T0))
    assert [i["SK"]["S"] for i in _items(client, table)] == ["WORKOUT#STRAVA#7"]
