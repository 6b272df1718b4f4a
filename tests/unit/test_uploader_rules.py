"""The uploader's pure decisions (domain.upload_rules): candidates, the ledger's
transitions, the Strava query windows, matching, upload answers, retry delays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from garmin2strava.domain import upload_rules
from garmin2strava.domain.models import (
    Account,
    GarminActivity,
    LedgerEntry,
    StravaActivity,
    UploadOutcome,
    UploadStatus,
)
from garmin2strava.domain.upload_rules import (
    EARLIEST_START,
    LATEST_START,
    QUERY_SPAN,
    UploadState,
    activity_from_entry,
    choose_candidates,
    external_id_for,
    failed,
    find_match,
    group_by_span,
    intent,
    is_due,
    listing_record_id,
    mirror_covers,
    needs_existence_check,
    query_window,
    read_upload_status,
    rejected_record,
    retry_delay,
    settle_known,
    settled,
    strava_sport_family,
    upload_description,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
START = datetime(2025, 5, 30, 7, 0, tzinfo=UTC)


def _run(garmin_id: int = 1, *, start: datetime = START, **fields: object) -> GarminActivity:
    base: dict[str, object] = {
        "activity_id": garmin_id,
        "name": f"Run {garmin_id}",
        "type_key": "running",
        "start_utc": start,
        "elapsed_seconds": 1800.0,
        "distance_m": 5000.0,
        "manual": False,
        "family": "run",
        "indoor": False,
    }
    base.update(fields)
    return GarminActivity(**base)  # type: ignore[arg-type]  # test builder: fields by name


def _entry(
    garmin_id: int = 1, outcome: UploadOutcome = UploadOutcome.FAILED, **fields: object
) -> LedgerEntry:
    base: dict[str, object] = {
        "user_id": "u1",
        "garmin_activity_id": garmin_id,
        "external_id": external_id_for(garmin_id),
        "outcome": outcome,
        "updated_at": NOW - timedelta(hours=1),
        "start_utc": START,
        "type_key": "running",
        "activity_name": f"Run {garmin_id}",
    }
    base.update(fields)
    return LedgerEntry(**base)  # type: ignore[arg-type]  # test builder: fields by name


def _strava(
    strava_id: int = 900,
    *,
    start: datetime = START,
    elapsed: int = 1800,
    sport: str = "Run",
    external_id: str | None = None,
) -> StravaActivity:
    return StravaActivity(
        activity_id=strava_id,
        athlete_id=7,
        name="x",
        sport_type=sport,
        start_utc=start,
        elapsed_seconds=elapsed,
        moving_seconds=None,
        distance_m=None,
        total_elevation_gain=None,
        external_id=external_id,
        upload_id=None,
        private=False,
        manual=False,
    )


def _status(
    *, status: str = "", error: str | None = None, activity_id: int | None = None
) -> UploadStatus:
    return UploadStatus(
        upload_id=5, status=status, error=error, activity_id=activity_id, external_id=None
    )


def _wants_runs(type_key: str) -> bool:
    return type_key == "running"


# -- candidates -------------------------------------------------------------------------


def test_new_and_due_runs_are_candidates_oldest_first() -> None:
    """New runs and failed ones past their retry time are chosen, oldest first."""
    newer, older = _run(1, start=START), _run(2, start=START - timedelta(days=1))
    due = _entry(1, next_retry_at=NOW - timedelta(seconds=1))
    chosen = choose_candidates([newer, older], {1: due}, [], wants_type=_wants_runs, now=NOW)
    assert [a.activity_id for a in chosen] == [2, 1]


def test_settled_unwanted_and_waiting_activities_are_not_candidates() -> None:
    """Settled entries, unwanted types and failures before their retry time are left."""
    ride = _run(3, type_key="cycling", family="ride")
    ledger = {
        1: _entry(1, UploadOutcome.UPLOADED),
        2: _entry(2, next_retry_at=NOW + timedelta(minutes=1)),
    }
    chosen = choose_candidates(
        [_run(1), _run(2), ride], ledger, [], wants_type=_wants_runs, now=NOW
    )
    assert chosen == []


def test_unsettled_entries_out_of_the_listing_come_back() -> None:
    """An unsettled entry that scrolled out of the listing is a candidate again, built
    from what the ledger kept; an implausible start or a missing one is not."""
    gone = _entry(8, UploadOutcome.PENDING, start_utc=START - timedelta(days=40))
    no_start = _entry(9, UploadOutcome.PENDING, start_utc=None)
    absurd = _entry(10, UploadOutcome.PENDING, start_utc=datetime(1960, 1, 1, tzinfo=UTC))
    chosen = choose_candidates(
        [_run(1)], {}, [gone, no_start, absurd], wants_type=_wants_runs, now=NOW
    )
    assert [a.activity_id for a in chosen] == [8, 1]
    assert chosen[0] == activity_from_entry(gone)
    assert chosen[0].family == "run"


def test_is_due_only_waits_for_a_failure_retry_time() -> None:
    """Only a failed entry with a future retry time waits."""
    later = NOW + timedelta(seconds=1)
    assert not is_due(_entry(next_retry_at=later), NOW)
    assert is_due(_entry(next_retry_at=NOW), NOW)
    assert is_due(_entry(outcome=UploadOutcome.PROCESSING, next_retry_at=later), NOW)


def test_listing_record_id_accepts_only_positive_integers() -> None:
    """A bad listing record is recorded only under a usable id."""
    assert listing_record_id({"activityId": 12}) == 12
    for record in ({"activityId": True}, {"activityId": 0}, {"activityId": "12"}, [12], None):
        assert listing_record_id(record) is None


# -- the ledger's transitions --------------------------------------------------------------


def test_intent_counts_one_more_attempt_and_clears_the_retry_time() -> None:
    """The intent is pending, one attempt more, no retry time, with the activity's data."""
    earlier = _entry(1, attempts=2, next_retry_at=NOW)
    pending = intent("u1", _run(1, name="Tempo"), earlier, now=NOW)
    assert (pending.outcome, pending.attempts, pending.next_retry_at) == (
        UploadOutcome.PENDING,
        3,
        None,
    )
    assert (pending.activity_name, pending.updated_at) == ("Tempo", NOW)
    first = intent("u1", _run(4), None, now=NOW)
    assert (first.attempts, first.external_id) == (1, "garmin2strava_4")


def test_settled_keeps_the_strava_id_and_no_retry_time() -> None:
    """A settled entry names its Strava activity and waits for nothing."""
    done = settled(
        "u1",
        _run(1),
        _entry(1, next_retry_at=NOW),
        UploadOutcome.UPLOADED,
        "",
        now=NOW,
        strava_id=5,
    )
    assert (done.outcome, done.strava_activity_id, done.next_retry_at) == (
        UploadOutcome.UPLOADED,
        5,
        None,
    )


def test_failed_waits_longer_each_attempt_then_dies_at_the_last() -> None:
    """Failed gets a retry time from its attempts and drops its upload id; the last
    attempt is dead, unless the failure is not the run's fault."""
    second = failed(
        "u1", _run(1), _entry(1, attempts=2, upload_id=3), "boom", now=NOW, max_attempts=5
    )
    assert second.outcome is UploadOutcome.FAILED
    assert second.next_retry_at == NOW + timedelta(minutes=4)
    assert second.upload_id is None
    last = _entry(1, attempts=5)
    dead = failed("u1", _run(1), last, "boom", now=NOW, max_attempts=5)
    assert (dead.outcome, dead.attempts, dead.next_retry_at) == (UploadOutcome.DEAD, 5, None)
    outage = failed("u1", _run(1), last, "503", now=NOW, max_attempts=5, may_give_up=False)
    assert outage.outcome is UploadOutcome.FAILED
    zero = failed("u1", _run(1), _entry(1, attempts=0), "x", now=NOW, max_attempts=5)
    assert zero.attempts == 1


def test_rejected_record_is_skipped_with_its_reason() -> None:
    """A listing record that is no activity is skipped for good, saying why."""
    entry = rejected_record("u1", 12, "bad distance", now=NOW)
    assert entry.outcome.settled
    assert entry.detail == "invalid activity record: bad distance"


@pytest.mark.parametrize(
    ("attempts", "minutes"), [(0, 2), (1, 2), (2, 4), (3, 8), (8, 256), (9, 360), (50, 360)]
)
def test_retry_delay_doubles_up_to_six_hours(attempts: int, minutes: int) -> None:
    """2, 4, 8 ... minutes, never more than 6 hours."""
    assert retry_delay(attempts) == timedelta(minutes=minutes)


# -- already on Strava? ------------------------------------------------------------------


def test_groups_start_a_new_query_beyond_the_span() -> None:
    """Candidates within the span of a group's first share its query."""
    day = timedelta(days=1)
    runs = [_run(i, start=START + n * day) for i, n in enumerate([0, 2, 3, 4, 10], start=1)]
    groups = group_by_span(reversed(runs), QUERY_SPAN)
    assert [[a.activity_id for a in g] for g in groups] == [[1, 2, 3], [4], [5]]


def test_query_window_is_clamped_whatever_the_tolerance() -> None:
    """The window widens both ends by the tolerance and never leaves the plausible starts."""
    assert query_window(START, START + timedelta(hours=1), 60) == (
        START - timedelta(minutes=1),
        START + timedelta(minutes=61),
    )
    assert query_window(START, START, -5) == (START, START)
    wide = query_window(EARLIEST_START, LATEST_START - timedelta(seconds=1), 10**12)
    assert wide == (EARLIEST_START, LATEST_START)


def test_existence_check_and_mirror_coverage() -> None:
    """New, pending and failed entries are checked; the mirror covers starts since it began."""
    assert needs_existence_check(None)
    assert needs_existence_check(_entry(outcome=UploadOutcome.PENDING))
    assert not needs_existence_check(_entry(outcome=UploadOutcome.PROCESSING))
    account = Account(user_id="u1", mirror_covers_since=START)
    assert mirror_covers(account, _run(1))
    assert not mirror_covers(account, _run(1, start=START - timedelta(seconds=1)))
    assert not mirror_covers(Account(user_id="u1"), _run(1))


def test_our_external_id_wins_even_far_away() -> None:
    """Our own external_id (Strava may add the extension) matches whatever the start."""
    ours = _strava(1, start=START + timedelta(days=2), external_id="garmin2strava_1.fit")
    near = _strava(2)
    match = find_match(_run(1), [near, ours], tolerance_s=120)
    assert match is not None
    assert (match.strava_activity_id, match.how) == (1, "external_id")
    other = _strava(3, start=START + timedelta(days=2), external_id="garmin2strava_11")
    assert find_match(_run(1), [other], tolerance_s=120) is None


def test_garmin_sync_copy_matches_by_start_alone() -> None:
    """Garmin's own Strava copy matches by start, whatever its elapsed time."""
    copy = _strava(4, start=START + timedelta(seconds=30), elapsed=10, external_id="garmin_push_99")
    match = find_match(_run(1), [copy], tolerance_s=120)
    assert match is not None
    assert (match.strava_activity_id, match.how) == (4, "garmin_sync")


def test_start_match_needs_elapsed_and_sport_to_agree() -> None:
    """By start time: the nearest with elapsed within max(60 s, 5 %) and the same sport."""
    run = _run(1)
    too_long = _strava(5, elapsed=1800 + 91)
    a_ride = _strava(6, sport="Ride")
    too_far = _strava(7, start=START + timedelta(seconds=121))
    assert find_match(run, [too_long, a_ride, too_far], tolerance_s=120) is None
    close = _strava(8, start=START + timedelta(seconds=100), elapsed=1800 + 90)
    closer = _strava(9, start=START - timedelta(seconds=10))
    match = find_match(run, [close, closer], tolerance_s=120)
    assert match is not None
    assert (match.strava_activity_id, match.how) == (9, "start_time")


def test_found_on_strava_is_uploaded_only_when_it_was_our_interrupted_upload() -> None:
    """An interrupted intent found by our external_id is `uploaded`; otherwise `exists`."""
    pending = _entry(outcome=UploadOutcome.PENDING)
    assert settle_known(pending, "strava:external_id")[0] is UploadOutcome.UPLOADED
    assert settle_known(pending, "strava:start_time") == (
        UploadOutcome.EXISTS,
        "strava:start_time",
    )
    assert settle_known(None, "mirror:external_id")[0] is UploadOutcome.EXISTS


@pytest.mark.parametrize(
    ("sport", "family"), [("Run", "run"), ("TrailRun", "run"), ("Ride", "ride"), ("Xyz", "other")]
)
def test_strava_sport_types_map_to_families(sport: str, family: str) -> None:
    """Strava's sport types fall into the families Garmin's types do."""
    assert strava_sport_family(sport) == family


# -- Strava's upload answers -------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        "123.fit duplicate of activity 8319193780",
        "a.fit Duplicate Of Activity 8319193780",
        "x duplicate of <a href='/activities/8319193780' target='_blank'>Morning Run</a>",
        "x duplicate of\n<a href='https://www.strava.com/activities/8319193780'>y</a>",
    ],
)
def test_duplicate_messages_name_the_existing_activity(error: str) -> None:
    """Both the plain and the HTML duplicate message yield the activity they name."""
    verdict = read_upload_status(_status(error=error))
    assert (verdict.state, verdict.activity_id) == (UploadState.DUPLICATE, 8319193780)


def test_upload_answers_read_as_states() -> None:
    """Ready with an id, error, deleted, and still processing otherwise."""
    assert read_upload_status(_status(status="Your activity is ready.", activity_id=3)).state is (
        UploadState.READY
    )
    assert read_upload_status(_status(error="Improperly formatted data.")).state is (
        UploadState.ERROR
    )
    assert read_upload_status(_status(status="The created activity has been deleted.")).state is (
        UploadState.DELETED
    )
    assert read_upload_status(_status(status="There was an error processing")).state is (
        UploadState.ERROR
    )
    assert read_upload_status(_status(status="Your activity is still being processed.")).state is (
        UploadState.PROCESSING
    )


def test_upload_description_joins_garmin_and_configured() -> None:
    """Garmin's description first, then the configured text; None when both are blank."""
    assert upload_description(" Legs ", "via g2s") == "Legs\n\nvia g2s"
    assert upload_description("", "via g2s") == "via g2s"
    assert upload_description("  ", None) is None


# -- webhook-settled uploads -------------------------------------------------------------


@pytest.mark.parametrize(
    ("external_id", "garmin_id"),
    [
        ("garmin2strava_123", 123),
        ("garmin2strava_20495000001.fit", 20495000001),  # Strava appends the extension
        ("garmin2strava_7.fit.gz", 7),
        ("garmin_ping_492266071674", None),  # Garmin's own sync
        ("garmin2strava_", None),
        ("garmin2strava_0123", None),
        ("xgarmin2strava_12", None),
        ("garmin2strava_12/../x", None),
        ("", None),
        (None, None),
    ],
)
def test_garmin_id_of_reads_only_our_external_ids(
    external_id: str | None, garmin_id: int | None
) -> None:
    """Only an external_id we sent gives a Garmin id; anyone else's gives None."""
    assert upload_rules.garmin_id_of(external_id) == garmin_id


@pytest.mark.parametrize(
    ("outcome", "settles"),
    [
        (UploadOutcome.PENDING, True),
        (UploadOutcome.PROCESSING, True),
        (UploadOutcome.FAILED, True),
        (UploadOutcome.UPLOADED, False),
        (UploadOutcome.DUPLICATE, False),
        (UploadOutcome.EXISTS, False),
        (UploadOutcome.SKIPPED, False),
        (UploadOutcome.DEAD, False),
    ],
)
def test_a_create_settles_only_what_is_not_settled(outcome: UploadOutcome, settles: bool) -> None:
    """The webhook's `create` of our upload settles a pending, processing or failed
    entry as uploaded with the activity id; a settled one is left as it is."""
    now = datetime(2025, 6, 2, 7, 0, tzinfo=UTC)
    entry = LedgerEntry(
        user_id="u1",
        garmin_activity_id=5,
        external_id="garmin2strava_5",
        outcome=outcome,
        updated_at=now - timedelta(minutes=1),
        next_retry_at=now + timedelta(minutes=2) if outcome is UploadOutcome.FAILED else None,
        upload_id=900,
    )
    settled = upload_rules.settled_by_webhook(entry, 4242, now=now)
    if not settles:
        assert settled is None
        return
    assert settled is not None
    assert (settled.outcome, settled.strava_activity_id, settled.upload_id) == (
        UploadOutcome.UPLOADED,
        4242,
        900,
    )
    assert (settled.next_retry_at, settled.updated_at) == (None, now)
