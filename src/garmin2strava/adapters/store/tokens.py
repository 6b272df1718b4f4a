"""The token items of the Store port, shared by both stores: each store supplies only
how an encrypted item is read and conditionally replaced (`_read_secret`,
`_replace_secret`); what goes into the item is decided here, once."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod

from garmin2strava.adapters.store import codec
from garmin2strava.domain.models import GarminTokens, StravaTokens

__all__ = ["TokenItems"]


class TokenItems(ABC):
    @abstractmethod
    def _read_secret(self, pk: str, sk: str) -> tuple[bytes, int] | None:
        """The decrypted plaintext and its version, or None (nothing, or a tombstone)."""

    @abstractmethod
    def _replace_secret(
        self, pk: str, sk: str, plaintext: bytes, expected_version: int | None
    ) -> int | None:
        """Encrypt and write only over `expected_version`; the new version, or None."""

    def get_strava_tokens(self, user_id: str) -> StravaTokens | None:
        found = self._read_secret(codec.user_pk(user_id), codec.STRAVA_TOKEN_SK)
        if found is None:
            return None
        plaintext, version = found
        return codec.strava_tokens_from_plain(json.loads(plaintext), version=version)

    def replace_strava_tokens(
        self, user_id: str, new: StravaTokens, *, expected_version: int | None
    ) -> StravaTokens | None:
        plain = codec.strava_tokens_to_plain(new)
        plaintext = json.dumps(plain, separators=(",", ":"), sort_keys=True).encode()
        version = self._replace_secret(
            codec.user_pk(user_id), codec.STRAVA_TOKEN_SK, plaintext, expected_version
        )
        return None if version is None else codec.strava_tokens_from_plain(plain, version=version)

    def get_garmin_tokens(self, user_id: str) -> GarminTokens | None:
        found = self._read_secret(codec.user_pk(user_id), codec.GARMIN_TOKEN_SK)
        if found is None:
            return None
        plaintext, version = found
        return GarminTokens(blob=plaintext.decode(), version=version)

    def replace_garmin_tokens(
        self, user_id: str, blob: str, *, expected_version: int | None
    ) -> GarminTokens | None:
        version = self._replace_secret(
            codec.user_pk(user_id), codec.GARMIN_TOKEN_SK, blob.encode(), expected_version
        )
        return None if version is None else GarminTokens(blob=blob, version=version)
