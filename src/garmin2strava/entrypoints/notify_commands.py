"""`notify test`: whether each notification URL works (README "Being told").

cli.py imports this module for every invocation, so its top level stays light (click
and the standard library); Apprise is imported when the test sends.
"""

from __future__ import annotations

import click

from garmin2strava.entrypoints.cli_common import load
from garmin2strava.errors import ConfigError

__all__ = ["notify"]


@click.group()
def notify() -> None:
    """Notifications: where they go (G2S_NOTIFY_URLS)."""


@notify.command("test")
def notify_test() -> int:
    """Send one test notification to each URL of G2S_NOTIFY_URLS; say which took it.

    One request per URL to its service (e-mail, ntfy, ...), none to Garmin or Strava.
    Each URL is shown by its scheme and server only: the rest may be a secret. Exit 1
    when a URL failed (Apprise's own `apprise -vv` says why), 2 when none is set.
    """
    from garmin2strava.adapters.apprise_channel import check_urls

    urls = load().notify_url_list
    if not urls:
        msg = "setting G2S_NOTIFY_URLS: not set; nothing to test"
        raise ConfigError(msg)
    verdicts = check_urls(urls)
    for position, (shown, ok, why) in enumerate(verdicts, 1):
        print(f"{position}. {shown}: {'ok' if ok else f'failed ({why})'}")
    return 0 if all(ok for _, ok, _ in verdicts) else 1
