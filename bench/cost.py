"""What the AWS deployment costs per account-month: an idle month and a month with 60 runs.

    .venv/bin/python bench/cost.py            (a table)
    .venv/bin/python bench/cost.py --json     (the same figures, machine-readable)

The usage is MEASURED: the real Lambda handlers run in-process against a local moto
server (DynamoDB, KMS, SQS, SSM on 127.0.0.1, dummy credentials, never real AWS) and the
Garmin and Strava emulators, deployed as terraform would (g2s_harness.aws_lambda), with
one account. For every invocation the bench counts

- its duration (wall time in this process, less the bench's own look-ups), billed
  rounded up to the millisecond at the functions' memory size;
- every AWS request, by botocore event hooks on each client the handlers build;
- DynamoDB on-demand units, from item sizes by DynamoDB's rules (moto's ConsumedCapacity
  is a constant per operation, not a measurement): a write is 1 unit per KiB of the
  larger of the item before and after (2 in a transaction), plus the same for each index
  entry it puts or removes (entry = item + 100 bytes); a read is 1 unit per 4 KiB of the
  items read (a Query: of every item it examined, before any filter), half when
  eventually consistent, 2 in a transaction. The sizes come from an unmetered client
  that reads the items before and after each request;
- the bytes of the log lines it prints (stdout and stderr both go to CloudWatch Logs),
  at the log level terraform sets; Lambda's own START/END/REPORT lines are added as an
  estimate made from their documented formats.

The month: the sync function on its EventBridge schedule and the maintenance function on
its own (both read from terraform/variables.tf, as is the memory size; terraform/lambda.tf
must name those variables), and per run what the measured runs did: the sync invocations
that uploaded it (less the idle ones they replace), one webhook and one worker invocation
per Strava event it caused (each run's first ones cold), and what the next maintenance
invocation did beyond an idle one. Prices: bench/aws_prices.toml (dated list prices).
The bench runs on whatever the store does: when the store gets cheaper, so does the month.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from g2s_harness.sqs_records import sqs_record

REPO = Path(__file__).resolve().parents[1]
PRICES_FILE = Path(__file__).with_name("aws_prices.toml")
TERRAFORM = REPO / "terraform"
DAYS_PER_MONTH = 30
MINUTES_PER_MONTH = DAYS_PER_MONTH * 24 * 60
RUNS_PER_ACTIVE_MONTH = 60
MEASURED_RUNS = 3
IDLE_INVOCATIONS = 10
MAX_SYNCS_PER_RUN = 5
# AWS bills storage and transfer in binary units: 1 GB = 2**30 bytes, 1 GB of memory = 1024 MB.
BYTES_PER_GB = 2**30
MB_PER_GB = 1024
VERIFY_TOKEN = "bench-verify-token"
SUBSCRIPTION_ID = 120_475
# The Lambda SQS event source mapping receives and then deletes each message: requests of
# the mapping, not of the handler, so not seen here (an estimate, labelled as one).
MAPPING_REQUESTS_PER_EVENT = 2
# Index entries are the item plus this many bytes of overhead (DynamoDB's sizing rule).
INDEX_ENTRY_OVERHEAD = 100
WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096


# -- prices (bench/aws_prices.toml) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prices:
    """US dollars per single unit (the table holds them per million, per 10,000, ...)."""

    as_of: str
    region: str
    quoted: str
    lambda_gb_second: float
    lambda_request: float
    dynamodb_write_unit: float
    dynamodb_read_unit: float
    kms_request: float
    sqs_request: float
    logs_byte: float


def load_prices(path: Path = PRICES_FILE) -> Prices:
    """The dated price table; a missing or malformed price is a clear error."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(f"error: cannot read the price table {path.name}: {exc}") from exc
    try:
        return Prices(
            as_of=str(data["as_of"]),
            region=str(data["region"]),
            quoted=str(data["quoted"]),
            lambda_gb_second=_price(data["lambda"]["usd_per_gb_second"]),
            lambda_request=_price(data["lambda"]["usd_per_million_requests"]) / 1e6,
            dynamodb_write_unit=_price(data["dynamodb"]["usd_per_million_write_units"]) / 1e6,
            dynamodb_read_unit=_price(data["dynamodb"]["usd_per_million_read_units"]) / 1e6,
            kms_request=_price(data["kms"]["usd_per_10k_requests"]) / 1e4,
            sqs_request=_price(data["sqs"]["usd_per_million_requests"]) / 1e6,
            logs_byte=_price(data["cloudwatch_logs"]["usd_per_gb_ingested"]) / BYTES_PER_GB,
        )
    except KeyError as exc:
        raise SystemExit(f"error: {path.name} has no price {exc}") from exc


def _price(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SystemExit(f"error: a price must be a number >= 0, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Usage:
    """What an account uses of each priced item (per invocation, run or month)."""

    lambda_gb_seconds: float = 0.0
    lambda_requests: float = 0.0
    dynamodb_write_units: float = 0.0
    dynamodb_read_units: float = 0.0
    kms_requests: float = 0.0
    sqs_requests: float = 0.0
    log_bytes: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Usage) -> Usage:
        return self + other.times(-1)

    def times(self, factor: float) -> Usage:
        return Usage(*(getattr(self, f.name) * factor for f in fields(self)))


# (label, Usage field, Prices field, unit)
ITEMS = (
    ("Lambda compute", "lambda_gb_seconds", "lambda_gb_second", "GB-s"),
    ("Lambda requests", "lambda_requests", "lambda_request", "requests"),
    ("DynamoDB writes", "dynamodb_write_units", "dynamodb_write_unit", "write units"),
    ("DynamoDB reads", "dynamodb_read_units", "dynamodb_read_unit", "read units"),
    ("KMS", "kms_requests", "kms_request", "requests"),
    ("SQS", "sqs_requests", "sqs_request", "requests"),
    ("CloudWatch Logs", "log_bytes", "logs_byte", "bytes ingested"),
)


@dataclass(frozen=True, slots=True)
class Line:
    item: str
    quantity: float
    unit: str
    usd: float


def priced(usage: Usage, prices: Prices) -> list[Line]:
    """The itemised bill: each item's quantity times its unit price."""
    return [
        Line(
            label, getattr(usage, quantity), unit, getattr(usage, quantity) * getattr(prices, price)
        )
        for label, quantity, price, unit in ITEMS
    ]


def total_usd(usage: Usage, prices: Prices) -> float:
    return sum(line.usd for line in priced(usage, prices))


# -- the deployment's shape (terraform) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    memory_mb: int
    sync_schedule: str
    maintenance_schedule: str
    reconcile_hours: float
    log_level: str
    worker_batch_size: int


def _defaults() -> dict[str, Any]:
    from hcl2.api import load as load_hcl

    with (TERRAFORM / "variables.tf").open(encoding="utf-8") as handle:
        parsed = load_hcl(handle)
    found: dict[str, Any] = {}
    for block in parsed.get("variable", []):
        for name, body in block.items():
            value = body.get("default")
            value = value[0] if isinstance(value, list) and len(value) == 1 else value
            found[name.strip('"')] = value.strip('"') if isinstance(value, str) else value
    return found


def _wired(pattern: str) -> str:
    """The variable lambda.tf wires into `pattern`'s place: the bench reads the value there."""
    text = (TERRAFORM / "lambda.tf").read_text(encoding="utf-8")
    match = re.search(pattern + r"\s*=\s*var\.(\w+)", text)
    if match is None:
        raise SystemExit(f"error: terraform/lambda.tf no longer sets {pattern} from a variable")
    return match.group(1)


def terraform_shape() -> Shape:
    defaults = _defaults()
    schedules = re.findall(
        r'resource "aws_cloudwatch_event_rule" "(\w+)".*?schedule_expression\s*=\s*var\.(\w+)',
        (TERRAFORM / "lambda.tf").read_text(encoding="utf-8"),
        re.DOTALL,
    )
    rules = dict(schedules)
    if {"sync", "maintenance"} - rules.keys():
        raise SystemExit("error: terraform/lambda.tf has no sync and maintenance schedules")
    return Shape(
        memory_mb=int(defaults[_wired("memory_size")]),
        sync_schedule=str(defaults[rules["sync"]]),
        maintenance_schedule=str(defaults[rules["maintenance"]]),
        reconcile_hours=float(defaults["mirror_reconcile_hours"]),
        log_level=str(defaults["log_level"]),
        worker_batch_size=int(defaults["worker_batch_size"]),
    )


_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_MINUTES = {"minute": 1, "hour": 60, "day": 24 * 60}


def per_month(schedule: str) -> float:
    """Invocations a 30-day month of an EventBridge rate(...) expression."""
    match = _RATE.match(schedule)
    if match is None:
        raise SystemExit(f"error: the bench reads rate(...) schedules only, not {schedule!r}")
    every = int(match.group(1)) * _MINUTES[match.group(2).rstrip("s")]
    return MINUTES_PER_MONTH / every


# -- metering: botocore event hooks on every client ---------------------------------------------


def item_size(item: Mapping[str, Any]) -> int:
    """An item's size by DynamoDB's rules: names plus values, in bytes."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: Mapping[str, Any]) -> int:  # noqa: PLR0911 - one case per DynamoDB type
    ((kind, data),) = value.items()
    match kind:
        case "S":
            return len(str(data).encode())
        case "N":
            return _number_size(str(data))
        case "B":
            return len(data)
        case "BOOL" | "NULL":
            return 1
        case "SS":
            return sum(len(str(s).encode()) for s in data)
        case "NS":
            return sum(_number_size(str(n)) for n in data)
        case "BS":
            return sum(len(b) for b in data)
        case "L":
            return 3 + sum(1 + _value_size(v) for v in data)
        case "M":
            return 3 + sum(1 + len(k.encode()) + _value_size(v) for k, v in data.items())
    raise ValueError(kind)


def _number_size(number: str) -> int:
    digits = number.lstrip("-").split("e")[0].split("E")[0].replace(".", "").strip("0")
    return math.ceil(max(len(digits), 1) / 2) + 1


def write_units(size: int) -> int:
    return max(1, math.ceil(size / WRITE_UNIT_BYTES))


def read_units(size: int) -> int:
    return max(1, math.ceil(size / READ_UNIT_BYTES))


@dataclass(slots=True)
class Keys:
    """A table's key attributes and its indexes' (GSI and LSI alike)."""

    table: tuple[str, ...]
    indexes: list[tuple[str, ...]]


@dataclass(slots=True)
class Meter:
    """Counts every AWS request of the clients built after `install`, and DynamoDB units."""

    side: Any  # an unmetered DynamoDB client: item sizes before and after a request
    requests: Counter[str] = field(default_factory=Counter)
    read_units: float = 0.0
    write_units: float = 0.0
    overhead_s: float = 0.0  # time in the meter's own look-ups, taken off durations
    keys: dict[str, Keys] = field(default_factory=dict)

    def watch(self, client: Any) -> None:
        service = client.meta.service_model.service_name
        events = client.meta.events
        events.register(f"before-parameter-build.{service}", self._before_build)
        events.register(f"before-call.{service}", self._count)
        if service == "dynamodb":
            events.register("after-call.dynamodb", self._after_dynamodb)

    def _count(self, model: Any, **_: Any) -> None:
        self.requests[f"{model.service_model.service_name}:{model.name}"] += 1

    def _before_build(self, params: dict[str, Any], model: Any, context: Any, **_: Any) -> None:
        context["cost_params"] = dict(params)
        if model.service_model.service_name == "dynamodb" and model.name in _WRITES:
            with self._timed():
                context["cost_writes"] = [
                    (*target, self._get(target[0], target[1]))
                    for target in _write_targets(model.name, params, self._keys)
                ]

    def _after_dynamodb(
        self, http_response: Any, parsed: Mapping[str, Any], model: Any, context: Any, **_: Any
    ) -> None:
        params = context.get("cost_params", {})
        ok = http_response.status_code == 200
        with self._timed():
            if model.name in _WRITES:
                self.write_units += sum(
                    self._written(table, key, factor, old, ok=ok)
                    for table, key, factor, old in context.get("cost_writes", [])
                )
            elif ok:
                self.read_units += self._read(model.name, params, parsed)

    def _written(
        self, table: str, key: dict[str, Any], factor: int, old: dict[str, Any] | None, *, ok: bool
    ) -> float:
        new = self._get(table, key)
        sizes = [item_size(i) for i in (old, new) if i is not None]
        units = factor * write_units(max(sizes, default=1))
        if not ok or factor == 0:
            return units
        for index in self._keys(table).indexes:
            before = old if old and all(a in old for a in index) else None
            after = new if new and all(a in new for a in index) else None
            changed = before and after and any(before[a] != after[a] for a in index)
            for entry in (before, after) if changed or not (before and after) else (after,):
                if entry is not None:
                    units += write_units(item_size(entry) + INDEX_ENTRY_OVERHEAD)
        return units

    def _read(self, operation: str, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> float:
        half = 1.0 if params.get("ConsistentRead") else 0.5
        if operation == "GetItem":
            item = self._get(params["TableName"], params["Key"])
            return half * read_units(item_size(item) if item else 0)
        if operation == "BatchGetItem":
            return sum(
                (1.0 if spec.get("ConsistentRead") else 0.5)
                * read_units(item_size(self._get(table, key) or {}))
                for table, spec in params["RequestItems"].items()
                for key in spec["Keys"]
            )
        if operation == "TransactGetItems":
            return sum(
                2 * read_units(item_size(self._get(g["Get"]["TableName"], g["Get"]["Key"]) or {}))
                for g in params["TransactItems"]
            )
        if operation in {"Query", "Scan"}:
            examined = self._examined(operation, params, int(parsed.get("ScannedCount", 0)))
            return half * read_units(sum(item_size(i) for i in examined))
        return 0.0

    def _examined(self, operation: str, params: Mapping[str, Any], scanned: int) -> list[Any]:
        """The whole items a Query or Scan read (its answer may hold fewer, or parts)."""
        if scanned == 0:
            return []
        again = {
            k: v
            for k, v in params.items()
            if k
            not in {
                "ProjectionExpression",
                "FilterExpression",
                "Select",
                "AttributesToGet",
                "ExpressionAttributeNames",
                "ExpressionAttributeValues",
                "ReturnConsumedCapacity",
            }
        }
        condition = str(params.get("KeyConditionExpression", ""))
        for name, kind in (("ExpressionAttributeNames", "#"), ("ExpressionAttributeValues", ":")):
            used = {k: v for k, v in params.get(name, {}).items() if k in _tokens(condition, kind)}
            if used:
                again[name] = used
        again["Limit"] = scanned
        call = self.side.query if operation == "Query" else self.side.scan
        items: list[Any] = call(**again).get("Items", [])
        return items

    def _get(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.side.get_item(
            TableName=table, Key=dict(key), ConsistentRead=True
        ).get("Item")
        return item

    def _keys(self, table: str) -> Keys:
        if table not in self.keys:
            described = self.side.describe_table(TableName=table)["Table"]

            def names(schema: list[dict[str, str]]) -> tuple[str, ...]:
                return tuple(k["AttributeName"] for k in schema)

            self.keys[table] = Keys(
                names(described["KeySchema"]),
                [
                    names(index["KeySchema"])
                    for kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes")
                    for index in described.get(kind, [])
                ],
            )
        return self.keys[table]

    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.overhead_s += time.perf_counter() - started


_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}


def _tokens(expression: str, kind: str) -> set[str]:
    return set(re.findall(re.escape(kind) + r"[A-Za-z0-9_]+", expression))


def _write_targets(
    operation: str, params: Mapping[str, Any], keys: Callable[[str], Keys]
) -> list[tuple[str, dict[str, Any], int]]:
    """(table, key, unit factor) of every item a write request touches."""

    def key_of(table: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        if "Key" in spec:
            return dict(spec["Key"])
        return {name: spec["Item"][name] for name in keys(table).table}

    if operation in {"PutItem", "UpdateItem", "DeleteItem"}:
        return [(params["TableName"], key_of(params["TableName"], params), 1)]
    if operation == "TransactWriteItems":
        return [
            (spec["TableName"], key_of(spec["TableName"], spec), 2)
            for item in params["TransactItems"]
            for spec in item.values()
        ]
    return [
        (table, key_of(table, next(iter(request.values()))), 1)
        for table, requests in params["RequestItems"].items()
        for request in requests
    ]


@contextlib.contextmanager
def metering(side: Any) -> Iterator[Meter]:
    """Every botocore client built meanwhile (boto3's included) reports to the meter."""
    import botocore.session

    meter = Meter(side)
    original = botocore.session.Session.create_client

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)
        meter.watch(client)
        return client

    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]  # instrumenting a library, not our code
    try:
        yield meter
    finally:
        botocore.session.Session.create_client = original  # type: ignore[method-assign]  # as above


class LogSink(io.TextIOBase):
    """Stands for the stdout and stderr Lambda ships to CloudWatch Logs: counts, keeps nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.lines = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self.bytes += len(text.encode())
            self.lines += text.count("\n")
        return len(text)

    def writable(self) -> bool:
        return True


def platform_log_bytes(*, memory_mb: int, cold: bool) -> int:
    """Lambda's START, END and REPORT lines (with X-Ray's part, tracing is Active) for one
    invocation: an estimate made from their documented formats, with typical figures."""
    request = str(uuid.UUID(int=0))
    report = (
        f"REPORT RequestId: {request}\tDuration: 123.45 ms\tBilled Duration: 124 ms\t"
        f"Memory Size: {memory_mb} MB\tMax Memory Used: 123 MB\t"
        + ("Init Duration: 1234.56 ms\t" if cold else "")
        + "\nXRAY TraceId: 1-67000000-000000000000000000000000\tSegmentId: 0000000000000000\t"
        "Sampled: true\t\n"
    )
    lines = (f"START RequestId: {request} Version: $LATEST\n", f"END RequestId: {request}\n")
    return sum(len(line.encode()) for line in (*lines, report))


# -- invocations ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Invocation:
    function: str
    cold: bool
    seconds: float
    requests: dict[str, int]
    read_units: float
    write_units: float
    log_bytes: int
    log_lines: int

    def count(self, service: str) -> int:
        return sum(n for name, n in self.requests.items() if name.startswith(f"{service}:"))

    def usage(self, memory_mb: int) -> Usage:
        billed_s = math.ceil(self.seconds * 1000) / 1000
        return Usage(
            lambda_gb_seconds=billed_s * memory_mb / MB_PER_GB,
            lambda_requests=1,
            dynamodb_write_units=self.write_units,
            dynamodb_read_units=self.read_units,
            kms_requests=self.count("kms"),
            sqs_requests=self.count("sqs"),
            log_bytes=self.log_bytes + platform_log_bytes(memory_mb=memory_mb, cold=self.cold),
        )


@dataclass(slots=True)
class Invoker:
    meter: Meter
    sink: LogSink
    memory_mb: int

    def __call__(
        self, function: str, handler: Callable[[Any, Any], Any], event: Any, *, cold: bool = False
    ) -> tuple[Invocation, Any]:
        from g2s_harness.aws_lambda import FakeContext

        requests = Counter(self.meter.requests)
        units = (self.meter.read_units, self.meter.write_units)
        logged = (self.sink.bytes, self.sink.lines)
        overhead = self.meter.overhead_s
        started = time.perf_counter()
        with contextlib.redirect_stdout(self.sink), contextlib.redirect_stderr(self.sink):
            answer = handler(event, FakeContext())
        seconds = time.perf_counter() - started - (self.meter.overhead_s - overhead)
        invocation = Invocation(
            function=function,
            cold=cold,
            seconds=seconds,
            requests=dict(self.meter.requests - requests),
            read_units=self.meter.read_units - units[0],
            write_units=self.meter.write_units - units[1],
            log_bytes=self.sink.bytes - logged[0],
            log_lines=self.sink.lines - logged[1],
        )
        return invocation, answer


def median_usage(invocations: list[Invocation], memory_mb: int) -> Usage:
    usages = [i.usage(memory_mb) for i in invocations]
    return Usage(*(statistics.median(getattr(u, f.name) for u in usages) for f in fields(Usage)))


class CollectingServer(ThreadingHTTPServer):
    """Strava's side of the webhook: the emulator POSTs its events here, and the bench
    hands each to the webhook handler as API Gateway would."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Collector)
        self.bodies: list[str] = []


class Collector(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        assert isinstance(self.server, CollectingServer)
        length = int(self.headers.get("Content-Length", "0"))
        self.server.bodies.append(self.rfile.read(length).decode())
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ARG002 - http.server's signature; the bench logs nothing
        return


@contextlib.contextmanager
def collecting() -> Iterator[CollectingServer]:
    server = CollectingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def api_gateway_event(body: str, secret: str) -> dict[str, Any]:
    """An HTTP API (payload 2.0) POST of `body` on the webhook's secret path."""
    path = f"/webhooks/strava/{secret}"
    return {
        "version": "2.0",
        "routeKey": "POST /webhooks/strava/{secret}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "user-agent": "Strava"},
        "pathParameters": {"secret": secret},
        "requestContext": {
            "http": {"method": "POST", "path": path, "sourceIp": "203.0.113.10"},
            "requestId": uuid.uuid4().hex,
            "routeKey": "POST /webhooks/strava/{secret}",
            "stage": "$default",
        },
        "body": body,
        "isBase64Encoded": False,
    }


def sqs_records(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message on the queue, as the event source mapping hands them to the worker
    (received by the bench's own unmetered client: those requests are the mapping's)."""
    records: list[dict[str, Any]] = []
    while messages := sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    ).get("Messages"):
        for m in messages:
            records.append(sqs_record(m))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return records


# -- the measurement ----------------------------------------------------------------------------


@dataclass(slots=True)
class Measured:
    sync_cold: Invocation
    sync_idle: list[Invocation]
    maintenance_first: Invocation
    maintenance_first_reconciled: int
    maintenance_idle: list[Invocation]
    runs: list[list[Invocation]]  # per run: every invocation it caused
    run_events: list[int]
    run_syncs: list[int]
    run_maintenance_after: list[Invocation]


@contextlib.contextmanager
def moto_environment() -> Iterator[str]:
    """A moto server on loopback; boto3 and botocore pointed at it with dummy credentials."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = dict(os.environ)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
    )
    try:
        yield endpoint
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


SCHEDULED = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}


@dataclass(slots=True)
class Functions:
    """The four handlers of one deployment, each invocation measured."""

    invoke: Invoker
    deployment: Any  # g2s_harness.aws_lambda.Deployment
    webhooks: CollectingServer
    sqs: Any  # the bench's own client: it does what the event source mapping does
    secret: str

    def sync(self, *, cold: bool = False) -> Invocation:
        from garmin2strava.entrypoints.aws_lambda import sync_handler

        return self.invoke("sync", sync_handler.handler, SCHEDULED, cold=cold)[0]

    def maintenance(self, *, cold: bool = False) -> tuple[Invocation, Any]:
        from garmin2strava.entrypoints.aws_lambda import maintenance_handler

        return self.invoke("maintenance", maintenance_handler.handler, SCHEDULED, cold=cold)

    def run(self, garmin_id: int, start: datetime) -> tuple[list[Invocation], int, int]:
        """A new Garmin run: the sync invocations that upload it, then a webhook and a
        worker invocation per Strava event it causes. (invocations, syncs, events)"""
        from g2s_sandbox.scenario import seed_run

        seed_run(self.deployment.pair, garmin_id, start_utc=start, name="Run")
        caused = self._upload(garmin_id)
        syncs = len(caused)
        self.deployment.pair.strava.webhooks.wait_idle()
        events, self.webhooks.bodies[:] = list(self.webhooks.bodies), []
        caused += self._deliver(events)
        return caused, syncs, len(events)

    def _upload(self, garmin_id: int) -> list[Invocation]:
        from g2s_harness.aws_lambda import USER

        caused: list[Invocation] = []
        for _ in range(MAX_SYNCS_PER_RUN):
            caused.append(self.sync())
            entry = self.deployment.store.get_uploads(USER, [garmin_id]).get(garmin_id)
            if entry is not None and entry.outcome == "uploaded":
                return caused
        raise SystemExit(f"bench: run {garmin_id} was not uploaded")

    def _deliver(self, events: list[str]) -> list[Invocation]:
        from garmin2strava.entrypoints.aws_lambda import webhook_handler, worker_handler

        # Runs are hours apart: each finds the webhook and worker containers cold.
        webhook_handler.runtime.cache_clear()
        worker_handler.runtime.cache_clear()
        caused: list[Invocation] = []
        for position, body in enumerate(events):
            post = api_gateway_event(body, self.secret)
            caused.append(
                self.invoke("webhook", webhook_handler.handler, post, cold=position == 0)[0]
            )
            batch = {"Records": sqs_records(self.sqs, self.deployment.queue_url)}
            caused.append(
                self.invoke("worker", worker_handler.handler, batch, cold=position == 0)[0]
            )
        return caused


@contextlib.contextmanager
def deployment_functions(shape: Shape) -> Iterator[Functions]:
    """The deployment on the moto server, one account linked to the Strava emulator's
    athlete, its webhook subscription delivering to the bench; the meter on."""
    import boto3

    from g2s_harness.aws_lambda import USER, deployed
    from g2s_sandbox.strava_webhooks import PushSubscription
    from garmin2strava.domain.webhook import derive_path_secret

    side_sqs = boto3.client("sqs")  # built before the meter: its requests are not counted
    with (
        metering(boto3.client("dynamodb")) as meter,
        tempfile.TemporaryDirectory(prefix="g2s-cost-") as tmp,
        deployed(
            os.environ.__setitem__,
            Path(tmp),
            verify_token=VERIFY_TOKEN,
            subscription_id=SUBSCRIPTION_ID,
        ) as deployment,
        collecting() as webhooks,
    ):
        os.environ["G2S_LOG_LEVEL"] = shape.log_level  # what terraform sets
        pair = deployment.pair
        deployment.store.link_athlete(pair.athlete_id, USER)
        callback = f"http://127.0.0.1:{webhooks.server_address[1]}/webhook"
        pair.strava.webhooks.subscription = PushSubscription(
            SUBSCRIPTION_ID, pair.strava.client_id, callback, time.time()
        )
        yield Functions(
            Invoker(meter, LogSink(), shape.memory_mb),
            deployment,
            webhooks,
            side_sqs,
            derive_path_secret(VERIFY_TOKEN),
        )


def measure(shape: Shape) -> Measured:
    with deployment_functions(shape) as functions:
        sync_cold = functions.sync(cold=True)
        for _ in range(2):  # the first cycles of a new account settle its state
            functions.sync()
        sync_idle = [functions.sync() for _ in range(IDLE_INVOCATIONS)]
        maintenance_first, summary = functions.maintenance(cold=True)
        maintenance_idle = [functions.maintenance()[0] for _ in range(3)]
        runs, run_syncs, run_events, after = [], [], [], []
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
        for number in range(MEASURED_RUNS):
            caused, syncs, events = functions.run(
                51_000_001 + number, start + timedelta(hours=number)
            )
            runs.append(caused)
            run_syncs.append(syncs)
            run_events.append(events)
            after.append(functions.maintenance()[0])
    return Measured(
        sync_cold=sync_cold,
        sync_idle=sync_idle,
        maintenance_first=maintenance_first,
        maintenance_first_reconciled=sum(
            r.get("complete", 0) for r in summary.get("reconciled", [])
        ),
        maintenance_idle=maintenance_idle,
        runs=runs,
        run_events=run_events,
        run_syncs=run_syncs,
        run_maintenance_after=after,
    )


# -- the month ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Month:
    idle: Usage
    per_run: Usage
    active: Usage
    sync_per_month: float
    maintenance_per_month: float
    reconciles_per_month: float


def month(measured: Measured, shape: Shape) -> Month:
    memory = shape.memory_mb
    sync_idle = median_usage(measured.sync_idle, memory)
    maintenance_idle = median_usage(measured.maintenance_idle, memory)
    syncs = per_month(shape.sync_schedule)
    maintenances = per_month(shape.maintenance_schedule)
    reconciles = (
        min(maintenances, DAYS_PER_MONTH * 24 / shape.reconcile_hours)
        if shape.reconcile_hours
        else 0.0
    )
    idle = (
        sync_idle.times(syncs)
        + maintenance_idle.times(maintenances - reconciles)
        + measured.maintenance_first.usage(memory).times(reconciles)
    )
    per_run_usages = [
        sum((i.usage(memory) for i in caused), Usage())
        - sync_idle.times(syncs_replaced)
        + after.usage(memory)
        - maintenance_idle
        + Usage(sqs_requests=MAPPING_REQUESTS_PER_EVENT * events)
        for caused, syncs_replaced, after, events in zip(
            measured.runs,
            measured.run_syncs,
            measured.run_maintenance_after,
            measured.run_events,
            strict=True,
        )
    ]
    per_run = sum(per_run_usages, Usage()).times(1 / len(per_run_usages))
    return Month(
        idle=idle,
        per_run=per_run,
        active=idle + per_run.times(RUNS_PER_ACTIVE_MONTH),
        sync_per_month=syncs,
        maintenance_per_month=maintenances,
        reconciles_per_month=reconciles,
    )


# -- output ---------------------------------------------------------------------------------------


def _invocation_row(label: str, invocations: list[Invocation]) -> list[str]:
    first = invocations[0]
    return [
        label,
        f"{statistics.median(i.seconds for i in invocations) * 1000:.1f} ms",
        f"{statistics.median(i.count('dynamodb') for i in invocations):g}",
        f"{statistics.median(i.read_units for i in invocations):g}",
        f"{statistics.median(i.write_units for i in invocations):g}",
        f"{statistics.median(i.count('kms') for i in invocations):g}",
        f"{statistics.median(i.count('sqs') for i in invocations):g}",
        (
            f"{statistics.median(i.log_bytes for i in invocations):g} B"
            f" / {statistics.median(i.log_lines for i in invocations):g}"
        ),
        "cold" if first.cold else "warm",
    ]


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _quantity(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def report(measured: Measured, shape: Shape, prices: Prices, result: Month) -> str:
    head = ["invocation", "duration", "DynamoDB req", "RRU", "WRU", "KMS", "SQS", "log", ""]
    rows = [
        head,
        _invocation_row(f"sync, idle (median of {IDLE_INVOCATIONS})", measured.sync_idle),
        _invocation_row("sync, first of a container", [measured.sync_cold]),
        _invocation_row("maintenance, idle (median of 3)", measured.maintenance_idle),
        _invocation_row(
            f"maintenance, first ({measured.maintenance_first_reconciled} reconciled)",
            [measured.maintenance_first],
        ),
    ]
    for function in ("sync", "webhook", "worker"):
        caused = [i for run in measured.runs for i in run if i.function == function]
        if caused:
            rows.append(_invocation_row(f"{function}, during a run", caused))
    rows.append(_invocation_row("maintenance, after a run", measured.run_maintenance_after))
    lines = [
        (
            f"prices: {prices.region} list prices as of {prices.as_of} ({prices.quoted}); "
            "by region, and they may change; no free tier"
        ),
        (
            f"terraform: {shape.memory_mb} MB per function; sync {shape.sync_schedule} "
            f"({result.sync_per_month:,.0f}/month), maintenance {shape.maintenance_schedule} "
            f"({result.maintenance_per_month:,.0f}/month, {result.reconciles_per_month:,.0f} "
            f"reconciling: every {shape.reconcile_hours:g} h); log level {shape.log_level}"
        ),
        (
            f"runs measured: {MEASURED_RUNS}; per run {statistics.mean(measured.run_syncs):g} sync "
            f"invocation(s) and {statistics.mean(measured.run_events):g} Strava event(s)"
        ),
        "",
        (
            "measured per invocation (log: bytes / lines the handler printed; "
            "RRU/WRU: DynamoDB read/write units from item sizes):"
        ),
        _table(rows),
        "",
    ]
    for title, usage in (
        ("idle month", result.idle),
        ("one run (beyond the idle ticks it replaces)", result.per_run),
        (f"month with {RUNS_PER_ACTIVE_MONTH} runs", result.active),
    ):
        bill = [["item", "quantity", "unit", "USD"]] + [
            [line.item, _quantity(line.quantity), line.unit, f"{line.usd:.6f}"]
            for line in priced(usage, prices)
        ]
        bill.append(["total", "", "", f"{total_usd(usage, prices):.6f}"])
        lines += [f"{title}, per account:", _table(bill), ""]
    lines += [
        "labelled estimates and what is left out:",
        (
            "- durations are this machine's, against loopback servers: AWS's requests take their "
            "own network time; 'cold' here is the handler's first invocation in a process whose "
            "modules are already imported (import time: bench/lambda_cold_import.py); a sync "
            "container's occasional cold start is not in the month"
        ),
        (
            "- CloudWatch Logs: the handlers' lines are measured; Lambda's START/END/REPORT lines "
            f"(~{platform_log_bytes(memory_mb=shape.memory_mb, cold=False)} B an invocation) are "
            "an estimate from their documented formats"
        ),
        (
            f"- SQS: the webhook's sends are measured; the event source mapping's receive + delete "
            f"({MAPPING_REQUESTS_PER_EVENT} per event) are an estimate. Its long polling of the "
            "idle queue is left out: AWS documents that the mapping polls, not how often; each "
            f"million requests would add ${prices.sqs_request * 1e6:.2f}"
        ),
        (
            "- not counted: API Gateway (the webhook's requests), X-Ray traces, EventBridge "
            "(scheduled rules are free), data transfer, SSM (standard parameters are free)"
        ),
        (
            "- KMS counts the handlers' own requests; the services that use the key on the "
            "account's behalf (SQS encrypting a message, SSM a SecureString, Lambda its "
            "environment at a cold start, CloudWatch Logs its log groups) make requests "
            "this process cannot see"
        ),
    ]
    return "\n".join(lines)


def as_json(measured: Measured, shape: Shape, prices: Prices, result: Month) -> dict[str, Any]:
    def bill(usage: Usage) -> dict[str, Any]:
        return {
            "items": [asdict(line) for line in priced(usage, prices)],
            "total_usd": total_usd(usage, prices),
        }

    return {
        "prices": asdict(prices),
        "terraform": asdict(shape),
        "invocations": {
            "sync_idle": [asdict(i) for i in measured.sync_idle],
            "sync_cold": asdict(measured.sync_cold),
            "maintenance_idle": [asdict(i) for i in measured.maintenance_idle],
            "maintenance_first": asdict(measured.maintenance_first),
            "runs": [[asdict(i) for i in run] for run in measured.runs],
            "maintenance_after_run": [asdict(i) for i in measured.run_maintenance_after],
        },
        "month": {
            "sync_invocations": result.sync_per_month,
            "maintenance_invocations": result.maintenance_per_month,
            "idle": bill(result.idle),
            "per_run": bill(result.per_run),
            f"active_{RUNS_PER_ACTIVE_MONTH}_runs": bill(result.active),
        },
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    prices = load_prices()
    shape = terraform_shape()
    with moto_environment():
        measured = measure(shape)
    result = month(measured, shape)
    if args.json:
        print(json.dumps(as_json(measured, shape, prices, result), indent=2))
    else:
        print(report(measured, shape, prices, result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
