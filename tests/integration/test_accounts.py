"""Single-user accounts from settings, and their link to the Strava athlete."""

from __future__ import annotations

from pathlib import Path

import pytest

from g2s_harness.sandbox_settings import sandbox_settings
from g2s_sandbox.scenario import running_sandboxes
from garmin2strava.bootstrap import bootstrap
from garmin2strava.errors import ConfigError
from garmin2strava.services.accounts import ensure_athlete_linked, ensure_settings_account
from garmin2strava.services.strava_access import StravaAccess


def test_settings_account_created_without_any_request(tmp_path: Path) -> None:
    """Creating the account from settings stores both tokens and costs no request."""
    with running_sandboxes() as pair:
        app = bootstrap(sandbox_settings(pair, tmp_path / "s.sqlite3"))
        account = ensure_settings_account(app.store, app.settings, app.clock)
        assert account is not None
        assert account.user_id == "demo"
        assert app.store.get_garmin_tokens("demo") is not None
        assert app.store.get_strava_tokens("demo") is not None
        assert pair.strava_counts() == {"reads": 0, "uploads": 0, "writes": 0}
        assert sum(pair.strava.requests.values()) == 0
        assert pair.garmin_count() == 0


def test_missing_single_user_setting_is_named(tmp_path: Path) -> None:
    """A partial single-user configuration names the first missing setting."""
    with running_sandboxes() as pair:
        settings = sandbox_settings(pair, tmp_path / "s.sqlite3", strava_client_secret=None)
        app = bootstrap(settings)
        with pytest.raises(ConfigError, match="STRAVA_CLIENT_SECRET"):
            ensure_settings_account(app.store, settings, app.clock)


def test_athlete_linked_once_for_one_read(tmp_path: Path) -> None:
    """The settings account gets its athlete link (for webhooks) with one Strava read,
    and a second call makes no request."""
    with running_sandboxes() as pair:
        app = bootstrap(sandbox_settings(pair, tmp_path / "s.sqlite3"))
        ensure_settings_account(app.store, app.settings, app.clock)
        strava = app.strava_for("demo")
        assert isinstance(strava, StravaAccess)
        assert ensure_athlete_linked(app.store, "demo", strava.get_athlete_id) == pair.athlete_id
        assert app.store.user_for_athlete(pair.athlete_id) == "demo"
        account = app.store.get_account("demo")
        assert account is not None
        assert account.strava_athlete_id == pair.athlete_id
        reads = pair.strava_counts()["reads"]
        assert pair.strava.requests["athlete"] == 1
        ensure_athlete_linked(app.store, "demo", strava.get_athlete_id)
        assert pair.strava_counts()["reads"] == reads
