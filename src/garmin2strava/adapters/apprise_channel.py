"""Notifications through Apprise (README "Being told"): e-mail, ntfy, Telegram, a JSON
webhook and about a hundred more services, each named by one URL.

Apprise is imported only inside `send` and `check_urls`: the import costs about 0.2 s,
which every command and Lambda cold start would otherwise pay.

The URLs are secrets (bot tokens, passwords, webhook keys, ntfy topics): what leaves
this module names one only as `redact_url` shows it, and Apprise's own log lines (which
quote URLs, partly masked) never reach our handlers.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from apprise import AppriseResult

__all__ = ["NOTIFY_TIMEOUT_S", "AppriseChannel", "channel_for", "check_urls", "redact_url"]

log = logging.getLogger(__name__)

# What one attempt may take, every destination at once: a sync cycle waits this long at
# most for a channel that does not answer.
NOTIFY_TIMEOUT_S = 10.0

TEST_TITLE = "[garmin2strava] test"
TEST_BODY = (
    "A test notification from garmin2strava: this destination works. "
    'Notifications come when something needs you (README "Being told").'
)
_DEBUG_HINT = "Apprise's own command shows why: apprise -vv -b test 'URL'"
# A host name worth showing: labels of letters, digits and dashes ending in a
# top-level domain of letters. The "host" of many Apprise URLs is a token instead
# (tgram://BOT_TOKEN/..., ntfy://TOPIC, slack://T/B/C), which this never matches.
_PUBLIC_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}")


@dataclass(frozen=True, slots=True)
class _Verdict:
    ok: bool
    why: str = ""


class AppriseChannel:
    """ports.NotifyChannel over Apprise URLs.

    A message is told once one URL took it: the owner has it, and the telling's record
    (services/notify.py) must say so, or its clearing would never be sent and every
    restart would send it again. A URL that refused is logged (`notify.channel_failed`)
    for `notify test` to find; it is not sent the message again.
    """

    def __init__(self, urls: Sequence[str], *, timeout_s: float = NOTIFY_TIMEOUT_S) -> None:
        self._urls = tuple(urls)
        self._timeout_s = timeout_s

    def send(self, title: str, body: str, notify_type: str) -> bool:
        verdicts = _deliver(list(self._urls), (title, body, notify_type), self._timeout_s)
        for url, verdict in zip(self._urls, verdicts, strict=True):
            if not verdict.ok:
                log.warning(
                    "notify.channel_failed", extra={"url": redact_url(url), "why": verdict.why}
                )
        return any(verdict.ok for verdict in verdicts)


def channel_for(urls: Sequence[str]) -> AppriseChannel | None:
    """The channel of G2S_NOTIFY_URLS (`settings.notify_url_list`); None when there
    is none (notify.tell then tracks the conditions without sending)."""
    return AppriseChannel(urls) if urls else None


def check_urls(
    urls: Sequence[str], *, timeout_s: float = NOTIFY_TIMEOUT_S
) -> list[tuple[str, bool, str]]:
    """One test notification per URL: (the URL redacted, delivered, why not)."""
    verdicts = _deliver(list(urls), (TEST_TITLE, TEST_BODY, "info"), timeout_s)
    return [(redact_url(url), v.ok, v.why) for url, v in zip(urls, verdicts, strict=True)]


def redact_url(url: str) -> str:
    """`scheme://host/...`: the host only when it is a server's name or address (never a
    user, a password, a path or a query; never a token standing where a host goes)."""
    scheme, found, rest = url.partition("://")
    if not found or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return "?://..."  # what stands before :// may be anything, a token too
    shown = scheme.lower()
    try:
        parts = urlsplit(f"x://{rest}")
        host, port = parts.hostname or "", parts.port
    except ValueError:  # a port that is not a number, a broken IPv6 literal
        return f"{shown}://..."
    if not _is_server(host):
        return f"{shown}://..."
    where = f"[{host}]" if ":" in host else host
    return f"{shown}://{where}{f':{port}' if port else ''}/..."


def _is_server(host: str) -> bool:
    if host == "localhost" or _PUBLIC_HOST.fullmatch(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _deliver(
    urls: Sequence[str], message: tuple[str, str, str], timeout_s: float
) -> list[_Verdict]:
    """Send `message` (title, body, type) to every URL at once, within `timeout_s`:
    each URL's verdict. Never raises."""
    if not urls:
        return []
    try:
        return _deliver_with_apprise(urls, message, timeout_s)
    except Exception as exc:  # noqa: BLE001 (a notification never fails its caller)
        log.warning("notify.apprise_failed", extra={"error": type(exc).__name__})
        return [_Verdict(ok=False, why=f"Apprise failed ({type(exc).__name__})")] * len(urls)


def _deliver_with_apprise(
    urls: Sequence[str], message: tuple[str, str, str], timeout_s: float
) -> list[_Verdict]:
    _keep_apprise_logs_out()
    import apprise

    asset = apprise.AppriseAsset(
        app_id="garmin2strava",
        app_desc="garmin2strava",
        # Nothing on disk (a Lambda's file system is read-only); URLs masked in what
        # Apprise keeps of its own logs.
        storage_mode="memory",
        secure_logging=True,
        service_timeout=timeout_s,
    )
    sender = apprise.Apprise(asset=asset)
    verdicts: dict[int, _Verdict] = {}
    for position, url in enumerate(urls):
        plugin = apprise.Apprise.instantiate(url, asset=asset, tag=_tag(position))
        if plugin is None:
            verdicts[position] = _Verdict(
                ok=False, why="Apprise cannot read this URL (unknown scheme or missing parts)"
            )
            continue
        # The socket gives up too (Apprise's defaults: 4 s, 15 s for SMTP), so no
        # thread outlives the attempt by long, nor keeps a command from exiting.
        plugin.socket_connect_timeout = min(plugin.socket_connect_timeout, timeout_s)
        plugin.socket_read_timeout = min(plugin.socket_read_timeout, timeout_s)
        sender.add(plugin)
    if len(sender):
        title, body, notify_type = message
        result = sender.notify(
            body=body,
            title=title,
            notify_type=notify_type,
            body_format=apprise.NotifyFormat.TEXT,
            timeout=timeout_s,
        )
        verdicts |= _read_result(result, timeout_s)
    return [verdicts.get(i, _Verdict(ok=False, why="not sent")) for i in range(len(urls))]


def _read_result(result: AppriseResult, timeout_s: float) -> dict[int, _Verdict]:
    from apprise import AppriseResultStatus

    verdicts: dict[int, _Verdict] = {}
    for service in result:
        position = next((_position(tag) for tag in service.tag if _position(tag) is not None), None)
        if position is None:
            continue
        if service.status == AppriseResultStatus.SUCCESS:
            verdicts[position] = _Verdict(ok=True)
        elif service.status == AppriseResultStatus.TIMEOUT:
            verdicts[position] = _Verdict(ok=False, why=f"no answer within {timeout_s:g} s")
        else:
            verdicts[position] = _Verdict(ok=False, why=f"refused or unreachable; {_DEBUG_HINT}")
    return verdicts


def _tag(position: int) -> str:
    return f"g2s-url-{position}"


def _position(tag: str) -> int | None:
    prefix = _tag(0)[:-1]
    return int(tag.removeprefix(prefix)) if tag.startswith(prefix) else None


def _keep_apprise_logs_out() -> None:
    """Apprise's log lines name URLs (masked, not always enough: a host can be a
    token): none reaches our handlers, nor Python's last-resort stderr handler."""
    library = logging.getLogger("apprise")
    if library.propagate:
        library.propagate = False
        library.addHandler(logging.NullHandler())
