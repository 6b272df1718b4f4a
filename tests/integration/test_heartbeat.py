"""The heartbeat against a loopback server: healthchecks.io's convention (GET the URL;
GET it with /fail appended to the path, query kept), one attempt, bounded, silent
about the URL."""

from __future__ import annotations

import logging
import time

import pytest

from g2s_harness.notify_catchers import JsonCatcher
from garmin2strava.adapters.heartbeat import fail_url, ping

pytestmark = pytest.mark.integration


def test_a_good_cycle_pings_the_url_and_a_failed_one_its_fail_path() -> None:
    with JsonCatcher() as check:
        assert ping(check.http_url("ping/uuid-1?rid=7"), ok=True)
        assert ping(check.http_url("ping/uuid-1?rid=7"), ok=False)
        assert ping(check.http_url("ping/uuid-2/"), ok=False)
        assert [(hit.method, hit.path) for hit in check.hits] == [
            ("GET", "/ping/uuid-1?rid=7"),
            ("GET", "/ping/uuid-1/fail?rid=7"),
            ("GET", "/ping/uuid-2/fail"),
        ]


@pytest.mark.parametrize(
    ("url", "failed"),
    [
        ("https://hc-ping.com/abc", "https://hc-ping.com/abc/fail"),
        ("https://hc-ping.com/abc/?create=1", "https://hc-ping.com/abc/fail?create=1"),
        ("http://127.0.0.1:8000/ping/key/slug", "http://127.0.0.1:8000/ping/key/slug/fail"),
    ],
)
def test_the_fail_url_appends_to_the_path_and_keeps_the_query(url: str, failed: str) -> None:
    assert fail_url(url) == failed


def test_a_ping_that_fails_is_false_once_and_names_no_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An error status, a closed port: False after one request each (never retried),
    and the log line has the status or the error's class, not the URL."""
    caplog.set_level(logging.DEBUG, logger="garmin2strava")
    with JsonCatcher() as check:
        check.status = 500
        assert not ping(check.http_url("ping/key-secret-1"), ok=True)
        assert check.refused == 1
    assert not ping("http://127.0.0.1:1/ping/key-secret-2", ok=False)
    lines = [(r.getMessage(), vars(r)) for r in caplog.records]
    assert [message for message, _ in lines] == ["heartbeat.failed", "heartbeat.failed"]
    assert "key-secret" not in repr(lines)


def test_a_server_that_answers_after_30_s_costs_the_timeout() -> None:
    with JsonCatcher(delay_s=30) as slow:
        started = time.monotonic()
        assert not ping(slow.http_url("ping/x"), ok=True, timeout_s=1)
        assert time.monotonic() - started < 4
