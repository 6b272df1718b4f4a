"""The uploader's API budgets and timings, against both emulators on loopback.

    .venv/bin/python bench/uploader.py                    (or `make bench`)
    .venv/bin/python bench/uploader.py --store dynamodb   (the AWS store)

One process: the Garmin and Strava emulators (threads on 127.0.0.1), the real
garminconnect and stravalib adapters, a temporary SQLite store. With `--store
dynamodb` the store is a DynamoDBStore with KMS-sealed tokens instead: the script
starts a local moto server on 127.0.0.1 (dummy credentials, never real AWS), gives
each configuration a fresh table and stops the server at the end; the table then
also counts the DynamoDB and KMS requests. It measures

- the requests of an idle cycle (nothing new on Garmin) and its wall time (median);
- a cycle that finds 20 new runs: its requests, per uploaded activity, and its wall
  time with the poll delay as configured by default, then again (20 other runs, a
  fresh store) with the poll delay set to 0, to show what the delay costs and saves;
- Garmin login attempts over the whole run (the daemon must never log in);
- with `--store dynamodb`: an idle INVOCATION of the Lambda sync as a warm container
  runs it (`run_scheduled_sync`: the cycles, telling, the lease, everything), with 1,
  2 and 3 accounts: its DynamoDB and KMS requests (budget: at most 2 DynamoDB and 0
  KMS for one account, at most 2 DynamoDB more per further account);
- what checking one downloaded file (safe unzip, then a full FIT parse) costs.

The poll delay is not slept: the cycle's `sleep` moves the Strava emulator's clock
forward instead (so Strava has processed the file by the poll, as it would have), and
the table reports the cycle's wall time as the time measured plus the delay it would
have slept. That keeps the run under a minute on a small machine.

Prints one table and exits 1 when a budget is broken: an idle cycle makes a Strava
request or other than one Garmin request, an upload costs more than 2 other Strava
requests (default configuration), anything tried to log in to Garmin, or (DynamoDB)
an idle invocation is over its DynamoDB/KMS budget.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from g2s_harness.sandbox_settings import sandbox_settings
from g2s_sandbox.fitgen import build_activity_fit, zip_original
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from garmin2strava.adapters.fitfile import OriginalFiles
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.bootstrap import App, bootstrap, build_cipher
from garmin2strava.logs import configure_logging
from garmin2strava.ports import Store
from garmin2strava.services.accounts import ensure_settings_account
from garmin2strava.services.sync import CycleReport
from garmin2strava.services.sync_accounts import sync_all
from garmin2strava.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_kms import KMSClient

NEW_RUNS = 20
IDLE_CYCLES = 20
# Strava takes a moment to process a file; the emulator makes it this long.
STRAVA_PROCESSING_S = 0.5
MAX_SETTLE_CYCLES = 40
SETTLED = frozenset({"uploaded", "exists", "duplicate", "skipped"})
# Requests the DynamoDB store and its KMS cipher made, by service (--store dynamodb).
AWS_REQUESTS: Counter[str] = Counter()


@dataclass(frozen=True, slots=True)
class Counts:
    garmin_list: int
    garmin_download: int
    garmin_token: int
    garmin_login: int
    garmin_total: int
    strava_reads: int
    strava_uploads: int
    strava_oauth: int
    dynamodb: int
    kms: int

    @classmethod
    def of(cls, pair: SandboxPair) -> Counts:
        garmin = dict(pair.garmin.requests)
        with pair.strava.lock:
            reads, uploads = pair.strava.reads, pair.strava.uploads
            oauth = pair.strava.requests["token"]
        return cls(
            garmin_list=garmin.get("list", 0),
            garmin_download=garmin.get("download", 0),
            garmin_token=garmin.get("token_refresh", 0),
            garmin_login=garmin.get("login", 0),
            garmin_total=sum(garmin.values()),
            strava_reads=reads,
            strava_uploads=uploads,
            strava_oauth=oauth,
            dynamodb=AWS_REQUESTS["dynamodb"],
            kms=AWS_REQUESTS["kms"],
        )

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            *(
                getattr(self, name) - getattr(other, name)
                for name in self.__dataclass_fields__  # same field order as the constructor
            )
        )


@dataclass(frozen=True, slots=True)
class BatchResult:
    poll_delay_s: float
    cycle_s: float  # measured
    cycle_slept_s: float  # poll delays the cycle would have slept
    cycle: Counts
    settle_cycles: int
    total: Counts  # the cycle plus the cycles that settled what was still processing
    uploaded: int


@dataclass(slots=True)
class Table:
    rows: list[tuple[str, str, str, str]]
    broken: list[str]

    def add(self, metric: str, value: str, budget: str = "", ok: bool | None = None) -> None:
        verdict = "" if ok is None else ("ok" if ok else "BROKEN")
        if ok is False:
            self.broken.append(metric)
        self.rows.append((metric, value, budget, verdict))

    def print(self) -> None:
        header = ("metric", "value", "budget", "")
        widths = [max(len(r[i]) for r in [header, *self.rows]) for i in range(4)]
        for row in [header, tuple("-" * w for w in widths), *self.rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


class EmulatorTime:
    """The cycle's sleeps move the Strava emulator's clock instead of passing."""

    def __init__(self, pair: SandboxPair) -> None:
        self.slept = 0.0
        pair.strava.clock = self.now

    def now(self) -> float:
        return time.time() + self.slept

    def sleep(self, seconds: float) -> None:
        self.slept += seconds


@dataclass(slots=True)
class MotoAws:
    """boto3 clients on a local moto server (127.0.0.1, dummy credentials) whose
    requests are counted in AWS_REQUESTS."""

    endpoint: str
    tables: list[str] = field(default_factory=list)

    def client(self, service: str) -> Any:
        import boto3

        client = boto3.client(
            service,  # type: ignore[call-overload]  # one of "dynamodb"/"kms", chosen at run time
            endpoint_url=self.endpoint,
            region_name="eu-west-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )

        def count(**_: Any) -> None:
            AWS_REQUESTS[service] += 1

        client.meta.events.register(f"before-call.{client.meta.service_model.service_name}", count)
        return client

    def dynamodb(self) -> DynamoDBClient:
        client: DynamoDBClient = self.client("dynamodb")
        return client

    def kms(self) -> KMSClient:
        client: KMSClient = self.client("kms")
        return client


@contextlib.contextmanager
def moto_aws() -> Iterator[MotoAws]:
    """A moto server on loopback for the whole run, stopped at the end."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield MotoAws(f"http://{host}:{port}")
    finally:
        server.stop()


@contextlib.contextmanager
def dynamodb_store(
    aws: MotoAws, pair: SandboxPair, db_path: Path
) -> Iterator[tuple[Settings, Store]]:
    """A fresh table and KMS key: settings as a DynamoDB deployment has them, and the
    store (DynamoDBStore, tokens sealed by KmsCipher)."""
    from garmin2strava.adapters.kms import KmsCipher
    from garmin2strava.adapters.store.dynamodb import (
        DynamoDBStore,
        create_table,
    )

    client = aws.dynamodb()
    table = f"g2s-bench-{uuid.uuid4().hex[:12]}"
    create_table(client, table)
    key_id = aws.kms().create_key()["KeyMetadata"]["KeyId"]
    settings = sandbox_settings(
        pair, db_path, store="dynamodb", dynamodb_table=table, kms_key_id=key_id, token_key=None
    )
    try:
        yield settings, DynamoDBStore(table, KmsCipher(key_id, client=aws.kms()), client=client)
    finally:
        client.delete_table(TableName=table)


@contextlib.contextmanager
def app_on(
    pair: SandboxPair, db_path: Path, aws: MotoAws | None = None
) -> Iterator[tuple[App, EmulatorTime]]:
    """The app on a SQLite file at db_path, or on DynamoDB when `aws` is given."""
    emulator_time = EmulatorTime(pair)
    store: Store
    with contextlib.ExitStack() as stack:
        if aws is None:
            settings = sandbox_settings(pair, db_path)
            store = stack.enter_context(SqliteStore(settings.db_path, build_cipher(settings)))
        else:
            settings, store = stack.enter_context(dynamodb_store(aws, pair, db_path))
        app = bootstrap(settings, store=store)
        app.sleep = emulator_time.sleep
        ensure_settings_account(store, settings, app.clock)
        yield app, emulator_time


def seed_batch(pair: SandboxPair, first_id: int, start: datetime) -> list[int]:
    ids = []
    for i in range(NEW_RUNS):
        run = seed_run(
            pair,
            first_id + i,
            start_utc=start + timedelta(hours=7 * i),
            name=f"Bench run {i + 1}",
            duration_s=1200 + 60 * i,
        )
        ids.append(run.garmin_id)
    return ids


def cycle(app: App) -> CycleReport:
    (report,) = sync_all(app.store, app.sync_deps)
    if not report.ok:
        raise SystemExit(f"bench: a cycle failed: {report.error or report.skipped_reason}")
    return report


def unsettled(app: App, garmin_ids: list[int]) -> int:
    ledger = app.store.get_uploads(app.settings.user_id, garmin_ids)
    return sum(1 for i in garmin_ids if i not in ledger or ledger[i].outcome not in SETTLED)


def run_batch(
    pair: SandboxPair, app: App, emulator_time: EmulatorTime, garmin_ids: list[int]
) -> BatchResult:
    before = Counts.of(pair)
    slept_before = emulator_time.slept
    started = time.perf_counter()
    report = cycle(app)
    cycle_s = time.perf_counter() - started
    cycle_slept_s = emulator_time.slept - slept_before
    after_cycle = Counts.of(pair)
    settle_cycles = 0
    while unsettled(app, garmin_ids):
        if settle_cycles == MAX_SETTLE_CYCLES:
            raise SystemExit(f"bench: {unsettled(app, garmin_ids)} uploads never settled")
        emulator_time.sleep(STRAVA_PROCESSING_S)  # the next cycle comes later
        settle_cycles += 1
        report.outcomes.update(cycle(app).outcomes)
    return BatchResult(
        poll_delay_s=app.sync_config().poll_delay_s,
        cycle_s=cycle_s,
        cycle_slept_s=cycle_slept_s,
        cycle=after_cycle - before,
        settle_cycles=settle_cycles,
        total=Counts.of(pair) - before,
        uploaded=report.outcomes["uploaded"],
    )


def idle_cycles(pair: SandboxPair, app: App) -> tuple[list[Counts], list[float]]:
    counts, times = [], []
    for _ in range(IDLE_CYCLES):
        before = Counts.of(pair)
        started = time.perf_counter()
        report = cycle(app)
        times.append(time.perf_counter() - started)
        counts.append(Counts.of(pair) - before)
        if report.outcomes:
            raise SystemExit(f"bench: an idle cycle did something: {dict(report.outcomes)}")
    return counts, times


IDLE_INVOCATIONS = 5
MAX_ACCOUNTS = 3


@dataclass(frozen=True, slots=True)
class InvocationCounts:
    accounts: int
    dynamodb: int  # the most of IDLE_INVOCATIONS warm idle invocations
    kms: int
    garmin: int
    strava: int


def idle_invocations(pair: SandboxPair, app: App) -> list[InvocationCounts]:
    """Warm idle invocations of the Lambda sync (`run_scheduled_sync`, one container's
    runtime reused) with 1..MAX_ACCOUNTS accounts: each account added holds the first
    one's tokens, so it lists the same (settled) Garmin activities."""
    import io

    from g2s_harness.aws_lambda import FakeContext
    from garmin2strava.entrypoints.aws_lambda.sync_handler import run_scheduled_sync

    def invoke(*, idle: bool = True) -> Counts:
        before = Counts.of(pair)
        with contextlib.redirect_stdout(io.StringIO()):  # the EMF lines
            summary = run_scheduled_sync(app, FakeContext())
        if summary["failed"] or (idle and summary["outcomes"]):
            raise SystemExit(f"bench: an idle invocation did something: {summary}")
        return Counts.of(pair) - before

    first = app.settings.user_id
    tokens = app.store.get_garmin_tokens(first)
    strava_tokens = app.store.get_strava_tokens(first)
    account = app.store.get_account(first)
    # All made by ensure_settings_account and the cycles before.
    assert tokens is not None
    assert strava_tokens is not None
    assert account is not None
    rows = []
    for n in range(1, MAX_ACCOUNTS + 1):
        if n > 1:
            user_id = f"bench{n}"
            app.store.put_account(replace(account, user_id=user_id))
            app.store.replace_garmin_tokens(user_id, tokens.blob, expected_version=None)
            app.store.replace_strava_tokens(user_id, strava_tokens, expected_version=None)
        # The first with this set of accounts: the new one finds the runs already on
        # Strava (settled `exists`), then is marked idle.
        invoke(idle=False)
        invoke(idle=False)
        counts = [invoke() for _ in range(IDLE_INVOCATIONS)]
        rows.append(
            InvocationCounts(
                accounts=n,
                dynamodb=max(c.dynamodb for c in counts),
                kms=max(c.kms for c in counts),
                garmin=max(c.garmin_total for c in counts),
                strava=max(c.strava_reads + c.strava_uploads + c.strava_oauth for c in counts),
            )
        )
    return rows


def invocation_rows(table: Table, rows: list[InvocationCounts]) -> None:
    for row in rows:
        dynamodb_budget = 2 * row.accounts
        table.add(
            f"idle Lambda invocation, {row.accounts} account(s): DynamoDB / KMS requests "
            f"(max of {IDLE_INVOCATIONS})",
            f"{row.dynamodb} / {row.kms}",
            f"<= {dynamodb_budget} / 0",
            row.dynamodb <= dynamodb_budget and row.kms == 0,
        )
        table.add(
            f"idle Lambda invocation, {row.accounts} account(s): Garmin / Strava requests",
            f"{row.garmin} / {row.strava}",
            f"{row.accounts} / 0",
            row.garmin == row.accounts and row.strava == 0,
        )
    table.add(
        "idle Lambda invocation: besides, per account every 15 min",
        "1 DynamoDB Query (the ledger's dead uploads, LedgerGate)",
    )


def per_upload(n: int, uploaded: int) -> str:
    return f"{n / uploaded:.2f}" if uploaded else "n/a"


def batch_rows(table: Table, label: str, batch: BatchResult, *, budgeted: bool) -> None:
    c, t = batch.cycle, batch.total
    up = batch.uploaded
    other = t.strava_reads + t.strava_oauth
    table.add(
        f"{label}: wall time of the cycle",
        f"{batch.cycle_s + batch.cycle_slept_s:.1f} s "
        f"({batch.cycle_s:.1f} s working + {batch.cycle_slept_s:.1f} s poll delay)",
    )
    table.add(f"{label}: uploaded", f"{up} of {NEW_RUNS}", str(NEW_RUNS), up == NEW_RUNS)
    table.add(
        f"{label}: the cycle's requests",
        f"Garmin {c.garmin_total} (list {c.garmin_list}, download {c.garmin_download}), "
        f"Strava {c.strava_reads} read + {c.strava_uploads} upload + {c.strava_oauth} oauth",
    )
    table.add(
        f"{label}: later cycles to settle processing",
        f"{batch.settle_cycles} (Strava {t.strava_reads - c.strava_reads} read)",
    )
    table.add(f"{label}: upload requests / upload", per_upload(t.strava_uploads, up))
    table.add(
        f"{label}: other Strava requests / upload",
        per_upload(other, up),
        "<= 2" if budgeted else "(info)",
        (up > 0 and other / up <= 2) if budgeted else None,
    )
    table.add(f"{label}: Garmin downloads / upload", per_upload(t.garmin_download, up))
    if t.dynamodb:
        table.add(
            f"{label}: DynamoDB / KMS requests / upload",
            f"{per_upload(t.dynamodb, up)} / {per_upload(t.kms, up)}",
        )


def file_check_seconds(repeat: int = 3) -> tuple[float, int]:
    """Median time to check one ORIGINAL zip of a 30-minute run, and its size."""
    start = datetime(2025, 6, 1, 6, 0, tzinfo=UTC)
    fit = build_activity_fit(start_utc=start, duration_s=1800, distance_m=6000.0)
    original = zip_original(1, fit)
    times = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="g2s-bench-") as workdir:
            started = time.perf_counter()
            OriginalFiles().prepare(original, Path(workdir))
            times.append(time.perf_counter() - started)
    return statistics.median(times), len(fit)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--store",
        choices=("sqlite", "dynamodb"),
        default="sqlite",
        help="the store under the app (dynamodb: on a local moto server this script runs)",
    )
    args = parser.parse_args(argv)
    configure_logging("WARNING", "text")
    cores = os.cpu_count() or 0
    print(
        f"machine: Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}, {cores} cores"
    )
    with contextlib.ExitStack() as stack:
        aws = stack.enter_context(moto_aws()) if args.store == "dynamodb" else None
        store = "SQLite" if aws is None else f"DynamoDB + KMS on moto at {aws.endpoint}"
        print(f"store: {store}")
        return measure(aws)


def measure(aws: MotoAws | None) -> int:
    started = time.perf_counter()
    for module in ("garmin2strava.adapters.garmin", "garmin2strava.adapters.strava"):
        importlib.import_module(module)  # cold imports stay out of the cycle timings
    import_s = time.perf_counter() - started

    table = Table([], [])
    now = datetime.now(tz=UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="g2s-bench-") as tmp:
        # Each configuration gets its own emulators and store: a fresh account.
        with (
            running_sandboxes(processing_delay_s=STRAVA_PROCESSING_S) as pair,
            app_on(pair, Path(tmp) / "default.sqlite3", aws) as (app, emulator_time),
        ):
            default_delay = app.sync_config().poll_delay_s
            ids = seed_batch(pair, 41_000_001, now - timedelta(days=10))
            default = run_batch(pair, app, emulator_time, ids)
            idle_counts, idle_times = idle_cycles(pair, app)
            invocations = [] if aws is None else idle_invocations(pair, app)
            logins = Counts.of(pair).garmin_login
        with (
            running_sandboxes(processing_delay_s=STRAVA_PROCESSING_S) as pair,
            app_on(pair, Path(tmp) / "nodelay.sqlite3", aws) as (app, emulator_time),
        ):
            app.poll_delay_s = 0.0
            ids = seed_batch(pair, 41_000_001, now - timedelta(days=10))
            nodelay = run_batch(pair, app, emulator_time, ids)
            logins += Counts.of(pair).garmin_login
    check_s, fit_size = file_check_seconds()

    max_strava = max(c.strava_reads + c.strava_uploads + c.strava_oauth for c in idle_counts)
    garmin_per_idle = {c.garmin_total for c in idle_counts}
    table.add(
        f"idle cycle: Strava requests (max of {IDLE_CYCLES})", str(max_strava), "0", max_strava == 0
    )
    table.add(
        f"idle cycle: Garmin requests (each of {IDLE_CYCLES})",
        ",".join(str(n) for n in sorted(garmin_per_idle)),
        "1",
        garmin_per_idle == {1},
    )
    if aws is not None:
        table.add(
            f"idle cycle: DynamoDB / KMS requests (each of {IDLE_CYCLES})",
            ",".join(str(n) for n in sorted({c.dynamodb for c in idle_counts}))
            + " / "
            + ",".join(str(n) for n in sorted({c.kms for c in idle_counts})),
        )
    if invocations:
        invocation_rows(table, invocations)
    table.add(
        f"idle cycle: wall time (median of {IDLE_CYCLES})",
        f"{statistics.median(idle_times) * 1000:.1f} ms "
        f"(min {min(idle_times) * 1000:.1f}, max {max(idle_times) * 1000:.1f})",
    )
    batch_rows(
        table, f"{NEW_RUNS} new, poll delay {default_delay:g} s (default)", default, budgeted=True
    )
    batch_rows(table, f"{NEW_RUNS} new, poll delay 0 s", nodelay, budgeted=False)
    table.add("Garmin login attempts (whole run)", str(logins), "0", logins == 0)
    table.add(
        "file check of one 30-min run (unzip + full FIT parse)",
        f"{check_s * 1000:.0f} ms ({fit_size // 1024} KiB FIT)",
    )
    table.add("cold import of the client adapters", f"{import_s:.2f} s")
    table.add("Strava processing time (emulator)", f"{STRAVA_PROCESSING_S:g} s")

    print()
    table.print()
    print(f"\ntotal bench time: {time.perf_counter() - started:.1f} s")
    if table.broken:
        print(f"bench: budget broken: {'; '.join(table.broken)}", file=sys.stderr)
        return 1
    print("bench: every budget held")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
