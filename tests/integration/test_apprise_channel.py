"""The real Apprise delivering to loopback destinations: a JSON webhook (json://) and a
real SMTP server (aiosmtpd, mailto://). What a channel reports, how long a destination
that does not answer costs, and that no URL reaches a log line."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time

import pytest

from g2s_harness.notify_catchers import JsonCatcher, SmtpCatcher
from garmin2strava.adapters.apprise_channel import AppriseChannel, check_urls, redact_url
from garmin2strava.logs import configure_logging

pytestmark = pytest.mark.integration

BODY = "Account: u1\nGarmin refuses the stored tokens.\nFix: garmin2strava garmin login --user u1"


def test_a_notification_reaches_a_json_webhook_and_a_mailbox() -> None:
    """One send, two URLs: the JSON body carries title, text and type; the mail
    (through SMTP AUTH, the password in the URL) carries title and text."""
    with JsonCatcher() as hook, SmtpCatcher(user="mailer", password="pw-0xfeed") as smtp:
        channel = AppriseChannel([hook.url(), smtp.url(to="owner@example.com")])
        assert channel.send("[garmin2strava] garmin.tokens_refused started", BODY, "failure")
        (posted,) = hook.bodies()
        (mail,) = smtp.mails
    assert posted["title"] == "[garmin2strava] garmin.tokens_refused started"
    assert posted["message"] == BODY
    assert posted["type"] == "failure"
    assert mail.subject == "[garmin2strava] garmin.tokens_refused started"
    assert mail.rcpt_tos == ("owner@example.com",)
    assert "garmin2strava garmin login --user u1" in mail.text
    assert "Account: u1" in mail.text


def test_a_message_one_destination_took_is_told() -> None:
    """One URL takes it, the other answers 503: the owner has it, so send is True (the
    record then says it was told, and its clearing will follow); the refusing URL is
    not sent it again."""
    with JsonCatcher() as good, JsonCatcher() as flaky:
        flaky.status = 503
        channel = AppriseChannel([good.url(), flaky.url()])
        assert channel.send("title", "body", "failure")
        assert (len(good.hits), flaky.refused) == (1, 1)
        flaky.status = 200
        assert channel.send("another", "body", "success")  # a new message: both
        assert (len(good.hits), len(flaky.hits)) == (2, 1)


def test_a_message_no_destination_took_is_owed() -> None:
    with JsonCatcher() as one, JsonCatcher() as two:
        one.status = two.status = 503
        channel = AppriseChannel([one.url(), two.url()])
        assert not channel.send("title", "body", "failure")
        assert (one.refused, two.refused) == (1, 1)
        one.status = 200
        assert channel.send("title", "body", "failure")  # the retry, a later cycle
        assert len(one.hits) == 1


def test_a_destination_that_answers_after_30_s_costs_the_timeout() -> None:
    """The catcher answers after 30 s; the send gives up at the channel's timeout."""
    with JsonCatcher(delay_s=30) as slow:
        channel = AppriseChannel([slow.url()], timeout_s=2)
        started = time.monotonic()
        assert not channel.send("title", "body", "failure")
        elapsed = time.monotonic() - started
    assert elapsed < 5


def test_check_urls_says_which_urls_work_with_each_redacted() -> None:
    """ok, an unknown scheme, a closed port: one verdict each, in order, URLs redacted."""
    with JsonCatcher() as hook:
        unreachable = "json://127.0.0.1:1/secret-path"
        verdicts = check_urls([hook.url("secret-path"), "nosuch://token-1234", unreachable])
        (test,) = hook.bodies()
    assert test["title"] == "[garmin2strava] test"
    assert [(url, ok) for url, ok, _ in verdicts] == [
        (f"json://127.0.0.1:{hook.port}/...", True),
        ("nosuch://...", False),
        ("json://127.0.0.1:1/...", False),
    ]
    assert "cannot read" in verdicts[1][2]
    assert "refused or unreachable" in verdicts[2][2]
    assert "secret" not in repr(verdicts)
    assert "token-1234" not in repr(verdicts)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("tgram://123456:AAE-bot-token/987654", "tgram://..."),
        ("ntfy://my-private-topic", "ntfy://..."),
        ("ntfys://ntfy.example.com/my-private-topic", "ntfys://ntfy.example.com/..."),
        ("mailto://me:app-password@gmail.com?to=a@b.org", "mailto://gmail.com/..."),
        ("json://127.0.0.1:8080/hook?token=x", "json://127.0.0.1:8080/..."),
        ("json://[::1]:9/x", "json://[::1]:9/..."),
        ("slack://TokenA/TokenB/TokenC/#general", "slack://..."),
        ("discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js", "discord://..."),
        ("json://host:notaport/x", "json://..."),
        ("no-scheme-token", "?://..."),
    ],
)
def test_a_url_is_shown_by_its_scheme_and_its_server_only(url: str, shown: str) -> None:
    """Never the user, password, path or query; a host only when it is a server's name
    or address, since many services put a token where the host goes."""
    assert redact_url(url) == shown


def test_no_url_reaches_a_log_line() -> None:
    """Apprise logs URLs (masked, not enough for tokens standing as hosts): with our
    logging at DEBUG, as G2S_LOG_LEVEL=DEBUG sets it up, nothing of a refused or an
    unreadable URL reaches a line; ours names each by its redacted form."""
    lines = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("DEBUG", "json", stream=lines)
    try:
        with JsonCatcher() as hook:
            hook.status = 500
            urls = [hook.url("path-secret-1"), "tgram://bot-secret-2/3", "json://127.0.0.1:1/p-3"]
            assert not AppriseChannel(urls, timeout_s=2).send("t", "b", "failure")
            check_urls(urls, timeout_s=2)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    text = lines.getvalue()
    assert '"event":"notify.channel_failed"' in text
    assert '"url":"tgram://..."' in text
    for secret in ("path-secret-1", "bot-secret-2", "p-3", "/3"):
        assert secret not in text
    assert '"logger":"apprise' not in text


def test_importing_the_channel_does_not_import_apprise() -> None:
    """Apprise costs 0.2 s to import: only a send or a check pays it."""
    code = (
        "import sys\n"
        "import garmin2strava.adapters.apprise_channel as c\n"
        "assert 'apprise' not in sys.modules\n"
        "c.check_urls(['nosuch://x'])\n"
        "assert 'apprise' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)  # noqa: S603 (our interpreter, fixed code)
