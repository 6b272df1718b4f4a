"""Which uploads are kept out of followers' feeds: the `G2S_HIDE_FROM_HOME` rules. Pure.

A comma-separated list; any rule that holds hides the activity (Strava's
`hide_from_home`): `indoor` (uploaded with the trainer flag), `type:<garmin type key>`,
`under:<n>km`, `under:<n>min`. Empty (the default) hides nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from garmin2strava.domain.activity_types import normalize_type_key
from garmin2strava.domain.models import GarminActivity

__all__ = ["HideRule", "hiding_rule", "parse_hide_rules"]

_UNDER = re.compile(r"under:([0-9]+(?:\.[0-9]+)?)(km|min)")
_TYPE_KEY = re.compile(r"[a-z0-9_]{1,64}")
_RULE_FORMS = "indoor, type:<garmin type key>, under:<n>km or under:<n>min"


@dataclass(frozen=True, slots=True)
class HideRule:
    text: str  # as written, normalized: what history says hid an activity
    kind: str  # "indoor", "type", "km", "min"
    type_key: str = ""
    limit: float = 0.0

    def holds(self, activity: GarminActivity) -> bool:
        match self.kind:
            case "indoor":
                return activity.indoor
            case "type":
                return activity.type_key == self.type_key
            case "km":
                return activity.distance_m is not None and activity.distance_m < self.limit * 1000
            case _:
                # 0: an entry retried after scrolling out of the listing, whose time
                # the ledger does not keep; unknown is not short.
                return 0 < activity.elapsed_seconds < self.limit * 60


def _rule(text: str) -> HideRule:
    if text == "indoor":
        return HideRule(text, "indoor")
    if text.startswith("type:"):
        key = normalize_type_key(text.removeprefix("type:"))
        if not _TYPE_KEY.fullmatch(key):
            msg = f"rule {text!r}: the type key must be Garmin's, like type:treadmill_running"
            raise ValueError(msg)
        return HideRule(f"type:{key}", "type", type_key=key)
    under = _UNDER.fullmatch(text)
    if under is None:
        msg = f"rule {text!r} is none of: {_RULE_FORMS}"
        raise ValueError(msg)
    limit, unit = float(under.group(1)), under.group(2)
    if not 0 < limit <= 100_000:  # noqa: PLR2004 - a plausible bound, not a setting
        msg = f"rule {text!r}: the limit must be above 0 and at most 100000"
        raise ValueError(msg)
    return HideRule(text, unit, limit=limit)


def parse_hide_rules(text: str) -> tuple[HideRule, ...]:
    """The rules of a `G2S_HIDE_FROM_HOME` value; ValueError with one line naming the
    rule at fault."""
    rules: list[HideRule] = []
    for raw in text.split(","):
        cleaned = raw.strip().lower()
        if cleaned:
            rules.append(_rule(cleaned))
    return tuple(dict.fromkeys(rules))


def hiding_rule(rules: Sequence[HideRule], activity: GarminActivity) -> str:
    """The first rule that hides `activity` ("" when none does)."""
    return next((rule.text for rule in rules if rule.holds(activity)), "")
