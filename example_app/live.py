"""Pages where the server speaks first: a clock and a background job."""

from __future__ import annotations

import time

import gevent
from flask import current_app

from flask_athena import LiveElement, expose

from .extension import athena

CLOCK_TOPIC = "clock"


class Clock(LiveElement):
    """Ticks every second, pushed from one greenlet to every clock on the worker."""

    js_class = "Live.Clock"
    template = "clock.html"
    _ticker: gevent.Greenlet | None = None

    def initial_arguments(self) -> list[object]:
        return [time.strftime("%H:%M:%S")]

    def connected(self) -> None:
        self.join(CLOCK_TOPIC)
        ticker = Clock._ticker
        if ticker is None or ticker.dead:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            Clock._ticker = gevent.spawn(_tick, app)


def _tick(app: object) -> None:
    """Broadcast the time each second while any clock listens."""
    with app.app_context():  # type: ignore[attr-defined]
        while athena.broadcast(CLOCK_TOPIC, "tick", time.strftime("%H:%M:%S")):
            gevent.sleep(1.0)


class ProgressJob(LiveElement):
    """A job run by a background greenlet that reports its progress."""

    js_class = "Live.ProgressJob"
    template = "progress.html"
    STEP_SECONDS = 0.1

    def __init__(self) -> None:
        super().__init__()
        self._job: gevent.Greenlet | None = None

    @expose
    def start(self, steps: int = 30) -> bool:
        """Start the job unless it runs already; return whether it started."""
        if self._job is not None and not self._job.dead:
            return False
        steps = max(1, min(int(steps), 200))
        self._job = gevent.spawn(self._run, steps)
        return True

    def _run(self, steps: int) -> None:
        for done in range(1, steps + 1):
            gevent.sleep(self.STEP_SECONDS)
            if self.page is None:  # detached or page closed: stop quietly
                return
            self.call_remote("progress", done, steps)
        self.call_remote("finished", f"{steps} steps done")

    def detached(self) -> None:
        if self._job is not None:
            self._job.kill(block=False)
