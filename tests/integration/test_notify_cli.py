"""`garmin2strava notify test` through main(): one test notification per URL of
G2S_NOTIFY_URLS to loopback destinations, each reported ok or failed with the URL
redacted; exit 1 when one failed, 2 when the setting is missing or wrong."""

from __future__ import annotations

import pytest

from g2s_harness.cli import run_cli
from g2s_harness.notify_catchers import JsonCatcher, SmtpCatcher

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_cli_environment")]


def test_each_url_is_tested_and_reported_redacted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with JsonCatcher() as hook, SmtpCatcher(user="mailer", password="pw-0xfeed") as smtp:
        urls = [hook.url("hook-secret-1"), smtp.url(), "json://127.0.0.1:1/hook-secret-2"]
        monkeypatch.setenv("G2S_NOTIFY_URLS", ", ".join(urls))
        code, out, err = run_cli(capsys, "notify", "test")
        (posted,) = hook.bodies()
        (mail,) = smtp.mails
    assert code == 1
    assert out.splitlines() == [
        f"1. json://127.0.0.1:{hook.port}/...: ok",
        f"2. mailto://127.0.0.1:{smtp.port}/...: ok",
        (
            "3. json://127.0.0.1:1/...: failed (refused or unreachable; "
            "Apprise's own command shows why: apprise -vv -b test 'URL')"
        ),
    ]
    assert posted["title"] == mail.subject == "[garmin2strava] test"
    for secret in ("hook-secret", "pw-0xfeed", "mailer"):
        assert secret not in out + err


def test_every_url_working_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with JsonCatcher() as hook:
        monkeypatch.setenv("G2S_NOTIFY_URLS", hook.url())
        code, out, _err = run_cli(capsys, "notify", "test")
        assert len(hook.bodies()) == 1
    assert (code, out.strip()) == (0, f"1. json://127.0.0.1:{hook.port}/...: ok")


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (None, "garmin2strava: setting G2S_NOTIFY_URLS: not set; nothing to test"),
        (
            "ntfy://ok hunter2-topic",
            (
                "garmin2strava: setting G2S_NOTIFY_URLS: URL 2 of 2 has no scheme:// "
                "(an Apprise URL such as ntfy://, mailto:// or json://)"
            ),
        ),
    ],
)
def test_a_missing_or_wrong_setting_is_one_line_and_exit_2(
    value: str | None,
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if value is not None:
        monkeypatch.setenv("G2S_NOTIFY_URLS", value)
    code, out, err = run_cli(capsys, "notify", "test")
    assert (code, out, err.strip()) == (2, "", line)
