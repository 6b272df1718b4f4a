"""The sync cycle when things go wrong: Strava errors and budgets, Garmin rate limits
and dead tokens. The real app against both sandboxes on loopback, measured by the
sandboxes' request counters; time moves through the app's own clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from fakes import Clock
from g2s_sandbox.scenario import SandboxPair, seed_run
from garmin2strava.bootstrap import App, utc_now
from garmin2strava.domain.conditions import GARMIN_REFUSED_FIX
from garmin2strava.domain.models import (
    Account,
    AccountStatus,
    LedgerEntry,
    StravaTokens,
    UploadOutcome,
)
from garmin2strava.domain.upload_rules import external_id_for
from garmin2strava.entrypoints.account_commands import account_rows
from garmin2strava.services.status import account_status
from garmin2strava.services.sync import CycleReport
from garmin2strava.services.sync_accounts import sync_all
from garmin2strava.settings import Settings

pytestmark = pytest.mark.integration

USER = "demo"  # SandboxPair.settings' G2S_USER_ID
START = datetime(2025, 6, 2, 6, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


# -- harness (the same in test_sync_cycle.py) ------------------------------------------
def cycle(app: App, *, dry_run: bool = False) -> CycleReport:
    (report,) = sync_all(app.store, app.sync_deps, dry_run=dry_run)
    return report


def ledger(app: App, garmin_id: int, user_id: str = USER) -> LedgerEntry:
    entry = app.store.get_uploads(user_id, [garmin_id]).get(garmin_id)
    assert entry is not None, f"no ledger entry for {garmin_id}"
    return entry


def audit_kinds(app: App, user_id: str = USER) -> list[str]:
    return [event.kind for event in app.store.list_audit(user_id)]


def account(app: App, user_id: str = USER) -> Account:
    found = app.store.get_account(user_id)
    assert found is not None
    return found


# -- upload failures -----------------------------------------------------------------------
def test_failed_upload_waits_for_its_retry_time_then_goes_dead(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """Strava 500 on upload: `failed`, attempts=1, next_retry_at in the future; no
    retry (no Strava request) before then; after G2S_MAX_ATTEMPTS it is `dead` with an
    audit event, and then left alone."""
    seed_run(pair, 1101, start_utc=START)
    app = make_app(max_attempts=2)
    clock = Clock(utc_now())
    app.clock = clock
    pair.strava.fail_next("upload", 500)

    report = cycle(app)

    failed = ledger(app, 1101)
    assert report.outcomes == {"failed": 1}
    assert failed.outcome is UploadOutcome.FAILED
    assert failed.attempts == 1
    assert failed.next_retry_at is not None
    assert failed.next_retry_at > clock.now
    assert pair.strava.uploads == 1

    clock.now = failed.next_retry_at - timedelta(seconds=1)
    pair.reset_counts()
    report = cycle(app)

    assert not report.outcomes
    assert pair.strava_total() == 0
    assert pair.garmin.requests == {"list": 1}
    assert ledger(app, 1101) == failed

    clock.now = failed.next_retry_at + timedelta(seconds=1)
    pair.strava.fail_next("upload", 500)
    pair.reset_counts()
    report = cycle(app)

    dead = ledger(app, 1101)
    assert report.outcomes == {"dead": 1}
    assert dead.outcome is UploadOutcome.DEAD
    assert dead.attempts == 2
    assert dead.next_retry_at is None
    assert pair.strava.uploads == 1
    assert "upload.gave_up" in audit_kinds(app)

    clock.now += 24 * HOUR
    pair.reset_counts()
    cycle(app)
    assert pair.strava_total() == 0
    assert not strava_ids(pair, external_id_for(1101))


def test_failed_upload_is_retried_when_due_and_succeeds(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """After one Strava 500, the cycle after next_retry_at uploads it (attempts=2)."""
    seed_run(pair, 1102, start_utc=START)
    app = make_app()
    clock = Clock(utc_now())
    app.clock = clock
    pair.strava.fail_next("upload", 500)
    cycle(app)
    failed = ledger(app, 1102)
    assert failed.next_retry_at is not None

    clock.now = failed.next_retry_at
    report = cycle(app)

    entry = ledger(app, 1102)
    assert report.outcomes == {"uploaded": 1}
    assert entry.outcome is UploadOutcome.UPLOADED
    assert entry.attempts == 2
    assert len(strava_ids(pair, external_id_for(1102))) == 1


def strava_ids(pair: SandboxPair, external_id: str) -> list[int]:
    with pair.strava.lock:
        return [
            a.activity_id for a in pair.strava.activities.values() if a.external_id == external_id
        ]


# -- Strava's processing verdict ------------------------------------------------------------
def test_file_strava_cannot_process_is_failed_with_its_message_then_dead(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """Strava's processing answers "error" (a file it rejects): `failed` with Strava's
    message and a retry time, one more upload when due, then `dead` with the message,
    and no Strava request after that."""
    message = "Time information is missing from file."
    seed_run(pair, 1111, start_utc=START)
    app = make_app(max_attempts=2)
    clock = Clock(utc_now())
    app.clock = clock
    pair.strava.upload_errors = [message]

    report = cycle(app)

    failed = ledger(app, 1111)
    assert report.outcomes == {"failed": 1}
    assert failed.outcome is UploadOutcome.FAILED
    assert failed.detail == message
    assert failed.attempts == 1
    assert failed.next_retry_at is not None
    assert failed.upload_id is None
    assert pair.strava.uploads == 1

    clock.now = failed.next_retry_at + timedelta(seconds=1)
    pair.strava.upload_errors = [message]
    pair.reset_counts()
    report = cycle(app)

    dead = ledger(app, 1111)
    assert report.outcomes == {"dead": 1}
    assert dead.outcome is UploadOutcome.DEAD
    assert dead.detail == message
    assert dead.attempts == 2
    assert pair.strava.uploads == 1

    clock.now += 24 * HOUR
    pair.reset_counts()
    cycle(app)
    assert pair.strava_total() == 0
    assert not strava_ids(pair, external_id_for(1111))


def test_verdict_in_the_upload_answer_is_read_like_a_poll(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """When the POST's own answer already says "error" (stravalib raises on it), the
    ledger gets Strava's message, not "no id": a duplicate is `duplicate` with the
    existing activity (no poll), an error is `failed` with the message."""
    pair.strava.verdict_on_post = True
    seed_run(pair, 1121, start_utc=START)
    pair.strava.upload_errors = ["Improperly formatted data."]  # the oldest run's upload
    seed_run(pair, 1122, start_utc=START + HOUR, duration_s=1800)
    # Same start, other elapsed time: our rules do not match it, Strava's do.
    other = pair.strava.add_activity(pair.athlete_id, start_utc=START + HOUR, elapsed_s=3000)
    app = make_app()

    report = cycle(app)

    duplicate = ledger(app, 1122)
    assert duplicate.outcome is UploadOutcome.DUPLICATE
    assert duplicate.strava_activity_id == other
    assert f"duplicate of activity {other}" in duplicate.detail
    failed = ledger(app, 1121)
    assert failed.outcome is UploadOutcome.FAILED
    assert failed.detail == "Improperly formatted data."
    assert report.outcomes == {"duplicate": 1, "failed": 1}
    assert pair.strava.uploads == 2
    assert pair.strava.requests["upload_status"] == 0
    assert len(pair.strava.activities) == 1


def test_upload_deleted_on_strava_before_the_poll_is_not_uploaded_again(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """The created activity is deleted on Strava while we wait ("has been deleted"):
    the ledger settles as `uploaded` with that activity's id, and no later cycle
    uploads the run again (the deletion stands)."""
    pair.strava.processing_delay_s = 3600
    seed_run(pair, 1131, start_utc=START)
    app = make_app()
    cycle(app)
    assert ledger(app, 1131).outcome is UploadOutcome.PROCESSING
    pair.strava.processing_delay_s = 0
    pair.strava.settle()
    (created,) = strava_ids(pair, external_id_for(1131))
    pair.strava.delete_activity(created)
    pair.reset_counts()

    report = cycle(app)

    entry = ledger(app, 1131)
    (upload,) = pair.strava.upload_records.values()
    assert upload.status == "The created activity has been deleted."
    assert report.outcomes == {"uploaded": 1}
    assert entry.outcome is UploadOutcome.UPLOADED
    assert entry.strava_activity_id == created
    assert pair.strava.requests == {"upload_status": 1}

    pair.reset_counts()
    cycle(app)
    assert pair.strava_total() == 0
    assert pair.garmin.requests == {"list": 1}


# -- Garmin --------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [400, 410])
def test_download_refused_by_garmin_is_skipped_and_the_cycle_goes_on(
    pair: SandboxPair, make_app: Callable[..., App], status: int
) -> None:
    """A 4xx that retrying cannot change on the download: `skipped` at once with the
    status in the reason, the next run is uploaded in the same cycle, and no later
    cycle downloads the refused one again."""
    seed_run(pair, 1211, start_utc=START)
    seed_run(pair, 1212, start_utc=START + HOUR)
    app = make_app()
    pair.garmin.fail_next("download", status)  # the oldest run is downloaded first

    report = cycle(app)

    refused = ledger(app, 1211)
    assert report.ok
    assert report.outcomes == {"skipped": 1, "uploaded": 1}
    assert refused.outcome is UploadOutcome.SKIPPED
    assert refused.detail == f"download refused: Garmin answered {status}"
    assert refused.attempts == 0
    assert ledger(app, 1212).outcome is UploadOutcome.UPLOADED
    assert pair.garmin.requests["download"] == 2
    assert not strava_ids(pair, external_id_for(1211))

    pair.reset_counts()
    report = cycle(app)

    assert not report.outcomes
    assert pair.garmin.requests == {"list": 1}
    assert pair.strava_total() == 0


def add_second_account(app: App, pair: SandboxPair, user_id: str, athlete_id: int) -> None:
    """Another account in the same store, on the same Garmin sandbox, with its own athlete."""
    app.store.put_account(Account(user_id=user_id, created_at=utc_now()))
    app.store.replace_garmin_tokens(user_id, pair.garmin.issue_tokens(), expected_version=None)
    app.store.replace_strava_tokens(
        user_id,
        StravaTokens(
            access_token="", refresh_token=pair.strava.add_athlete(athlete_id), expires_at=0
        ),
        expected_version=None,
    )


def test_garmin_5xx_on_download_is_retried_by_a_later_cycle(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """Garmin answers 503 to a download (past the library's own retries): the run is
    `failed` with attempts=1 and a retry time, nothing reaches Strava for it, the other
    account still syncs in the same call, and once Garmin recovers the cycle after the
    retry time uploads it exactly once."""
    seed_run(pair, 1221, start_utc=START)
    app = make_app()
    clock = Clock(utc_now())
    app.clock = clock
    second, second_athlete = "second", 2002  # listed after "demo"
    add_second_account(app, pair, second, second_athlete)
    pair.garmin.fail_next("download", 503, times=4)  # the library tries 1 + 3 times

    reports = {r.user_id: r for r in sync_all(app.store, app.sync_deps)}

    failed = ledger(app, 1221)
    assert reports[USER].outcomes == {"failed": 1}
    assert failed.outcome is UploadOutcome.FAILED
    assert failed.attempts == 1
    assert "Garmin answered 503" in failed.detail
    assert failed.next_retry_at is not None
    assert failed.next_retry_at > clock.now
    assert reports[second].outcomes == {"uploaded": 1}
    assert ledger(app, 1221, second).outcome is UploadOutcome.UPLOADED
    assert pair.strava.uploads == 1  # the second account's

    clock.now = failed.next_retry_at + timedelta(seconds=1)
    pair.reset_counts()
    reports = {r.user_id: r for r in sync_all(app.store, app.sync_deps)}

    entry = ledger(app, 1221)
    assert reports[USER].outcomes == {"uploaded": 1}
    assert not reports[second].outcomes
    assert entry.outcome is UploadOutcome.UPLOADED
    assert entry.attempts == 2
    assert pair.strava.uploads == 1
    with pair.strava.lock:
        ours = [
            a
            for a in pair.strava.activities.values()
            if a.external_id == external_id_for(1221) and a.athlete_id == pair.athlete_id
        ]
    assert [a.activity_id for a in ours] == [entry.strava_activity_id]


def test_a_long_garmin_outage_never_gives_a_run_up(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """Garmin answers 503 to the download for more attempts than G2S_MAX_ATTEMPTS: the
    run stays `failed` (retried at the backoff), never `dead`, and is uploaded once
    Garmin recovers."""
    seed_run(pair, 1231, start_utc=START)
    app = make_app(max_attempts=2)
    clock = Clock(utc_now())
    app.clock = clock
    for attempt in (1, 2, 3):
        pair.garmin.fail_next("download", 503, times=4)  # the library tries 1 + 3 times
        cycle(app)
        entry = ledger(app, 1231)
        assert entry.outcome is UploadOutcome.FAILED
        assert entry.attempts == attempt
        assert entry.next_retry_at is not None
        clock.now = entry.next_retry_at + timedelta(seconds=1)

    report = cycle(app)

    assert report.outcomes == {"uploaded": 1}
    assert ledger(app, 1231).outcome is UploadOutcome.UPLOADED
    assert pair.strava.uploads == 1


def test_a_run_settled_by_another_runner_before_our_intent_is_left_alone(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """Another runner settles the run between our ledger read and our intent (the
    store refuses the intent): no upload, its entry stands, the cycle goes on."""
    seed_run(pair, 1241, start_utc=START)
    seed_run(pair, 1242, start_utc=START + HOUR)
    app = make_app()
    theirs = LedgerEntry(
        user_id=USER,
        garmin_activity_id=1241,
        external_id=external_id_for(1241),
        outcome=UploadOutcome.UPLOADED,
        updated_at=utc_now(),
        strava_activity_id=987_654,
    )

    def other_runner_settles_first(step: str) -> None:
        if step == "intent" and 1241 not in app.store.get_uploads(USER, [1241]):
            app.store.put_upload(theirs)

    (report,) = sync_all(
        app.store, lambda uid: replace(app.sync_deps(uid), checkpoint=other_runner_settles_first)
    )

    assert report.ok
    assert report.outcomes == {"uploaded": 1}
    assert ledger(app, 1241) == theirs
    assert ledger(app, 1242).outcome is UploadOutcome.UPLOADED
    assert pair.strava.uploads == 1
    assert not strava_ids(pair, external_id_for(1241))


def test_garmin_429_backs_the_account_off_across_restarts(
    pair: SandboxPair, make_app: Callable[..., App], open_app: Callable[[Settings], App]
) -> None:
    """Garmin 429: garmin_backoff_until is stored (a new store object on the same file
    sees it) and the next cycle, in a restarted app, makes no Garmin request."""
    seed_run(pair, 1201, start_utc=START)
    app = make_app()
    clock = Clock(utc_now())
    app.clock = clock
    pair.garmin.fail_next("list", 429)

    report = cycle(app)

    assert not report.ok
    assert pair.garmin.requests == {"list": 1}
    assert pair.strava_total() == 0
    until = account(app).garmin_backoff_until
    assert until is not None
    assert until >= clock.now + timedelta(seconds=app.settings.garmin_backoff_seconds)
    assert "garmin.rate_limited" in audit_kinds(app)

    restarted = open_app(app.settings)  # same file and key, another store object
    assert account(restarted).garmin_backoff_until == until
    pair.reset_counts()
    report = cycle(restarted)

    assert "backing off" in report.skipped_reason
    assert sum(pair.garmin.requests.values()) == 0
    assert pair.strava_total() == 0
    assert restarted.store.get_uploads(USER, [1201]) == {}


def test_garmin_403_backs_off_doubling_and_never_asks_for_a_login(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """Garmin answers 403 (it refuses this network): the account stays active (no
    needs-login, no login attempted), no Garmin request for 1 h, then 2 h, 4 h ...
    capped at 24 h; `status` names the fix; the next answer clears it all."""
    seed_run(pair, 1211, start_utc=START)
    app = make_app()
    clock = Clock(utc_now())
    app.clock = clock
    pair.garmin.refuse_network()
    waits = []
    for _ in range(7):
        pair.reset_counts()
        report = cycle(app)
        assert not report.ok
        assert "403" in report.error
        assert "G2S_GARMIN_PROXY" in report.error
        assert pair.garmin.requests == {"list": 1, "refused": 1}
        refused = account(app)
        assert refused.status is AccountStatus.ACTIVE
        assert refused.garmin_refused_until is not None
        waits.append(refused.garmin_refused_until - clock.now)
        # Within the wait: no Garmin request at all.
        clock.now = refused.garmin_refused_until - timedelta(minutes=1)
        assert "Garmin refuses this network (403)" in account_rows(app)[0]["why"]
        pair.reset_counts()
        assert "refuses this network" in cycle(app).skipped_reason
        assert sum(pair.garmin.requests.values()) == 0
        clock.now += timedelta(minutes=2)
    assert waits == [HOUR, 2 * HOUR, 4 * HOUR, 8 * HOUR, 16 * HOUR, 24 * HOUR, 24 * HOUR]
    assert audit_kinds(app).count("garmin.network_refused") == 7
    assert "garmin.auth_failed" not in audit_kinds(app)
    assert pair.garmin.requests["login"] == 0
    shown = account_status(app.store, now=clock.now)["accounts"][0]["garminRefused"]
    assert shown["fix"] == GARMIN_REFUSED_FIX
    assert shown["refusals"] == 7

    pair.garmin.refuse_network(refused=False)
    report = cycle(app)

    assert report.outcomes == {"uploaded": 1}
    cleared = account(app)
    assert (cleared.garmin_refused_since, cleared.garmin_refused_until) == (None, None)
    assert cleared.garmin_refusals == 0
    assert account_status(app.store, now=clock.now)["accounts"][0]["garminRefused"] is None


@pytest.mark.parametrize("where", ["download", "token_refresh"])
def test_garmin_403_on_a_download_or_a_token_refresh_is_the_same_refusal(
    pair: SandboxPair, make_app: Callable[..., App], where: str
) -> None:
    """A 403 from the ORIGINAL download or the DI token refresh backs off as the list's
    does: the account stays active, its stored tokens are kept, the run is not failed."""
    seed_run(pair, 1212, start_utc=START)
    app = make_app()
    clock = Clock(utc_now())
    app.clock = clock
    if where == "token_refresh":
        app.store.replace_garmin_tokens(
            USER,
            pair.garmin.issue_tokens(lifetime_s=-10),
            expected_version=app.store.get_garmin_tokens(USER).version,  # type: ignore[union-attr]
        )
    pair.garmin.fail_next(where, 403)

    report = cycle(app)

    assert not report.ok
    refused = account(app)
    assert refused.status is AccountStatus.ACTIVE
    assert refused.garmin_refused_until == clock.now + HOUR
    assert app.store.get_garmin_tokens(USER) is not None
    entry = app.store.get_uploads(USER, [1212]).get(1212)
    assert entry is None or entry.outcome is UploadOutcome.PENDING
    assert pair.garmin.requests["login"] == 0


def test_garmin_auth_failure_stops_that_account_and_the_other_still_syncs(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """Revoked Garmin tokens: the account becomes needs_garmin_login with an audit
    event, nothing logs in, and a second account in the same store syncs in the same
    sync_all call (and goes on syncing while the first is stopped)."""
    seed_run(pair, 1301, start_utc=START)
    app = make_app()
    pair.garmin.revoke_all_tokens()
    second = "second"
    second_athlete = 2002
    app.store.put_account(Account(user_id=second, created_at=utc_now()))
    app.store.replace_garmin_tokens(second, pair.garmin.issue_tokens(), expected_version=None)
    app.store.replace_strava_tokens(
        second,
        StravaTokens(
            access_token="", refresh_token=pair.strava.add_athlete(second_athlete), expires_at=0
        ),
        expected_version=None,
    )

    reports = {r.user_id: r for r in sync_all(app.store, app.sync_deps)}

    assert not reports[USER].ok
    assert account(app).status is AccountStatus.NEEDS_GARMIN_LOGIN
    assert "garmin.auth_failed" in audit_kinds(app)
    assert app.store.get_uploads(USER, [1301]) == {}
    assert reports[second].ok
    assert reports[second].outcomes == {"uploaded": 1}
    assert ledger(app, 1301, second).outcome is UploadOutcome.UPLOADED
    (strava_id,) = strava_ids(pair, external_id_for(1301))
    assert pair.strava.activities[strava_id].athlete_id == second_athlete
    assert pair.garmin.requests["login"] == 0

    pair.reset_counts()
    reports = {r.user_id: r for r in sync_all(app.store, app.sync_deps)}

    assert "needs_garmin_login" in reports[USER].skipped_reason
    assert pair.garmin.requests == {"list": 1}  # the second account's, only


# -- Strava budget -------------------------------------------------------------------------
def test_spent_strava_budget_defers_without_a_429_storm(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """Reads exhausted: the cycle defers (deferred_until set) after at most one Strava
    request, records no failure, the next cycle makes no Strava request at all, and a
    cycle after the window reset uploads."""
    seed_run(pair, 1401, start_utc=START)
    app = make_app()
    clock = Clock(utc_now())
    app.clock = clock
    assert cycle(app).outcomes == {"uploaded": 1}  # the adapter has seen Strava's headers
    seed_run(pair, 1402, start_utc=START + HOUR)
    # Both read windows spent, so a quarter hour passing mid-test changes nothing.
    pair.strava.set_usage(short_all=100, daily_all=1000, short_read=100, daily_read=1000)
    pair.reset_counts()

    report = cycle(app)

    assert report.deferred_until is not None
    assert report.deferred_until > clock.now
    assert pair.strava.reads + pair.strava.uploads <= 1
    assert "failed" not in report.outcomes
    entry = app.store.get_uploads(USER, [1402]).get(1402)
    assert entry is None or entry.outcome is UploadOutcome.PENDING

    pair.reset_counts()
    report = cycle(app)

    assert report.deferred_until is not None
    assert pair.strava_total() == 0
    assert not report.outcomes

    pair.strava.set_usage()  # the sandbox's window rolled over
    clock.now = report.deferred_until + timedelta(seconds=1)
    report = cycle(app)

    assert report.outcomes == {"uploaded": 1}
    assert ledger(app, 1402).outcome is UploadOutcome.UPLOADED
    assert len(strava_ids(pair, external_id_for(1402))) == 1


# -- Strava auth ---------------------------------------------------------------------------
def test_expired_strava_access_token_is_refreshed_once(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """Strava answers 401 (access tokens expired): one refresh, then the upload works."""
    seed_run(pair, 1501, start_utc=START)
    app = make_app()
    cycle(app)
    seed_run(pair, 1502, start_utc=START + HOUR)
    pair.strava.expire_access_tokens()
    pair.reset_counts()

    report = cycle(app)

    assert report.ok
    assert report.outcomes == {"uploaded": 1}
    assert pair.strava.requests["token"] == 1
    assert pair.strava.uploads == 1
    assert ledger(app, 1502).outcome is UploadOutcome.UPLOADED


def test_revoked_strava_athlete_needs_strava_auth(
    pair: SandboxPair, make_app: Callable[..., App]
) -> None:
    """The athlete revoked our app: the account becomes needs_strava_auth with an audit
    event, nothing is uploaded, and the next cycle leaves the account alone."""
    seed_run(pair, 1601, start_utc=START)
    app = make_app()
    pair.strava.revoke(pair.athlete_id)

    report = cycle(app)

    assert not report.ok
    assert account(app).status is AccountStatus.NEEDS_STRAVA_AUTH
    assert "strava.auth_failed" in audit_kinds(app)
    assert pair.strava.uploads == 0

    pair.reset_counts()
    report = cycle(app)

    assert "needs_strava_auth" in report.skipped_reason
    assert pair.strava_total() == 0
    assert sum(pair.garmin.requests.values()) == 0
