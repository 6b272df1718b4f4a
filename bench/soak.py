"""Soak: the real daemon (`garmin2strava run`, a process, SQLite, its webhook and its
worker) through simulated days of one-minute cycles and scheduled faults, against
the sandbox emulators on loopback; then the accounting.

    nice -n 10 .venv/bin/python bench/soak.py --days 3 [--speed 720] [--json out.json]

Three accounts (three Strava athletes; the Garmin emulator serves one activity list,
so each account gets every run), each day one or two runs at realistic times, now and
then a manual entry, a ride and a swim on Garmin (none of them a run to upload), and
manual entries, renames and deletes made on Strava. The faults (FAULTS below, each
with the conditions it must open) are spread over the days before the last 30 hours,
which are quiet so that the daily reconciliation repairs what a dropped event hid.

Clock: every process runs on one simulated clock, `--speed` times real time
(src/g2s_harness/soak.py). Prints a table; `--json` writes the figures. Not a test: it
prints what it measured (tests/integration/test_soak.py runs a short version).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import math
import random
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from g2s_harness.soak import (
    Daemon,
    ProcessSample,
    SimClock,
    StoreSample,
    read_workouts,
    run_command,
    sample_store,
    start_command,
)

if TYPE_CHECKING:
    from g2s_harness.notify_catchers import JsonCatcher
    from g2s_sandbox.faults import StravaFaults, WebhookDisorder
    from g2s_sandbox.garmin import GarminSandbox
    from g2s_sandbox.strava import StravaSandbox

HOUR = 3600.0
DAY = 24 * HOUR
ATHLETES = (1001, 1002, 1003)
REVOKING = 2  # the index of the athlete who revokes and reconnects
QUIET_TAIL = 30 * HOUR  # no fault and no Strava-side change this close to the end


def quiet_tail(days: float) -> float:
    """30 h (a daily reconciliation pass, and then some) once the run is long enough;
    a short run keeps its last quarter quiet (and reconciles hourly to fit)."""
    return QUIET_TAIL if days >= 3 else days * DAY / 4


GARMIN_EMAIL, GARMIN_PASSWORD = "soak@example.com", "soak-password"  # the emulator's
# What a fault must open (told once started, once cleared): (key, per account?).
# `maybe`: may open or not, by a race the daemon is right to lose either way.


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    duration_h: float
    opens: tuple[str, ...] = ()
    per_account: bool = False
    maybe: tuple[str, ...] = ()


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("strava_5xx_90min", 1.5, ("strava.unreachable",)),
        Fault("strava_429_storm", 0.5),
        Fault("strava_app_inactive_day", 24, ("strava.app_inactive",)),
        Fault("strava_revoke_reconnect", 6, maybe=("strava.authorization_refused",)),
        Fault("garmin_429_backoff", 0.1),
        Fault("garmin_403_day", 24, ("garmin.network_refused",), per_account=True),
        Fault("garmin_refresh_expired", 3, ("garmin.tokens_refused",), per_account=True),
        Fault("garmin_list_missing", 0.1),
        Fault("disk_full_hour", 1, ("store.unwritable",)),
        Fault("clock_step_plus_2min", 0),
        Fault("clock_step_minus_2min", 0),
        # Not a fault: the daemon runs a moment before `webhook subscribe`.
        Fault("setup", 0, maybe=("webhook.subscription_unknown",)),
    )
}
WEBHOOK_DISORDER = {"drop": 0.1, "duplicate": 0.1, "hold": 0.1}


@dataclass
class World:
    """The emulators, the daemon and everything the bench did to them."""

    clock: SimClock
    garmin: GarminSandbox
    strava: StravaSandbox
    faults: StravaFaults
    disorder: WebhookDisorder | None
    catcher: JsonCatcher
    daemon: Daemon
    db: Path
    disk: Path | None
    envs: list[dict[str, str]]
    rng: random.Random
    next_garmin_id: Iterator[int] = field(default_factory=lambda: itertools.count(30_000_001))
    runs: list[int] = field(default_factory=list)  # Garmin ids that must reach Strava
    not_runs: Counter[str] = field(default_factory=Counter)
    strava_changes: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    windows: list[tuple[str, float, float]] = field(default_factory=list)
    command_failures: list[str] = field(default_factory=list)
    withheld: dict[int, int] = field(default_factory=dict)  # id -> list count when hidden
    kills: int = 0
    notices_read: int = 0
    people: list[threading.Thread] = field(default_factory=list)
    owner_actions: Counter[str] = field(default_factory=Counter)

    def user(self, index: int) -> str:
        return f"acct-{index + 1}"


# -- the days: activities --------------------------------------------------------------
def land_activity(
    world: World, type_key: str, start: datetime, duration_s: int, *, manual: bool = False
) -> int:
    from g2s_sandbox.fitgen import build_activity_fit, zip_original
    from g2s_sandbox.garmin import make_record

    garmin_id = next(world.next_garmin_id)
    distance = duration_s / 300 * 1000
    record = make_record(
        garmin_id, f"Soak {type_key}", type_key, start, duration_s, distance, manual
    )
    original = None
    if not manual:
        sport = "cycling" if "cycling" in type_key else "running"
        payload = build_activity_fit(
            start_utc=start,
            duration_s=duration_s,
            sport=sport,
            sub_sport="generic",
            distance_m=distance,
            with_gps=True,
            serial=garmin_id % 100_000,
        )
        original = zip_original(garmin_id, payload)
    world.garmin.add_activity(record, original)
    if type_key == "running" and not manual:
        world.runs.append(garmin_id)
    else:
        world.not_runs["manual" if manual else type_key] += 1
    return garmin_id


def plan_days(world: World, days: float, end: float) -> list[tuple[float, str, Callable[[], None]]]:
    """Each day's activities, landing on Garmin a few minutes after they end."""
    plan: list[tuple[float, str, Callable[[], None]]] = []
    start = world.clock.start.timestamp()
    midnight = world.clock.start.replace(hour=0, minute=0, second=0).timestamp()
    tail = quiet_tail(days)
    for day in range(math.ceil(days) + 1):
        base = midnight + day * DAY
        sessions = [("running", 6.5 * HOUR)]
        if world.rng.random() < 0.5:
            sessions.append(("running", 18 * HOUR))
        for kind, chance, hour in (
            ("cycling", 0.2, 10),
            ("lap_swimming", 0.15, 12),
            ("manual", 0.1, 20),
        ):
            if world.rng.random() < chance:
                sessions.append((kind, hour * HOUR))
        for kind, at in sessions:
            begin = base + at + world.rng.uniform(-40, 40) * 60
            duration = int(world.rng.uniform(25, 70) * 60)
            lands = begin + duration + world.rng.uniform(3, 10) * 60
            if not start < lands < end - min(3 * HOUR, tail / 2):
                continue
            moment = datetime.fromtimestamp(begin, UTC).replace(microsecond=0)
            type_key = "running" if kind == "manual" else kind
            plan.append(
                (
                    lands,
                    f"land {kind}",
                    _bind(
                        land_activity, world, type_key, moment, duration, manual=kind == "manual"
                    ),
                )
            )
        for index in range(len(ATHLETES)):
            at = base + world.rng.uniform(8, 22) * HOUR
            if start < at < end - tail:
                plan.append((at, "strava change", _bind(strava_change, world, index)))
    return plan


def _bind(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], None]:
    def call() -> None:
        fn(*args, **kwargs)

    return call


def _aside(world: World, fn: Callable[..., Any], *args: Any) -> Callable[[], None]:
    """What a person does at a terminal meanwhile (a login, get-token, a backfill that
    waits for Strava's budget): in its own thread, so the days go on around it."""

    def start() -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception as error:  # noqa: BLE001 - reported, the soak goes on
                world.command_failures.append(f"{getattr(fn, '__name__', fn)}: {error!r}")

        thread = threading.Thread(target=run, name="soak-person", daemon=True)
        world.people.append(thread)
        thread.start()

    return start


def strava_change(world: World, index: int) -> None:
    """What an athlete does on strava.com: a manual entry, a rename or a delete."""
    athlete = ATHLETES[index]
    with world.strava.lock:
        mine = [
            a for a in world.strava.activities.values() if a.athlete_id == athlete and not a.deleted
        ]
    roll = world.rng.random()
    if roll < 0.3 or not mine:
        when = world.clock.now().replace(microsecond=0) - timedelta(hours=3)
        world.strava.add_activity(
            athlete, start_utc=when, elapsed_s=1800, name="Treadmill by hand", manual=True
        )
        world.strava_changes["manual entry"] += 1
    elif roll < 0.85:
        target = world.rng.choice(mine)
        world.strava.update_activity(target.activity_id, title=f"Renamed {secrets.token_hex(3)}")
        world.strava_changes["rename"] += 1
    else:
        target = world.rng.choice(mine)
        world.strava.delete_activity(target.activity_id)
        world.strava_changes["delete"] += 1


# -- the faults --------------------------------------------------------------------------
def plan_faults(
    world: World, names: list[str], kills: int, end: float
) -> list[tuple[float, str, Callable[[], None]]]:
    plan: list[tuple[float, str, Callable[[], None]]] = []
    start = world.clock.start.timestamp()
    first = start + min(6 * HOUR, (end - start) / 12)
    span = max(0.0, end - quiet_tail((end - start) / DAY) - first)
    timed: list[tuple[float, float]] = []  # short windows a restart would swallow
    for number, name in enumerate(names):
        at = first + span * (number + 0.5) / max(1, len(names))
        plan.extend(_fault_steps(world, FAULTS[name], at))
        if 0 < FAULTS[name].duration_h <= 2:  # the outage, the storm, the full disk
            timed.append((at - HOUR, at + (FAULTS[name].duration_h + 0.5) * HOUR))
    moments: list[float] = []
    while len(moments) < kills:
        # A restart takes seconds of real time, an hour of simulated time at 720x: a
        # kill inside a short fault's window would hide the fault from the daemon.
        moment = world.rng.uniform(start + HOUR, end - HOUR)
        if not any(low <= moment <= high for low, high in timed):
            moments.append(moment)
    plan.extend((moment, "sigkill", _bind(kill, world)) for moment in moments)
    return plan


def _fault_steps(
    world: World, fault: Fault, at: float
) -> list[tuple[float, str, Callable[[], None]]]:
    """(when, what, do) for one fault: its start, its end, and for Strava's a run landing
    just after it starts, so the daemon has work that meets it (an idle cycle asks
    Strava nothing)."""
    end = at + fault.duration_h * HOUR
    steps = [(at, f"{fault.name} start", _bind(_start_fault, world, fault.name, at, end))]
    if fault.name.startswith("strava_"):
        steps.append((at + 300, f"{fault.name} work", _bind(_work_run, world)))
    finish = _FINISH.get(fault.name)
    if finish is not None:
        steps.append((end, f"{fault.name} end", _aside(world, finish, world)))
    return steps


def _work_run(world: World) -> None:
    minutes = world.rng.uniform(35, 50)
    begin = world.clock.now().replace(microsecond=0) - timedelta(minutes=minutes)
    land_activity(world, "running", begin, 1800)


def _start_fault(world: World, name: str, at: float, end: float) -> None:
    if _START[name](world) is False:
        return
    world.injected[name] += 1
    world.windows.append((name, at, end))


def _strava_status(status: int | None) -> Callable[[World], None]:
    def apply(world: World) -> None:
        world.faults.answer(status)

    return apply


def _inactive(*, inactive: bool) -> Callable[[World], None]:
    def apply(world: World) -> None:
        world.strava.application_inactive = inactive

    return apply


def _revoke(world: World) -> None:
    world.strava.deauthorize(ATHLETES[REVOKING])


def _reconnect(world: World) -> None:
    """The athlete authorizes us again (`get-token`), then the owner refills the mirror
    (`mirror backfill`), as README "The mirror" says."""
    connect(world, REVOKING)
    _command(world, REVOKING, "mirror", "backfill")


def connect(world: World, index: int) -> None:
    """`get-token` for one account, the browser's part played here: read the
    authorization URL it prints, consent on the emulator, follow the redirect."""
    flow = start_command(
        world.clock,
        world.envs[index],
        "get-token",
        "--port",
        str(_free_port()),
        "--timeout",
        "86400",
    )
    try:
        url = _authorization_url(flow)
        if url is None:
            world.command_failures.append(f"get-token ({world.user(index)}) printed no URL")
            return
        query = parse_qs(urlsplit(url).query)
        scope = "read,activity:write,activity:read_all"
        code = world.strava.authorize(ATHLETES[index], scope)
        redirect = urlsplit(query["redirect_uri"][0])
        target = f"http://127.0.0.1:{redirect.port}{redirect.path}?" + urlencode(
            {"state": query["state"][0], "code": code, "scope": scope}
        )
        with contextlib.suppress(OSError), urllib.request.urlopen(target, timeout=60):
            pass
        flow.wait(timeout=120)
    finally:
        if flow.poll() is None:
            flow.kill()
            flow.wait()
    if flow.returncode != 0:
        world.command_failures.append(f"get-token ({world.user(index)}) exited {flow.returncode}")


def _authorization_url(flow: subprocess.Popen[str]) -> str | None:
    assert flow.stdout is not None
    for line in flow.stdout:
        if "/oauth/authorize?" in line:
            return line[line.index("http") :].strip()
    return None


def _garmin_429(world: World) -> None:
    world.garmin.fail_next("list", 429)


def _garmin_refused(*, refused: bool) -> Callable[[World], None]:
    def apply(world: World) -> None:
        world.garmin.refuse_network(refused=refused)

    return apply


def _garmin_expire(world: World) -> None:
    world.garmin.revoke_all_tokens()


def _garmin_login_all(world: World) -> None:
    for index in range(len(ATHLETES)):
        _command(world, index, "garmin", "login", "--user", world.user(index))


def _withhold(world: World) -> bool:
    from g2s_sandbox.faults import withhold_activity

    begin = world.clock.now().replace(microsecond=0) - timedelta(minutes=35)
    garmin_id = land_activity(world, "running", begin, 1800)
    withhold_activity(world.garmin, garmin_id)
    world.withheld[garmin_id] = world.garmin.requests["list"]
    return True


def _disk_fill(world: World) -> bool:
    if world.disk is None:
        return False
    filler = world.disk / "filler"
    chunk = b"\0" * (1 << 20)
    with contextlib.suppress(OSError), filler.open("ab") as sink:
        while True:
            sink.write(chunk if len(chunk) > 4096 else b"\0")
            sink.flush()
    return True


def _disk_free(world: World) -> None:
    if world.disk is not None:
        (world.disk / "filler").unlink(missing_ok=True)


def _step(seconds: float) -> Callable[[World], None]:
    def apply(world: World) -> None:
        world.clock.step_s += seconds

    return apply


_START: dict[str, Callable[[World], Any]] = {
    "strava_5xx_90min": _strava_status(503),
    "strava_429_storm": _strava_status(429),
    "strava_app_inactive_day": _inactive(inactive=True),
    "strava_revoke_reconnect": _revoke,
    "garmin_429_backoff": _garmin_429,
    "garmin_403_day": _garmin_refused(refused=True),
    "garmin_refresh_expired": _garmin_expire,
    "garmin_list_missing": _withhold,
    "disk_full_hour": _disk_fill,
    "clock_step_plus_2min": _step(120),
    "clock_step_minus_2min": _step(-120),
}
_FINISH: dict[str, Callable[[World], None]] = {
    "strava_5xx_90min": _strava_status(None),
    "strava_429_storm": _strava_status(None),
    "strava_app_inactive_day": _inactive(inactive=False),
    "strava_revoke_reconnect": _reconnect,
    "garmin_403_day": _garmin_refused(refused=False),
    "garmin_refresh_expired": _garmin_login_all,
    "disk_full_hour": _disk_free,
}


def kill(world: World) -> None:
    world.daemon.kill()
    world.kills += 1


def _command(world: World, index: int, *args: str) -> None:
    done = run_command(world.clock, world.envs[index], *args)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:]
        world.command_failures.append(
            f"{' '.join(args)} ({world.user(index)}): exit {done.returncode} {tail}"
        )


def _free_port() -> int:
    from g2s_harness.serving import free_port

    return free_port()


# -- the run ---------------------------------------------------------------------------
@dataclass
class Samples:
    process: dict[int, ProcessSample] = field(default_factory=dict)
    store: dict[int, StoreSample] = field(default_factory=dict)
    garmin_requests: dict[int, int] = field(default_factory=dict)
    cpu_s: dict[int, float] = field(default_factory=dict)
    peaks: dict[int, dict[str, int]] = field(default_factory=dict)  # hourly looks' maxima


def run_soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    clock = SimClock(datetime(2026, 3, 2, 5, tzinfo=UTC), args.speed)
    clock.install()  # before the emulators are imported: they read time.time
    from g2s_harness.notify_catchers import JsonCatcher
    from g2s_sandbox.faults import StravaFaults, WebhookDisorder
    from g2s_sandbox.garmin import GarminSandbox
    from g2s_sandbox.strava import StravaSandbox

    rng = random.Random(args.seed)  # noqa: S311 - the plan's dice
    with contextlib.ExitStack() as stack:
        garmin = stack.enter_context(GarminSandbox())
        strava = stack.enter_context(StravaSandbox())
        catcher = stack.enter_context(JsonCatcher())
        garmin.set_account(GARMIN_EMAIL, GARMIN_PASSWORD)
        disk = stack.enter_context(_small_disk(workdir, args.faults))
        data = disk if disk is not None else workdir
        db = data / "g2s.sqlite3"
        (data / "tmp").mkdir()
        envs = _environments(
            garmin=garmin,
            strava=strava,
            catcher=catcher,
            db=db,
            tmp=data / "tmp",
            reconcile_hours=args.reconcile_hours,
            sweep_days=args.sweep_days,
        )
        daemon = Daemon(clock, envs[0], workdir / "daemon.log", int(envs[0]["G2S_HTTP_PORT"]))
        disorder = None
        if args.webhook_disorder:
            disorder = WebhookDisorder(strava, seed=args.seed, **WEBHOOK_DISORDER)
        world = World(
            clock,
            garmin,
            strava,
            StravaFaults(strava),
            disorder,
            catcher,
            daemon,
            db,
            disk,
            envs,
            rng,
        )
        for index in range(1, len(ATHLETES)):  # the others join as a user adds them
            connect(world, index)
            _command(world, index, "garmin", "login", "--user", world.user(index))
        daemon.start()
        stack.callback(daemon.stop)
        _command(
            world,
            0,
            "webhook",
            "subscribe",
            "--url",
            f"http://127.0.0.1:{envs[0]['G2S_HTTP_PORT']}",
        )
        world.injected["setup"] += 1
        samples = _drive(world, args)
        daemon.stop()
        report = _report(world, args, samples)
        _keep_store(db, workdir / "final.sqlite3")
        return report
    raise AssertionError("unreachable")


def _drive(world: World, args: argparse.Namespace) -> Samples:
    clock = world.clock
    end = clock.start.timestamp() + args.days * DAY
    plan = plan_days(world, args.days, end)
    plan += plan_faults(world, args.faults, args.kills, end)
    if world.disorder is not None:
        quiet = end - quiet_tail(args.days)
        plan.append((quiet, "webhook disorder ends", _bind(_calm_webhooks, world)))
    counter = itertools.count()
    queue = [(at, next(counter), what, do) for at, what, do in plan]
    heapq.heapify(queue)
    samples = Samples()
    day, next_look = 0, clock.start.timestamp()
    while (now := clock.now_ts()) < end:
        _run_due(world, queue, now)
        world.daemon.supervise()
        if now >= next_look:  # hourly: the day's peaks
            next_look += HOUR
            _look(world, samples, day + 1)
        _release_withheld(world)
        for at, what, do in _owner_reacts(world):
            heapq.heappush(queue, (at, next(counter), what, do))
        if now >= clock.start.timestamp() + (day + 1) * DAY:
            day += 1
            _end_of_day(world, samples, day, progress=args.progress)
        clock.real_sleep(min(60.0, max(1.0, (queue[0][0] - now) if queue else 60.0)))
    for person in world.people:
        person.join(timeout=120)
        if person.is_alive():
            world.command_failures.append("a command was still running at the end")
    final = math.ceil(args.days)
    if final not in samples.process:
        _sample(world, samples, final)
    if world.disorder is not None:
        world.disorder.flush()
    return samples


Queue = list[tuple[float, int, str, Callable[[], None]]]


def _run_due(world: World, queue: Queue, now: float) -> None:
    while queue and queue[0][0] <= now:
        _, _, what, do = heapq.heappop(queue)
        try:
            do()
        except Exception as error:  # noqa: BLE001 - the bench reports it and goes on
            world.command_failures.append(f"{what}: {error!r}")


def _owner_reacts(world: World) -> list[tuple[float, str, Callable[[], None]]]:
    """The owner reads each new notification and, an hour later, applies its fix where
    it is a command: `garmin login` for garmin.tokens_refused."""
    bodies = world.catcher.bodies()
    new, world.notices_read = bodies[world.notices_read :], len(bodies)
    steps: list[tuple[float, str, Callable[[], None]]] = []
    for body in new:
        found = _TITLE.search(str(body.get("title", "")))
        account = _ACCOUNT.search(str(body.get("message", "")))
        if found and account and found.groups() == ("garmin.tokens_refused", "started"):
            index = int(account.group(1).removeprefix("acct-")) - 1
            login = _aside(
                world, _command, world, index, "garmin", "login", "--user", account.group(1)
            )
            steps.append((world.clock.now_ts() + HOUR, "owner: garmin login", login))
            world.owner_actions["garmin login"] += 1
    return steps


def _calm_webhooks(world: World) -> None:
    if world.disorder is not None:
        world.disorder.flush()
        world.disorder._drop = world.disorder._duplicate = world.disorder._hold = 0.0  # noqa: SLF001 - the bench's own switch


def _release_withheld(world: World) -> None:
    from g2s_sandbox.faults import release_activity

    for garmin_id, lists in list(world.withheld.items()):
        if world.garmin.requests["list"] > lists:
            release_activity(world.garmin, garmin_id)
            del world.withheld[garmin_id]


def _end_of_day(world: World, samples: Samples, day: int, *, progress: bool) -> None:
    _sample(world, samples, day)
    if progress:
        line = f"day {day}: {len(world.runs)} runs landed, kills {world.kills}"
        print(line, file=sys.stderr, flush=True)


def _look(world: World, samples: Samples, day: int) -> None:
    process = world.daemon.sample()
    if process is None:
        return
    peak = samples.peaks.setdefault(day, {"rss_kib": 0, "descriptors": 0, "threads": 0})
    peak["rss_kib"] = max(peak["rss_kib"], process.rss_kib)
    peak["descriptors"] = max(peak["descriptors"], process.descriptors)
    peak["threads"] = max(peak["threads"], process.threads)


def _sample(world: World, samples: Samples, day: int) -> None:
    process = world.daemon.sample()
    if process is not None:
        samples.process[day] = process
    with contextlib.suppress(Exception):
        samples.store[day] = sample_store(world.db)
    samples.garmin_requests[day] = sum(world.garmin.requests.values())
    samples.cpu_s[day] = world.daemon.cpu_s + world.daemon.cpu_seconds_now()


def _keep_store(db: Path, copy: Path) -> None:
    """The store as it ended, beside the log (the small disk goes with the run)."""
    import sqlite3

    source = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


@contextlib.contextmanager
def _small_disk(workdir: Path, faults: list[str]) -> Iterator[Path | None]:
    """A 256 MiB tmpfs for the store and the temporary files, so that the disk can be
    filled for real (ENOSPC); None (and the fault not injected) without mount rights."""
    if "disk_full_hour" not in faults:
        yield None
        return
    mount = workdir / "disk"
    mount.mkdir()
    tmpfs = ["mount", "-t", "tmpfs", "-o", "size=256m,mode=0700", "tmpfs", str(mount)]
    # mount(8) and umount(8) from PATH, as root finds them; the arguments are ours.
    done = subprocess.run(tmpfs, capture_output=True, check=False)  # noqa: S603
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        unmount = ["umount", "-l", str(mount)]
        subprocess.run(unmount, capture_output=True, check=False)  # noqa: S603


def _environments(
    *,
    garmin: GarminSandbox,
    strava: StravaSandbox,
    catcher: JsonCatcher,
    db: Path,
    tmp: Path,
    reconcile_hours: int,
    sweep_days: float,
) -> list[dict[str, str]]:
    """Each account's settings, as a user would set them (README "Settings")."""
    import os

    from g2s_harness.serving import free_port

    base = {k: v for k, v in os.environ.items() if not k.startswith(("G2S_", "STRAVA_", "GARMIN_"))}
    token_key = __import__("base64").urlsafe_b64encode(secrets.token_bytes(32)).decode()
    shared = {
        **base,
        "STRAVA_CLIENT_ID": str(strava.client_id),
        "STRAVA_CLIENT_SECRET": strava.client_secret,
        "STRAVA_VERIFY_TOKEN": secrets.token_urlsafe(24),
        "G2S_WEBHOOK_SECRET": secrets.token_urlsafe(24),
        "G2S_DB_PATH": str(db),
        "G2S_TOKEN_KEY": token_key,
        "G2S_STRAVA_BASE_URL": strava.base_url,
        "G2S_GARMIN_BASE_URL": garmin.base_url,
        "G2S_HTTP_PORT": str(free_port()),
        "G2S_ADMIN_PORT": str(free_port()),
        "G2S_NOTIFY_URLS": catcher.url(),
        "G2S_MIRROR_RECONCILE_HOURS": str(reconcile_hours),
        "G2S_MIRROR_SWEEP_DAYS": str(sweep_days),
        "G2S_LOG_LEVEL": os.environ.get("G2S_SOAK_LOG_LEVEL", "WARNING"),
        "GARMIN_EMAIL": GARMIN_EMAIL,
        "GARMIN_PASSWORD": GARMIN_PASSWORD,
        "TMPDIR": str(tmp),
    }
    first = {
        **shared,
        "G2S_USER_ID": "acct-1",  # made from settings: the single-user way
        "STRAVA_REFRESH_TOKEN": strava.add_athlete(ATHLETES[0]),
        "GARMIN_TOKENS": garmin.issue_tokens(),
    }
    for athlete in ATHLETES[1:]:
        strava.add_athlete(athlete)  # has a Strava account; authorizes us in connect()
    others = [{**shared, "G2S_USER_ID": f"acct-{i + 1}"} for i in range(1, len(ATHLETES))]
    return [first, *others]


# -- the report --------------------------------------------------------------------------
_TITLE = re.compile(r"\[garmin2strava\] (\S+) (started|cleared)")
_ACCOUNT = re.compile(r"Account: (\S+)")


def _report(world: World, args: argparse.Namespace, samples: Samples) -> dict[str, Any]:
    report = _figures(world, args, samples)
    report["acceptance"] = _acceptance(report)
    return report


RETENTION_DAYS = 7  # G2S_AUDIT_RETENTION_DAYS' default: the audit trail is flat after it


def _acceptance(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's acceptance, each with the figure it was judged on."""
    runs, res = report["runs"], report["resources"]
    peaks = {int(day): peak for day, peak in res["peaks_by_day"].items()}
    items = {int(day): row["items"] or {} for day, row in res["by_day"].items()}
    last = max(peaks, default=0)
    verdicts: dict[str, Any] = {
        "no run lost or duplicated": runs["lost"] == 0 and runs["duplicated"] == 0,
        "every Strava activity mirrored": runs["mirrored"] == runs["on_strava"],
        "every condition told once started, once cleared": all(
            row["duplicates"] == 0 and row["missed"] == 0 for row in report["conditions"].values()
        ),
    }
    if 2 in peaks and last > 2:  # day 2: the issue's baseline
        first, end = peaks[2], peaks[last]
        flat = end["rss_kib"] <= first["rss_kib"] * 1.1
        verdicts[f"peak RSS day 2 -> {last} within 10 %"] = (
            f"{first['rss_mib']} -> {end['rss_mib']} MiB: {flat}"
        )
        for kind in ("descriptors", "threads"):
            verdicts[f"peak {kind} day 2 -> {last} within +2"] = (
                f"{first[kind]} -> {end[kind]}: {end[kind] <= first[kind] + 2}"
            )
    settled = RETENTION_DAYS + 2
    if settled in items and last > settled:
        audit = (items[settled].get("AUDIT", 0), items[last].get("AUDIT", 0))
        verdicts[
            f"audit rows day {settled} -> {last} within 10 % (retention {RETENTION_DAYS} d)"
        ] = f"{audit[0]} -> {audit[1]}: {audit[1] <= audit[0] * 1.1}"
    return verdicts


def _figures(world: World, args: argparse.Namespace, samples: Samples) -> dict[str, Any]:
    return {
        "days": args.days,
        "speed": args.speed,
        "reconcile_hours": args.reconcile_hours,
        "sweep_days": args.sweep_days,
        "runs": _runs(world),
        "conditions": _conditions(world),
        "faults": _faults(world, args),
        "resources": _resources(samples),
        "strava": _strava(world),
        "garmin": _garmin(world, samples),
        "daemon": {
            "starts": world.daemon.starts,
            "start_real_s_mean": round(
                sum(world.daemon.start_seconds) / max(1, len(world.daemon.start_seconds)), 2
            ),
            "sigkills": world.kills,
            "unexpected_exits": world.daemon.unexpected_exits,
            "command_failures": world.command_failures,
            "owner_actions": dict(world.owner_actions),
        },
    }


def _runs(world: World) -> dict[str, Any]:
    from g2s_sandbox.strava_records import SandboxActivity

    with world.strava.lock:
        activities: list[SandboxActivity] = list(world.strava.activities.values())
    copies: Counter[tuple[int, int]] = Counter()
    for activity in activities:
        found = re.fullmatch(r"garmin2strava_(\d+)(?:\..*)?", activity.external_id or "")
        if found:
            copies[activity.athlete_id, int(found.group(1))] += 1
    expected = [(athlete, run) for athlete in ATHLETES for run in world.runs]
    once = sum(1 for key in expected if copies[key] == 1)
    lost = [key for key in expected if copies[key] == 0]
    duplicated = [key for key in expected if copies[key] > 1]
    mirror = _mirror(world, activities)
    return {
        "expected": len(expected),
        "exactly_once": once,
        "lost": len(lost),
        "duplicated": len(duplicated),
        "mirrored": mirror["mirrored"],
        "on_strava": mirror["on_strava"],
        "mirror_missing": mirror["missing"],
        "mirror_stale": mirror["stale"],
        "lost_ids": lost[:10],
        "lost_ledger": _ledger(world, lost[:10]),
        "duplicated_ids": duplicated[:10],
        "garmin_not_runs": dict(world.not_runs),
        "strava_changes": dict(world.strava_changes),
    }


def _ledger(world: World, keys: list[tuple[int, int]]) -> list[str]:
    """What the store's upload ledger says of each run missing on Strava."""
    import sqlite3

    users = {athlete: world.user(i) for i, athlete in enumerate(ATHLETES)}
    conn = sqlite3.connect(f"file:{world.db}?mode=ro", uri=True, timeout=30)
    try:
        found = []
        for athlete, garmin_id in keys:
            row = conn.execute(
                "SELECT body FROM items WHERE pk = ? AND sk = ?",
                (f"USER#{users[athlete]}", f"UPLOAD#GARMIN#{garmin_id}"),
            ).fetchone()
            found.append(f"{users[athlete]} {garmin_id}: {row[0][:300] if row else 'no entry'}")
        return found
    finally:
        conn.close()


def _mirror(world: World, activities: list[Any]) -> dict[str, Any]:
    """Every live Strava activity in the store under its account, with its name; no
    workout left live that Strava deleted."""
    workouts = read_workouts(world.db)
    users = {athlete: world.user(i) for i, athlete in enumerate(ATHLETES)}
    live = [a for a in activities if not a.deleted]
    mirrored, missing, stale = 0, [], []
    for activity in live:
        kept = workouts.get((users[activity.athlete_id], activity.activity_id))
        if kept and not kept.get("isDeleted") and kept.get("name") == activity.name:
            mirrored += 1
        else:
            missing.append(activity.activity_id)
    for activity in activities:
        kept = workouts.get((users[activity.athlete_id], activity.activity_id))
        if activity.deleted and kept and not kept.get("isDeleted"):
            stale.append(activity.activity_id)
    return {
        "on_strava": len(live),
        "mirrored": mirrored,
        "missing": missing[:20],
        "stale": stale[:20],
    }


def _conditions(world: World) -> dict[str, dict[str, Any]]:
    told: dict[str, Counter[str]] = {}
    for hit in world.catcher.bodies():
        found = _TITLE.search(str(hit.get("title", "")))
        if not found:
            continue
        account = _ACCOUNT.search(str(hit.get("message", "")))
        key = found.group(1) + (f" {account.group(1)}" if account else "")
        told.setdefault(key, Counter())[found.group(2)] += 1
    expected: Counter[str] = Counter()
    maybe: set[str] = set()
    for name, count in world.injected.items():
        fault = FAULTS[name]
        users = [world.user(i) for i in range(len(ATHLETES))] if fault.per_account else [None]
        for key in fault.opens:
            for user in users:
                expected[key + (f" {user}" if user else "")] += count
        maybe.update(fault.maybe)
    report: dict[str, dict[str, Any]] = {}
    for key in sorted(set(told) | set(expected)):
        opened, cleared = told.get(key, Counter())["started"], told.get(key, Counter())["cleared"]
        want = expected[key]
        report[key] = {
            "expected": want,
            "opened": opened,
            "cleared": cleared,
            # A second start past what the faults explain, or a clear told twice.
            "duplicates": (0 if key.split()[0] in maybe else max(0, opened - want))
            + max(0, cleared - opened),
            "missed": max(0, want - opened) + max(0, opened - cleared),
            "optional": key.split()[0] in maybe,
        }
    return report


def _faults(world: World, args: argparse.Namespace) -> dict[str, Any]:
    faults: dict[str, Any] = {
        name: {
            "injected": world.injected[name],
            "opens": list(fault.opens),
            "per_account": fault.per_account,
        }
        for name, fault in FAULTS.items()
    }
    for name, entry in faults.items():
        if not entry["injected"]:
            entry["status"] = "not injected" + ("" if name in args.faults else " (not chosen)")
    faults["daemon_sigkill"] = {"injected": world.kills, "opens": []}
    disorder = world.disorder.counts if world.disorder is not None else Counter()
    faults["webhook_disorder"] = {
        "injected": int(world.disorder is not None),
        "events": dict(disorder),
    }
    faults["clock_mechanism"] = (
        "libfaketime (wall clock) + bench/soak_site (sleeps, waits); emulators' time.time"
    )
    return faults


def _resources(samples: Samples) -> dict[str, Any]:
    days = sorted(samples.process)
    per_day = {
        day: {
            "rss_mib": round(samples.process[day].rss_kib / 1024, 1),
            "descriptors": samples.process[day].descriptors,
            "threads": samples.process[day].threads,
            "daemon_uptime_h": round(samples.process[day].uptime_sim_h, 1),
            "store_bytes": samples.store[day].file_bytes if day in samples.store else None,
            "items": samples.store[day].items if day in samples.store else None,
            "queue": samples.store[day].queue if day in samples.store else None,
        }
        for day in days
    }
    cpu = samples.cpu_s
    last = max(cpu) if cpu else 0
    peaks = {
        day: {**peak, "rss_mib": round(peak["rss_kib"] / 1024, 1)}
        for day, peak in sorted(samples.peaks.items())
    }
    peak_days = sorted(peaks)
    return {
        "by_day": per_day,
        # The day's highest RSS, descriptors and threads, looked at hourly (a sample at
        # the day's end may catch a daemon restarted minutes before).
        "peaks_by_day": peaks,
        "rss_peak_slope_mib_per_day": _slope(
            peak_days, [peaks[d]["rss_kib"] / 1024 for d in peak_days]
        ),
        "rss_slope_mib_per_day": _slope(days, [samples.process[d].rss_kib / 1024 for d in days]),
        "cpu_s_per_sim_day": round(cpu[last] / last, 2) if last else None,
        "cpu_s_total": round(cpu[last], 1) if last else None,
    }


def _slope(xs: list[int], ys: list[float]) -> float | None:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x >= 2]
    if len(pairs) < 2:
        return None
    mean_x = sum(x for x, _ in pairs) / len(pairs)
    mean_y = sum(y for _, y in pairs) / len(pairs)
    den = sum((x - mean_x) ** 2 for x, _ in pairs)
    return round(sum((x - mean_x) * (y - mean_y) for x, y in pairs) / den, 3) if den else None


def _strava(world: World) -> dict[str, Any]:
    with world.strava.lock:
        requests = dict(world.strava.requests)
        reads, uploads = world.strava.reads, world.strava.uploads
    runs = max(1, len(world.runs) * len(ATHLETES))
    return {
        "reads": reads,
        "writes": uploads,
        "requests": requests,
        "reads_per_run": round(reads / runs, 2),
        "writes_per_run": round(uploads / runs, 2),
        "all_per_run": round(sum(requests.values()) / runs, 2),
        "fault_answers": dict(world.faults.answered),
        "webhook_events_given_up": world.strava.webhooks.webhook_failures,
    }


def _garmin(world: World, samples: Samples) -> dict[str, Any]:
    totals = samples.garmin_requests
    days = sorted(totals)
    per_day = [totals[d] - totals.get(d - 1, 0) for d in days]
    hours = max(1e-9, (world.clock.now_ts() - world.clock.start.timestamp()) / HOUR)
    lists = world.garmin.requests["list"]
    return {
        "requests": dict(world.garmin.requests),
        "per_day": per_day,
        # One list per account and cycle: how often the cycles came at this speed.
        "cycles_per_account_per_hour": round(lists / len(ATHLETES) / hours, 1),
    }


def print_table(report: dict[str, Any]) -> None:
    runs, res = report["runs"], report["resources"]
    strava, garmin, daemon = report["strava"], report["garmin"], report["daemon"]
    lines = [
        (
            f"soak: {report['days']:g} simulated days at x{report['speed']:g}, "
            f"reconcile every {report['reconcile_hours']} h, "
            f"sweep every {report['sweep_days']:g} days"
        ),
        (
            f"runs      expected {runs['expected']}, exactly once {runs['exactly_once']}, "
            f"lost {runs['lost']}, duplicated {runs['duplicated']}"
        ),
        (
            f"mirror    live on Strava {runs['on_strava']}, mirrored {runs['mirrored']}, "
            f"missing {runs['mirror_missing']}, stale {runs['mirror_stale']}"
        ),
        "conditions                                   expected opened cleared dup missed",
    ]
    for key, row in report["conditions"].items():
        counts = " ".join(
            f"{row[k]:>6}" for k in ("expected", "opened", "cleared", "duplicates", "missed")
        )
        lines.append(f"  {key:42} {counts}{' (may open)' if row['optional'] else ''}")
    lines.append("faults")
    for name, row in report["faults"].items():
        if isinstance(row, dict):
            note = row.get("status") or row.get("events") or ""
            lines.append(f"  {name:28} injected {row.get('injected')} {note}")
    lines.append("resources  day: RSS MiB, fds, threads, daemon up h, store bytes, items; queue")
    lines.extend(
        f"  {day:>3}: {row['rss_mib']:>6} {row['descriptors']:>4} {row['threads']:>3} "
        f"{row['daemon_uptime_h']:>6} {row['store_bytes']} {row['items']} {row['queue']}"
        for day, row in res["by_day"].items()
    )
    lines.append("peaks      day: RSS MiB, fds, threads (the day's highest, looked at hourly)")
    lines.extend(
        f"  {day:>3}: {peak['rss_mib']:>6} {peak['descriptors']:>4} {peak['threads']:>3}"
        for day, peak in res["peaks_by_day"].items()
    )
    lines.append(f"  peak RSS slope from day 2: {res['rss_peak_slope_mib_per_day']} MiB/day")
    lines += [
        (
            f"  RSS slope from day 2: {res['rss_slope_mib_per_day']} MiB/day; CPU "
            f"{res['cpu_s_per_sim_day']} s per simulated day ({res['cpu_s_total']} s in all)"
        ),
        (
            f"strava    reads {strava['reads']}, writes {strava['writes']}; per run: reads "
            f"{strava['reads_per_run']}, writes {strava['writes_per_run']}, "
            f"all {strava['all_per_run']}"
        ),
        (
            f"garmin    requests per day {garmin['per_day']}; cycles per account-hour "
            f"{garmin['cycles_per_account_per_hour']} (60 at real speed)"
        ),
        (
            f"daemon    starts {daemon['starts']}, SIGKILLs {daemon['sigkills']}, "
            f"exits by itself {daemon['unexpected_exits']}, owner's fixes {daemon['owner_actions']}"
        ),
    ]
    lines.extend(f"  command failed: {failure}" for failure in daemon["command_failures"])
    lines.append("acceptance")
    lines.extend(f"  {name}: {verdict}" for name, verdict in report["acceptance"].items())
    print("\n".join(lines))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--days", type=float, default=30.0, help="simulated days to run (default: 30)"
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=720.0,
        help="simulated seconds per real second (default: 720, 30 days in an hour; "
        "docs/benchmarks.md says what held on a 2-core machine)",
    )
    parser.add_argument(
        "--seed", type=int, default=22, help="the schedule's random seed (default: 22)"
    )
    parser.add_argument("--kills", type=int, help="SIGKILLs (default: 0.7 a day, at least 2)")
    parser.add_argument(
        "--faults",
        default="all",
        help="comma-separated fault names, 'all' (the default) or 'none': "
        + ", ".join(name for name in FAULTS if name != "setup"),
    )
    parser.add_argument(
        "--no-webhook-disorder",
        dest="webhook_disorder",
        action="store_false",
        help="deliver every webhook event once and in order (default: 10 %% dropped, "
        "10 %% doubled, some held back)",
    )
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument(
        "--reconcile-hours",
        type=int,
        default=24,
        help="G2S_MIRROR_RECONCILE_HOURS (24: its default)",
    )
    parser.add_argument(
        "--sweep-days",
        type=float,
        default=1.0,
        help="G2S_MIRROR_SWEEP_DAYS (7 by default; 1 here, so that a delete dropped in "
        "the run's last week is repaired before the report)",
    )
    parser.add_argument("--workdir", type=Path, help="keep the store and the daemon's log here")
    parser.add_argument("--progress", action="store_true", help="a line per simulated day")
    args = parser.parse_args(argv)
    every = [name for name in FAULTS if name != "setup"]
    args.faults = (
        every if args.faults == "all" else [] if args.faults == "none" else args.faults.split(",")
    )
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {sorted(unknown)}")
    if args.kills is None:
        args.kills = max(2, math.ceil(0.7 * args.days))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="g2s-soak-") as directory:
        workdir = args.workdir or Path(directory)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run_soak(args, workdir)
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
