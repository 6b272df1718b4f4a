"""What the command modules share: the date parameter, the common options, and the
settings and app every command builds first.

Imported for every invocation (`--help` too), so the top level is click and the
standard library only; settings, stores and client libraries load when a command runs.
Every command reads its settings with `load_settings()` (pydantic-settings), which
gives the one error line of a wrong setting.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any, TypeVar

import click

from garmin2strava.logs import configure_logging

if TYPE_CHECKING:
    from garmin2strava.bootstrap import App
    from garmin2strava.services.sync import CycleReport
    from garmin2strava.settings import Settings

__all__ = ["ISO_DATE", "format_report", "json_option", "load", "load_app", "user_option"]

F = TypeVar("F", bound=Callable[..., Any])


class IsoDate(click.ParamType[datetime, Any]):
    """YYYY-MM-DD, as midnight UTC."""

    name = "YYYY-MM-DD"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return datetime.combine(date.fromisoformat(str(value)), time.min, tzinfo=UTC)
        except ValueError:
            self.fail(f"not a date (YYYY-MM-DD): {value!r}", param, ctx)


ISO_DATE = IsoDate()


def user_option(default: str = "default: G2S_USER_ID") -> Callable[[F], F]:
    """`--user USER_ID`: which account (None: the command's default, said in `default`)."""
    return click.option("--user", metavar="USER_ID", default=None, help=default)


def json_option(what: str = "JSON instead of text") -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=what)


def load() -> Settings:
    """The settings (a bad one raises ConfigError: one line, exit 2), logging set up."""
    from garmin2strava.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def load_app(settings: Settings) -> App:
    """The app on the configured store, with the single-user account created on first
    use (no request: see services.accounts)."""
    from garmin2strava.bootstrap import bootstrap
    from garmin2strava.services.accounts import ensure_settings_account

    app = bootstrap(settings)
    ensure_settings_account(app.store, settings, app.clock)
    return app


def format_report(report: CycleReport, *, dry_run: bool = False) -> str:
    lines = [f"account {report.user_id}:"]
    if report.skipped_reason:
        lines.append(f"  skipped: {report.skipped_reason}")
    if report.error:
        lines.append(f"  error: {report.error}")
    for outcome, garmin_id, detail in report.actions:
        label = "would upload" if outcome == "would_upload" else outcome
        lines.append(f"  {label:<12} garmin {garmin_id}  {detail}".rstrip())
    if report.deferred_until and not report.error:
        lines.append(f"  Strava budget spent: the rest waits until {report.deferred_until}")
    if len(lines) == 1:
        lines.append("  nothing to do" + (" (dry run)" if dry_run else ""))
    return "\n".join(lines)
