"""The two readers of one Settings declaration agree: the standard-library reader
(settings_fast) either gives up or returns what pydantic-settings returns, and it does
not give up on the plain values a user writes."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from garmin2strava.errors import ConfigError
from garmin2strava.settings import Ge, Le, Secret, Settings, env_name, load_settings, read_settings
from garmin2strava.settings_fast import read_fast

FIELDS = {spec.name: spec for spec in dataclasses.fields(Settings)}
# Every spelling pydantic-settings may take for a setting, in lower case.
NAMES = {n.lower() for name in FIELDS for n in (name, env_name(name))}
WEBHOOK_SECRET = "A" * 19 + "-_b0"


@dataclass(frozen=True)
class Case:
    """Environment variables and a .env text; `plain`: what a user ordinarily writes,
    which the fast reader must take itself."""

    label: str
    env: dict[str, str]
    dotenv: str | None = None
    plain: bool = False


def _kind(name: str) -> tuple[Any, list[Any]]:
    base, *metadata = typing.get_args(FIELDS[name].type)
    if isinstance(base, types.UnionType):
        (base,) = (arg for arg in typing.get_args(base) if arg is not type(None))
    return base, metadata


def _bounds(metadata: list[Any]) -> tuple[Any, Any]:
    low = next(m.ge for m in metadata if isinstance(m, Ge))
    high = next(m.le for m in metadata if isinstance(m, Le))
    return low, high


# (text, plain) of the URL secrets.
URL_TEXTS = {
    "notify_urls": [
        ("ntfy://alerts", True),
        ("json://127.0.0.1:9/h, mailto://u:p@x.org?to=a@b.org,c@d.org", True),
        *((text, False) for text in ("alerts", "ntfy://a, alerts", ",", "://x")),
    ],
    "heartbeat_url": [
        ("https://hc-ping.com/0f8a", True),
        ("http://127.0.0.1:8000/ping/x?create=1", True),
        *((text, False) for text in ("hc-ping.com/0f8a", "ftp://x.org/a", "https://")),
    ],
}
NOISE = ["", " ", "true", "inf", "nan", "-1", "1e3", "1_000", "٣", "x\udcff", "null"]


def _values(name: str, tmp: Path) -> Iterator[tuple[str, bool]]:  # noqa: C901, PLR0912 (one branch per kind)
    """(text, plain) for the field: ordinary values, their near misses, noise."""
    kind, metadata = _kind(name)
    for text in NOISE:
        yield text, False
    if kind is int:
        low, high = _bounds(metadata)
        default = FIELDS[name].default
        for number in {low, high, low + 1, high - 1} | ({default} if default else set()):
            yield str(number), True
        for number in (low - 1, high + 1, 10**40):
            yield str(number), False
        for text in (f" {low}", f"{low} ", f"+{low}", f"0{low}", f"{low}.0", f"{low}\n"):
            yield text, False
    elif kind is float:
        low, high = _bounds(metadata)
        for text in (str(low), str(high), "0.5", "1", f"{high:g}"):
            yield text, True
        for text in (f"{high + 1}", f"{high}.000001", ".5", "1.", " 1", "+1", "1e0", "0x1"):
            yield text, False
    elif typing.get_origin(kind) is Literal:
        for choice in typing.get_args(kind):
            yield choice, True
            yield choice.swapcase(), False
            yield choice.capitalize(), False
            yield f" {choice}", False
    elif name in {"http_host", "admin_host"}:
        for text in ("0.0.0.0", "::", "[::1]", "localhost", "Daemon-1.example.COM"):  # noqa: S104 (a value, not a bind)
            yield text, True
        for text in ("bad host", "127.0.0.1:8080", "-lead.example", "x" * 64, "ünï.example"):
            yield text, False
    elif name in {"strava_base_url", "garmin_base_url"}:
        for text in ("https://www.strava.com", "http://127.0.0.1:8123/", "https://example.com//"):
            yield text, True
        for text in ("http://example.com", "ftp://x", "https://", "www.strava.com"):
            yield text, False
    elif name == "user_id":
        for text in ("me", "a.b@c-d_e", "x" * 64):
            yield text, True
        for text in ("x" * 65, "a b", "me\n", "ü", "a/b"):
            yield text, False
    elif name in URL_TEXTS:
        yield from URL_TEXTS[name]
    elif name == "webhook_secret":
        yield WEBHOOK_SECRET, True
        yield WEBHOOK_SECRET[:19], False
        yield WEBHOOK_SECRET + "/", False
    elif name == "activity_types":
        for text in ("running", "Running, Cycling", "*", " running ,,trail_running"):
            yield text, True
        yield ",", False
    elif name == "mirror_streams":
        for text in ("time", "time, HeartRate,time", "latlng,altitude"):
            yield text, True
        yield "bogus", False
        yield ",", False
    elif name == "db_path":
        yield str(tmp / "g2s.sqlite3"), True
        yield "relative/g2s.sqlite3", True
        link = tmp / "link.sqlite3"
        if not link.is_symlink():
            link.symlink_to(tmp / "g2s.sqlite3")
        yield str(link), False
    elif kind in {str, Secret}:
        # GARMIN_TOKENS is token JSON: text for both readers, never decoded.
        for text in ("plain text", "s3cret/+=", "ünïcode", '{"di_token": "x", "n": [1]}'):
            yield text, True


def corpus(tmp: Path) -> Iterator[Case]:
    """Every field's values in the environment; a few through .env, in other cases."""
    yield Case("nothing set", {}, plain=True)
    for name in FIELDS:
        env = env_name(name)
        for text, plain in _values(name, tmp):
            yield Case(f"{env}={text!r}", {env: text}, plain=plain)
        sample, *others = [text for text, plain in _values(name, tmp) if plain]
        other = others[0] if others else sample + "x"
        yield Case(f"{env.lower()} (lower case)", {env.lower(): sample}, plain=True)
        yield Case(f"{env.title()} (mixed case)", {env.title(): sample}, plain=True)
        yield Case(f"{env} twice by case", {env: sample, env.lower(): other})
        yield Case(f"{name.upper()} (the field's name)", {name.upper(): sample})
        yield Case(f"{env} in .env only", {}, f"{env}={sample}\n", plain=True)
        yield Case(f"{env} in .env, lower case", {}, f"{env.lower()}='{sample}'\n", plain=True)
        yield Case(f"{env} in .env without a value", {}, f"{env}\n")
        yield Case(f"{env} in .env, bad", {}, f"{env}=٣\n")
        yield Case(f"{name} in .env (field name)", {}, f"{name}={sample}\n")
    yield Case(
        "the environment over .env",
        {"G2S_LOOKBACK": "7", "G2S_LOG_LEVEL": "DEBUG"},
        "G2S_LOOKBACK=9\nG2S_LOG_LEVEL=shout\nG2S_MAX_ATTEMPTS=3\n",
        plain=True,
    )
    yield Case("a bad .env line under a set one", {"G2S_LOOKBACK": "7"}, "G2S_LOOKBACK=0\n")
    yield Case(
        "a .env of other names", {}, "# comment\nOTHER=1\nexport G2S_LOOKBACK=4\n", plain=True
    )
    yield Case("a .env interpolating", {"BASE": "/srv"}, "G2S_DB_PATH=${BASE}/g2s.db\n", plain=True)


def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower() in NAMES:
            monkeypatch.delenv(name)


def test_the_fast_reader_agrees_with_pydantic_or_gives_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Over the corpus: fast is None or equal to pydantic's Settings; it is never None
    on a plain value; and both outcomes (fast taken, fallback) really occur."""
    monkeypatch.chdir(tmp_path)
    taken = fallback_accepted = fallback_refused = 0
    for case in corpus(tmp_path):
        _clean(monkeypatch)
        for name, value in case.env.items():
            monkeypatch.setenv(name, value)
        dotenv = tmp_path / ".env"
        dotenv.unlink(missing_ok=True)
        if case.dotenv is not None:
            dotenv.write_text(case.dotenv, encoding="utf-8")
        fast = read_fast()
        try:
            expected: Settings | str = load_settings()
        except ConfigError as exc:
            expected = str(exc)
        except UnicodeEncodeError as exc:  # pydantic's own crash on some undecodable bytes
            expected = repr(exc)
        if fast is not None:
            assert fast == expected, case
            taken += 1
        elif isinstance(expected, Settings):
            fallback_accepted += 1
        else:
            fallback_refused += 1
        if case.plain:
            assert isinstance(expected, Settings), case
            assert fast is not None, case
    assert taken > 100
    assert fallback_accepted > 10  # "+5", "05", lower-case keys of a .env...
    assert fallback_refused > 100


def test_a_wrong_setting_gives_pydantics_line_through_read_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """read_settings falls back to pydantic: the same one line as load_settings, and a
    value only pydantic takes ("+5") still reads."""
    monkeypatch.chdir(tmp_path)
    _clean(monkeypatch)
    monkeypatch.setenv("G2S_LOOKBACK", "0")
    with pytest.raises(ConfigError) as caught:
        read_settings()
    assert str(caught.value) == "setting G2S_LOOKBACK: Input should be greater than or equal to 1"
    monkeypatch.setenv("G2S_LOOKBACK", "+5")
    assert read_fast() is None
    assert read_settings().lookback == 5


def test_a_secret_is_masked_and_compared_by_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Neither repr nor str of the settings shows a secret; equal texts are equal."""
    monkeypatch.chdir(tmp_path)
    _clean(monkeypatch)
    monkeypatch.setenv("STRAVA_CLIENT_SECRET", "hunter2-the-secret")
    settings = read_settings()
    assert settings.strava_client_secret is not None
    assert settings.strava_client_secret.get_secret_value() == "hunter2-the-secret"
    assert "hunter2" not in repr(settings)
    assert str(settings.strava_client_secret) == "**********"
    assert settings.strava_client_secret == Secret("hunter2-the-secret")
    assert settings.strava_client_secret != Secret("other")
    assert settings.strava_client_secret != "hunter2-the-secret"
