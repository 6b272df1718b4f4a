"""The soak's accelerated clock, the Python half: loaded into `garmin2strava run` and
the soak's CLI commands through PYTHONPATH (src/g2s_harness/soak.py sets it), never by
the daemon itself. Nothing here runs unless G2S_SOAK_SPEED is set.

libfaketime (LD_PRELOAD, `FAKETIME="@<simulated start> x<speed>"`) moves every wall
clock read, Python's and C's (`datetime.now`, `time.time`, SQLite), at the soak's
speed. Its sleep interposers do not fit Python 3.12: `time.sleep` sleeps until an
absolute time on the monotonic clock, which libfaketime 0.9.x mistranslates (the
sleep never ends), thread waits go through `sem_clockwait`, which it does not
intercept, and `select`/`poll` timeouts it leaves alone. So this module shortens
Python's waits itself: `time.sleep` and `threading.Condition.wait` (under Event.wait
and APScheduler's loop) wait their time divided by the speed.

Three choices keep the acceleration from inventing trouble a real machine never has:
- the monotonic clock stays real (FAKETIME_DONT_FAKE_MONOTONIC=1): it times lock
  contention (SQLite's busy deadlines), which takes real time at any speed;
- a wait is never shortened below G2S_SOAK_MIN_WAIT_S of real time (50 ms; a wait
  shorter than that is kept as it is): an idle poll every 0.5 s would otherwise spin
  720 times a second. So the mirror worker's idle poll comes every 36 simulated
  seconds at 720x and the cycle's 2 s wait before its upload poll takes 36 s;
- a future's wait (`concurrent.futures.Future.result`) stays real: it waits for real
  work on another thread. Apprise sends a notification that way, with its deadline on
  the monotonic clock and socket timeouts that stay real too; shortened, the daemon's
  10 s limit became 50 ms, and a notice the endpoint took was reported not delivered
  and told again.
"""

from __future__ import annotations

import os
import select
import time
from typing import Any, SupportsIndex

_SPEED_VARIABLE = "G2S_SOAK_SPEED"
_MIN_WAIT_VARIABLE = "G2S_SOAK_MIN_WAIT_S"


def _install(speed: float, min_wait_s: float) -> None:
    def real_seconds(seconds: float) -> float:
        return max(seconds / speed, min(seconds, min_wait_s))

    def sleep(seconds: float | SupportsIndex) -> None:
        seconds = float(seconds)
        if seconds > 0:
            # A relative timeout, which libfaketime leaves alone: its own sleep is broken.
            select.select([], [], [], real_seconds(seconds))

    time.sleep = sleep

    import threading

    real_wait = threading.Condition.wait

    def wait(self: threading.Condition, timeout: float | None = None) -> bool:
        # The C lock under it waits on the real monotonic clock.
        return real_wait(self, None if timeout is None else real_seconds(timeout))

    threading.Condition.wait = wait  # type: ignore[method-assign]  # the point of it

    import concurrent.futures

    real_result = concurrent.futures.Future.result

    def result(self: concurrent.futures.Future[Any], timeout: float | None = None) -> Any:
        # Its Condition.wait divides by the speed: multiplied first, the wait stays real.
        return real_result(self, None if timeout is None else timeout * speed)

    concurrent.futures.Future.result = result  # type: ignore[method-assign]  # as above


_speed = os.environ.get(_SPEED_VARIABLE)
if _speed:
    _install(float(_speed), float(os.environ.get(_MIN_WAIT_VARIABLE, "0.05")))
