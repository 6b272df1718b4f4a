from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from garmin2strava.domain.models import Workout
from garmin2strava.domain.webhook import (
    MAX_FUTURE_SECONDS,
    BadEvent,
    ForeignSubscription,
    WebhookEvent,
    callback_path,
    check_handshake,
    derive_path_secret,
    is_valid_path_secret,
    parse_event,
    path_secret_matches,
    redact_callback_url,
)
from garmin2strava.domain.workouts import (
    apply_update,
    normalize_activity,
    soft_delete,
)
from garmin2strava.errors import InvalidActivity

SUB = 120475
STRAVA_EXAMPLE = {
    "aspect_type": "update",
    "event_time": 1516126040,
    "object_id": 1360128428,
    "object_type": "activity",
    "owner_id": 134815,
    "subscription_id": SUB,
    "updates": {"title": "Messy"},
}


def body(**changes: Any) -> bytes:
    data = dict(STRAVA_EXAMPLE) | changes
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


def test_parses_strava_documented_example() -> None:
    """The example event from Strava's docs becomes a WebhookEvent field for field."""
    event = parse_event(body(), subscription_id=SUB)
    assert event == WebhookEvent(
        "activity", 1360128428, "update", 134815, SUB, 1516126040, {"title": "Messy"}
    )
    assert event.happened_at == datetime(2018, 1, 16, 18, 7, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "body is not JSON"),
        (b"\xff\xfe", "body is not JSON"),
        (b"[1, 2]", "body is not a JSON object"),
        (body(object_type="segment"), "unknown object_type"),
        (body(aspect_type="upsert"), "unknown aspect_type"),
        (body(object_type=7), "object_type must be a string"),
        (body(object_id="1360128428"), "object_id must be an integer"),
        (body(object_id=True), "object_id must be an integer"),
        (body(object_id=-5), "object_id out of range"),
        (body(owner_id=...), "owner_id must be an integer"),
        (body(event_time=1.5), "event_time must be an integer"),
        (body(updates=["title"]), "updates must be an object"),
        (body(updates={"title": {"nested": 1}}), "updates values must be scalars"),
        (body(updates={"title": "x" * 600}), "updates value too long"),
    ],
)
def test_rejects_malformed_events_with_short_reason(raw: bytes, reason: str) -> None:
    """Wrong JSON, types and kinds raise BadEvent with a reason safe to echo."""
    with pytest.raises(BadEvent) as caught:
        parse_event(raw, subscription_id=SUB)
    assert caught.value.reason == reason


def test_event_times_must_be_plausible() -> None:
    """With `now`: over MAX_FUTURE_SECONDS ahead is refused, up to it is fine; 2**62 (past
    year 9999) is out of range with or without `now`, so nothing downstream overflows."""
    now = datetime.fromtimestamp(1516126040, UTC)
    ahead = 1516126040 + MAX_FUTURE_SECONDS
    assert parse_event(body(event_time=ahead), now=now).event_time == ahead
    with pytest.raises(BadEvent) as caught:
        parse_event(body(event_time=ahead + 1), now=now)
    assert caught.value.reason == "event_time is in the future"
    with pytest.raises(BadEvent) as caught:
        parse_event(body(event_time=4_102_444_800), now=now)  # 2100-01-01
    assert caught.value.reason == "event_time is in the future"
    for absurd in (2**62, 253_402_300_800):
        with pytest.raises(BadEvent) as caught:
            parse_event(body(event_time=absurd))
        assert caught.value.reason == "event_time out of range"
    assert parse_event(body(event_time=253_402_300_799)).happened_at.year == 9999


def test_legacy_string_subscription_id_parses_and_other_strings_do_not() -> None:
    """Strava's 2017 events sent subscription_id as a digit string; nothing else is read
    from a string."""
    assert parse_event(body(subscription_id="1")).subscription_id == 1
    for bad in ("x1", "", "-1", "\uff11", "9" * 30):  # U+FF11 is a fullwidth "1"
        with pytest.raises(BadEvent):
            parse_event(body(subscription_id=bad))


def test_deeply_nested_json_is_a_bad_event() -> None:
    """JSON nested 2,000 deep is refused as not JSON (no RecursionError escapes)."""
    with pytest.raises(BadEvent):
        parse_event(b"[" * 2000 + b"]" * 2000)
    with pytest.raises(BadEvent):
        parse_event(b'{"updates":' * 100_000 + b"1" + b"}" * 100_000)


def test_path_secret_is_derived_stable_url_safe_and_compared_exactly() -> None:
    """The derived secret is 32 URL-safe characters, the same for the same token, other
    for another; it contains nothing of the token; only the exact secret matches."""
    token = "a-long-random-verify-token-0123456789"
    secret = derive_path_secret(token)
    assert secret == derive_path_secret(token)
    assert secret != derive_path_secret(token + "x")
    assert len(secret) == 32
    assert is_valid_path_secret(secret)
    assert token[:8] not in secret
    assert path_secret_matches(secret, secret)
    for wrong in ("", secret[:-1], secret + "x", secret.upper(), "\udcff"):
        assert not path_secret_matches(wrong, secret)
    assert not path_secret_matches("", None)
    assert not is_valid_path_secret("short")
    assert not is_valid_path_secret("x" * 24 + "/")
    url = "https://host.example/g2s" + callback_path(secret)
    assert redact_callback_url(url) == "https://host.example/g2s/webhooks/strava/<secret>"
    assert secret not in redact_callback_url(url)


@pytest.mark.realdata
def test_every_real_webhook_body_parses(realdata: Path) -> None:
    """Every recorded Strava event (2017 string id, 2019-2026 captures, the docs' example,
    the 2025 `visibility` key, deauthorizations) parses at its own time."""
    files = sorted((realdata / "webhook").glob("*.json"))
    events = {}
    for path in files:
        data = json.loads(path.read_text())
        if "hub.mode" in data:  # the handshake's query, not an event
            assert check_handshake(data, data["hub.verify_token"]) == data["hub.challenge"]
            continue
        raw = path.read_bytes()
        at = datetime.fromtimestamp(int(data["event_time"]), UTC)
        events[path.name] = parse_event(raw, now=at, subscription_id=int(data["subscription_id"]))
    assert len(events) == len(files) - 1
    assert events["legacy_2017_string_subscription_id.json"].subscription_id == 1
    assert events["captured_update_private_visibility_2025.json"].updates == {
        "private": "true",
        "visibility": "only_me",
    }
    deauths = [name for name, e in events.items() if e.is_deauthorization]
    assert deauths == ["captured_deauthorize_2022.json", "captured_deauthorize_2026.json"]
    assert all(e.happened_at.year >= 2011 for e in events.values())


def test_foreign_subscription_is_refused() -> None:
    """An event for another subscription id raises ForeignSubscription."""
    with pytest.raises(ForeignSubscription) as caught:
        parse_event(body(subscription_id=999), subscription_id=SUB)
    assert caught.value.subscription_id == 999


def test_any_subscription_accepted_until_ours_is_known() -> None:
    """With no subscription id configured, any subscription's event parses."""
    assert parse_event(body(subscription_id=999), subscription_id=None).subscription_id == 999


def test_dedupe_key_same_for_redelivery_different_for_other_events() -> None:
    """A redelivered event keeps its key; a change in any identifying field changes it."""
    key = parse_event(body(), subscription_id=SUB).dedupe_key
    assert parse_event(body(), subscription_id=SUB).dedupe_key == key
    others = [
        body(object_id=1),
        body(aspect_type="create"),
        body(event_time=1516126041),
        body(owner_id=1),
        body(updates={"title": "Tidy"}),
        body(object_type="athlete"),
    ]
    keys = {parse_event(raw, subscription_id=SUB).dedupe_key for raw in others}
    assert key not in keys
    assert len(keys) == len(others)


def test_event_json_round_trip() -> None:
    """to_json/from_json give back an equal event, updates included."""
    event = parse_event(body(updates={"private": True}), subscription_id=SUB)
    assert event.updates == {"private": "true"}
    again = WebhookEvent.from_json(event.to_json())
    assert again == event
    assert again.updates == event.updates


def test_deauthorization_recognised() -> None:
    """athlete/update with authorized "false" is a deauthorization; a title update is not."""
    deauth = body(object_type="athlete", object_id=134815, updates={"authorized": "false"})
    assert parse_event(deauth, subscription_id=SUB).is_deauthorization
    assert not parse_event(body(), subscription_id=SUB).is_deauthorization


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"hub.mode": "subscribe", "hub.challenge": "15f7d1a9", "hub.verify_token": "STRAVA"},
            "15f7d1a9",
        ),
        (
            {"hub.mode": "subscribe", "hub.challenge": "15f7d1a9", "hub.verify_token": "strava"},
            None,
        ),
        ({"hub.mode": "unsubscribe", "hub.challenge": "c", "hub.verify_token": "STRAVA"}, None),
        ({"hub.challenge": "c", "hub.verify_token": "STRAVA"}, None),
        ({"hub.mode": "subscribe", "hub.verify_token": "STRAVA"}, None),
        ({"hub.mode": "subscribe", "hub.challenge": "c"}, None),
    ],
)
def test_handshake_needs_subscribe_mode_and_our_token(
    params: dict[str, str], expected: str | None
) -> None:
    """Only hub.mode=subscribe with the exact verify token yields the challenge."""
    assert check_handshake(params, "STRAVA") == expected


def test_handshake_refused_without_configured_token() -> None:
    """No verify token configured: no handshake succeeds, even with an empty token."""
    params = {"hub.mode": "subscribe", "hub.challenge": "c", "hub.verify_token": ""}
    assert check_handshake(params, None) is None
    assert check_handshake(params, "") is None


DETAILED = {
    "id": 1360128428,
    "athlete": {"id": 134815, "resource_state": 1},
    "name": "Morning Run",
    "type": "Run",
    "sport_type": "TrailRun",
    "start_date": "2018-02-16T14:52:54Z",
    "elapsed_time": 4500,
    "moving_time": 4410,
    "distance": 12345.6,
    "total_elevation_gain": 230,
    "external_id": "g2s-garmin-123.fit",
    "upload_id": 987654321,
    "private": False,
}
T0 = datetime(2018, 2, 16, 16, 0, tzinfo=UTC)


def test_normalize_detailed_activity() -> None:
    """A DetailedActivity becomes a Workout with the mirror's fields and the raw JSON."""
    workout = normalize_activity(DETAILED, user_id="u1", updated_at=T0)
    assert workout == Workout(
        user_id="u1",
        activity_id=1360128428,
        athlete_id=134815,
        name="Morning Run",
        sport_type="TrailRun",
        start_utc=datetime(2018, 2, 16, 14, 52, 54, tzinfo=UTC),
        elapsed_time=4500,
        moving_time=4410,
        distance=12345.6,
        total_elevation_gain=230.0,
        external_id="g2s-garmin-123.fit",
        upload_id=987654321,
        is_private=False,
        is_deleted=False,
        updated_at=T0,
        raw=DETAILED,
    )


def test_normalize_falls_back_to_legacy_type_and_nulls() -> None:
    """Without sport_type the legacy type is used; absent optional fields stay None."""
    raw = {k: v for k, v in DETAILED.items() if k not in {"sport_type", "moving_time", "distance"}}
    workout = normalize_activity(raw | {"private": True}, user_id="u1", updated_at=T0)
    assert workout.sport_type == "Run"
    assert workout.moving_time is None
    assert workout.distance is None
    assert workout.is_private is True


@pytest.mark.parametrize(
    "broken",
    [
        {"id": "1360128428"},
        {"athlete": None},
        {"start_date": "yesterday"},
        {"start_date": "2018-02-16T14:52:54"},
        {"elapsed_time": None},
        {"distance": "far"},
    ],
)
def test_normalize_rejects_broken_activity(broken: dict[str, Any]) -> None:
    """A missing or mistyped field raises InvalidActivity instead of storing garbage."""
    with pytest.raises(InvalidActivity):
        normalize_activity(DETAILED | broken, user_id="u1", updated_at=T0)


def test_apply_update_sets_title_type_privacy_and_time() -> None:
    """An update event's title/type/private land in the row and its raw JSON."""
    workout = normalize_activity(DETAILED, user_id="u1", updated_at=T0)
    later = datetime(2018, 2, 17, tzinfo=UTC)
    updated = apply_update(
        workout, {"title": "Messy", "type": "Walk", "private": "true", "other": "x"}, later
    )
    assert (updated.name, updated.sport_type, updated.is_private) == ("Messy", "Walk", True)
    assert updated.updated_at == later
    assert updated.raw is not None
    assert updated.raw["name"] == "Messy"
    assert workout.name == "Morning Run"  # the original value object is untouched


def test_soft_delete_keeps_row_and_never_moves_time_back() -> None:
    """soft_delete marks the row deleted and keeps the newest updated_at."""
    workout = normalize_activity(DETAILED, user_id="u1", updated_at=T0)
    deleted = soft_delete(workout, datetime(2000, 1, 1, tzinfo=UTC))
    assert deleted.is_deleted
    assert deleted.updated_at == T0
    assert deleted.name == workout.name
