"""terraform, run in the temporary copy with the generated CLI configuration; and what
`make tf-check` does where terraform is missing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "AWSLAMBDARIC_HOW",
    "TERRAFORM_HOW",
    "Terraform",
    "managed_addresses",
    "missing_tool",
    "planned_creates",
    "slowest_resources",
]

REQUIRE_TOOLS_ENV = "G2S_REQUIRE_TOOLS"
TERRAFORM_HOW = (
    "install Terraform >= 1.6 (https://developer.hashicorp.com/terraform/install) "
    "or point TERRAFORM= at one"
)
AWSLAMBDARIC_HOW = (
    "awslambdaric, a dev dependency `make setup` installs on Linux only (it ships no "
    "wheel for other systems)"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SUMMARY = re.compile(
    r"^(Plan:|Apply complete|Destroy complete|Success!|Terraform has been successfully)"
)
# An apply on moto takes a minute or two; a hung provider ends the run instead of CI.
STEP_TIMEOUT_S = 900


class StepFailed(Exception):
    """A terraform command exited non-zero."""


def required(env: Mapping[str, str]) -> bool:
    """Tools are required under `make test` (G2S_REQUIRE_TOOLS) and in CI (CI=true):
    tests/conftest.py's rule, here for a make target."""
    return bool(env.get(REQUIRE_TOOLS_ENV)) or env.get("CI") == "true"


def missing_tool(name: str, how: str, env: Mapping[str, str]) -> tuple[int, str]:
    """The exit code and the line to print when the tool `name` is absent: a failure
    where tools are required, a visible skip elsewhere; `how` says how to install it."""
    if required(env):
        why = f"{REQUIRE_TOOLS_ENV}=1" if env.get(REQUIRE_TOOLS_ENV) else "CI=true"
        return 1, f"error: make tf-check: '{name}' not found ({why} requires it); {how}"
    return 0, (
        f"make tf-check: SKIPPED, '{name}' not found; {how} "
        f"(under CI=true or {REQUIRE_TOOLS_ENV}=1 this fails)"
    )


# The machine's AWS settings, and what would change the run's variables, state or
# arguments behind its back (TF_LOG and the plugin cache still pass).
_NOT_PASSED = ("AWS_", "TF_VAR_", "TF_CLI_ARGS", "TF_DATA_DIR", "TF_WORKSPACE", "TF_CLI_CONFIG")


def terraform_environment(base: Mapping[str, str], cli_config: Path) -> dict[str, str]:
    """terraform's environment: the generated CLI config, no prompt, no call home (the
    version check), and no AWS profile or credential of the machine's user."""
    env = {k: v for k, v in base.items() if not k.startswith(_NOT_PASSED)}
    env.update(
        {
            "TF_CLI_CONFIG_FILE": str(cli_config),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_CONFIG_FILE": os.devnull,
        }
    )
    return env


@dataclass
class Terraform:
    """terraform in `directory`, with `env`; each step printed with its wall time."""

    binary: str
    directory: Path
    env: dict[str, str]

    def run(self, *args: str, quiet: bool = False) -> str:
        started = time.monotonic()
        print(f"--- terraform {' '.join(args)}", flush=True)
        result = subprocess.run(  # noqa: S603 - terraform, our arguments
            [self.binary, f"-chdir={self.directory}", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            sys.stdout.write(_ANSI.sub("", result.stdout[-6000:]))
            sys.stderr.write(_ANSI.sub("", result.stderr[-6000:]))
            raise StepFailed(f"terraform {args[0]} exited {result.returncode}")
        if not quiet:
            sys.stdout.write(_tail(result.stdout))
            slowest = slowest_resources(_ANSI.sub("", result.stdout))
            if slowest:
                print("    slowest: " + ", ".join(f"{name} {s} s" for name, s in slowest))
        print(f"    ({time.monotonic() - started:.1f} s)", flush=True)
        return result.stdout

    def json(self, command: str, *args: str) -> Any:
        return json.loads(self.run(command, "-json", *args, quiet=True))


def _tail(text: str, lines: int = 2) -> str:
    """A step's summary lines (or its last lines), indented, without colours."""
    plain = [line.strip() for line in _ANSI.sub("", text).splitlines() if line.strip()]
    kept = [line for line in plain if _SUMMARY.match(line)] or plain[-lines:]
    return "".join(f"    {line}\n" for line in kept)


_COMPLETE = re.compile(
    r"^(\S+): (?:Creation|Destruction|Modifications) complete after (?:(\d+)m)?(\d+)s"
)


def slowest_resources(output: str, count: int = 3) -> list[tuple[str, int]]:
    """The resources an apply or destroy waited longest for, with their seconds."""
    seconds = [
        (match[1], int(match[2] or 0) * 60 + int(match[3]))
        for match in (_COMPLETE.match(line.strip()) for line in output.splitlines())
        if match
    ]
    return sorted(seconds, key=lambda item: -item[1])[:count]


def planned_creates(plan: Mapping[str, Any]) -> int:
    """Managed resources `terraform show -json PLAN` would create."""
    return sum(
        1
        for change in plan.get("resource_changes", [])
        if change.get("mode") == "managed" and "create" in change["change"]["actions"]
    )


def managed_addresses(state_list: str) -> list[str]:
    """The managed resources of `terraform state list` (data sources left out)."""
    return [
        line
        for line in state_list.splitlines()
        if line.strip() and not line.startswith("data.") and ".data." not in line
    ]
