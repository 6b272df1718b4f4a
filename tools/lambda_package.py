"""Build the Lambda zips byte-identical each time: the code package (the garmin2strava
source tree only) and the layer (the tree `make layer` installed the dependencies into).

Run by `make lambda-package` (and so by `make tf-plan`) and `make layer`; terraform takes
each zip's path and its hash (terraform/lambda.tf).

    python tools/lambda_package.py [--source src] [--output build/lambda-package.zip]
    python tools/lambda_package.py --tree build/lambda-layer/python --output build/lambda-layer.zip

Deterministic so that unchanged sources give an unchanged hash, and terraform plans no
update of the four functions or the layer: entries in sorted order, one fixed timestamp,
fixed permissions, and nothing from the machine (no bytecode, no directory entries).
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

PACKAGE = "garmin2strava"
# The earliest time a zip entry can hold; any fixed value would do.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# -rw-r--r-- regular file: Lambda only reads the code (and maps the layer's shared
# libraries, which needs no execute bit), whatever the checkout's or the install's modes.
FILE_MODE = 0o100644
_UNIX = 3
# Bytecode is written by whichever interpreter last ran the sources; Lambda compiles its own.
_SKIPPED_DIRECTORIES = {"__pycache__"}
_SKIPPED_SUFFIXES = {".pyc", ".pyo"}


def tree_files(root: Path, top: Path) -> list[Path]:
    """Every file under `top` but bytecode, sorted by its path in the zip (relative to
    `root`, which holds `top`)."""
    files = [
        path
        for path in top.rglob("*")
        if path.is_file()
        and not _SKIPPED_DIRECTORIES.intersection(path.relative_to(top).parts)
        and path.suffix not in _SKIPPED_SUFFIXES
    ]
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def package_files(source: Path) -> list[Path]:
    """Every file of the garmin2strava tree under `source`, sorted by its path in the zip."""
    root = source / PACKAGE
    if not (root / "__init__.py").is_file():
        raise SystemExit(f"error: {root} is not the garmin2strava package")
    return tree_files(source, root)


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = _UNIX
    info.external_attr = FILE_MODE << 16
    return info


def write_zip(root: Path, files: list[Path], output: Path) -> int:
    """Write `files` (under `root`, named relative to it, in the order given) to `output`,
    replaced whole, never half-written; the entry count."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for path in files:
            archive.writestr(_entry(path.relative_to(root).as_posix()), path.read_bytes())
    partial.replace(output)
    return len(files)


def build(source: Path, output: Path) -> int:
    """The code package: garmin2strava/ under `source`; the entry count."""
    return write_zip(source, package_files(source), output)


def build_tree(top: Path, output: Path) -> int:
    """Any tree (the layer's python/): its files, named from `top`'s own name down (as
    python/...); the entry count."""
    if not top.is_dir():
        raise SystemExit(f"error: {top} is not a directory")
    root = top.resolve().parent
    return write_zip(root, tree_files(root, top.resolve()), output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a Lambda zip, byte-identical each time.")
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--source", type=Path, default=Path("src"), help="directory holding garmin2strava/"
    )
    what.add_argument(
        "--tree", type=Path, help="zip this directory instead (entries named from its own name)"
    )
    parser.add_argument("--output", type=Path, default=Path("build/lambda-package.zip"))
    args = parser.parse_args(argv)
    if args.tree is not None:
        count = build_tree(args.tree, args.output)
    else:
        count = build(args.source, args.output)
    sys.stdout.write(f"built {args.output} ({count} files)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
