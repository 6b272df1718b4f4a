"""DynamoDB-specific checks (the shared behaviour is in test_store_contract.py).

Everything runs against the session's local moto server (conftest `aws_env`).
"""

from __future__ import annotations

import inspect
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.store import dynamodb_workouts
from garmin2strava.adapters.store.dynamodb import DynamoDBStore, create_table
from garmin2strava.domain.models import (
    Account,
    AuditEvent,
    LedgerEntry,
    StravaTokens,
    UploadOutcome,
    Workout,
)
from garmin2strava.errors import StoreConflict, TransientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.integration

T0 = datetime(2025, 5, 1, 7, 0, tzinfo=UTC)
KEY = bytes(range(32))


@pytest.fixture
def client(aws_env: str) -> DynamoDBClient:
    return boto3.client("dynamodb")


@pytest.fixture
def table(client: DynamoDBClient) -> Iterator[str]:
    name = f"g2s-test-{uuid.uuid4().hex[:12]}"
    create_table(client, name)
    yield name
    client.delete_table(TableName=name)


@pytest.fixture
def store(client: DynamoDBClient, table: str) -> DynamoDBStore:
    return DynamoDBStore(table, AesGcmCipher(KEY), client=client)


def _raw(client: DynamoDBClient, table: str, pk: str, sk: str) -> dict[str, Any]:
    item = client.get_item(TableName=table, Key={"PK": {"S": pk}, "SK": {"S": sk}})["Item"]
    return dict(item)


def _entry(garmin_id: int, outcome: UploadOutcome = UploadOutcome.UPLOADED) -> LedgerEntry:
    return LedgerEntry(
        user_id="u1",
        garmin_activity_id=garmin_id,
        external_id=f"garmin2strava-{garmin_id}",
        outcome=outcome,
        updated_at=T0,
        start_utc=T0 - timedelta(minutes=garmin_id),
    )


def _workout(activity_id: int, *, start: datetime = T0, deleted: bool = False) -> Workout:
    return Workout(
        user_id="u1",
        activity_id=activity_id,
        athlete_id=42,
        name="Morning Run",
        sport_type="Run",
        start_utc=start,
        elapsed_time=1800,
        moving_time=1750,
        distance=5012.5,
        total_elevation_gain=12.0,
        external_id=None,
        upload_id=None,
        is_private=False,
        is_deleted=deleted,
        updated_at=T0,
        raw={"id": activity_id, "average_speed": 2.78, "laps": [{"n": 1}]},
    )


def _exercise_every_method(store: DynamoDBStore) -> None:
    store.put_account(Account(user_id="u1", strava_athlete_id=42))
    store.get_account("u1")
    store.list_accounts()
    store.read_view(["budget"])
    store.link_athlete(42, "u1")
    store.user_for_athlete(42)
    tokens = StravaTokens(access_token="a", refresh_token="r", expires_at=1)
    stored = store.replace_strava_tokens("u1", tokens, expected_version=None)
    assert stored is not None
    store.replace_strava_tokens("u1", tokens, expected_version=stored.version)
    store.get_strava_tokens("u1")
    store.delete_strava_tokens("u1")
    store.replace_garmin_tokens("u1", "{}", expected_version=None)
    store.get_garmin_tokens("u1")
    store.put_upload(_entry(1, UploadOutcome.PENDING))
    store.put_upload(_entry(2))
    store.get_uploads("u1", [1, 2, 3])
    mark = store.ledger_mark("u1")
    assert mark is not None
    store.mark_idle("u1", mark)
    store.list_uploads("u1")
    store.list_unsettled_uploads("u1")
    store.acquire_lease("u1", "me", now=T0, ttl_seconds=60)
    store.release_lease("u1", "me")
    store.add_audit(AuditEvent(user_id="u1", at=datetime.now(UTC), kind="k", event_id="e"))
    store.list_audit("u1")
    store.upsert_workout(_workout(1))
    store.get_workout("u1", 1)
    store.list_workouts("u1")
    store.list_workouts("u1", include_deleted=True)
    store.workouts_starting_between("u1", T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    store.put_app_state("budget", {"used": 3, "ratio": 0.5})
    store.get_app_state("budget")


def test_no_operation_scans(client: DynamoDBClient, table: str) -> None:
    """Every Store method runs without a single Scan request."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def refuse_scan(**kwargs: Any) -> None:
        pytest.fail("the DynamoDB store sent a Scan")

    def record(event_name: str, params: dict[str, Any], **kwargs: Any) -> None:
        calls.append((event_name.rsplit(".", 1)[-1], dict(params)))

    client.meta.events.register("before-call.dynamodb.Scan", refuse_scan)
    client.meta.events.register("before-parameter-build.dynamodb", record)
    _exercise_every_method(DynamoDBStore(table, AesGcmCipher(KEY), client=client))

    operations = {name for name, _ in calls}
    assert "Scan" not in operations
    assert {"Query", "BatchGetItem", "GetItem"} <= operations
    projected = [p for name, p in calls if name == "GetItem" and "ProjectionExpression" in p]
    assert projected  # tokens, athlete mapping and app state read only what they need


def test_source_has_no_scan() -> None:
    """No module of the DynamoDB store calls scan (a grep, so no future code path adds
    one): the store and every mixin and helper it is made of."""
    modules = sorted(Path(inspect.getfile(dynamodb_workouts)).parent.glob("dynamodb*.py"))
    assert len(modules) >= 8
    for module in modules:
        source = module.read_text().lower()
        assert "scan(" not in source, module.name
        assert '"scan"' not in source, module.name


def test_tokens_are_encrypted_in_the_raw_item(
    store: DynamoDBStore, client: DynamoDBClient, table: str
) -> None:
    """The item holds ciphertext and a version, never a token in the clear."""
    tokens = StravaTokens(access_token="ACCESS-xyz", refresh_token="REFRESH-xyz", expires_at=1)
    store.replace_strava_tokens("u1", tokens, expected_version=None)
    store.replace_garmin_tokens("u1", '{"oauth2": "GARMIN-xyz"}', expected_version=None)

    for sk in ("TOKEN#STRAVA", "TOKEN#GARMIN"):
        item = _raw(client, table, "USER#u1", sk)
        assert set(item) == {"PK", "SK", "ciphertext", "version"}
        sealed = item["ciphertext"]["B"]
        for secret in (b"ACCESS-xyz", b"REFRESH-xyz", b"GARMIN-xyz"):
            assert secret not in sealed
        assert item["version"] == {"N": "1"}


def test_ciphertext_moved_to_another_user_does_not_decrypt(
    store: DynamoDBStore, client: DynamoDBClient, table: str
) -> None:
    """The item's key is bound to its ciphertext: copying it to another user fails."""
    store.replace_garmin_tokens("u1", "blob", expected_version=None)
    item = _raw(client, table, "USER#u1", "TOKEN#GARMIN")
    item["PK"] = {"S": "USER#u2"}
    client.put_item(TableName=table, Item=item)
    with pytest.raises(Exception, match="does not decrypt"):
        store.get_garmin_tokens("u2")


def test_audit_items_carry_a_numeric_ttl(
    store: DynamoDBStore, client: DynamoDBClient, table: str
) -> None:
    """An audit item has `expiresAt` in epoch seconds, its time plus the retention."""
    at = datetime.now(UTC).replace(microsecond=0)
    store.add_audit(
        AuditEvent(user_id="u1", at=at, kind="sync.cycle", event_id="e1"), retention_days=3
    )
    (item,) = client.query(
        TableName=table,
        KeyConditionExpression="PK = :pk AND begins_with(SK, :a)",
        ExpressionAttributeValues={":pk": {"S": "USER#u1"}, ":a": {"S": "AUDIT#"}},
    )["Items"]
    assert item["expiresAt"] == {"N": str(math.floor((at + timedelta(days=3)).timestamp()))}


def test_expired_audit_items_are_not_returned(store: DynamoDBStore) -> None:
    """An expired event that TTL has not deleted yet is filtered out of reads."""
    now = datetime.now(UTC)
    old = AuditEvent(user_id="u1", at=now - timedelta(days=8), kind="old", event_id="e1")
    new = AuditEvent(user_id="u1", at=now, kind="new", event_id="e2")
    store.add_audit(old, retention_days=7)
    store.add_audit(new, retention_days=7)
    assert [e.kind for e in store.list_audit("u1")] == ["new"]


def test_create_table_sets_ttl_billing_and_indexes(client: DynamoDBClient, table: str) -> None:
    """The table is on-demand, with TTL on expiresAt, LSI1 and GSI1; init is idempotent."""
    create_table(client, table)  # a second init leaves it as it is
    described = client.describe_table(TableName=table)["Table"]
    assert described.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST"
    assert [i["IndexName"] for i in described.get("LocalSecondaryIndexes", [])] == ["LSI1"]
    assert [i["IndexName"] for i in described.get("GlobalSecondaryIndexes", [])] == ["GSI1"]
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl.get("AttributeName") == "expiresAt"
    assert ttl.get("TimeToLiveStatus") in {"ENABLED", "ENABLING"}


def test_lease_item_expires_by_itself(
    store: DynamoDBStore, client: DynamoDBClient, table: str
) -> None:
    """The lease carries the TTL attribute too, so a dead runner's lease is cleaned up."""
    assert store.acquire_lease("u1", "runner-a", now=T0, ttl_seconds=60)
    item = _raw(client, table, "USER#u1", "LEASE#SYNC")
    assert item["expiresAt"] == {"N": str(int((T0 + timedelta(seconds=60)).timestamp()))}
    assert item["owner"] == {"S": "runner-a"}


def test_intent_never_overwrites_a_settled_entry(store: DynamoDBStore) -> None:
    """A pending intent over a settled ledger entry is refused (it would upload twice)."""
    store.put_upload(_entry(1, UploadOutcome.FAILED))
    store.put_upload(_entry(1, UploadOutcome.PENDING))  # a retry of a failure is fine
    store.put_upload(_entry(1, UploadOutcome.UPLOADED))
    with pytest.raises(StoreConflict):
        store.put_upload(_entry(1, UploadOutcome.PENDING))
    assert store.get_uploads("u1", [1])[1].outcome is UploadOutcome.UPLOADED


def test_batch_get_reads_more_than_one_request_holds(store: DynamoDBStore) -> None:
    """get_uploads for 150 ids spans two BatchGetItem requests and finds them all."""
    for garmin_id in range(150):
        store.put_upload(_entry(garmin_id))
    found = store.get_uploads("u1", [*range(150), 10_000])
    assert sorted(found) == list(range(150))


class _UnprocessingClient:
    """The real client, except that BatchGetItem first leaves all but one key unprocessed."""

    def __init__(self, real: DynamoDBClient) -> None:
        self._real = real
        self.batch_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 - boto3's name
        self.batch_calls += 1
        ((table, request),) = RequestItems.items()
        request = dict(request)
        first, *rest = request["Keys"]
        first_only: Any = {table: {**request, "Keys": [first]}}
        answer = dict(self._real.batch_get_item(RequestItems=first_only))
        answer["UnprocessedKeys"] = {table: {**request, "Keys": rest}} if rest else {}
        return answer


def test_unprocessed_keys_are_retried(client: DynamoDBClient, table: str) -> None:
    """Keys BatchGetItem leaves unprocessed are asked for again until all are read."""
    flaky = _UnprocessingClient(client)
    store = DynamoDBStore(table, AesGcmCipher(KEY), client=flaky)  # type: ignore[arg-type]  # a wrapper, duck-typed
    for garmin_id in range(3):
        store.put_upload(_entry(garmin_id))
    assert sorted(store.get_uploads("u1", [0, 1, 2])) == [0, 1, 2]
    assert flaky.batch_calls == 3


def test_throttling_becomes_transient(client: DynamoDBClient, table: str) -> None:
    """A throttled request raises TransientError, naming the operation, not the data."""

    def throttle(**kwargs: Any) -> Any:  # a (response, parsed) pair short-circuits the call
        error = {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}
        return SimpleNamespace(status_code=400), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }

    client.meta.events.register("before-call.dynamodb.GetItem", throttle)
    store = DynamoDBStore(table, AesGcmCipher(KEY), client=client)
    with pytest.raises(TransientError, match=r"get_item.*ProvisionedThroughputExceeded"):
        store.get_account("u1")


def test_workout_reads_are_capped(store: DynamoDBStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """No workout read returns more than MAX_WORKOUTS items (3,000; lowered here)."""
    monkeypatch.setattr(dynamodb_workouts, "MAX_WORKOUTS", 4)
    for activity_id in range(6):
        store.upsert_workout(_workout(activity_id, start=T0 + timedelta(minutes=activity_id)))
    assert len(store.list_workouts("u1", limit=100)) == 4
    window = store.workouts_starting_between("u1", T0, T0 + timedelta(hours=1))
    assert [w.activity_id for w in window] == [0, 1, 2, 3]


def test_deleted_workouts_count_towards_the_read_cap(
    store: DynamoDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap bounds items read, not items returned: filtered-out rows count too."""
    monkeypatch.setattr(dynamodb_workouts, "MAX_WORKOUTS", 4)
    for activity_id in range(6):
        start = T0 + timedelta(minutes=activity_id)
        store.upsert_workout(_workout(activity_id, start=start, deleted=activity_id < 2))
    window = store.workouts_starting_between("u1", T0, T0 + timedelta(hours=1))
    assert [w.activity_id for w in window] == [2, 3]


def test_free_form_values_round_trip(store: DynamoDBStore) -> None:
    """Floats, nested lists and maps in raw JSON and app state come back equal."""
    store.upsert_workout(_workout(7))
    got = store.get_workout("u1", 7)
    assert got is not None
    assert got.raw == {"id": 7, "average_speed": 2.78, "laps": [{"n": 1}]}
    assert got.distance == 5012.5
    state = {"windows": {"short": [1, 2.5]}, "blocked_until": None, "ok": True}
    store.put_app_state("budget", state)
    assert store.get_app_state("budget") == state


def test_default_client_follows_the_environment(table: str) -> None:
    """Without a client, the store builds one from AWS_ENDPOINT_URL_DYNAMODB and friends."""
    store = DynamoDBStore(table, AesGcmCipher(KEY))
    store.link_athlete(42, "u1")
    assert store.user_for_athlete(42) == "u1"


def test_read_view_reads_known_accounts_in_one_request_and_follows_the_index(
    aws_env: str,
) -> None:
    """read_view: the first read builds the accounts index from the registry (a store
    from before it); then the known accounts, their tokens and ledger marks and the
    app-state items are one BatchGetItem; an added account is read by one more, a
    removed one is gone; the view's tokens answer the next token read, once."""

    client = boto3.client("dynamodb")
    table = f"g2s-view-{uuid.uuid4().hex[:8]}"
    create_table(client, table)
    asked: list[str] = []
    client.meta.events.register("before-call.dynamodb", lambda model, **_: asked.append(model.name))
    store = DynamoDBStore(table, AesGcmCipher(KEY), client=client)
    store.put_account(Account(user_id="a"))
    store.replace_garmin_tokens("a", "tokens-a", expected_version=None)
    store.put_app_state("strava_outage", {"failing": True})
    asked.clear()
    first = store.read_view(["strava_outage", "notify.conditions"])
    assert [a.user_id for a in first.accounts] == ["a"]
    assert first.app_state == {"strava_outage": {"failing": True}, "notify.conditions": None}
    asked.clear()
    warm = store.read_view(["strava_outage"])
    assert [a.user_id for a in warm.accounts] == ["a"]
    assert asked == ["BatchGetItem"]
    tokens = store.get_garmin_tokens("a")
    assert tokens is not None
    assert tokens.blob == "tokens-a"
    assert asked == ["BatchGetItem"]  # answered by the view
    store.get_garmin_tokens("a")
    assert asked == ["BatchGetItem", "GetItem"]  # once only
    store.put_account(Account(user_id="b"))
    asked.clear()
    assert [a.user_id for a in store.read_view([]).accounts] == ["a", "b"]
    assert asked == ["BatchGetItem", "BatchGetItem"]  # b read by one more
    store.delete_account("a")
    assert [a.user_id for a in store.read_view([]).accounts] == ["b"]
    client.delete_table(TableName=table)
