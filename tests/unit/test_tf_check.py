"""The rules of `make tf-check` (tools/tf_check): where the provider mirror is found,
the CLI config and the provider override it writes, the run's variables, what it does
without terraform, and how it reads terraform's answers. The run itself (terraform on
moto) is `make tf-check`, a step of .ci/run, never a test."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tf_check.config import (
    AWS_PROVIDER,
    MOTO_SERVICES,
    MirrorError,
    cli_config,
    copy_configuration,
    find_mirror,
    implied_mirror_roots,
    provider_override,
    run_variables,
)
from tf_check.smoke import Deployed, Function, SmokeFailed, function_environment
from tf_check.terraform import (
    TERRAFORM_HOW,
    managed_addresses,
    missing_tool,
    planned_creates,
    slowest_resources,
    terraform_environment,
)

REPO = Path(__file__).resolve().parents[2]
TF_DIR = REPO / "terraform"


def _plain(node: Any) -> Any:
    """python-hcl2 8 keeps a string's quotes: without them, in lists and maps too."""
    if isinstance(node, str):
        return node.removeprefix('"').removesuffix('"')
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if isinstance(node, dict):
        return {_plain(k): _plain(v) for k, v in node.items() if not str(k).startswith("__")}
    return node


def _hcl(text: str) -> Any:
    return _plain(hcl2.loads(text))


def _mirror(root: Path) -> Path:
    """A directory laid out as a terraform filesystem mirror holding hashicorp/aws."""
    (root / AWS_PROVIDER / "5.100.0" / "linux_amd64").mkdir(parents=True)
    return root


# -- the provider mirror --------------------------------------------------------------------
def test_a_configured_mirror_is_used_as_given(tmp_path: Path) -> None:
    mirror = _mirror(tmp_path / "mirror")
    assert find_mirror(str(mirror), roots=[]) == mirror.resolve()


def test_a_configured_directory_without_the_provider_is_an_error(tmp_path: Path) -> None:
    """A mistyped TF_PROVIDER_MIRROR fails loudly rather than quietly using the registry."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(MirrorError, match=r"holds no registry\.terraform\.io/hashicorp/aws"):
        find_mirror(str(tmp_path / "empty"), roots=[_mirror(tmp_path / "other")])


def test_the_search_finds_a_root_or_a_directory_right_under_one(tmp_path: Path) -> None:
    """/opt/<something>/registry.terraform.io/... is found from the root /opt; two levels
    down is not searched, and the first root that has one wins."""
    deep = tmp_path / "deep"
    _mirror(deep / "a" / "b")
    under = tmp_path / "opt"
    _mirror(under / "tf-plugins")
    itself = _mirror(tmp_path / "itself")
    assert find_mirror(None, roots=[deep, under, itself]) == (under / "tf-plugins").resolve()
    assert find_mirror(None, roots=[itself, under]) == itself.resolve()
    assert find_mirror(None, roots=[deep]) is None


def test_no_mirror_anywhere_means_the_registry(tmp_path: Path) -> None:
    assert find_mirror(None, roots=[tmp_path / "absent", tmp_path]) is None
    assert find_mirror("", roots=[tmp_path]) is None


def test_the_roots_are_terraforms_implied_mirrors_then_machine_directories(tmp_path: Path) -> None:
    home = tmp_path / "home"
    roots = implied_mirror_roots(home, {})
    assert roots[:2] == [home / ".terraform.d/plugins", home / ".local/share/terraform/plugins"]
    assert Path("/usr/share/terraform/plugins") in roots
    assert Path("/opt") in roots
    custom = implied_mirror_roots(home, {"XDG_DATA_HOME": "/xdg", "XDG_DATA_DIRS": "/d1:/d2"})
    assert custom[1:4] == [
        Path("/xdg/terraform/plugins"),
        Path("/d1/terraform/plugins"),
        Path("/d2/terraform/plugins"),
    ]


# -- what terraform reads -------------------------------------------------------------------
def test_the_cli_config_takes_aws_from_the_mirror_and_the_rest_from_registries() -> None:
    parsed = _hcl(cli_config(Path("/some/where")))
    installation = parsed["provider_installation"][0]
    mirror = installation["filesystem_mirror"][0]
    assert mirror["path"] == "/some/where"
    assert mirror["include"] == [AWS_PROVIDER]
    assert installation["direct"][0]["exclude"] == [AWS_PROVIDER]


def test_without_a_mirror_the_cli_config_uses_the_registry_only() -> None:
    installation = _hcl(cli_config(None))["provider_installation"][0]
    assert "filesystem_mirror" not in installation
    assert "direct" in installation


def test_the_override_sends_every_service_to_the_endpoint() -> None:
    provider = _hcl(provider_override("http://127.0.0.1:5555"))["provider"][0]
    aws = provider["aws"]
    assert aws["endpoints"][0] == dict.fromkeys(MOTO_SERVICES, "http://127.0.0.1:5555")
    assert aws["skip_credentials_validation"] is True


# What each resource or data source type of terraform/ calls, by the provider's
# endpoint name; a type not listed fails the test below, to be given its service.
_SERVICE_OF_TYPE = {
    "aws_apigatewayv2_": "apigatewayv2",
    "aws_cloudwatch_log_": "logs",
    "aws_cloudwatch_metric_": "cloudwatch",
    "aws_cloudwatch_event_": "events",
    "aws_dynamodb_": "dynamodb",
    "aws_iam_role": "iam",
    "aws_kms_": "kms",
    "aws_lambda_": "lambda",
    "aws_sns_": "sns",
    "aws_sqs_": "sqs",
    "aws_caller_identity": "sts",
    "aws_iam_policy_document": None,  # computed locally
    "aws_partition": None,
    "aws_region": None,
}


def test_the_override_covers_every_service_terraform_calls() -> None:
    """A resource of a new service in terraform/ would reach real AWS (and fail) unless
    the override names it."""
    types = set()
    for path in TF_DIR.glob("*.tf"):
        types |= set(re.findall(r'^(?:resource|data) "(aws_\w+)"', path.read_text(), re.MULTILINE))
    needed: set[str] = set()
    for kind in types:
        prefixes = [p for p in _SERVICE_OF_TYPE if kind.startswith(p)]
        assert prefixes, f"{kind}: which endpoint does it call? (_SERVICE_OF_TYPE)"
        service = _SERVICE_OF_TYPE[max(prefixes, key=len)]
        if service is not None:
            needed.add(service)
    assert needed <= set(MOTO_SERVICES), needed - set(MOTO_SERVICES)
    assert len(types) > 10


def _declared_variables() -> dict[str, dict[str, Any]]:
    parsed = _hcl((TF_DIR / "variables.tf").read_text())
    return {name: body for entry in parsed["variable"] for name, body in entry.items()}


def test_the_run_variables_exist_and_allow_the_destroy(tmp_path: Path) -> None:
    """Each variable is declared; the table is not protected (destroy must empty the
    state) and the redrive allow policy moto cannot keep is off; the zips by absolute path."""
    values = run_variables(
        package_zip=Path("build/p.zip"),
        layer_zip=tmp_path / "l.zip",
        strava_client_id=7,
        subscription_id=1,
    )
    declared = _declared_variables()
    assert set(values) <= set(declared), set(values) - set(declared)
    assert values["table_deletion_protection"] is False
    assert values["dlq_redrive_allow_policy"] is False
    assert Path(str(values["package_zip_path"])).is_absolute()
    # Real AWS keeps both protections: they default to on.
    assert declared["table_deletion_protection"]["default"] is True
    assert declared["dlq_redrive_allow_policy"]["default"] is True


def test_the_copy_holds_the_tf_files_only(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("main.tf", "sqs.tf", "terraform.tfvars", "terraform.tfstate"):
        (source / name).write_text("# x\n")
    copied = copy_configuration(source, tmp_path / "copy")
    assert sorted(p.name for p in copied) == ["main.tf", "sqs.tf"]
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["main.tf", "sqs.tf"]
    with pytest.raises(FileNotFoundError):
        copy_configuration(tmp_path / "copy" / "none", tmp_path / "other")


# -- without terraform ----------------------------------------------------------------------
@pytest.mark.parametrize("env", [{"CI": "true"}, {"G2S_REQUIRE_TOOLS": "1"}])
def test_missing_terraform_fails_where_tools_are_required(env: dict[str, str]) -> None:
    code, line = missing_tool("terraform", TERRAFORM_HOW, env)
    assert code == 1
    assert line.startswith("error:")
    assert "install Terraform" in line


@pytest.mark.parametrize("env", [{}, {"CI": "false"}, {"G2S_REQUIRE_TOOLS": ""}])
def test_missing_terraform_skips_visibly_elsewhere(env: dict[str, str]) -> None:
    code, line = missing_tool("terraform", TERRAFORM_HOW, env)
    assert code == 0
    assert "SKIPPED" in line
    assert "install Terraform" in line


# -- terraform's environment and answers ----------------------------------------------------
def test_terraform_never_sees_the_machines_aws_settings_or_variables(tmp_path: Path) -> None:
    env = terraform_environment(
        {
            "PATH": "/bin",
            "AWS_PROFILE": "prod",
            "AWS_ACCESS_KEY_ID": "AKIA...",
            "TF_VAR_table_deletion_protection": "true",
            "TF_CLI_CONFIG_FILE": "/nowhere",
            "TF_LOG": "debug",
        },
        tmp_path / "cli.tfrc",
    )
    assert env["TF_CLI_CONFIG_FILE"] == str(tmp_path / "cli.tfrc")
    assert env["CHECKPOINT_DISABLE"] == "1"
    assert "AWS_PROFILE" not in env
    assert "AWS_ACCESS_KEY_ID" not in env
    assert "TF_VAR_table_deletion_protection" not in env
    assert (env["PATH"], env["TF_LOG"]) == ("/bin", "debug")


def test_planned_creates_counts_managed_creations_only() -> None:
    plan = {
        "resource_changes": [
            {"mode": "managed", "change": {"actions": ["create"]}},
            {"mode": "managed", "change": {"actions": ["create"]}},
            {"mode": "managed", "change": {"actions": ["no-op"]}},
            {"mode": "data", "change": {"actions": ["read"]}},
        ]
    }
    assert planned_creates(plan) == 2


def test_managed_addresses_leave_data_sources_out() -> None:
    listed = 'data.aws_region.current\naws_kms_key.main\naws_iam_role.function["sync"]\n\n'
    assert managed_addresses(listed) == ["aws_kms_key.main", 'aws_iam_role.function["sync"]']
    assert managed_addresses("data.aws_partition.current\n") == []


def test_the_slowest_resources_of_an_apply_are_named() -> None:
    output = (
        "aws_kms_key.main: Creating...\n"
        "aws_kms_key.main: Creation complete after 3s [id=k]\n"
        'aws_lambda_function.function["sync"]: Creation complete after 1m5s [id=f]\n'
        "aws_sqs_queue.events: Destruction complete after 0s\n"
        "aws_iam_role.function: Still creating... [10s elapsed]\n"
    )
    assert slowest_resources(output, count=2) == [
        ('aws_lambda_function.function["sync"]', 65),
        ("aws_kms_key.main", 3),
    ]


# -- the smoke test's reading of the state --------------------------------------------------
def _function(environment: dict[str, str]) -> Function:
    handler = "garmin2strava.entrypoints.aws_lambda.sync_handler.handler"
    arn = "arn:aws:lambda:eu-west-1:1:function:g2s-sync"
    return Function("sync", "g2s-sync", arn, handler, 120, environment)


def test_the_functions_environment_is_the_states_plus_loopback(tmp_path: Path) -> None:
    env = function_environment(
        _function({"G2S_STORE": "dynamodb", "G2S_DYNAMODB_TABLE": "t"}),
        runtime_api="127.0.0.1:9001",
        task_root=tmp_path,
        loopback={"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"},
    )
    assert (env["G2S_STORE"], env["G2S_DYNAMODB_TABLE"]) == ("dynamodb", "t")
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert env["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:9001"
    assert env["PYTHONPATH"] == env["LAMBDA_TASK_ROOT"] == str(tmp_path)


def test_the_loopback_run_never_replaces_a_deployed_value(tmp_path: Path) -> None:
    with pytest.raises(SmokeFailed, match="G2S_STRAVA_API_URL"):
        function_environment(
            _function({"G2S_STRAVA_API_URL": "https://api-v3.strava.com"}),
            runtime_api="127.0.0.1:9001",
            task_root=tmp_path,
            loopback={"G2S_STRAVA_API_URL": "http://127.0.0.1:7000"},
        )


def _resource(
    kind: str, index: str | None, values: dict[str, Any], mode: str = "managed"
) -> dict[str, Any]:
    return {"type": kind, "mode": mode, "index": index, "values": values}


def test_the_deployment_is_read_from_the_state_and_outputs() -> None:
    function_values = {
        "function_name": "g2s-webhook",
        "arn": "arn:aws:lambda:eu-west-1:1:function:g2s-webhook",
        "handler": "garmin2strava.entrypoints.aws_lambda.webhook_handler.handler",
        "timeout": 10,
        "environment": [{"variables": {"STRAVA_SUBSCRIPTION_ID": 1, "G2S_STORE": "dynamodb"}}],
    }
    state = {
        "values": {
            "root_module": {
                "resources": [
                    _resource("aws_lambda_function", "webhook", function_values),
                    _resource("aws_lambda_event_source_mapping", None, {"uuid": "u-1"}),
                    _resource("aws_region", None, {"name": "eu-west-1"}, mode="data"),
                ]
            }
        }
    }
    deployed = Deployed.from_terraform(state, {"table_name": {"value": "g2s", "sensitive": False}})
    webhook = deployed.functions["webhook"]
    assert webhook.handler == function_values["handler"]
    assert webhook.environment == {"STRAVA_SUBSCRIPTION_ID": "1", "G2S_STORE": "dynamodb"}
    assert webhook.timeout_s == 10
    assert (deployed.event_source_mapping_id, deployed.region) == ("u-1", "eu-west-1")
    assert deployed.outputs == {"table_name": "g2s"}
