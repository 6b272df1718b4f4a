"""Encrypted token items in the store's DynamoDB table: one Binary attribute
`ciphertext` (TokenCipher, context f"{PK}/{SK}") and a Number `version` for
compare-and-swap, which a deletion tombstone keeps."""

from __future__ import annotations

from typing import Any

from garmin2strava.adapters.store.dynamodb_access import TableAccess
from garmin2strava.adapters.store.dynamodb_items import key
from garmin2strava.ports import TokenCipher

__all__ = ["SecretItems"]


class SecretItems:
    def __init__(self, table: TableAccess, cipher: TokenCipher) -> None:
        self._table = table
        self._cipher = cipher

    def read(self, pk: str, sk: str) -> tuple[bytes, int] | None:
        item = self._table.get(pk, sk, ["ciphertext", "version"])
        if item is None or "ciphertext" not in item:  # nothing, or a deletion tombstone
            return None
        plaintext = self._cipher.decrypt(item["ciphertext"], context=f"{pk}/{sk}")
        return plaintext, int(item["version"])

    def replace(
        self, pk: str, sk: str, plaintext: bytes, expected_version: int | None
    ) -> int | None:
        """Returns the new version, or None when another writer changed the item first.

        Versions keep growing across deletions (the tombstone keeps the counter), so a
        writer holding a version from before a delete can never win afterwards.
        """
        sealed = self._cipher.encrypt(plaintext, context=f"{pk}/{sk}")
        values: dict[str, Any] = {":sealed": {"B": sealed}, ":zero": {"N": "0"}, ":one": {"N": "1"}}
        # Compare-and-swap: write only over the version the caller read (or, with None,
        # over nothing or a tombstone), so two refreshes racing never lose the newer
        # rotated token.
        if expected_version is None:
            condition = "attribute_not_exists(ciphertext)"
        else:
            condition = "attribute_exists(ciphertext) AND #version = :expected"
            values[":expected"] = {"N": str(expected_version)}
        answer = self._table.call_if(
            "update_item",
            Key=key(pk, sk),
            UpdateExpression=(
                "SET ciphertext = :sealed, #version = if_not_exists(#version, :zero) + :one "
                "REMOVE deleted"
            ),
            ConditionExpression=condition,
            ExpressionAttributeNames={"#version": "version"},
            ExpressionAttributeValues=values,
            ReturnValues="UPDATED_NEW",
        )
        return None if answer is None else int(answer["Attributes"]["version"]["N"])

    def delete(self, pk: str, sk: str) -> None:
        """Forget the secret, leaving a tombstone that keeps the version counter."""
        self._table.call_if(
            "update_item",
            Key=key(pk, sk),
            UpdateExpression="SET deleted = :true, #version = #version + :one REMOVE ciphertext",
            # Only an existing item becomes a tombstone; nothing stored stays nothing.
            ConditionExpression="attribute_exists(PK)",
            ExpressionAttributeNames={"#version": "version"},
            ExpressionAttributeValues={":true": {"BOOL": True}, ":one": {"N": "1"}},
        )
