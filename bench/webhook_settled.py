"""Strava requests per uploaded run, all in, with the webhook live and without it.

Starts the real `garmin2strava run` (sync scheduler + webhook server + mirror worker)
against the Garmin and Strava emulators on loopback. With `--webhook` (the default)
the daemon is subscribed through `garmin2strava webhook subscribe`, the mirror is
filled once with `mirror backfill` (setup, counted apart), and the Strava emulator
processes each upload in the background and delivers its `create` event to the
daemon, as Strava does. Then `--runs` runs appear on Garmin at random moments over
`--cycles` sync intervals (`--interval`, default 60 s, the daemon's default).

Gear and feed muting are on (issue 21): every run used Garmin gear "Pegasus 41", the
athlete has a Strava shoe of that name, and G2S_HIDE_FROM_HOME=under:10km hides every
run; each run's finish is one PUT /activities/{id}.

Printed: the Strava requests of the run phase by endpoint, per run (uploads, reads:
the uploader's list queries and status polls, the worker's fetches; writes: the PUT;
the athlete's gear read, at most once a day per account, apart and amortized), the
Garmin requests per run, an idle cycle's requests after the runs settled, the time
from a run appearing on Garmin to its Strava activity existing (p50, p95, max), that
every run is on Strava exactly once, settled in the ledger and in the mirror, and the
runs a day one application's read quota (1,000 a day) carries at that cost. Run it
twice to compare, `--webhook` and `--no-webhook`, or `--compare` for both in one go.

    .venv/bin/python bench/webhook_settled.py [--runs 20] [--cycles 5] [--interval 60]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from g2s_harness.serving import ServeConfig, start_serve, stop_serve
from g2s_sandbox.scenario import SandboxPair, running_sandboxes, seed_run
from garmin2strava.adapters.crypto import AesGcmCipher, parse_token_key
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.domain.models import UploadOutcome
from garmin2strava.domain.upload_rules import external_id_for

READS_PER_DAY = 1000
GEAR = "Pegasus 41"
HIDE_FROM_HOME = "under:10km"
# Not the runs' reads: token refreshes, subscriptions, the PUT (a write), the gear read.
NOT_READS = {"upload", "token", "push_subscriptions", "update", "athlete"}
USER = "demo"
FIRST_START = datetime(2025, 6, 2, 5, 0, tzinfo=UTC)
# Strava's own delays, roughly: processing a file, then delivering its event.
PROCESSING_S = 3.0
DELIVERY_S = 1.0


@dataclass
class Outcome:
    mode: str
    counts: Counter[str]
    setup: Counter[str]
    garmin: Counter[str]
    idle_cycles: int
    idle_strava: int
    idle_garmin: int
    gear_on_strava: int
    latencies: list[float]
    on_strava: dict[int, int]
    settled: int
    mirrored: int
    runs: int


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(  # noqa: S603 - our interpreter, our CLI
        [sys.executable, "-m", "garmin2strava.entrypoints.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        msg = f"garmin2strava {' '.join(args)} failed: {done.stdout}{done.stderr}"
        raise RuntimeError(msg)
    return done.stdout


def _requests(pair: SandboxPair) -> Counter[str]:
    with pair.strava.lock:
        return Counter({k: v for k, v in pair.strava.requests.items() if v})


def _on_strava(pair: SandboxPair, garmin_ids: list[int]) -> dict[int, int]:
    """Garmin id -> how many Strava activities carry its external_id."""
    found = dict.fromkeys(garmin_ids, 0)
    with pair.strava.lock:
        for activity in pair.strava.activities.values():
            for garmin_id in garmin_ids:
                if (activity.external_id or "").startswith(external_id_for(garmin_id)):
                    found[garmin_id] += 1
    return found


def _seed_and_watch(
    pair: SandboxPair, args: argparse.Namespace
) -> tuple[list[int], dict[int, float], dict[int, float]]:
    """Make the runs appear on Garmin at random moments; note when each appeared and
    when its Strava activity first existed (monotonic seconds)."""
    rng = random.Random(7)  # noqa: S311 - when runs appear, not a secret
    horizon = args.cycles * args.interval
    moments = sorted(rng.uniform(0, horizon) for _ in range(args.runs))
    garmin_ids = [1000 + i for i in range(args.runs)]
    appeared: dict[int, float] = {}
    seen: dict[int, float] = {}
    began = time.monotonic()
    pending = list(zip(moments, garmin_ids, strict=True))
    deadline = began + horizon + 4 * args.interval + 120
    while time.monotonic() < deadline and len(seen) < args.runs:
        now = time.monotonic() - began
        while pending and pending[0][0] <= now:
            _, garmin_id = pending.pop(0)
            start = FIRST_START + timedelta(minutes=40 * (garmin_id - 1000))
            seed_run(pair, garmin_id, start_utc=start, name=f"Run {garmin_id}", gear=(GEAR,))
            appeared[garmin_id] = time.monotonic()
        for garmin_id, count in _on_strava(pair, list(appeared)).items():
            if count and garmin_id not in seen:
                seen[garmin_id] = time.monotonic()
        time.sleep(0.25)
    return garmin_ids, appeared, seen


def run_mode(args: argparse.Namespace, *, webhook: bool) -> Outcome:
    mode = "webhook live" if webhook else "no webhook"
    with (
        running_sandboxes(processing_delay_s=PROCESSING_S) as pair,
        tempfile.TemporaryDirectory() as tmp,
    ):
        pair.strava.webhooks.delivery_delay_s = DELIVERY_S
        cfg = ServeConfig.fresh(
            Path(tmp), user_id=USER, subscription_id=1, verify_token="bench-" + "v" * 24
        )
        env = cfg.env(pair)
        env.pop("STRAVA_SUBSCRIPTION_ID")  # the daemon learns the id `subscribe` stores
        env["G2S_SYNC_INTERVAL_SECONDS"] = str(args.interval)
        env["G2S_LOG_LEVEL"] = "INFO"
        env["G2S_HIDE_FROM_HOME"] = HIDE_FROM_HOME
        shoe = pair.strava.add_gear(pair.athlete_id, GEAR)
        log = Path(tmp) / "run.log"
        proc = start_serve(env, log, command="run")
        try:
            before_setup = _requests(pair)
            if webhook:
                _cli(env, "webhook", "subscribe", "--url", f"http://127.0.0.1:{cfg.port}")
                _cli(env, "mirror", "backfill", "--since", "2025-01-01")
                time.sleep(6)  # the daemon re-reads the stored subscription id every 5 s
            setup = _requests(pair) - before_setup
            start_counts = _requests(pair)
            garmin_start = Counter(pair.garmin.requests)
            garmin_ids, appeared, seen = _seed_and_watch(pair, args)
            # Let the last events, polls and webhook settles land before counting.
            settle_until = time.monotonic() + (args.interval + 30 if not webhook else 30)
            settled = mirrored = 0
            while time.monotonic() < settle_until:
                settled, mirrored = _ledger_and_mirror(cfg, garmin_ids)
                if settled == args.runs and (mirrored == args.runs or not webhook):
                    break
                time.sleep(1)
            counts = _requests(pair) - start_counts
            garmin = Counter(pair.garmin.requests) - garmin_start
            on_strava = _on_strava(pair, garmin_ids)
            idle_cycles, idle_strava, idle_garmin = _idle(pair, args.interval)
            gear_on_strava = _geared(pair, garmin_ids, shoe)
        finally:
            stop_serve(proc)
            if args.keep_log:
                Path(args.keep_log).write_bytes(log.read_bytes())
    latencies = [seen[g] - appeared[g] for g in seen]
    return Outcome(
        mode,
        counts,
        setup,
        garmin,
        idle_cycles,
        idle_strava,
        idle_garmin,
        gear_on_strava,
        latencies,
        on_strava,
        settled,
        mirrored,
        args.runs,
    )


def _idle(pair: SandboxPair, interval: int) -> tuple[int, int, int]:
    """Everything settled: (cycles, Strava requests, Garmin requests) over two sync
    intervals, the cycles counted by Garmin's list requests."""
    strava_before, garmin_before = pair.strava_total(), Counter(pair.garmin.requests)
    time.sleep(2 * interval + 2)
    garmin = Counter(pair.garmin.requests) - garmin_before
    return garmin.get("list", 0), pair.strava_total() - strava_before, sum(garmin.values())


def _geared(pair: SandboxPair, garmin_ids: list[int], shoe: str) -> int:
    """Runs whose Strava activity carries the shoe and is hidden from home."""
    wanted = {external_id_for(g) for g in garmin_ids}
    with pair.strava.lock:
        return sum(
            1
            for a in pair.strava.activities.values()
            if (a.external_id or "").removesuffix(".fit") in wanted
            and a.gear_id == shoe
            and a.hide_from_home
        )


def _ledger_and_mirror(cfg: ServeConfig, garmin_ids: list[int]) -> tuple[int, int]:
    """(ledger entries settled as uploaded, runs present in the mirror)."""
    with SqliteStore(cfg.db, AesGcmCipher(parse_token_key(cfg.token_key))) as store:
        entries = store.get_uploads(USER, garmin_ids)
        uploaded = [e for e in entries.values() if e.outcome is UploadOutcome.UPLOADED]
        mirrored = sum(
            1
            for e in uploaded
            if e.strava_activity_id is not None
            and store.get_workout(USER, e.strava_activity_id) is not None
        )
        return len(uploaded), mirrored


def report(outcome: Outcome) -> None:
    runs = outcome.runs
    counts = outcome.counts
    uploads = counts.get("upload", 0)
    reads = sum(v for k, v in counts.items() if k not in NOT_READS)
    writes = counts.get("update", 0)
    gear_reads = counts.get("athlete", 0)
    print(f"\n== {outcome.mode}: {runs} runs")
    if outcome.setup:
        print(f"  setup (once per account): {dict(sorted(outcome.setup.items()))}")
    print(f"  Strava requests of the run phase by endpoint: {dict(sorted(counts.items()))}")
    print(
        f"  per run: {uploads / runs:.2f} upload + {reads / runs:.2f} reads + "
        f"{writes / runs:.2f} writes (token refreshes apart: {counts.get('token', 0)})"
    )
    print(
        f"  the athlete's gear (GET /athlete, at most 1 a day per account): {gear_reads} in "
        f"the run phase = {gear_reads / runs:.2f} per run here; 1 a day amortized over "
        f"{runs} runs a day is {1 / runs:.3f} a run"
    )
    print(
        f"  Garmin per run: {dict(sorted(outcome.garmin.items()))} -> "
        f"{sum(v for k, v in outcome.garmin.items() if k != 'list') / runs:.2f} per run "
        f"besides the cycles' lists"
    )
    print(f"  with the shoe and hidden from home on Strava: {outcome.gear_on_strava}/{runs}")
    if outcome.idle_cycles:
        print(
            f"  idle cycles after: {outcome.idle_cycles}; per cycle "
            f"{outcome.idle_strava / outcome.idle_cycles:.2f} Strava and "
            f"{outcome.idle_garmin / outcome.idle_cycles:.2f} Garmin requests"
        )
    once = sum(1 for n in outcome.on_strava.values() if n == 1)
    extra = sum(max(0, n - 1) for n in outcome.on_strava.values())
    print(
        f"  on Strava exactly once: {once}/{runs} (duplicates {extra}); ledger uploaded "
        f"{outcome.settled}/{runs}; in the mirror {outcome.mirrored}/{runs}"
    )
    if outcome.latencies:
        lat = sorted(outcome.latencies)
        p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
        print(
            f"  Garmin -> Strava activity: p50 {statistics.median(lat):.1f} s, "
            f"p95 {p95:.1f} s, max {lat[-1]:.1f} s"
        )
    if reads:
        print(f"  capacity: {READS_PER_DAY / (reads / runs):.0f} runs a day within 1,000 reads")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--webhook", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compare", action="store_true", help="both modes, one after another")
    parser.add_argument("--keep-log", help="copy the daemon's log here")
    args = parser.parse_args()
    os.environ.setdefault("G2S_LOG_LEVEL", "WARNING")
    modes = [True, False] if args.compare else [args.webhook]
    outcomes = [run_mode(args, webhook=mode) for mode in modes]
    for outcome in outcomes:
        report(outcome)
    ok = all(
        all(n == 1 for n in o.on_strava.values())
        and o.settled == o.runs
        and o.gear_on_strava == o.runs
        and o.idle_strava == 0
        for o in outcomes
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
