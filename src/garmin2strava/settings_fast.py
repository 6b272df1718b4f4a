"""A standard-library reader of `settings.Settings`, for a fast start.

It reads what pydantic-settings reads (os.environ, then `./.env` under it, names in any
case) and converts only what it can be sure of: decimal ASCII numbers within the
bounds, a choice spelled exactly, text, paths, secrets, the comma lists, the field's
own checks. It is sound when it accepts: when it returns Settings, pydantic would
accept the same input and give equal Settings. On anything else (a value out of
bounds, text it does not parse, an empty value, a check refusing, two names differing
only by case) it returns None and the caller asks pydantic, which gives the value or
the error line. So every error still comes from pydantic.
"""

from __future__ import annotations

import os
import re
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from garmin2strava.settings import Check, Ge, Le, Pattern, Secret, Settings, Split, env_name

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from dataclasses import Field

__all__ = ["read_fast"]

_DECIMAL = re.compile(r"[0-9]{1,30}(\.[0-9]{1,30})?")
_NONE = type(None)
_UNSET = object()


class _Unsure(Exception):
    """Not sure that pydantic reads this the same way."""


def read_fast(*, env_file: str | Path | None = ".env") -> Settings | None:
    """Settings of the environment and `env_file` (None: none) when sure, else None."""
    names = {name.lower() for spec in fields(Settings) for name in (spec.name, env_name(spec.name))}
    try:
        environment = _pick(os.environ, names)
        dotenv = _read_dotenv(env_file, names)
        values = {
            spec.name: _convert(spec, text)
            for spec in fields(Settings)
            if (text := _text(spec.name, environment, dotenv)) is not _UNSET
        }
    except _Unsure:
        return None
    return Settings(**values)


def _text(name: str, environment: dict[str, str | None], dotenv: dict[str, str | None]) -> Any:
    """The field's text: the environment's, else the .env's, else _UNSET."""
    key = env_name(name).lower()
    # pydantic-settings also takes the field's own name (populate_by_name); which one
    # wins beside the environment name is its business.
    if name != key and (name in environment or name in dotenv):
        raise _Unsure
    if key in environment:
        return environment[key]
    return dotenv.get(key, _UNSET)


def _pick(variables: Mapping[str, str | None], names: set[str]) -> dict[str, str | None]:
    """The variables named in `names` (lower case) under their lower-case name."""
    picked: dict[str, str | None] = {}
    for name, value in variables.items():
        lower = name.lower()
        if lower in names:
            if lower in picked:
                raise _Unsure  # G2S_LOOKBACK and g2s_lookback: pydantic keeps one of them
            picked[lower] = value
    return picked


def _read_dotenv(env_file: str | Path | None, names: set[str]) -> dict[str, str | None]:
    if env_file is None:
        return {}
    path = Path(env_file).expanduser()
    if path.is_file():
        # What pydantic-settings reads the file with; imported only when there is one.
        from dotenv import dotenv_values  # noqa: PLC0415 (only with a .env)

        try:
            return _pick(dotenv_values(path, encoding="utf-8"), names)
        except (OSError, UnicodeError):
            raise _Unsure from None
    if path.is_fifo():
        raise _Unsure  # pydantic reads a pipe too; reading it here would drain it
    return {}


def _convert(spec: Field[Any], text: str | None) -> Any:
    """The field's value from its text, as pydantic would give it, or _Unsure."""
    if not text or not _utf8(text):
        raise _Unsure
    base, *metadata = typing.get_args(spec.type)
    kind = _without_none(base)
    split = next((item for item in metadata if isinstance(item, Split)), None)
    value = _checked(split.parse, text) if split is not None else _parse(kind, text)
    for item in metadata:
        if isinstance(item, Ge) and not value >= item.ge:
            raise _Unsure
        if isinstance(item, Le) and not value <= item.le:
            raise _Unsure
        if isinstance(item, Pattern) and not _matches(item.regex, text):
            raise _Unsure
        if isinstance(item, Check):
            value = _checked(item.check, value)
    return Secret(value) if kind is Secret else value


def _parse(kind: Any, text: str) -> Any:
    """Text as pydantic would convert it to `kind`, where that is plain; else _Unsure."""
    if kind is int and text.isascii() and text.isdecimal() and len(text) <= 30:  # noqa: PLR2004 (beyond every bound)
        return int(text)
    if kind is float and _DECIMAL.fullmatch(text):
        return float(text)
    if typing.get_origin(kind) is Literal and text in typing.get_args(kind):
        return text
    if kind in {str, Secret}:
        return text
    if kind is Path:
        return Path(text)
    raise _Unsure


def _checked(rule: Callable[[Any], Any], value: Any) -> Any:
    """The rule's result; a refusal (ValueError) is pydantic's to word."""
    try:
        return rule(value)
    except ValueError:
        raise _Unsure from None


def _without_none(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType):
        (kind,) = (arg for arg in typing.get_args(annotation) if arg is not _NONE)
        return kind
    return annotation


def _utf8(text: str) -> bool:
    """False for text with lone surrogates (undecodable bytes in the environment),
    which pydantic refuses."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _matches(regex: str, text: str) -> bool:
    """Python's `re` agrees with pydantic's regex engine on ASCII text without a line
    break (`$` before a final newline, Unicode classes: they differ there)."""
    return text.isascii() and "\n" not in text and "\r" not in text and bool(re.search(regex, text))
