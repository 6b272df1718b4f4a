"""The demo's last step: the status page over the demo's store, on loopback."""

from __future__ import annotations

import threading
import urllib.request

from garmin2strava.bootstrap import App
from garmin2strava.entrypoints.status_page import serve_status_page, status_page_for_app

__all__ = ["show_status_page"]


def show_status_page(app: App, *, serve: bool, wait: threading.Event | None = None) -> bool:
    """Serve the page, check that it answers, print its address; with `serve`, keep
    it up (and the emulators: "Sync now" works) until Ctrl-C or `wait` is set."""
    page = status_page_for_app(app, None, interval_s=None, admin_token=None)
    served = serve_status_page(page)
    try:
        with urllib.request.urlopen(served.url, timeout=10) as answer:  # noqa: S310 (our own http://127.0.0.1 page)
            answered = bool(answer.status == 200)  # noqa: PLR2004 - HTTP status
    except OSError:
        answered = False
    try:
        if not serve:
            print(f"\nStatus page: {served.url} (up while the demo runs; `demo --serve` keeps it)")
            return answered
        print(f"\nStatus page: {served.url}  (Ctrl-C ends the demo)")
        try:
            (wait or threading.Event()).wait()
        except KeyboardInterrupt:
            print()
        return answered
    finally:
        served.stop()
