"""The heartbeat (README "Being told"): after each sync cycle, one GET to
G2S_HEARTBEAT_URL, the healthchecks.io convention. An outside service that stops
hearing it knows the daemon is dead, the one thing the daemon cannot tell by itself.

The URL is a secret (its path is the check's key): it is never logged.
"""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

__all__ = ["HEARTBEAT_TIMEOUT_S", "fail_url", "ping"]

log = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT_S = 10.0
_READ_AT_MOST = 4096  # healthchecks answers "OK"; nothing of it is needed


def ping(url: str, *, ok: bool, timeout_s: float = HEARTBEAT_TIMEOUT_S) -> bool:
    """GET `url` (the cycle succeeded) or `url` with /fail appended to its path (it
    failed). True on a 2xx answer. Never retried (the next cycle pings again); never
    raises."""
    target = url if ok else fail_url(url)
    try:
        status = _get(target, timeout_s)
    except urllib.error.HTTPError as exc:
        log.warning("heartbeat.failed", extra={"status": exc.code, "ok": ok})
        return False
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # Refused, unreachable, timed out, a broken answer: the class only, as an
        # error's text may quote the URL.
        log.warning("heartbeat.failed", extra={"error": type(exc).__name__, "ok": ok})
        return False
    return 200 <= status < 300  # noqa: PLR2004 (2xx)


def _get(url: str, timeout_s: float) -> int:
    if urlsplit(url).scheme not in {"http", "https"}:
        raise ValueError("the heartbeat URL is not http(s)")
    request = urllib.request.Request(  # noqa: S310 (http(s) only: checked above)
        url, method="GET", headers={"User-Agent": "garmin2strava"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310 (as above)
        answer.read(_READ_AT_MOST)
        return int(answer.status)


def fail_url(url: str) -> str:
    """`url` with /fail appended to its path, its query kept (healthchecks' failure
    signal)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/fail"))
