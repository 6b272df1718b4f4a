"""The interfaces services depend on. Adapters implement them; tests may fake them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from garmin2strava.domain.gear import StravaGear
from garmin2strava.domain.idle import LedgerMark
from garmin2strava.domain.models import (
    Account,
    AuditEvent,
    GarminTokens,
    LedgerEntry,
    PreparedFile,
    StravaActivity,
    StravaTokens,
    UploadStatus,
    Workout,
)
from garmin2strava.domain.strava_finish import ActivityUpdate
from garmin2strava.domain.strava_urls import StravaUrls
from garmin2strava.domain.streams import ActivityStreams, PendingStreams
from garmin2strava.domain.webhook import DeadEvent, QueuedEvent, WebhookEvent

__all__ = [
    "AccessCheck",
    "Accounts",
    "ActivityFiles",
    "AppState",
    "AuditLog",
    "EventQueue",
    "EventSink",
    "GarminPort",
    "GarminTokenStore",
    "LedgerMarks",
    "NotifyChannel",
    "Store",
    "StoreView",
    "StravaActivityUpdates",
    "StravaApi",
    "StravaPort",
    "StravaReads",
    "StravaRequestPolicy",
    "StravaTokenStore",
    "StravaUploads",
    "StreamStore",
    "SyncLeases",
    "TokenCipher",
    "UploadLedger",
    "ViewReads",
    "WorkoutMirror",
    "WorkoutQueries",
]


class NotifyChannel(Protocol):
    """Where notifications go (Apprise URLs: e-mail, ntfy, a JSON webhook, ...)."""

    def send(self, title: str, body: str, notify_type: str) -> bool:
        """True when every destination took it. Bounded time; never raises."""
        ...


class TokenCipher(Protocol):
    """Encrypts tokens at rest (AES-256-GCM locally, KMS in AWS).

    `context` is bound as associated data (e.g. "USER#u1/TOKEN#STRAVA"), so a
    ciphertext copied to another item does not decrypt.
    """

    def encrypt(self, plaintext: bytes, *, context: str) -> bytes: ...
    def decrypt(self, ciphertext: bytes, *, context: str) -> bytes: ...


class Accounts(Protocol):
    """Accounts (`USER#{id}`/`ACCOUNT`) and the athlete links (`ATHLETE#{id}`/`USER`)."""

    def get_account(self, user_id: str) -> Account | None: ...
    def put_account(self, account: Account) -> None: ...
    def list_accounts(self) -> list[Account]: ...
    def delete_account(self, user_id: str) -> None:
        """Forget the account: its item and registry entry, its athlete link, its
        Garmin tokens (a tombstone keeps the version counter) and its lease. The
        caller deletes the Strava tokens and the mirror; ledger and audit stay."""
        ...

    def link_athlete(self, athlete_id: int, user_id: str) -> None: ...
    def user_for_athlete(self, athlete_id: int) -> str | None: ...
    def known_athletes(self) -> frozenset[int]:
        """Every athlete linked to an account, in one read: what the webhook receiver
        checks events against (services/mirror_athletes.py)."""
        ...


class StravaTokenStore(Protocol):
    """One account's Strava tokens, encrypted at rest."""

    def get_strava_tokens(self, user_id: str) -> StravaTokens | None: ...
    def replace_strava_tokens(
        self, user_id: str, new: StravaTokens, *, expected_version: int | None
    ) -> StravaTokens | None:
        """Write `new` only if the stored version is `expected_version` (None: no
        tokens stored yet). Returns the stored tokens with their new version, or None
        when another writer got there first."""
        ...

    def delete_strava_tokens(self, user_id: str) -> None: ...


class GarminTokenStore(Protocol):
    """One account's Garmin tokens, encrypted at rest."""

    def get_garmin_tokens(self, user_id: str) -> GarminTokens | None: ...
    def replace_garmin_tokens(
        self, user_id: str, blob: str, *, expected_version: int | None
    ) -> GarminTokens | None: ...


class UploadLedger(Protocol):
    """What became of each Garmin activity (`UPLOAD#GARMIN#{id}`)."""

    def get_uploads(self, user_id: str, garmin_ids: Sequence[int]) -> dict[int, LedgerEntry]: ...
    def put_upload(self, entry: LedgerEntry) -> None:
        """Write the entry; a `pending` one (the intent written before an upload) never
        replaces a settled entry: that raises StoreConflict and leaves the entry as is."""
        ...

    def list_uploads(self, user_id: str, *, limit: int = 1000) -> list[LedgerEntry]:
        """Newest first (by Garmin start time, then id)."""
        ...

    def list_unsettled_uploads(self, user_id: str) -> list[LedgerEntry]:
        """Entries that are pending, processing or failed (not settled)."""
        ...


class LedgerMarks(Protocol):
    """The idle fast path's mark per account (domain/idle.py): every ledger write
    raises its version first."""

    def ledger_mark(self, user_id: str) -> LedgerMark | None:
        """The mark; None where the store keeps none (the cycle reads the ledger)."""
        ...

    def mark_idle(self, user_id: str, mark: LedgerMark) -> bool:
        """Keep `mark`'s idle listing only if the version is still `mark.version`."""
        ...


@dataclass(frozen=True, slots=True)
class StoreView:
    """What an invocation reads once, at its start: the accounts and some
    application-state items (a key absent from the store maps to None)."""

    accounts: tuple[Account, ...]
    app_state: Mapping[str, dict[str, Any] | None]


class ViewReads(Protocol):
    def read_view(self, app_keys: Sequence[str]) -> StoreView:
        """The accounts and the app-state items `app_keys`. DynamoDB reads them, with
        each account's Garmin tokens and ledger mark, in one BatchGetItem (the next
        read of those is then answered from it once); SQLite reads them one by one."""
        ...


class SyncLeases(Protocol):
    """One runner per account at a time (`LEASE#SYNC`)."""

    def acquire_lease(self, user_id: str, owner: str, *, now: datetime, ttl_seconds: int) -> bool:
        """Take or renew the lease if it is free, expired, or already `owner`'s."""
        ...

    def release_lease(self, user_id: str, owner: str) -> None: ...


class AuditLog(Protocol):
    """Per-account audit events with a retention (`AUDIT#{iso}#{id}`, TTL)."""

    def add_audit(self, event: AuditEvent, *, retention_days: int = 7) -> None: ...
    def list_audit(
        self, user_id: str, *, limit: int = 100, since: datetime | None = None
    ) -> list[AuditEvent]:
        """Newest first, from `since` on (a key range); expired events are not returned."""
        ...


class WorkoutMirror(Protocol):
    """The mirror's writes (`WORKOUT#STRAVA#{id}`): newer wins; a deauthorization
    forgets the account's Strava data."""

    def upsert_workout(self, workout: Workout) -> bool:
        """Write unless the stored row has a newer `updated_at`. True when written."""
        ...

    def get_workout(self, user_id: str, activity_id: int) -> Workout | None: ...
    def forget_strava_data(self, user_id: str) -> int:
        """Delete the account's mirrored Strava activities (with their streams and
        pending marks) and its audit trail (what a deauthorization requires); the
        upload ledger, tokens and account stay. Returns the number of items deleted."""
        ...


class WorkoutQueries(Protocol):
    """Reading the mirror: by start time, a bounded list, or paged through."""

    def list_workouts(
        self, user_id: str, *, include_deleted: bool = False, limit: int = 3000
    ) -> list[Workout]: ...
    def workouts_starting_between(
        self, user_id: str, start: datetime, end: datetime
    ) -> list[Workout]: ...

    def iter_workouts(
        self,
        user_id: str,
        *,
        since: datetime | None = None,
        include_deleted: bool = False,
        page_size: int = 500,
    ) -> Iterator[Workout]:
        """Every workout starting at or after `since`, oldest first, read a page at a
        time: memory stays the same however long the mirror (exports)."""
        ...


class StreamStore(Protocol):
    """Activity streams (`STREAMS#STRAVA#{id}#{part}`; SQLite: its own tables)."""

    def put_streams(self, streams: ActivityStreams) -> None:
        """Keep an activity's streams (empty: Strava has none) and clear its pending mark."""
        ...

    def get_streams(self, user_id: str, activity_id: int) -> ActivityStreams | None:
        """None when never fetched (or a write was interrupted before it finished)."""
        ...

    def mark_streams_pending(self, user_id: str, activity_id: int) -> None:
        """Remember that this activity's streams are still to be fetched (a mark that
        exists keeps its failures and retry time; a fetched activity gets none)."""
        ...

    def mark_streams_failed(
        self, user_id: str, activity_id: int, *, failures: int, retry_at: datetime
    ) -> None:
        """Pending, with `failures` failed reads so far, not listed before `retry_at`
        (a fetched activity gets no mark)."""
        ...

    def get_pending_streams(self, user_id: str, activity_id: int) -> PendingStreams | None:
        """The activity's pending mark; None when it has none."""
        ...

    def list_pending_streams(
        self, user_id: str, *, limit: int = 100, due_at: datetime | None = None
    ) -> list[int]:
        """Activity ids marked pending, lowest first; with `due_at`, only those whose
        retry time is not after it."""
        ...


class AppState(Protocol):
    """Application-wide state (the Strava rate budget, backfill cursors, ...)."""

    def get_app_state(self, key: str) -> dict[str, Any] | None: ...
    def put_app_state(self, key: str, value: dict[str, Any]) -> None: ...


class Store(
    Accounts,
    StravaTokenStore,
    GarminTokenStore,
    UploadLedger,
    LedgerMarks,
    ViewReads,
    SyncLeases,
    AuditLog,
    WorkoutMirror,
    WorkoutQueries,
    StreamStore,
    AppState,
    Protocol,
):
    """Everything garmin2strava keeps, one item model (docs/architecture.md): what the
    store adapters implement and bootstrap wires. Services depend on the narrow ports.

    Conditional writes return False (or raise StoreConflict where stated) when they
    lose; they never overwrite newer data.
    """


class GarminPort(Protocol):
    """One Garmin Connect account. Never logs in; persists rotated tokens itself."""

    def list_activities(self, *, start: int, limit: int) -> list[dict[str, Any]]:
        """Raw activity-list records, newest first. One request."""
        ...

    def download_original(self, activity_id: int) -> bytes:
        """The ORIGINAL zip. Raises GarminNotFound for activities with no file."""
        ...

    def activity_gear(self, activity_id: int) -> Any:
        """Garmin's gear records for one activity, as Garmin sent them. One request."""
        ...


class StravaActivityUpdates(Protocol):
    """Finishing an upload on Strava: the athlete's gear (one read) and the one write
    that sets gear, feed muting and a name (`PUT /activities/{id}`)."""

    def athlete_gear(self) -> list[StravaGear]:
        """The athlete's shoes and bikes (GET /athlete): one read."""
        ...

    def update_activity(self, activity_id: int, update: ActivityUpdate) -> None:
        """One PUT /activities/{id} of the fields `update` sets: a write."""
        ...


class StravaUploads(StravaActivityUpdates, Protocol):
    """What the uploader asks of one Strava athlete's API: is it there, upload, status;
    and the PUT that finishes an upload.

    Every method raises RateLimited instead of sleeping when the budget is spent.
    """

    def list_activities(
        self, *, after: datetime, before: datetime, page: int = 1, per_page: int = 30
    ) -> list[StravaActivity]: ...

    def upload(
        self,
        path: Path,
        *,
        data_type: str,
        external_id: str,
        name: str,
        description: str | None,
        trainer: bool,
    ) -> UploadStatus: ...

    def get_upload(self, upload_id: int) -> UploadStatus: ...


class StravaReads(Protocol):
    """What the mirror reads of one Strava athlete's API, within the shared budget."""

    def get_activity(self, activity_id: int) -> dict[str, Any]:
        """The raw DetailedActivity JSON. Raises StravaNotFound."""
        ...

    def get_activity_streams(
        self, activity_id: int, types: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """One read: {type: {data, series_type, original_size, resolution}} for the types
        Strava has. Raises StravaNotFound (no streams, or no activity). A read that can
        wait: it leaves domain.streams.BACKGROUND_RESERVE of the budget to the uploader
        (RateLimited otherwise)."""
        ...


class StravaPort(StravaUploads, StravaReads, Protocol):
    """One Strava athlete's API, within the application's shared rate budget: what
    services.strava_access.StravaAccess implements (around the thin client of
    adapters.strava, StravaApi) and bootstrap wires."""


@runtime_checkable
class AccessCheck(Protocol):
    """A Strava client that can prove a revocation (a deauthorization event)."""

    def access_revoked(self) -> bool:
        """One token refresh: True when Strava refuses the athlete's refresh token (access
        revoked), False when it grants a new one (stored). Raises TransientError when
        Strava cannot answer, StravaAuthError when it refuses the application itself."""
        ...


class StravaRequestPolicy(Protocol):
    """What the thin Strava client asks before each API request (not the OAuth ones)
    and tells after its answer: the application's rate budget lives behind it
    (services.strava_access), and the audit of token refreshes."""

    def before_request(self, *, upload: bool, poll: bool, background: bool) -> None:
        """Raises RateLimited when the budget cannot take this request: an upload or a
        read; a poll (of an upload's status) may use the reads kept back for polls; a
        background read leaves domain.streams.BACKGROUND_RESERVE to the uploader."""
        ...

    def after_response(self, status: int, headers: Mapping[str, str]) -> None:
        """What the answer's rate-limit headers (and a 429) say of the budget."""
        ...

    def throttled_until(self) -> datetime:
        """After a 429 (recorded by after_response): until when nothing is sent."""
        ...

    def tokens_refreshed(self, tokens: StravaTokens) -> None:
        """A token refresh was granted and stored."""
        ...


class StravaApi(StravaPort, AccessCheck, Protocol):
    """One Strava athlete's API as the thin client (adapters.strava) speaks it: HTTP,
    tokens and errors, no policy. Raises StravaAppInactive when Strava answers
    "Application Status Inactive", RateLimited after a 429 or when its
    StravaRequestPolicy refuses a request."""

    @property
    def user_id(self) -> str: ...
    @property
    def urls(self) -> StravaUrls: ...
    def tokens_as_they_are(self) -> AbstractContextManager[None]:
        """Calls inside use a token that has not expired yet without refreshing it early."""
        ...

    def list_activity_rows(self, *, after: datetime, page: int, per_page: int) -> list[Any]:
        """One page of the activities starting after `after`, oldest first, as Strava's JSON."""
        ...

    def get_athlete_id(self) -> int: ...
    def revoke(self) -> bool:
        """Revoke the application's access (False: it was revoked already)."""
        ...


class ActivityFiles(Protocol):
    """Turns an ORIGINAL download into a checked file ready to upload."""

    def prepare(self, original_zip: bytes, workdir: Path) -> PreparedFile:
        """Extract safely into `workdir` and validate. Raises FileRejected."""
        ...


class EventSink(Protocol):
    """Where the webhook puts events: the producer half of a queue (SQS in AWS, whose
    consumer is Lambda's event source mapping)."""

    def enqueue(self, event: WebhookEvent, *, now: datetime) -> bool:
        """Durable when this returns. True when new, False for a redelivery."""
        ...


class EventQueue(Protocol):
    """Durable queue of Strava webhook events (SQLite in the container, SQS in AWS).

    An event is enqueued once per dedupe key, whatever the number of deliveries. A
    claim hides events for `visibility_seconds`; a worker that dies without settling
    them gives them back when that time is up.
    """

    def claim(
        self, *, now: datetime, limit: int = 50, visibility_seconds: float = 60.0
    ) -> list[list[QueuedEvent]]:
        """Up to `limit` groups; each group holds every ready event about one object
        (oldest first), and no other worker holds a claim on that object."""
        ...

    def complete(self, records: Sequence[QueuedEvent], *, now: datetime) -> None: ...
    def release(self, records: Sequence[QueuedEvent], *, available_at: datetime) -> None:
        """Put back without counting an attempt (e.g. the Strava budget is spent)."""
        ...

    def fail(self, records: Sequence[QueuedEvent], *, retry_at: datetime, error: str) -> None:
        """Count one failed attempt; ready again at `retry_at`."""
        ...

    def dead_letter(self, records: Sequence[QueuedEvent], *, now: datetime, error: str) -> None: ...

    def list_dead(self, *, limit: int = 100) -> list[DeadEvent]: ...
    def retry_dead(self, queue_id: int, *, now: datetime) -> bool:
        """Back into the queue with a fresh attempt count. False when not dead."""
        ...

    def depth(self) -> int:
        """Events waiting or claimed (not done, not dead)."""
        ...

    def oldest_age(self, *, now: datetime) -> float | None:
        """Seconds since the oldest waiting event was enqueued; None when empty."""
        ...
