"""The emulators in garmin2strava.sandbox never import the production code they judge."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import g2s_harness
import garmin2strava.sandbox

SANDBOX = Path(garmin2strava.sandbox.__file__).resolve().parent
# The harness, not an emulator: it builds the daemon's settings for the emulators (and
# `garmin2strava demo` needs it), so it imports the daemon's code. No emulator may
# import it. The test-only harnesses (its server process, its Lambda handlers on moto)
# live outside the shipped package, in g2s_harness.
HARNESSES = frozenset({"scenario"})


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (functions, TYPE_CHECKING blocks)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the sandbox package
                found.add(f"garmin2strava.sandbox.{node.module or ''}".rstrip("."))
            elif node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _emulators() -> list[Path]:
    return sorted(p for p in SANDBOX.glob("*.py") if p.stem not in HARNESSES)


def test_harness_list_names_existing_modules() -> None:
    """Every module exempted as a harness exists, so the exemption cannot go stale."""
    assert {p.stem for p in SANDBOX.glob("*.py")} >= HARNESSES


def test_emulators_import_only_the_sandbox_from_garmin2strava() -> None:
    """No emulator module imports garmin2strava outside garmin2strava.sandbox, nor a harness."""
    offending = {}
    for path in _emulators():
        own = {m for m in _imports(path) if m == "garmin2strava" or m.startswith("garmin2strava.")}
        bad = {
            m
            for m in own
            if not m.startswith("garmin2strava.sandbox")
            or m.removeprefix("garmin2strava.sandbox.").split(".")[0] in HARNESSES
        }
        if bad:
            offending[path.name] = sorted(bad)
    assert len(_emulators()) >= 8  # garmin, strava*, fitgen, activity_files, __init__
    assert offending == {}


def test_the_import_check_sees_a_production_import(tmp_path: Path) -> None:
    """The parser catches imports hidden in a function or behind TYPE_CHECKING."""
    module = tmp_path / "sneaky.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from garmin2strava.domain import models\n"
        "def f():\n    import garmin2strava.adapters.fitfile\n",
        encoding="utf-8",
    )
    assert {"garmin2strava.domain", "garmin2strava.adapters.fitfile"} <= _imports(module)


def test_the_wheel_ships_no_test_harness() -> None:
    """The harnesses only tests and benchmarks use are outside the package the wheel
    ships ([tool.hatch.build.targets.wheel] packages), not in garmin2strava.sandbox."""
    pyproject = tomllib.loads((SANDBOX.parents[2] / "pyproject.toml").read_text("utf-8"))
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [
        "src/garmin2strava"
    ]
    harnesses = Path(g2s_harness.__file__).resolve().parent
    assert {p.stem for p in harnesses.glob("*.py")} >= {"serving", "aws_lambda"}
    assert not harnesses.is_relative_to(SANDBOX.parent)
    assert not {p.stem for p in SANDBOX.glob("*.py")} & {"serving", "aws_lambda"}
