"""The app the integration tests run under gunicorn: ``tests.apps.reliable:create_app()``.

Every ``ATHENA_*`` setting comes from the environment (numbers parsed as
such), so one module serves tests that need a 0.2 s heartbeat, a tiny outbox or
a huge one. ``GET /`` renders a page with two :class:`Probe` widgets; the
``/debug/<page>`` route reports the page's server-side bookkeeping (outbox
length, pending calls, what the probes recorded) so tests can check bounds
from outside the process.

Nothing here is shared between pages: each probe keeps its own record.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

import gevent
from flask import Flask, jsonify, render_template_string

from flask_athena import Athena, LiveElement, LivePage, expose, signals
from flask_athena.config import config_from_env

#: Longest push() waits for the browser's acks before giving up (seconds).
PUSH_STALL_LIMIT = 60.0

PAGE = """<!doctype html>
<html><head><title>reliable</title>{{ page.head() }}</head>
<body>{{ first }}{{ second }}</body></html>
"""


class Probe(LiveElement):
    """A widget whose exposed methods exercise every path of the protocol."""

    js_class = "Reliable.Probe"

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        #: Numbers passed to record(), in the order the calls ran.
        self.recorded: list[int] = []
        #: How many times tick() ran.
        self.ticks = 0
        #: slow_tick() calls in progress.
        self.running = 0
        #: Largest outbox length seen right after a publish by push().
        self.max_outbox = 0
        #: Messages push() published so far.
        self.pushed = 0
        self._pusher: gevent.Greenlet | None = None

    def initial_arguments(self) -> list[Any]:
        return [self.name]

    def render(self) -> str:
        return f"<span>{self.name}</span>"

    @expose
    def echo(self, *args: Any, **kwargs: Any) -> Any:
        return {"args": list(args), "kwargs": kwargs}

    @expose
    def record(self, n: int) -> int:
        """Remember ``n``; return how many numbers are recorded so far."""
        self.recorded.append(n)
        return len(self.recorded)

    @expose
    def recorded_numbers(self) -> list[int]:
        return self.recorded

    @expose
    def tick(self) -> int:
        """Count executions: a call run twice would answer 2 the second time."""
        self.ticks += 1
        return self.ticks

    @expose
    def slow_tick(self, seconds: float) -> int:
        """tick() after ``seconds``: a call still running when its retry arrives."""
        self.running += 1
        try:
            gevent.sleep(min(seconds, 10.0))
        finally:
            self.running -= 1
        return self.tick()

    @expose
    def fail(self, message: str = "boom") -> None:
        raise ValueError(message)

    @expose
    def ask(self, value: Any, timeout: float = 10.0) -> Any:
        """Call the browser's ``double(value)`` and wait for its answer.

        The browser answers on its results lane while this call still holds
        the page's call lane: the proof that results are never queued behind
        a running call.
        """
        answer = self.call_remote("double", value).get(timeout=timeout)
        return {"asked": value, "answer": answer}

    @expose
    def publish(self, count: int, start: int = 0, pad: int = 0) -> int:
        """Publish ``count`` numbered ``take`` calls right now, without yielding.

        Returns the outbox's last sequence number.
        """
        assert self.page is not None
        filler = "x" * pad
        for n in range(start, start + count):
            self.call_remote("take", *((n, filler) if pad else (n,)))
            self._note_outbox()
        return self.page.outbox.last_seq

    @expose
    def push(
        self,
        count: int,
        high_water: int = 0,
        pad: int = 0,
        yield_every: int = 1,
        pause: float = 0.0,
    ) -> bool:
        """Start a greenlet that publishes ``count`` numbered ``take`` calls.

        With ``high_water`` > 0 the pusher waits while the outbox holds that
        many unacknowledged messages (flow control by the browser's acks);
        with 0 it publishes regardless (the outbox then trims). It yields to
        the hub every ``yield_every`` messages, sleeping ``pause`` seconds
        then (a steady stream rather than one burst). Returns at once.
        """
        if self._pusher is not None and not self._pusher.dead:
            return False
        self._pusher = gevent.spawn(self._push, count, high_water, pad, yield_every, pause)
        return True

    def _push(self, count: int, high_water: int, pad: int, yield_every: int, pause: float) -> None:
        page = self.page
        assert page is not None
        filler = "x" * pad
        for n in range(count):
            if high_water:
                # Flow control, bounded: a browser that stops acking for
                # PUSH_STALL_LIMIT seconds ends the push.
                deadline = monotonic() + PUSH_STALL_LIMIT
                while len(page.outbox) >= high_water and not page.closed:
                    if monotonic() > deadline:
                        return
                    gevent.sleep(0.002)
            if page.closed:
                return
            self.call_remote("take", *((n, filler) if pad else (n,)))
            self.pushed += 1
            self._note_outbox()
            if n % yield_every == yield_every - 1:
                gevent.sleep(pause)

    def _note_outbox(self) -> None:
        assert self.page is not None
        self.max_outbox = max(self.max_outbox, len(self.page.outbox))

    def detached(self) -> None:
        if self._pusher is not None:
            self._pusher.kill(block=False)

    def status(self) -> dict[str, Any]:
        return {
            "recorded": len(self.recorded),
            "ticks": self.ticks,
            "running": self.running,
            "pushed": self.pushed,
            "pushing": self._pusher is not None and not self._pusher.dead,
            "max_outbox": self.max_outbox,
        }


def create_app() -> Flask:
    """A new app (gunicorn: ``"tests.apps.reliable:create_app()"``), configured from
    the environment."""
    app = Flask(__name__)
    # Fixed, so a restarted server still reads the old session cookie: the
    # test of a restart must see "unknown page", not "foreign session".
    app.config["SECRET_KEY"] = "flask-athena-integration-tests"
    app.config.update(config_from_env())
    athena = Athena(app)
    #: page id -> reasons its event streams were cut (slow consumer)
    cuts: dict[str, list[str]] = {}

    @signals.stream_cut.connect_via(app)
    def on_stream_cut(sender: Flask, page: LivePage | None, reason: str, **extra: Any) -> None:
        if page is not None:
            cuts.setdefault(page.id, []).append(reason)

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/")
    def index() -> str:
        page = athena.page()
        first = page.add(Probe("first"))
        second = page.add(Probe("second"))
        return render_template_string(PAGE, page=page, first=first, second=second)

    @app.get("/debug/<page_id>")
    def debug(page_id: str) -> Any:
        """Server-side view of one page (test app only: it shows page internals)."""
        page = athena.state().pages.get(page_id)
        if page is None:
            return jsonify({"open": False}), 404
        outbox = page.outbox
        probes = {
            str(wid): el.status() for wid, el in page.elements.items() if isinstance(el, Probe)
        }
        return jsonify(
            {
                "open": not page.closed,
                "outbox_len": len(outbox),
                "outbox_bytes": sum(len(frame) for frame in getattr(outbox, "_frames", ())),
                "outbox_size": page.state.config.outbox_size,
                "last_seq": outbox.last_seq,
                "pending": page.pending_calls,
                "stream_attached": page.stream_attached,
                "stream_cuts": cuts.get(page_id, []),
                "probes": probes,
            }
        )

    return app
