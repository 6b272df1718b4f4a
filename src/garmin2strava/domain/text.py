"""Text that arrives from outside (activity names, descriptions): what we send on, and
what we print."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_DESCRIPTION_CHARS", "MAX_NAME_CHARS", "clean_description", "clean_name", "shown"]

# Strava does not document a limit for an activity's name; its own site cuts titles
# long before this. 255 characters keeps every real title and bounds a hostile one.
MAX_NAME_CHARS = 255
MAX_DESCRIPTION_CHARS = 10_000

_LINE_BREAKS = re.compile(r"\r\n|[\r\n\u0085\u2028\u2029]")
_SPACES = re.compile(r"[ \t\u00a0]+")
# Bidirectional overrides and isolates can make a terminal show text in another
# order than it is stored; zero-width joiners (emoji sequences) are kept.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def _is_surrogate(ch: str) -> bool:
    return 0xD800 <= ord(ch) <= 0xDFFF  # noqa: PLR2004  the surrogate block


def _keep(ch: str) -> str:
    if _is_surrogate(ch):
        return "\ufffd"  # a lone surrogate (JSON "\ud800") cannot be encoded anywhere
    if ch in _BIDI or unicodedata.category(ch) == "Cc":
        return ""  # C0, DEL and C1 controls: NUL, ESC, BEL, CSI ...
    return ch


def _strip_controls(text: str) -> str:
    return "".join(_keep(ch) for ch in text)


def clean_name(raw: object, *, limit: int = MAX_NAME_CHARS) -> str:
    """One line of printable text, at most `limit` characters: line breaks and tabs
    become spaces, control characters go, lone surrogates become U+FFFD."""
    if not isinstance(raw, str):
        return ""
    one_line = _LINE_BREAKS.sub(" ", raw.replace("\t", " "))
    text = _SPACES.sub(" ", _strip_controls(one_line)).strip()
    return text[:limit].rstrip()


def clean_description(raw: object, *, limit: int = MAX_DESCRIPTION_CHARS) -> str:
    """Like clean_name, but line breaks are kept (as "\\n")."""
    if not isinstance(raw, str):
        return ""
    lines = _LINE_BREAKS.sub("\n", raw.replace("\t", " ")).split("\n")
    kept = "\n".join(_SPACES.sub(" ", _strip_controls(line)).strip() for line in lines)
    return kept.strip()[:limit].rstrip()


def shown(text: str) -> str:
    """`text` safe for a terminal: controls and lone surrogates as visible escapes
    (`\\x1b`, `\\ud800`), everything else as is."""
    out: list[str] = []
    for ch in text:
        if _is_surrogate(ch) or ch in _BIDI or unicodedata.category(ch) == "Cc":
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)
