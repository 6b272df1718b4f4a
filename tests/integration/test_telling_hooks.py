"""The hooks after each sync cycle: `sync --once`, the daemon's cycle job and the
Lambda sync ping G2S_HEARTBEAT_URL after their cycle (the URL when it succeeded, the
URL with /fail exactly when `sync --once` exits 1), after telling the conditions.
Real sandboxes, a real HTTP catcher on 127.0.0.1 for the pings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from g2s_harness.aws_lambda import FakeContext
from g2s_harness.cli import run_cli
from g2s_harness.notify_catchers import JsonCatcher
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from garmin2strava.adapters.queue_sqlite import SqliteEventQueue
from garmin2strava.bootstrap import App, utc_now
from garmin2strava.entrypoints.aws_lambda.sync_handler import run_scheduled_sync
from garmin2strava.entrypoints.daemon import schedule_sync, schedule_telling
from garmin2strava.services.conditions import mirror_sight

pytestmark = pytest.mark.integration

USER = "me"


@pytest.fixture
def catcher() -> Iterator[JsonCatcher]:
    with JsonCatcher() as running:
        yield running


def pings(catcher: JsonCatcher) -> list[str]:
    return [f"{hit.method} {hit.path}" for hit in catcher.hits]


# -- sync --once -----------------------------------------------------------------------
@pytest.fixture
def cli_pair(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clean_cli_environment: None,
    catcher: JsonCatcher,
) -> Iterator[SandboxPair]:
    with running_sandboxes() as sandboxes:
        settings = sandboxes.environment(
            user_id=USER,
            db_path=tmp_path / "data" / "g2s.sqlite3",
            G2S_UPLOAD_POLL_DELAY_SECONDS="0",
        )
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("G2S_HEARTBEAT_URL", catcher.http_url("ping/abc?rid=1"))
        yield sandboxes


def test_sync_once_pings_on_success_and_fail_exactly_when_it_exits_1(
    cli_pair: SandboxPair, catcher: JsonCatcher, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_run(cli_pair, 1501, start_utc=utc_now().replace(microsecond=0))
    code, _out, err = run_cli(capsys, "sync", "--once")
    assert code == 0, err
    assert pings(catcher) == ["GET /ping/abc?rid=1"]

    cli_pair.garmin.revoke_all_tokens()
    code, _out, _err = run_cli(capsys, "sync", "--once")
    assert code == 1
    assert pings(catcher) == ["GET /ping/abc?rid=1", "GET /ping/abc/fail?rid=1"]

    code, _out, _err = run_cli(capsys, "sync", "--once", "--dry-run")
    assert len(catcher.hits) == 2  # a dry run changes nothing: no ping
    assert catcher.http_url() not in err  # the URL is a secret: never in the log


# -- the daemon's cycle job, the Lambda sync ----------------------------------------------
class Jobs:
    """Takes the scheduler's add_job and keeps each job to run by hand."""

    def __init__(self) -> None:
        self.jobs: dict[str, Callable[[], None]] = {}

    def add_job(self, func: Callable[[], None], *_: Any, id: str, **__: Any) -> None:  # noqa: A002 (apscheduler's name)
        self.jobs[id] = func


@pytest.fixture
def app(make_app: Callable[..., App], catcher: JsonCatcher) -> App:
    return make_app(heartbeat_url=catcher.http_url("hc"))


def test_the_daemon_pings_after_each_cycle(
    pair: SandboxPair, app: App, catcher: JsonCatcher
) -> None:
    jobs = Jobs()
    schedule_sync(app, jobs)  # type: ignore[arg-type,unused-ignore]
    jobs.jobs["sync"]()
    assert pings(catcher) == ["GET /hc"]
    pair.garmin.revoke_all_tokens()
    jobs.jobs["sync"]()
    assert pings(catcher) == ["GET /hc", "GET /hc/fail"]


def test_the_lambda_sync_pings_after_its_invocation(
    pair: SandboxPair, app: App, catcher: JsonCatcher
) -> None:
    summary = run_scheduled_sync(app, FakeContext())
    assert summary["failed"] == 0
    assert pings(catcher) == ["GET /hc"]
    pair.garmin.revoke_all_tokens()
    assert run_scheduled_sync(app, FakeContext())["failed"] == 1
    assert pings(catcher) == ["GET /hc", "GET /hc/fail"]


def test_no_heartbeat_url_no_ping(pair: SandboxPair, make_app: Callable[..., App]) -> None:
    app = make_app()
    jobs = Jobs()
    schedule_sync(app, jobs)  # type: ignore[arg-type,unused-ignore]
    jobs.jobs["sync"]()  # nothing to ping, nothing raised
    assert app.settings.heartbeat_url is None


def test_serve_tells_what_the_worker_side_sees_without_a_heartbeat(
    pair: SandboxPair,
    make_app: Callable[..., App],
    catcher: JsonCatcher,
    tmp_path: Path,
) -> None:
    """`serve` has no sync cycle: its telling job looks at the queue's dead letters and
    the subscription (none known here) every interval, and pings nothing."""
    app = make_app(notify_urls=catcher.url("told"), heartbeat_url=catcher.http_url("hc"))
    queue = SqliteEventQueue(tmp_path / "g2s.sqlite3")
    try:
        sight = mirror_sight(
            athlete_capacity=app.settings.strava_athlete_capacity,
            subscription_id_setting=None,
            queue=queue,
        )
        jobs = Jobs()
        schedule_telling(app, jobs, sight)  # type: ignore[arg-type,unused-ignore]
        for _ in range(3):
            jobs.jobs["telling"]()
    finally:
        queue.close()
    titles = [hit.body["title"] for hit in catcher.hits if hit.method == "POST"]
    assert titles == ["[garmin2strava] webhook.subscription_unknown started"]
    assert [hit for hit in catcher.hits if hit.method == "GET"] == []
