"""The pydantic-settings model of `settings.Settings`, built from its declaration: the
authoritative reader of the settings (every value, every error line).

Imported only when settings are validated this way (settings.load_settings): importing
pydantic-settings costs more than the whole start of a local command.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import cache
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    create_model,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from garmin2strava.errors import ConfigError
from garmin2strava.settings import Check, Env, Ge, Le, Pattern, Secret, Settings, Split, env_name

if typing.TYPE_CHECKING:
    from pathlib import Path

__all__ = ["settings_model", "validate"]


class _Base(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
    )


def _pydantic_type(annotation: Any) -> Any:
    """The annotation with Secret spelled as pydantic's SecretStr."""
    if annotation is Secret:
        return SecretStr
    if isinstance(annotation, types.UnionType):
        return typing.Union[tuple(_pydantic_type(arg) for arg in typing.get_args(annotation))]  # noqa: UP007 (built from a tuple)
    return annotation


def _after(check: Check) -> AfterValidator:
    def run(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, SecretStr):
            return SecretStr(check.check(value.get_secret_value()))
        return check.check(value)

    return AfterValidator(run)


def _definition(spec: dataclasses.Field[Any]) -> tuple[Any, Any]:
    """(annotation, FieldInfo) of one dataclass field, for create_model."""
    base, *metadata = typing.get_args(spec.type)
    extras: list[Any] = []
    constraints: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, Ge):
            constraints["ge"] = item.ge
        elif isinstance(item, Le):
            constraints["le"] = item.le
        elif isinstance(item, Pattern):
            constraints["pattern"] = item.regex
        elif isinstance(item, Split):
            extras += [NoDecode, BeforeValidator(item.parse)]
        elif isinstance(item, Check):
            extras.append(_after(item))
        elif not isinstance(item, Env):
            msg = f"settings field {spec.name}: unknown metadata {item!r}"
            raise TypeError(msg)
    annotation = _pydantic_type(base)
    if extras:
        annotation = Annotated[annotation, *extras]
    if spec.default_factory is not dataclasses.MISSING:
        default: dict[str, Any] = {"default_factory": spec.default_factory}
    else:
        default = {"default": spec.default}
    info = Field(validation_alias=AliasChoices(env_name(spec.name)), **default, **constraints)
    return annotation, info


@cache
def settings_model() -> type[BaseSettings]:
    """The BaseSettings model with Settings' fields, names, defaults and rules."""
    definitions: dict[str, Any] = {
        spec.name: _definition(spec) for spec in dataclasses.fields(Settings)
    }
    model: type[BaseSettings] = create_model("Settings", __base__=_Base, **definitions)
    return model


def _plain(value: Any) -> Any:
    return Secret(value.get_secret_value()) if isinstance(value, SecretStr) else value


def validate(*, env_file: str | Path | None, overrides: dict[str, Any]) -> Settings:
    """Settings of the environment, `env_file` and `overrides`, validated; on error a
    ConfigError of one line naming the setting."""
    try:
        model = settings_model()(_env_file=env_file, **overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        known = {spec.name for spec in dataclasses.fields(Settings)}
        text = str(first["msg"]).removeprefix("Value error, ")
        msg = f"setting {env_name(name) if name in known else name}: {text}"
        raise ConfigError(msg) from None
    values = {spec.name: _plain(getattr(model, spec.name)) for spec in dataclasses.fields(Settings)}
    return Settings(**values)
