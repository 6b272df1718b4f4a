"""The one place that builds adapters from settings. Nothing connects at import time:
imports of the heavy client libraries happen inside the builders."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from garmin2strava.domain.strava_urls import REAL_STRAVA_URLS, StravaUrls
from garmin2strava.errors import ConfigError
from garmin2strava.ports import (
    ActivityFiles,
    GarminPort,
    Store,
    StravaPort,
    StravaRequestPolicy,
    TokenCipher,
)
from garmin2strava.settings import Settings

if TYPE_CHECKING:
    from pathlib import Path

    from garmin2strava.domain.models import PreparedFile
    from garmin2strava.services.strava_access import StravaAccess
    from garmin2strava.services.sync import SyncConfig, SyncDeps

__all__ = ["App", "bootstrap", "build_cipher", "build_store", "build_strava", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(tz=UTC)


def build_cipher(settings: Settings) -> TokenCipher:
    if settings.kms_key_id:
        from garmin2strava.adapters.kms import KmsCipher

        return KmsCipher(settings.kms_key_id)
    from garmin2strava.adapters.crypto import (
        AesGcmCipher,
        load_or_create_key_file,
        parse_token_key,
    )

    if settings.token_key is not None:
        key = parse_token_key(settings.token_key.get_secret_value())
    elif settings.store == "sqlite":
        # No key given: keep one beside the database (mode 0600). Set G2S_TOKEN_KEY to
        # keep the key away from the data it protects.
        key = load_or_create_key_file(settings.db_path.with_name("token.key"))
    else:
        raise ConfigError("setting G2S_TOKEN_KEY (or G2S_KMS_KEY_ID) is required with DynamoDB")
    return AesGcmCipher(key)


def build_store(settings: Settings, cipher: TokenCipher | None = None) -> Store:
    cipher = cipher or build_cipher(settings)
    if settings.store == "dynamodb":
        from garmin2strava.adapters.store.dynamodb import DynamoDBStore

        return DynamoDBStore(settings.dynamodb_table, cipher)
    from garmin2strava.adapters.store.sqlite import SqliteStore

    return SqliteStore(settings.db_path, cipher)


def build_strava(
    store: Store,
    user_id: str,
    *,
    client_id: int,
    client_secret: str,
    where: StravaUrls | str = REAL_STRAVA_URLS,
    clock: Callable[[], datetime] | None = None,
    audit_retention_days: int = 7,
    background: bool = False,
    rotation_grace_s: float = 2.0,
) -> StravaAccess:
    """One account's Strava: the thin client (adapters.strava: HTTP, its tokens in
    `store`) inside the policy (services.strava_access: the rate budget, the
    application's access, the audit), each given only the parts of `store` it uses."""
    from garmin2strava.adapters.strava import StravaClient
    from garmin2strava.services.strava_access import StravaAccess

    clock = clock or utc_now

    def client_for(policy: StravaRequestPolicy) -> StravaClient:
        return StravaClient(
            store,
            user_id,
            client_id=client_id,
            client_secret=client_secret,
            policy=policy,
            where=where,
            clock=clock,
            rotation_grace_s=rotation_grace_s,
        )

    return StravaAccess(
        client_for=client_for,
        app_state=store,
        leases=store,
        audit=store,
        accounts=store,
        clock=clock,
        audit_retention_days=audit_retention_days,
        background=background,
    )


@dataclass(slots=True)
class App:
    """Everything an entrypoint needs, built once."""

    settings: Settings
    store: Store
    files: ActivityFiles
    clock: Callable[[], datetime] = utc_now
    sleep: Callable[[float], None] = time.sleep
    stop: threading.Event = field(default_factory=threading.Event)
    poll_delay_s: float | None = None  # None: settings.upload_poll_delay_seconds
    garmin_retry_min_wait_s: float = 1.0
    # Does the webhook settle uploads now? The daemon's `run` sets it (MirrorRuntime);
    # elsewhere (plain `sync`, Lambda) every upload is polled.
    webhook_settles: Callable[[], bool] = field(default=lambda: False)
    # Is the mirror kept live by the webhook? (`run` with it: webhook_settles; the
    # Lambda functions: a subscription exists.) Garmin renames are carried only then.
    mirror_live: Callable[[], bool] = field(default=lambda: False)

    def garmin_for(self, user_id: str) -> GarminPort:
        from garmin2strava.adapters.garmin import GarminConnectAdapter

        return GarminConnectAdapter(
            self.store,
            user_id,
            base_url=self.settings.garmin_base_url,
            di_token_url=self.settings.garmin_di_token_url,
            proxy=self.settings.garmin_proxy_url,
            retry_min_wait=self.garmin_retry_min_wait_s,
            audit_retention_days=self.settings.audit_retention_days,
        )

    def strava_for(self, user_id: str) -> StravaPort:
        return self._strava(user_id, background=False)

    def strava_background_for(self, user_id: str) -> StravaAccess:
        """Strava access whose every read waits while the uploader's reserve is reached
        (reconciliation, stream backfills): see domain.streams.BACKGROUND_RESERVE."""
        return self._strava(user_id, background=True)

    def _strava(self, user_id: str, *, background: bool) -> StravaAccess:
        settings = self.settings
        if settings.strava_client_id is None or settings.strava_client_secret is None:
            raise ConfigError("settings STRAVA_CLIENT_ID and STRAVA_CLIENT_SECRET are required")
        return build_strava(
            self.store,
            user_id,
            client_id=settings.strava_client_id,
            client_secret=settings.strava_client_secret.get_secret_value(),
            where=settings.strava_urls,
            clock=self.clock,
            audit_retention_days=settings.audit_retention_days,
            background=background,
        )

    def sync_config(self) -> SyncConfig:
        # The uploader loads with the first cycle: the local commands never run one.
        from garmin2strava.domain.feed_rules import parse_hide_rules
        from garmin2strava.domain.gear import parse_gear_map
        from garmin2strava.services.strava_finish import FinishConfig
        from garmin2strava.services.sync import SyncConfig

        s = self.settings
        return SyncConfig(
            wants_type=s.wants_type,
            lookback=s.lookback,
            max_attempts=s.max_attempts,
            match_tolerance_s=s.match_tolerance_seconds,
            garmin_backoff_s=s.garmin_backoff_seconds,
            upload_description=s.upload_description,
            poll_delay_s=self.settings.upload_poll_delay_seconds
            if self.poll_delay_s is None
            else self.poll_delay_s,
            audit_retention_days=s.audit_retention_days,
            finish=FinishConfig(
                gear_map=parse_gear_map(s.gear_map),
                hide_rules=parse_hide_rules(s.hide_from_home),
                carry_names=s.carry_garmin_edits,
                max_attempts=s.max_attempts,
            ),
        )

    def sync_deps(self, user_id: str) -> SyncDeps:
        from garmin2strava.services.sync import SyncDeps

        return SyncDeps(
            store=self.store,
            garmin=partial(self.garmin_for, user_id),
            strava=partial(self.strava_for, user_id),
            files=self.files,
            config=self.sync_config(),
            clock=self.clock,
            sleep=self.sleep,
            stop=self.stop,
            webhook_settles=self.webhook_settles,
            mirror_live=self.mirror_live,
        )


class _OriginalFilesOnUse:
    """OriginalFiles, imported by the first download: the file checks (our FIT reader,
    fitparse) cost nothing to the commands that never upload (`status`, the lists)."""

    def prepare(self, original_zip: bytes, workdir: Path) -> PreparedFile:
        from garmin2strava.adapters.fitfile import OriginalFiles

        return OriginalFiles().prepare(original_zip, workdir)


def bootstrap(settings: Settings, *, store: Store | None = None) -> App:
    return App(settings=settings, store=store or build_store(settings), files=_OriginalFilesOnUse())
