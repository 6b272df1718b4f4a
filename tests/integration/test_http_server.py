"""The real `garmin2strava serve` (and `run`) as a process on loopback, attacked as a
stranger on the internet would: half-open connections against a 1,024-descriptor
limit, a 100 MiB header, a store another process keeps locked; and started on a port
that is taken or a host that is not this machine's. Each test prints its figure.
The request deadline is served in this process (MirrorRuntime, as `serve` builds it)
with a short deadline, beside a check that `serve` wires the 10 s; the hosts that are
not one run the commands through main() in this process."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from g2s_harness.serving import free_port, image_healthcheck
from garmin2strava.adapters.crypto import AesGcmCipher, generate_token_key, parse_token_key
from garmin2strava.adapters.store.sqlite import SqliteStore
from garmin2strava.bootstrap import bootstrap
from garmin2strava.entrypoints.cli import main
from garmin2strava.entrypoints.listeners import REQUEST_DEADLINE_S
from garmin2strava.entrypoints.server import MirrorRuntime
from garmin2strava.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FD_LIMIT = 1024
HALF_OPEN = 1100
SECRET = "a-test-only-webhook-path-secret"
PATH = f"/webhooks/strava/{SECRET}"
EVENT_ATHLETE = 134_815
EVENT = json.dumps(
    {
        "aspect_type": "create",
        "event_time": 1_748_764_800,
        "object_id": 1_360_128_428,
        "object_type": "activity",
        "owner_id": EVENT_ATHLETE,
        "subscription_id": 120_475,
        "updates": {},
    }
).encode()


@dataclass(slots=True)
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int
    db: Path
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a server with no account: a fresh store, free ports."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("G2S_", "STRAVA_", "GARMIN_"))
    }
    env |= {
        "G2S_DB_PATH": str(tmp_path / "data" / "g2s.sqlite3"),
        "G2S_TOKEN_KEY": generate_token_key(),
        "G2S_HTTP_HOST": "127.0.0.1",
        "G2S_HTTP_PORT": str(free_port()),
        "G2S_ADMIN_PORT": str(free_port()),
        "G2S_LOG_FORMAT": "json",
        "G2S_SYNC_INTERVAL_SECONDS": "3600",
        "G2S_WEBHOOK_SECRET": SECRET,
        "STRAVA_SUBSCRIPTION_ID": "120475",
        **extra,
    }
    return env


def command(name: str, *, fd_limit: int | None = None) -> list[str]:
    """`garmin2strava NAME` under our interpreter, with a descriptor limit if given."""
    limit = (
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({fd_limit}, {fd_limit}))" if fd_limit else ""
    )
    code = (
        "import resource, runpy, sys\n"
        f"{limit}\n"
        f"sys.argv = ['garmin2strava', {name!r}]\n"
        "runpy.run_module('garmin2strava.entrypoints.cli', run_name='__main__')\n"
    )
    return [sys.executable, "-c", code]


@contextlib.contextmanager
def serving(
    tmp_path: Path, *, fd_limit: int | None = None, link_event_athlete: bool = False
) -> Iterator[Served]:
    """`serve` in a child process. `link_event_athlete`: EVENT's athlete is linked to an
    account first (as `get-token` leaves it), so the receiver queues its events rather
    than dropping them at intake."""
    env = server_env(tmp_path)
    if link_event_athlete:
        db = Path(env["G2S_DB_PATH"])
        db.parent.mkdir(parents=True, exist_ok=True)
        cipher = AesGcmCipher(parse_token_key(env["G2S_TOKEN_KEY"]))
        with SqliteStore(db, cipher) as store:
            store.link_athlete(EVENT_ATHLETE, "u1")
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(  # noqa: S603 (our interpreter and module)
            command("serve", fd_limit=fd_limit), env=env, stdout=sink, stderr=sink
        )
    served = Served(
        proc, int(env["G2S_HTTP_PORT"]), int(env["G2S_ADMIN_PORT"]), Path(env["G2S_DB_PATH"]), log
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, served.log_text()
            try:
                socket.create_connection(("127.0.0.1", served.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, served.log_text()
                time.sleep(0.05)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def call(
    port: int, method: str, path: str, body: bytes | None = None, *, timeout: float = 10.0
) -> tuple[int | None, float, bytes]:
    """(status or None when no answer came, seconds, body) of one request."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json"})
        answer = conn.getresponse()
        return answer.status, time.monotonic() - started, answer.read()
    except OSError:
        return None, time.monotonic() - started, b""
    finally:
        conn.close()


def rss_kib(pid: int, field: str = "VmHWM") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """This process may hold the attack's connections (raised to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = HALF_OPEN + 200
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the attack needs {wanted} descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_fresh_post_is_answered_under_1100_half_open_connections(
    tmp_path: Path, many_descriptors: None
) -> None:
    """1,100 connections held open (half silent, half with a head begun) against a
    server limited to 1,024 descriptors: fresh POSTs are answered within 2 s (before
    this every one was reset, and nothing was logged), the drops are logged, and the
    held connections are closed by the request deadline."""
    del many_descriptors
    with serving(tmp_path, fd_limit=FD_LIMIT) as served:
        held: list[socket.socket] = []
        try:
            for n in range(HALF_OPEN):
                sock = socket.create_connection(("127.0.0.1", served.port), timeout=5)
                if n % 2:
                    sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode())
                held.append(sock)
            answers = [call(served.port, "POST", PATH, EVENT) for _ in range(5)]
            worst = max(took for _, took, _ in answers)
            print(  # noqa: T201 (the figure measured; shown with -s)
                f"\nunder {HALF_OPEN} half-open connections: worst of 5 POSTs {worst * 1000:.0f} ms"
            )
            assert all(status is not None and status < 500 for status, _, _ in answers), answers
            assert worst < 2.0
            health, _, _ = call(served.admin_port, "GET", "/healthz")
            assert health is not None
        finally:
            for sock in held:
                sock.close()
        log = served.log_text()
        dropped = [
            json.loads(line) for line in log.splitlines() if '"http.connections_dropped"' in line
        ]
        # The descriptor limit is the process's: the admin listener, accepting while it
        # is reached, may log its own drops too, and which logs first is up to timing.
        assert any(d["listener"] == "public" for d in dropped), log[-2000:]
        assert {d["level"] for d in dropped} == {"warning"}


# The held-connection test's deadline; `serve` and `run` use REQUEST_DEADLINE_S
# (test_serve_wires_the_production_request_deadline proves it).
SHORT_DEADLINE_S = 1.0


@contextlib.contextmanager
def serving_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, request_deadline_s: float | None
) -> Iterator[MirrorRuntime]:
    """Both listeners of MirrorRuntime, built from `server_env` as `serve` builds them,
    served on a thread of this process until the block ends."""
    for name, value in server_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    runtime = MirrorRuntime(bootstrap(load_settings()), request_deadline_s=request_deadline_s)
    stop = threading.Event()
    thread = threading.Thread(target=runtime.serve_http, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(
                    ("127.0.0.1", runtime.public.bound_port), timeout=1
                ).close()
                break
            except OSError:
                assert thread.is_alive()
                assert time.monotonic() < deadline, "the listener did not start"
                time.sleep(0.05)
        time.sleep(0.05)  # the probe connection above has gone from the guard
        yield runtime
    finally:
        stop.set()
        thread.join(timeout=15)
        runtime.queue.close()
    assert not thread.is_alive()


def test_serve_wires_the_production_request_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MirrorRuntime as `serve` and `run` build it (no deadline given): both listeners
    cut a request at REQUEST_DEADLINE_S, 10 s."""
    for name, value in server_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    runtime = MirrorRuntime(bootstrap(load_settings()))
    try:
        assert REQUEST_DEADLINE_S == 10.0
        assert runtime.public.guard.request_deadline_s == REQUEST_DEADLINE_S
        assert runtime.admin.guard.request_deadline_s == REQUEST_DEADLINE_S
    finally:
        runtime.close_listeners()
        runtime.queue.close()


def test_held_connections_are_closed_by_the_request_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A silent connection and a head left unfinished are both closed by the server
    (`serve`'s listeners, with a 1 s deadline) within the deadline and a 2 s margin;
    the unfinished one gets 408."""
    with serving_in_process(tmp_path, monkeypatch, request_deadline_s=SHORT_DEADLINE_S) as run:
        port = run.public.bound_port
        silent = socket.create_connection(("127.0.0.1", port), timeout=15)
        begun = socket.create_connection(("127.0.0.1", port), timeout=15)
        begun.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode())
        started = time.monotonic()
        with silent, begun:
            assert silent.recv(100) == b""
            assert begun.recv(100).startswith(b"HTTP/1.1 408")
            took = time.monotonic() - started
        print(f"\nheld connections closed after {took:.1f} s")  # noqa: T201 (the figure measured; shown with -s)
        assert took < SHORT_DEADLINE_S + 2.0


def test_a_100_mib_header_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A request whose header would be 100 MiB: the server stops reading within the
    first MiBs (kernel buffers), its peak RSS grows by under 8 MiB (100 MiB before
    this), and it serves the next request."""
    with serving(tmp_path) as served:
        call(served.port, "GET", "/healthz")
        before = rss_kib(served.proc.pid)
        sent = 0
        chunk = b"a" * (1 << 20)
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Big: ".encode())
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
                for _ in range(100):
                    sock.sendall(chunk)
                    sent += len(chunk)
        time.sleep(0.5)
        grown = rss_kib(served.proc.pid) - before
        print(f"\n100 MiB header: {sent >> 20} MiB accepted, peak RSS grew {grown} KiB")  # noqa: T201 (the figure measured; shown with -s)
        assert sent < 16 << 20
        assert grown < 8 * 1024
        status, _, _ = call(served.port, "POST", PATH, EVENT)
        assert status is not None
        assert status < 500


LOCK_HOLDER = textwrap.dedent(
    """
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
    db.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    db.execute("ROLLBACK")
    """
)


def test_a_store_locked_by_another_process_gets_quick_answers(tmp_path: Path) -> None:
    """Another process holds the store's write lock (BEGIN IMMEDIATE, for 30 s): the
    webhook answers 503 within 2 s (it hung 10 s, then 500, before this), both
    /healthz answer within the HEALTHCHECK's 5 s; once the lock is gone the same
    event is queued. The public port has no /metrics; the admin port has."""
    with serving(tmp_path, link_event_athlete=True) as served:
        assert call(served.port, "GET", "/metrics")[0] == 404
        assert call(served.admin_port, "GET", "/metrics")[0] == 200
        holder = subprocess.Popen(  # noqa: S603 (our interpreter, constant code)
            [sys.executable, "-c", LOCK_HOLDER, str(served.db), "30"],
            stdout=subprocess.PIPE,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == b"locked"
            posts = [call(served.port, "POST", PATH, EVENT) for _ in range(3)]
            public = call(served.port, "GET", "/healthz")
            admin = call(served.admin_port, "GET", "/healthz")
            worst_post = max(took for _, took, _ in posts)
            print(  # noqa: T201 (the figure measured; shown with -s)
                f"\nstore locked: POST {[s for s, _, _ in posts]} worst {worst_post * 1000:.0f} ms;"
                f" /healthz public {public[0]} in {public[1] * 1000:.0f} ms,"
                f" admin {admin[0]} in {admin[1] * 1000:.0f} ms"
            )
            assert [status for status, _, _ in posts] == [503] * 3
            assert worst_post < 2.0
            assert public[0] in {200, 503}
            assert admin[0] in {200, 503}
            assert max(public[1], admin[1]) < 5.0
        finally:
            holder.kill()
            holder.wait()
        status, took, _ = call(served.port, "POST", PATH, EVENT)
        assert status == 200, served.log_text()[-2000:]
        assert took < 2.0
    with sqlite3.connect(served.db) as db:
        assert db.execute("SELECT count(*) FROM webhook_queue").fetchone() == (1,)


def one_line_exit(cmd: str, env: dict[str, str], cwd: Path) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603 (our interpreter and module)
        command(cmd), env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, done.stderr, time.monotonic() - started


@pytest.mark.parametrize("cmd", ["serve", "run"])
@pytest.mark.parametrize("which", ["public", "admin"])
def test_a_taken_port_stops_the_command_with_one_line(tmp_path: Path, cmd: str, which: str) -> None:
    """The public or the admin port already taken: `serve` and `run` exit non-zero
    within seconds with one line naming the settings and the port (before this they
    ran on with no listener and exited 0 on SIGTERM)."""
    env = server_env(tmp_path)
    name = "G2S_HTTP_PORT" if which == "public" else "G2S_ADMIN_PORT"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env[name])))
        taken.listen()
        code, stderr, took = one_line_exit(cmd, env, tmp_path)
    print(f"\n{cmd} with the {which} port taken: exit {code} after {took:.1f} s")  # noqa: T201 (the figure measured; shown with -s)
    assert code != 0
    assert took < 20
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert name in lines[0]
    assert env[name] in lines[0]
    assert "in use" in lines[0]


@pytest.mark.parametrize("cmd", ["serve", "run"])
@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("G2S_HTTP_HOST", "192.0.2.1", "cannot listen"),  # TEST-NET-1: no host of ours
        ("G2S_ADMIN_HOST", "192.0.2.1", "cannot listen"),
        ("G2S_HTTP_HOST", "not a host!", "host name"),
        ("G2S_ADMIN_HOST", "http://127.0.0.1/", "host name"),
    ],
)
@pytest.mark.usefixtures("clean_cli_environment")
def test_a_host_that_is_not_one_stops_the_command_with_one_line(  # noqa: PLR0917 (the table's columns and three fixtures)
    tmp_path: Path,
    cmd: str,
    setting: str,
    value: str,
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A host that is not this machine's, or not a host at all: one line naming the
    setting, exit non-zero, within seconds (the command run through main() in this
    process; the taken-port test above runs the real processes)."""
    for name, env_value in server_env(tmp_path, **{setting: value}).items():
        monkeypatch.setenv(name, env_value)
    capsys.readouterr()
    started = time.monotonic()
    code = main([cmd])
    took = time.monotonic() - started
    stderr = capsys.readouterr().err
    assert code != 0
    assert took < 20
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert setting in lines[0]
    assert says in lines[0]


def test_the_image_healthcheck_asks_the_admin_port(tmp_path: Path) -> None:
    """The Dockerfile's HEALTHCHECK command, run as Docker would against a real
    `serve`: it reaches the admin port (G2S_ADMIN_PORT) and succeeds within its 5 s,
    and the compose example publishes both ports (admin on the host's loopback)."""
    repo = Path(__file__).resolve().parents[2]
    compose = (repo / "docs" / "compose.example.yaml").read_text(encoding="utf-8")
    assert '"8080:8080"' in compose
    assert '"127.0.0.1:8081:8081"' in compose
    with serving(tmp_path) as served:
        deadline = time.monotonic() + 20
        while True:  # unhealthy until the worker's first beat
            done, took = image_healthcheck(served.admin_port)
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert done.returncode == 0, done.stderr
        assert took < 5
        assert json.loads(done.stdout)["ok"] is True
        # the public port has no reasons to give
        public, _took = image_healthcheck(served.port)
        assert json.loads(public.stdout) == {"ok": True}
