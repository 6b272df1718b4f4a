"""The AWS deployment (terraform/) and the container image (Dockerfile), checked offline.

No terraform binary or Docker engine is needed: the .tf files are parsed with
python-hcl2, checkov and hadolint run from the project's virtual environment, and the
image's install step is replayed with the repository's pinned uv into a fresh venv.

python-hcl2 has two output dialects (the `python-hcl2` distribution quotes strings and
marks blocks with `__is_block__`; checkov's `bc-python-hcl2`, which installs the same
`hcl2` module, wraps every attribute in a list). The helpers below read both.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hcl2.api import load as load_hcl

from garmin2strava.domain.streams import STREAM_TYPES
from garmin2strava.entrypoints.aws_lambda.emf import NAMESPACE

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TF_DIR = REPO / "terraform"
BIN = Path(sys.executable).parent

# THE CONTRACT between terraform/iam.tf and the Lambda handlers: every IAM action each
# function's role is granted, no more and no less. When a handler starts calling a new
# AWS API, add the action here and in terraform/iam.tf together.
# - logs/xray: writing its own log group and X-Ray segments (tracing is on);
# - dynamodb: the Store adapter (TransactWriteItems is authorised per PutItem inside);
# - kms Encrypt/Decrypt: token encryption (G2S_KMS_KEY_ID); Decrypt also opens the
#   KMS-encrypted environment, SecureStrings and queue messages;
# - kms GenerateDataKey: sending to the KMS-encrypted queue;
# - ssm GetParameter: the SecureStrings named by G2S_SSM_* (see SSM_PARAMETERS);
# - sqs SendMessage: the webhook enqueues; the worker re-queues an event deferred by
#   the Strava budget as a new, delayed message (never to the DLQ: SEND_QUEUES).
_LOGS_AND_TRACES = {
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}
_TABLE = {
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:BatchGetItem",
}
ALLOWED_ACTIONS: dict[str, set[str]] = {
    "sync": _LOGS_AND_TRACES | _TABLE | {"kms:Encrypt", "kms:Decrypt", "ssm:GetParameter"},
    "webhook": _LOGS_AND_TRACES
    | {"sqs:SendMessage", "kms:GenerateDataKey", "kms:Decrypt", "ssm:GetParameter"}
    | {"dynamodb:GetItem"},  # the stored subscription id, APP items only
    "worker": _LOGS_AND_TRACES
    | _TABLE
    | {"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "ssm:GetParameter"}
    | {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:SendMessage"},
    # Reads Strava (reconciliation, streams) and writes the mirror; of the queues, only
    # the DLQ's depth (the mirror.dead_letters condition).
    "maintenance": _LOGS_AND_TRACES
    | _TABLE
    | {"kms:Encrypt", "kms:Decrypt", "ssm:GetParameter", "sqs:GetQueueAttributes"},
}
# The only queue each function may read the attributes of.
ATTRIBUTE_QUEUES = {
    "worker": {"${aws_sqs_queue.events.arn}"},
    "maintenance": {"${aws_sqs_queue.events_dlq.arn}"},
}
# The only queue each function may send to: the events queue, never the DLQ.
SEND_QUEUES = {
    "webhook": "${aws_sqs_queue.events.arn}",
    "worker": "${aws_sqs_queue.events.arn}",
}
# The only SSM parameters each function may read (by the locals that name them): its
# one secret, where it tells the conditions (README "Being told"), and for the sync
# G2S_GARMIN_PROXY (README "Garmin through a proxy").
SSM_PARAMETERS = {
    "sync": {
        "ssm_strava_client_secret",
        "ssm_notify_urls",
        "ssm_heartbeat_url",
        "ssm_garmin_proxy",
    },
    "webhook": {"ssm_strava_verify_token"},
    "worker": {"ssm_strava_client_secret"},
    "maintenance": {"ssm_strava_client_secret", "ssm_notify_urls"},
}
# Settings in a function's own environment that are not parameter names.
PLAIN_FUNCTION_SETTINGS = {"maintenance": {"G2S_DEAD_LETTER_QUEUE_URL"}}
HANDLERS = {
    "sync": "garmin2strava.entrypoints.aws_lambda.sync_handler.handler",
    "webhook": "garmin2strava.entrypoints.aws_lambda.webhook_handler.handler",
    "worker": "garmin2strava.entrypoints.aws_lambda.worker_handler.handler",
    "maintenance": "garmin2strava.entrypoints.aws_lambda.maintenance_handler.handler",
}
SECRET_SETTINGS = {
    "STRAVA_CLIENT_SECRET",
    "STRAVA_VERIFY_TOKEN",
    "STRAVA_REFRESH_TOKEN",
    "GARMIN_TOKENS",
    "GARMIN_PASSWORD",
    "G2S_TOKEN_KEY",
}

_NAME = r"[A-Za-z_][\w-]*"
_REFERENCE_PATTERNS = {
    "resource": re.compile(rf"(?<![\w.])(aws_[a-z0-9_]+)\.({_NAME})"),
    "data": re.compile(rf"(?<![\w.])data\.([a-z0-9_]+)\.({_NAME})"),
    "var": re.compile(rf"(?<![\w.])var\.({_NAME})"),
    "local": re.compile(rf"(?<![\w.])local\.({_NAME})"),
    "module": re.compile(rf"(?<![\w.])module\.({_NAME})"),
}
_LOCAL_ONLY = re.compile(rf"^\$\{{local\.({_NAME})\}}$")


# -- reading python-hcl2 output in either dialect -----------------------------------------


def _run(
    argv: list[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a repository tool with its output captured as text."""
    # Fixed argument lists naming tools inside this repository; no shell involved.
    return subprocess.run(  # noqa: S603
        argv, cwd=cwd, env=env, timeout=timeout, check=check, capture_output=True, text=True
    )


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _strings(node: Any) -> Iterator[str]:
    """Every string leaf under `node`, unquoted (keys are not leaves)."""
    if isinstance(node, str):
        yield _unquote(node)
    elif isinstance(node, dict):
        for key, value in node.items():
            if not key.startswith("__"):
                yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _value(node: Any) -> Any:
    """An attribute's value, without bc-python-hcl2's one-element list wrapper."""
    while isinstance(node, list) and len(node) == 1:
        node = node[0]
    return node


def _text(node: Any) -> str:
    """A string attribute's value, unquoted, in either dialect."""
    return _unquote(str(_value(node)))


def _blocks(node: Any) -> list[dict[str, Any]]:
    """A nested block's instances (`statement { }` may appear once or many times)."""
    if isinstance(node, dict):
        return [node]
    if isinstance(node, list):
        return [block for item in node for block in _blocks(item)]
    return []


def _parse(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        parsed: dict[str, Any] = load_hcl(handle)
    return parsed


@pytest.fixture(scope="module")
def modules() -> dict[str, dict[str, Any]]:
    """Every .tf file of terraform/, parsed."""
    files = sorted(TF_DIR.glob("*.tf"))
    assert files, "terraform/ has no .tf files"
    return {path.name: _parse(path) for path in files}


def _labelled(modules: dict[str, dict[str, Any]], kind: str) -> dict[tuple[str, ...], Any]:
    """Blocks of `kind` by their labels: (type, name) for resource/data, (name,) else."""
    found: dict[tuple[str, ...], Any] = {}
    for doc in modules.values():
        for entry in doc.get(kind, []):
            for first, inner in entry.items():
                if kind in {"resource", "data"}:
                    for second, body in inner.items():
                        found[_unquote(first), _unquote(second)] = body
                else:
                    found[(_unquote(first),)] = inner
    return found


def _locals(modules: dict[str, dict[str, Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for doc in modules.values():
        for entry in doc.get("locals", []):
            values.update({key: value for key, value in entry.items() if not key.startswith("__")})
    return values


def _resolved_strings(node: Any, local_values: dict[str, Any]) -> set[str]:
    """String leaves of `node`, where a bare `${local.x}` is replaced by x's strings."""
    out: set[str] = set()
    for text in _strings(node):
        match = _LOCAL_ONLY.match(text)
        if match:
            out |= _resolved_strings(local_values[match.group(1)], local_values)
        else:
            out.add(text)
    return out


# -- terraform ------------------------------------------------------------------------------


def test_every_reference_resolves_to_a_declared_block(modules: dict[str, dict[str, Any]]) -> None:
    """Each aws_x.y, data.a.b, var.z, local.w and module.m names a block that exists."""
    declared: dict[str, set[tuple[str, ...]]] = {
        "resource": set(_labelled(modules, "resource")),
        "data": set(_labelled(modules, "data")),
        "var": set(_labelled(modules, "variable")),
        "local": {(name,) for name in _locals(modules)},
        "module": set(_labelled(modules, "module")),
    }
    missing: set[str] = set()
    seen = 0
    for filename, doc in modules.items():
        # A moved block's `from` names an address that no longer exists, by design
        # (test_moved_blocks_lead_from_old_addresses_to_declared_resources).
        rest = {kind: body for kind, body in doc.items() if kind != "moved"}
        for text in _strings(rest):
            for kind, pattern in _REFERENCE_PATTERNS.items():
                for match in pattern.finditer(text):
                    seen += 1
                    if match.groups() not in declared[kind]:
                        missing.add(f"{filename}: {kind} {'.'.join(match.groups())}")
    assert seen > 50, "the reference scan found suspiciously few references"
    assert not missing, sorted(missing)


def test_every_variable_is_described_and_used(modules: dict[str, dict[str, Any]]) -> None:
    """Variables carry a description, and none is declared without being read."""
    variables = _labelled(modules, "variable")
    assert variables
    undescribed = [
        name for (name,), body in variables.items() if not _value(body.get("description"))
    ]
    assert not undescribed
    used = {
        match.group(1)
        for doc in modules.values()
        for text in _strings(doc)
        for match in _REFERENCE_PATTERNS["var"].finditer(text)
    }
    assert {name for (name,) in variables} <= used


def test_secret_variables_have_no_defaults_and_secrets_stay_out_of_state(
    modules: dict[str, dict[str, Any]],
) -> None:
    """No secret is a Terraform value: SSM parameters are referenced by name, never read."""
    assert not [key for key in _labelled(modules, "data") if key[0] == "aws_ssm_parameter"]
    assert not [key for key in _labelled(modules, "resource") if key[0] == "aws_ssm_parameter"]
    for (name,), body in _labelled(modules, "variable").items():
        if _value(body.get("sensitive")) in {True, "true"}:
            assert "default" not in body, f"sensitive variable {name} has a default"


def test_functions_use_the_documented_handlers_and_environment(
    modules: dict[str, dict[str, Any]],
) -> None:
    """The four handlers are wired, and the environment carries names, never secrets."""
    local_values = _locals(modules)
    functions = _value(local_values["functions"])
    assert set(functions) == set(HANDLERS)
    for key, handler in HANDLERS.items():
        text = _unquote(_value(functions[key]["handler"]))
        assert (
            text.replace(
                "${local.handler_module}", _unquote(_value(local_values["handler_module"]))
            )
            == handler
        )

    common = _value(local_values["common_environment"])
    environment_text = " ".join(_strings(common))
    for setting in ("G2S_STORE", "G2S_DYNAMODB_TABLE", "G2S_KMS_KEY_ID", "G2S_QUEUE_URL"):
        assert setting in environment_text
    assert re.search(r"G2S_STORE\W+dynamodb\b", environment_text)
    per_function = _value(local_values["function_environment"])
    for key, local_names in SSM_PARAMETERS.items():
        environment = _value(per_function[key])
        plain = PLAIN_FUNCTION_SETTINGS.get(key, set())
        assert set(environment) >= plain
        names = {name: value for name, value in environment.items() if name not in plain}
        assert all(name.startswith("G2S_SSM_") for name in names)
        assert {_unquote(v) for v in _strings(names)} == {
            f"${{local.{local_name}}}" for local_name in local_names
        }
    assert not SECRET_SETTINGS & set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", environment_text))


_ADDRESS = re.compile(rf'^\$\{{(aws_[a-z0-9_]+)\.({_NAME})(?:\["([\w-]+)"\])?\}}$')


def _address(node: Any) -> tuple[str, str, str | None]:
    """(type, name, key or None) of a moved block's `from` or `to`."""
    match = _ADDRESS.match(_unquote(_value(node)))
    assert match, node
    resource_type, name, key = match.groups()
    return resource_type, name, key


def test_moved_blocks_lead_from_old_addresses_to_declared_resources(
    modules: dict[str, dict[str, Any]],
) -> None:
    """Every `moved` goes from an address no longer declared to a declared resource
    (keyed where, and only where, it has for_each), each old and new address once, so
    that an existing deployment's resources are renamed in the state, not replaced."""
    resources = _labelled(modules, "resource")
    moves = [block for doc in modules.values() for block in _blocks(doc.get("moved", []))]
    assert moves, "no moved blocks (the folded alarms need them)"
    sources = [_address(block["from"]) for block in moves]
    targets = [_address(block["to"]) for block in moves]
    assert len(set(sources)) == len(sources)
    assert len(set(targets)) == len(targets)
    for (source_type, source_name, _key), (target_type, target_name, target_key) in zip(
        sources, targets, strict=True
    ):
        assert source_type == target_type
        assert (source_type, source_name) not in resources, f"{source_name} is still declared"
        target = resources.get((target_type, target_name))
        assert target is not None, f"{target_type}.{target_name} is not declared"
        assert (target_key is None) == ("for_each" not in target), (target_name, target_key)


@pytest.mark.parametrize("function", sorted(ALLOWED_ACTIONS))
def test_function_role_grants_exactly_its_contract(
    modules: dict[str, dict[str, Any]], function: str
) -> None:
    """Each role grants exactly ALLOWED_ACTIONS[function], its one SSM name, and
    SendMessage only on the events queue."""
    local_values = _locals(modules)
    wiring = _resolved_strings(_value(local_values["function_policies"])[function], {})
    assert wiring == {f"${{data.aws_iam_policy_document.{function}.json}}"}

    documents = _labelled(modules, "data")
    document = documents["aws_iam_policy_document", function]
    # Nothing merged in but the basic document (own log group, X-Ray), for this function.
    assert not {"source_json", "override_json", "override_policy_documents"} & set(document)
    included = _resolved_strings(document["source_policy_documents"], {})
    assert included == {f'${{data.aws_iam_policy_document.basic["{function}"].json}}'}
    basic = documents["aws_iam_policy_document", "basic"]
    assert not {"source_json", "override_json", "source_policy_documents"} & set(basic)
    assert not {"override_policy_documents"} & set(basic)
    assert _value(basic["for_each"]) == "${local.functions}"
    own_log_group = "${aws_cloudwatch_log_group.function[each.key].arn}:*"

    statements = _blocks(basic["statement"]) + _blocks(document["statement"])
    granted: set[str] = set()
    for statement in statements:
        assert "not_actions" not in statement
        assert _value(statement.get("effect", "Allow")) in {"Allow", '"Allow"'}
        granted |= _resolved_strings(statement["actions"], local_values)
    assert granted == ALLOWED_ACTIONS[function]
    assert not [action for action in granted if "*" in action]

    for statement in statements:
        actions = _resolved_strings(statement["actions"], local_values)
        resources = _resolved_strings(statement["resources"], local_values)
        assert "not_resources" not in statement
        if any(action.startswith("logs:") for action in actions):
            assert resources == {own_log_group}, resources
        if actions & {"ssm:GetParameter"}:
            assert actions == {"ssm:GetParameter"}, actions
            named = {
                next((n for n in SSM_PARAMETERS[function] if r.endswith(f"local.{n}}}")), None)
                for r in resources
            }
            assert None not in named, resources
        if resources == {"*"}:
            assert actions <= {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
        if "sqs:SendMessage" in actions:
            assert resources == {SEND_QUEUES[function]}, resources
        if "sqs:GetQueueAttributes" in actions:
            assert resources == ATTRIBUTE_QUEUES[function], resources


def test_webhook_reads_only_the_app_items_of_the_table(modules: dict[str, dict[str, Any]]) -> None:
    """The webhook's one table action, GetItem, is bound to the leading key APP (the
    stored subscription id): no account, token or workout item is readable."""
    document = _labelled(modules, "data")["aws_iam_policy_document", "webhook"]
    table = [s for s in _blocks(document["statement"]) if "dynamodb:GetItem" in _strings(s)]
    assert len(table) == 1
    assert set(_strings(table[0]["actions"])) == {"dynamodb:GetItem"}
    (condition,) = _blocks(table[0]["condition"])
    assert _unquote(str(_value(condition["test"]))) == "ForAllValues:StringEquals"
    assert _unquote(str(_value(condition["variable"]))) == "dynamodb:LeadingKeys"
    assert set(_strings(condition["values"])) == {"APP"}


def test_webhook_routes_take_the_secret_path_only(modules: dict[str, dict[str, Any]]) -> None:
    """API Gateway routes GET and POST /webhooks/strava/{secret} and nothing else to the
    webhook (the bare path has no route), and the invoke permission matches."""
    resources = _labelled(modules, "resource")
    route = resources["aws_apigatewayv2_route", "webhook"]
    assert list(_strings(route["for_each"])) == ['${toset(["GET", "POST"])}']
    assert _unquote(str(_value(route["route_key"]))) == "${each.key} /webhooks/strava/{secret}"
    keys = [
        _unquote(str(_value(body["route_key"])))
        for (kind, _name), body in resources.items()
        if kind == "aws_apigatewayv2_route"
    ]
    assert not [key for key in keys if key.endswith("/webhooks/strava")]
    permission = resources["aws_lambda_permission", "webhook_api"]
    assert _unquote(str(_value(permission["source_arn"]))).endswith("/webhooks/strava/{secret}")


def test_handlers_name_functions_that_exist() -> None:
    """Each handler path terraform names is a callable in the source tree it packages."""
    for path in HANDLERS.values():
        module_name, _, attribute = path.rpartition(".")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, attribute)), path


@pytest.mark.parametrize("function", ["sync", "maintenance"])
def test_scheduled_functions_run_once_per_tick_with_retries_off(
    modules: dict[str, dict[str, Any]], function: str
) -> None:
    """The sync and maintenance functions each have a rule on their own schedule
    variable, a target and an invoke config without retries or stale events, and a
    permission for exactly that rule; the maintenance function runs one at a time."""
    resources = _labelled(modules, "resource")
    rule = resources["aws_cloudwatch_event_rule", function]
    assert _text(rule["schedule_expression"]) == f"${{var.{function}_schedule_expression}}"
    target = resources["aws_cloudwatch_event_target", function]
    assert _text(target["rule"]) == f"${{aws_cloudwatch_event_rule.{function}.name}}"
    assert _text(target["arn"]) == f'${{aws_lambda_function.function["{function}"].arn}}'
    (retry,) = _blocks(target["retry_policy"])
    assert _value(retry["maximum_retry_attempts"]) == 0
    assert _value(retry["maximum_event_age_in_seconds"]) == 60
    invoke = resources["aws_lambda_function_event_invoke_config", function]
    assert _value(invoke["maximum_retry_attempts"]) == 0
    permission = resources["aws_lambda_permission", f"{function}_schedule"]
    assert _text(permission["principal"]) == "events.amazonaws.com"
    assert _text(permission["source_arn"]) == f"${{aws_cloudwatch_event_rule.{function}.arn}}"
    functions = _value(_locals(modules)["functions"])
    if function == "maintenance":
        assert _value(functions[function]["concurrency"]) == 1


def test_roles_and_policies_exist_per_function(modules: dict[str, dict[str, Any]]) -> None:
    """Every function has its own role, inline policy and log group (for_each over
    local.functions)."""
    resources = _labelled(modules, "resource")
    for key in (
        ("aws_iam_role", "function"),
        ("aws_iam_role_policy", "function"),
        ("aws_lambda_function", "function"),
        ("aws_cloudwatch_log_group", "function"),
    ):
        assert _value(resources[key]["for_each"]) == "${local.functions}"


# -- the Lambda code package (make lambda-package) -------------------------------------------

PACKAGE_BUILDER = REPO / "tools" / "lambda_package.py"


def _build_package(source: Path, output: Path) -> bytes:
    """Run the builder `make lambda-package` runs; the zip's bytes."""
    _run(
        [sys.executable, str(PACKAGE_BUILDER), "--source", str(source), "--output", str(output)],
        timeout=60,
        check=True,
    )
    return output.read_bytes()


def test_the_package_is_byte_identical_across_builds(tmp_path: Path) -> None:
    """Two builds give the same bytes, even from a copy of the tree with fresh mtimes,
    other file modes and stray bytecode: terraform sees a new hash only for new code."""
    first = _build_package(REPO / "src", tmp_path / "one" / "lambda-package.zip")
    copy = tmp_path / "copy"
    shutil.copytree(
        REPO / "src" / "garmin2strava", copy / "garmin2strava", copy_function=shutil.copy
    )
    (copy / "garmin2strava" / "settings.py").chmod(0o600)
    (copy / "garmin2strava" / "__init__.py").chmod(0o755)
    stray = copy / "garmin2strava" / "__pycache__"
    stray.mkdir(exist_ok=True)
    (stray / "settings.cpython-312.pyc").write_bytes(b"not from this tree")
    (copy / "garmin2strava" / "domain" / "models.pyc").write_bytes(b"stale")
    second = _build_package(copy, tmp_path / "two" / "lambda-package.zip")
    assert first == second


def test_the_package_holds_the_product_only(tmp_path: Path) -> None:
    """Only garmin2strava/ files, every one of its sources and data files (the handlers,
    the status page template, py.typed), no harness, emulators, tests or bytecode; each
    entry with the fixed time and mode."""
    output = tmp_path / "lambda-package.zip"
    _build_package(REPO / "src", output)
    with zipfile.ZipFile(output) as archive:
        entries = archive.infolist()
    names = [entry.filename for entry in entries]
    assert names == sorted(names)
    assert all(name.startswith("garmin2strava/") for name in names), names
    for wanted in (
        "garmin2strava/__init__.py",
        "garmin2strava/py.typed",
        "garmin2strava/entrypoints/templates/status_page.html",
        *(f"{path.rpartition('.')[0].replace('.', '/')}.py" for path in HANDLERS.values()),
    ):
        assert wanted in names
    sources = REPO / "src"
    product = {
        path.relative_to(sources).as_posix()
        for path in (sources / "garmin2strava").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert set(names) == product
    for unwanted in ("g2s_harness", "g2s_sandbox", "__pycache__", "tests", ".pyc"):
        assert not [name for name in names if unwanted in name], unwanted
    assert {entry.date_time for entry in entries} == {(1980, 1, 1, 0, 0, 0)}
    assert {entry.external_attr >> 16 for entry in entries} == {0o100644}


def test_terraform_takes_the_package_built_by_make(modules: dict[str, dict[str, Any]]) -> None:
    """No archive provider or archive_file: terraform init needs only hashicorp/aws, and the
    functions' code and hash come from the zip `make tf-plan` builds first."""
    assert not [key for key in _labelled(modules, "data") if key[0] == "archive_file"]
    providers = " ".join(_strings(modules["versions.tf"]["terraform"]))
    assert "hashicorp/aws" in providers
    assert "hashicorp/archive" not in providers
    function = _labelled(modules, "resource")["aws_lambda_function", "function"]
    assert _text(function["filename"]) == "${var.package_zip_path}"
    assert _text(function["source_code_hash"]) == "${filebase64sha256(var.package_zip_path)}"
    variable = _labelled(modules, "variable")[("package_zip_path",)]
    assert _text(variable["default"]) == "../build/lambda-package.zip"
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^PACKAGE_ZIP := build/lambda-package\.zip$", makefile, re.MULTILINE)
    assert re.search(r"^tf-plan:[^#\n]*\blambda-package\b", makefile, re.MULTILINE)


def test_checkov_passes(installed_tool: Callable[[Path, str], Path]) -> None:
    """checkov -d terraform (with .checkov.yaml) reports no failed check (skipped by plain
    pytest where checkov is absent; `make test` installs it and requires it)."""
    checkov = installed_tool(
        REPO / ".tools" / "checkov" / "bin" / "checkov", "`make test` or `make check-infra`"
    )
    result = _run(
        [
            str(checkov),
            "-d",
            "terraform",
            "--config-file",
            ".checkov.yaml",
            "--skip-download",
            "--quiet",
            "--compact",
            "-o",
            "json",
        ],
        cwd=REPO,
        timeout=300,
    )
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']})"
        for item in reports
        for check in item.get("results", {}).get("failed_checks", [])
    ]
    assert not failed, failed
    assert all(item["summary"]["parsing_errors"] == 0 for item in reports)
    assert sum(item["summary"]["resource_count"] for item in reports) > 20
    assert result.returncode == 0, result.stderr[-2000:]


# -- container image ------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile() -> None:
    """hadolint finds nothing to report in the Dockerfile."""
    result = _run(
        [str(BIN / "hadolint"), "Dockerfile"],
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _stages() -> list[list[tuple[str, str]]]:
    """(instruction, arguments) of each Dockerfile stage, continuations joined."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), arguments.strip()))
    assert len(stages) >= 2, "the Dockerfile should be multi-stage"
    return stages


def _builder_stage() -> list[tuple[str, str]]:
    return _stages()[0]


def _final_stage() -> list[tuple[str, str]]:
    return _stages()[-1]


def _exec_form(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    """An ENTRYPOINT or CMD in exec (JSON) form: the form that passes `docker run`'s
    arguments on, and takes the signals."""
    (arguments,) = [args for name, args in stage if name == instruction]
    words = json.loads(arguments)
    assert isinstance(words, list), f"{instruction} should be in exec form"
    return [str(word) for word in words]


def _image_environment(stage: list[tuple[str, str]]) -> dict[str, str]:
    """The final stage's ENV (KEY=value pairs; later lines may use earlier values)."""
    env: dict[str, str] = {}
    for instruction, args in stage:
        if instruction == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), value)
    return env


def _makefile_uv_version() -> str:
    match = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match
    return match.group(1)


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's virtual environment, made as the builder stage makes it: its COPY
    lines copy the build context into a temporary directory (nothing else), then its
    own `uv sync` lines run there, offline (uv's cache that `make setup` filled; nothing
    reaches the internet), into a temporary UV_PROJECT_ENVIRONMENT."""
    stage = _builder_stage()
    uv_args = [
        args for instruction, args in stage if instruction == "ARG" and "UV_VERSION=" in args
    ]
    assert uv_args == [f"UV_VERSION={_makefile_uv_version()}"], (
        "Dockerfile and Makefile pin different uv"
    )
    uv = REPO / ".tools" / "bin" / "uv"
    assert uv.exists(), "run `make setup` first: it installs the pinned uv into .tools"

    tmp_path = tmp_path_factory.mktemp("image")
    context = tmp_path / "context"
    context.mkdir()
    for instruction, args in stage:
        if instruction == "COPY":
            *sources, _destination = shlex.split(args)
            for source in sources:
                origin = REPO / source
                if origin.is_dir():
                    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                    shutil.copytree(origin, context / source, ignore=ignore)
                else:
                    (context / source).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, context / source)

    venv = tmp_path / "venv"
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_LINK_MODE": "copy",
        "UV_OFFLINE": "1",
        # The interpreter the project venv was made from (its python is a symlink to it).
        "UV_PYTHON": str(Path(sys.executable).resolve()),
    }
    env.pop("VIRTUAL_ENV", None)
    syncs = [
        shlex.split(args)
        for instruction, args in stage
        if instruction == "RUN" and "uv sync" in args
    ]
    assert syncs, "the builder stage runs no `uv sync`"
    for command in syncs:
        assert command[:2] == ["uv", "sync"]
        # --offline: only uv's local cache, never the network (the venv was built from it).
        result = _run(
            [str(uv), *command[1:], "--offline"],
            cwd=context,
            env=env,
            timeout=540,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    return venv


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_image_install_step_works(image_venv: Path) -> None:
    """The builder stage's COPY + `uv sync` steps give a venv whose CLI runs (slow-ish)."""
    # The final stage keeps only the venv, so the package must live inside it.
    where = _run(
        [
            str(image_venv / "bin" / "python"),
            "-c",
            "import garmin2strava; print(garmin2strava.__file__)",
        ],
        timeout=60,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(image_venv)
    cli = _run(
        [str(image_venv / "bin" / "garmin2strava"), "--help"],
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "usage" in cli.stdout.lower()


def test_the_image_runs_the_daemon_by_default_and_a_command_when_given() -> None:
    """ENTRYPOINT is the CLI and CMD its default command: `docker run IMAGE` runs the
    daemon, `docker run IMAGE demo` (or `status`, ...) that command."""
    final = _final_stage()
    assert _exec_form(final, "ENTRYPOINT") == ["garmin2strava"]
    assert _exec_form(final, "CMD") == ["run"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_docker_run_image_demo_works(image_venv: Path, tmp_path: Path) -> None:
    """What `docker run IMAGE demo` runs: the ENTRYPOINT with `demo`, from the image's
    WORKDIR, with the image's ENV and nothing of this machine's (the venv and /data in
    temporary directories): the emulators are in the image and the demo ends OK."""
    final = _final_stage()
    data = tmp_path / "data"
    data.mkdir()
    image_env = {
        name: value.replace("/app/.venv", str(image_venv)).replace("/data", str(data))
        for name, value in _image_environment(final).items()
    }
    assert image_env["PATH"].startswith(f"{image_venv}/bin:")
    image_env["PATH"] += os.defpath  # the base image's own PATH, which $PATH extended
    (workdir,) = [args for name, args in final if name == "WORKDIR"]
    assert workdir == "/data"
    program, *arguments = _exec_form(final, "ENTRYPOINT")
    demo = _run(
        [str(image_venv / "bin" / program), *arguments, "demo"],
        cwd=data,
        env={**image_env, "HOME": str(data)},  # the image's user has /data as its home
        timeout=300,
    )
    assert demo.returncode == 0, (demo.stdout + demo.stderr)[-3000:]
    assert "demo: OK" in demo.stdout
    assert "not installed" not in demo.stderr


def test_the_maintenance_step_alarm_watches_the_figure_the_handler_emits() -> None:
    """A failed maintenance step is logged and counted, not raised (the Lambda's Errors
    stay 0), so an alarm watches the handler's own StepsFailed figure: same namespace as
    the EMF writer, same metric name and dimension as the handler emits."""
    text = (REPO / "terraform" / "alarms.tf").read_text()
    block = re.search(r'"maintenance-steps-failed" = \{(.*?)\n\s*\}\n', text, re.DOTALL)
    assert block is not None
    settings = dict(re.findall(r"^\s*(\w+)\s*=\s*(.+?)\s*$", block.group(1), re.MULTILINE))
    assert settings["namespace"] == f'"{NAMESPACE}"'
    assert settings["metric"] == '"StepsFailed"'
    assert settings["dimensions"] == '{ function = "maintenance" }'
    assert settings["threshold"] == "0"
    handler = (
        REPO / "src" / "garmin2strava" / "entrypoints" / "aws_lambda" / "maintenance_handler.py"
    ).read_text()
    assert '"StepsFailed": len(failed)' in handler
    assert 'dimensions = {"function": "maintenance"}' in handler


def test_the_mirror_streams_variable_accepts_the_names_the_settings_accept() -> None:
    """terraform's mirror_streams validation lists exactly the stream names
    G2S_MIRROR_STREAMS accepts, so a plan fails where a cold start would."""
    text = (REPO / "terraform" / "variables.tf").read_text()
    found = re.search(r"contains\(\[([^\]]*)\], name\)", text)
    assert found is not None
    assert re.findall(r'"([a-z_]+)"', found.group(1)) == list(STREAM_TYPES)


def test_the_strava_url_variables_reach_every_function(
    modules: dict[str, dict[str, Any]],
) -> None:
    """strava_api_url and strava_oauth_url (README "Strava's new API host") become
    G2S_STRAVA_API_URL and G2S_STRAVA_OAUTH_URL in the environment all four share."""
    variables = {labels[0] for labels in _labelled(modules, "variable")}
    assert {"strava_api_url", "strava_oauth_url"} <= variables
    common = _value(_locals(modules)["common_environment"])
    text = " ".join(_strings(common))
    assert "G2S_STRAVA_API_URL = var.strava_api_url" in text
    assert "G2S_STRAVA_OAUTH_URL = var.strava_oauth_url" in text
