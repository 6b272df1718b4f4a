"""Real Strava answers, replayed on loopback, read through stravalib and our adapter.

The bodies are the recorded ones in ../shared/realdata/strava (SOURCES.md names each),
served unchanged by a replay server that knows nothing of our code: the list query,
detailed activities of 2013, 2018, 2022 and 2025 shapes, and every upload answer
(processing, ready, duplicate plain and HTML, a 2018 one without `id_str`). The
expectations below were read off the files by hand.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from garmin2strava.adapters.crypto import AesGcmCipher
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.bootstrap import build_strava
from garmin2strava.domain.models import StravaTokens
from garmin2strava.domain.upload_rules import (
    UploadState,
    find_match,
    parse_activity,
    read_upload_status,
)
from garmin2strava.domain.workouts import normalize_activity
from garmin2strava.services.strava_access import StravaAccess

pytestmark = [pytest.mark.integration, pytest.mark.realdata]

USER = "u1"
ATHLETE = 26462176


@dataclass
class Replay:
    """Recorded bodies by request path; what was asked, in order."""

    bodies: dict[str, bytes]
    asked: list[str]
    base_url: str = ""


@pytest.fixture
def replay(realdata: Path) -> Iterator[Replay]:
    strava = realdata / "strava"
    bodies = {
        "/api/v3/athlete/activities": (strava / "athlete_activities_2025.json").read_bytes(),
        "/api/v3/uploads": (strava / "uploads" / "post_8919698041_processing.json").read_bytes(),
    }
    for name in ("activity_1946417534", "activity_7142833299", "create_activity_manual_2025"):
        body = (strava / f"{name}.json").read_bytes()
        bodies[f"/api/v3/activities/{json.loads(body)['id']}"] = body
    for name in ("stravalib_activity.3", "stravalib_activity-manual.3"):
        body = (strava / f"{name}.json").read_bytes()
        bodies[f"/api/v3/activities/{json.loads(body)['id']}"] = body
    for path in sorted((strava / "uploads").glob("get_*.json")):
        upload_id = re.search(r"get_(\d+)_", path.name)
        assert upload_id is not None
        bodies[f"/api/v3/uploads/{upload_id.group(1)}"] = path.read_bytes()
    html = strava / "uploads" / "duplicate_html_variant.json"
    bodies["/api/v3/uploads/1"] = html.read_bytes()
    state = Replay(bodies=bodies, asked=[])

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            path = self.path.split("?", 1)[0]
            state.asked.append(f"{self.command} {path}")
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            body = state.bodies.get(path)
            self.send_response(200 if body is not None else 404)
            payload = body if body is not None else b'{"message":"Record Not Found"}'
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            # Real limits headers, roomy: the budget never stops this test.
            self.send_header("X-RateLimit-Limit", "200,2000")
            self.send_header("X-RateLimit-Usage", "1,1")
            self.send_header("X-ReadRateLimit-Limit", "100,1000")
            self.send_header("X-ReadRateLimit-Usage", "1,1")
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def adapter(replay: Replay, tmp_path: Path) -> Iterator[StravaAccess]:
    with SqliteStore(tmp_path / "g2s.sqlite3", AesGcmCipher(os.urandom(32))) as store:
        tokens = StravaTokens("access", "refresh", int(time.time()) + 6 * 3600, "", ATHLETE)
        assert store.replace_strava_tokens(USER, tokens, expected_version=None) is not None
        yield build_strava(store, USER, client_id=1, client_secret="s", where=replay.base_url)


def test_the_real_list_answer_reads_every_row(adapter: StravaAccess, replay: Replay) -> None:
    """All 30 rows of a real 2025 list answer are read, with UTC starts, times and sports."""
    rows = adapter.list_activities(
        after=datetime(2025, 9, 1, tzinfo=UTC), before=datetime(2025, 10, 19, tzinfo=UTC)
    )
    assert replay.asked == ["GET /api/v3/athlete/activities"]
    assert len(rows) == 30
    first = rows[0]
    assert first.activity_id == 16181809559
    assert first.start_utc == datetime(2025, 10, 18, 12, 49, 52, tzinfo=UTC)
    assert first.elapsed_seconds == 7792
    assert first.distance_m == pytest.approx(22601.3)
    assert first.sport_type == "Run"
    assert first.external_id == "garmin_ping_492266071674"
    assert not first.manual
    assert {row.sport_type for row in rows} == {"Run", "TrailRun"}
    assert [row.activity_id for row in rows if row.private] == [15853897103]  # only_me


def test_garmins_own_copy_in_the_real_list_is_recognised(
    adapter: StravaAccess,
) -> None:
    """A Garmin run that Garmin's own sync already put on Strava (garmin_ping_*) is matched,
    so it is never uploaded twice; a run at another time is not."""
    rows = adapter.list_activities(
        after=datetime(2025, 9, 1, tzinfo=UTC), before=datetime(2025, 10, 19, tzinfo=UTC)
    )
    record = {
        "activityId": 20495000001,
        "activityName": "Run with Artyom",
        "startTimeGMT": "2025-10-18 12:49:53",
        "activityType": {"typeId": 1, "typeKey": "running", "parentTypeId": 17},
        "duration": 7772.0,
        "elapsedDuration": 7791.4,
        "distance": 22601.3,
    }
    match = find_match(parse_activity(record), rows, tolerance_s=120)
    assert match is not None
    assert (match.strava_activity_id, match.how) == (16181809559, "garmin_sync")
    later = parse_activity(record | {"startTimeGMT": "2025-10-18 18:00:00"})
    assert find_match(later, rows, tolerance_s=120) is None


@dataclass(frozen=True)
class Expected:
    start: str
    elapsed: int
    distance: float
    sport: str
    recorded: str  # "file" or "manual"
    external_id: str | None


@pytest.mark.parametrize(
    ("activity_id", "expected"),
    [
        (
            1946417534,
            Expected("2018-11-04T14:53:46", 13333, 42268.1, "Run", "file", "17900304917.tcx"),
        ),
        (
            7142833299,
            Expected(
                "2022-05-14T18:21:19", 2432, 101529.0, "Ride", "file", "garmin_push_8823414069"
            ),
        ),
        (16185205521, Expected("2025-10-18T23:04:26", 1234, 1000.0, "Run", "manual", None)),
        # 2013 answers carry no sport_type: the legacy `type` is read.
        (
            99895560,
            Expected(
                "2013-12-12T19:36:41",
                3140,
                5781.1,
                "Run",
                "file",
                "620D5DDD-B836-4F6B-8760-F905B8C2895F",
            ),
        ),
        (96089609, Expected("2013-11-17T16:00:00", 38700, 22530.8, "Hike", "manual", None)),
    ],
)
def test_real_detailed_activities_are_mirrored_as_they_are(
    adapter: StravaAccess, activity_id: int, expected: Expected
) -> None:
    """Real DetailedActivity answers of 2013-2025 give the mirror's row: UTC start,
    elapsed time, distance, sport, the manual flag and the external id."""
    raw = adapter.get_activity(activity_id)
    workout = normalize_activity(raw, user_id=USER, updated_at=datetime.now(UTC))
    assert workout.activity_id == activity_id
    assert workout.start_utc == datetime.fromisoformat(expected.start).replace(tzinfo=UTC)
    assert workout.elapsed_time == expected.elapsed
    assert workout.distance == pytest.approx(expected.distance)
    assert workout.sport_type == expected.sport
    assert ("manual" if raw.get("manual") is True else "file") == expected.recorded
    assert workout.external_id == expected.external_id
    assert workout.raw == raw  # the whole answer is kept beside the columns


@pytest.mark.parametrize(
    ("upload_id", "state", "activity_id"),
    [
        (8919698041, UploadState.READY, 8319193780),
        (8919699210, UploadState.PROCESSING, None),
        (8919699501, UploadState.DUPLICATE, 8319193780),
        (2136460097, UploadState.READY, 1998557443),
        (1, UploadState.DUPLICATE, 19636549590),  # the HTML form of the duplicate error
    ],
)
def test_real_upload_answers_settle_as_strava_meant(
    adapter: StravaAccess, upload_id: int, state: UploadState, activity_id: int | None
) -> None:
    """Every recorded upload answer is read into the verdict the ledger records."""
    verdict = read_upload_status(adapter.get_upload(upload_id))
    assert (verdict.state, verdict.activity_id) == (state, activity_id)


def test_a_real_upload_answer_is_read_as_processing(
    adapter: StravaAccess, replay: Replay, tmp_path: Path
) -> None:
    """POST /uploads answered with the recorded 201 body gives its upload id, processing."""
    activity = tmp_path / "run.fit"
    activity.write_bytes(b"not read by the replay server")
    status = adapter.upload(
        activity,
        data_type="fit",
        external_id="garmin2strava_1",
        name="Run",
        description=None,
        trainer=False,
    )
    assert replay.asked == ["POST /api/v3/uploads"]
    assert status.upload_id == 8919698041
    assert read_upload_status(status).state is UploadState.PROCESSING
