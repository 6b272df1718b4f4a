"""The cost bench's rules (bench/cost.py): the dated price table read into per-unit
prices, the bill's arithmetic, DynamoDB's item-size and unit rules, and EventBridge
rates per month. The measuring itself runs in the bench, not here."""

from __future__ import annotations

import importlib.util
import math
import sys
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def cost() -> ModuleType:
    """bench/cost.py as a module (bench/ is no package: the benches run as scripts)."""
    spec = importlib.util.spec_from_file_location("cost_bench", BENCH / "cost.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is made.
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def table() -> dict[str, Any]:
    return tomllib.loads((BENCH / "aws_prices.toml").read_text(encoding="utf-8"))


def test_the_price_table_is_dated_and_regional(cost: ModuleType) -> None:
    prices = cost.load_prices()
    assert date.fromisoformat(prices.as_of) <= datetime.now(UTC).date()
    assert prices.region
    for name in (
        "lambda_gb_second",
        "lambda_request",
        "dynamodb_write_unit",
        "dynamodb_read_unit",
        "kms_request",
        "sqs_request",
        "logs_byte",
    ):
        assert getattr(prices, name) > 0, name


def test_each_item_is_priced_at_the_tables_rate(cost: ModuleType, table: dict[str, Any]) -> None:
    """A million requests or units cost the table's per-million price, 10,000 KMS
    requests its per-10,000 price, 2**30 log bytes its per-GB price."""
    usage = cost.Usage(
        lambda_gb_seconds=1.0,
        lambda_requests=1e6,
        dynamodb_write_units=1e6,
        dynamodb_read_units=1e6,
        kms_requests=1e4,
        sqs_requests=1e6,
        log_bytes=2**30,
    )
    bill = {line.item: line.usd for line in cost.priced(usage, cost.load_prices())}
    expected = {
        "Lambda compute": table["lambda"]["usd_per_gb_second"],
        "Lambda requests": table["lambda"]["usd_per_million_requests"],
        "DynamoDB writes": table["dynamodb"]["usd_per_million_write_units"],
        "DynamoDB reads": table["dynamodb"]["usd_per_million_read_units"],
        "KMS": table["kms"]["usd_per_10k_requests"],
        "SQS": table["sqs"]["usd_per_million_requests"],
        "CloudWatch Logs": table["cloudwatch_logs"]["usd_per_gb_ingested"],
    }
    assert bill.keys() == expected.keys()
    for item, usd in expected.items():
        assert math.isclose(bill[item], usd), item
    assert math.isclose(cost.total_usd(usage, cost.load_prices()), sum(expected.values()))


def test_usage_adds_subtracts_and_scales(cost: ModuleType) -> None:
    idle = cost.Usage(lambda_requests=1, dynamodb_read_units=2.5, kms_requests=1)
    run = cost.Usage(lambda_requests=3, sqs_requests=4)
    month = idle.times(43_200) + run.times(60)
    assert month.lambda_requests == 43_200 + 180
    assert month.dynamodb_read_units == 108_000
    assert month.sqs_requests == 240
    assert (month - run.times(60)) == idle.times(43_200)


def test_a_missing_or_bad_price_is_a_clear_error(cost: ModuleType, tmp_path: Path) -> None:
    text = (BENCH / "aws_prices.toml").read_text(encoding="utf-8")
    missing = tmp_path / "missing.toml"
    missing.write_text(text.replace("usd_per_10k_requests", "usd_per_request"), encoding="utf-8")
    with pytest.raises(SystemExit, match="no price 'usd_per_10k_requests'"):
        cost.load_prices(missing)
    negative = tmp_path / "negative.toml"
    negative.write_text(text.replace("usd_per_gb_ingested = ", "usd_per_gb_ingested = -"))
    with pytest.raises(SystemExit, match="a price must be a number >= 0"):
        cost.load_prices(negative)


def test_item_sizes_follow_dynamodbs_rules(cost: ModuleType) -> None:
    """Names count, strings by UTF-8 bytes, numbers by significant digits, containers
    with their overhead."""
    assert cost.item_size({"PK": {"S": "abc"}}) == 2 + 3
    assert cost.item_size({"é": {"S": "é"}}) == 2 + 2
    assert cost.item_size({"n": {"N": "123.45"}}) == 1 + (3 + 1)  # 5 digits: ceil(5/2) + 1
    assert cost.item_size({"n": {"N": "1000"}}) == 1 + 2  # trailing zeros are not significant
    assert cost.item_size({"b": {"BOOL": True}, "x": {"NULL": True}}) == 2 + 2
    assert cost.item_size({"l": {"L": [{"S": "ab"}]}}) == 1 + 3 + 1 + 2
    assert cost.item_size({"m": {"M": {"k": {"S": "ab"}}}}) == 1 + 3 + 1 + 1 + 2


def test_units_round_up_per_kib_written_and_4_kib_read(cost: ModuleType) -> None:
    assert [cost.write_units(n) for n in (0, 1, 1024, 1025, 3000)] == [1, 1, 1, 2, 3]
    assert [cost.read_units(n) for n in (0, 4096, 4097, 9000)] == [1, 1, 2, 3]


def test_schedules_become_invocations_a_30_day_month(cost: ModuleType) -> None:
    assert cost.per_month("rate(1 minute)") == 30 * 24 * 60
    assert cost.per_month("rate(1 hour)") == 30 * 24
    assert cost.per_month("rate(5 minutes)") == 30 * 24 * 12
    assert cost.per_month("rate(2 days)") == 15
    with pytest.raises(SystemExit, match="rate"):
        cost.per_month("cron(0 * * * ? *)")
